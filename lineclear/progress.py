"""A tiny progress interface so library code can report progress without printing.

Library functions accept ``progress: Progress | None``; the CLI passes a rich-backed
implementation (``lineclear.cli.console.rich_progress``), tests pass nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Protocol


class Task(Protocol):
    def advance(self, n: float = 1, **fields: Any) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None) -> "contextmanager[Task]": ...


class _NullTask:
    def advance(self, n: float = 1, **fields: Any) -> None:
        return None


class NullProgress:
    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[_NullTask]:
        yield _NullTask()


def ensure(progress: Progress | None) -> Progress:
    return progress if progress is not None else NullProgress()
