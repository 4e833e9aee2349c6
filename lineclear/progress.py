"""A tiny progress interface so library code can report progress without printing.

Library functions accept ``progress: Progress | None``; the CLI passes a rich-backed
implementation (``lineclear.cli.console.rich_progress``), tests pass nothing.
"""

from __future__ import annotations

import time
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


class RecordingProgress:
    """Keeps the fields and the time of every advance that reports fields (a step's losses, say).

    For tests and benchmarks: ``steps`` (list of dicts) and ``times`` (``time.perf_counter()`` values).
    """

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.times: list[float] = []

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[Task]:
        outer = self

        class _Recording:
            def advance(self, n: float = 1, **fields: Any) -> None:
                if fields:
                    outer.steps.append(fields)
                    outer.times.append(time.perf_counter())

        yield _Recording()


def ensure(progress: Progress | None) -> Progress:
    return progress if progress is not None else NullProgress()
