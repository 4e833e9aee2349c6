"""Output discipline: results go to stdout, progress and notes to stderr; ``-q`` silences progress."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lineclear.formats._io import dumps


class State:
    quiet: bool = False
    verbose: bool = False
    muted: bool = False  # no notes, progress or results: a training process other than rank 0


state = State()
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
log = logging.getLogger("lineclear")


def setup_logging(verbose: bool, quiet: bool) -> None:
    state.verbose, state.quiet = verbose, quiet
    root = logging.getLogger("lineclear")
    root.handlers.clear()
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def mute() -> None:
    """Silence this process's notes, warnings, progress and results (not its errors)."""
    state.quiet = state.muted = True


def note(msg: str) -> None:
    """A note on stderr (not silenced by -q: notes tell the user something they should know)."""
    if state.muted:
        return
    err.print(f"[dim]lineclear:[/] {msg}")


def warn(msg: str) -> None:
    if state.muted:
        return
    err.print(f"[yellow]lineclear: warning:[/] {msg}")


def print_json(obj: Any) -> None:
    """Machine-readable result on stdout."""
    if state.muted:
        return
    sys.stdout.write(dumps(obj))
    sys.stdout.flush()


class _Interrupt:
    requested = False


_interrupt = _Interrupt()


def _on_sigint(signum: int, frame: Any) -> None:
    _interrupt.requested = True
    raise KeyboardInterrupt


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C that is never lost: the SIGINT handler raises KeyboardInterrupt as usual *and* remembers it.

    A KeyboardInterrupt raised while Python runs a garbage-collector or weakref callback (PyTorch and
    h5py make many) is printed as "Exception ignored" and dropped, and the command would run to its end.
    The remembered request is raised again at the next progress step (:func:`check_interrupt`), so the
    command stops within one batch, says "interrupted" and leaves no partial output.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupt.requested = False
    old = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        _interrupt.requested = False


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (and possibly swallowed) since :func:`interruptible` began."""
    if _interrupt.requested:
        raise KeyboardInterrupt


class _RichTask:
    def __init__(self, progress: Progress, task_id: int) -> None:
        self._p, self._id = progress, task_id

    def advance(self, n: float = 1, **fields: Any) -> None:
        check_interrupt()  # a safe point between batches
        info = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        self._p.update(self._id, advance=n, info=info)


class RichProgress:
    """Implements :class:`lineclear.progress.Progress` with a rich bar on stderr (silent with -q)."""

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[_RichTask]:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err,
            # only -q silences it: on a stderr that is no terminal (a log file, CI) rich draws no live bar
            # but prints each bar once, finished, when its task ends
            disable=state.quiet,
            transient=False,
        )
        with progress:
            tid = progress.add_task(description, total=total, info="")
            yield _RichTask(progress, tid)


def rich_progress() -> RichProgress:
    return RichProgress()
