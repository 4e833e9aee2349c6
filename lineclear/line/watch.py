"""Watch mode: keep the models warm and check each new image set as it appears in a folder.

**Complete files only.** A file is handed on once its size and modification time have not changed for
``settle`` seconds. A PNG/JPEG whose end marker is still missing is given up to ``4 × settle`` more
seconds of stillness (a writer may pause); after that it is checked anyway and comes out ``undecided``
(truncated), never silently skipped. Hidden files (``.name``), non-image files and files that match no
view's pattern are ignored (the last with one warning each). A file rewritten under the same name (a
camera that always saves ``A.png``) is a new image once its size or modification time changes.

**Image sets.** A set opens with its first complete image. It is checked as soon as every view of the
bundle has an image, or ``set_timeout`` seconds after it opened -- then the views without an image are
``undecided`` ("no image within N s"). An image for a view that already has one in the open set closes
that set first (it is checked as it stands) and opens the next. With a one-view bundle every image is
its own set. Files present when watching starts are ignored unless ``existing=True``.

The loop survives anything a single image can do (the checker turns it into ``undecided``) and stops after
``max_sets`` sets, after ``timeout`` seconds, when ``stop`` is set, or on Ctrl-C; a set that is open
when it stops is checked as it stands first.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lineclear.formats.verdict import append_verdict_log, open_verdict_log
from lineclear.line.checker import Checker
from lineclear.line.image import file_problem, is_candidate
from lineclear.line.verdict import UNDECIDED, CheckResult, ViewVerdict


@dataclass
class WatchOptions:
    poll: float = 0.2  # seconds between folder scans
    settle: float = 1.0  # a file is complete when unchanged for this long
    set_timeout: float = 10.0  # an incomplete set is checked this long after its first image
    existing: bool = False  # also check the files already there at start
    recursive: bool = False
    max_sets: int | None = None
    timeout: float | None = None  # stop after this many seconds


@dataclass
class _FileState:
    sig: tuple[int, int]
    stable_since: float


class FileTracker:
    """Finds image files that have stopped growing; each (path, size, mtime) is reported once."""

    def __init__(self, folder: Path, settle: float, recursive: bool = False, clock: Callable[[], float] = time.monotonic):
        self.folder, self.settle, self.recursive, self.clock = folder, settle, recursive, clock
        self.pending: dict[Path, _FileState] = {}
        self.done: dict[Path, tuple[int, int]] = {}

    def _scan(self) -> dict[Path, tuple[int, int]]:
        out: dict[Path, tuple[int, int]] = {}
        try:
            it = self.folder.rglob("*") if self.recursive else self.folder.iterdir()
            for p in it:
                if not is_candidate(p):
                    continue
                try:
                    st = p.stat()
                except OSError:
                    continue
                if st.st_size > 0 and p.is_file():
                    out[p] = (st.st_size, st.st_mtime_ns)
        except OSError:
            pass  # the folder is briefly unavailable (network share): try again next poll
        return out

    def mark_existing(self) -> None:
        self.done.update(self._scan())

    def poll(self) -> list[Path]:
        now = self.clock()
        ready: list[Path] = []
        for p, sig in sorted(self._scan().items()):
            if self.done.get(p) == sig:
                continue
            st = self.pending.get(p)
            if st is None or st.sig != sig:
                self.pending[p] = _FileState(sig, now)
                continue
            still = now - st.stable_since
            if still < self.settle:
                continue
            if file_problem(p) and still < 5 * self.settle:
                continue  # end marker missing: the writer may only have paused
            ready.append(p)
            self.done[p] = sig
            del self.pending[p]
        return ready


class SetAssembler:
    """Groups incoming (view, path) pairs into image sets (see the module docstring)."""

    def __init__(self, views: list[str], set_timeout: float, clock: Callable[[], float] = time.monotonic):
        self.views, self.set_timeout, self.clock = views, set_timeout, clock
        self.open: dict[str, Path] = {}
        self.opened_at = 0.0

    def add(self, view: str, path: Path) -> list[dict[str, Path]]:
        closed = []
        if view in self.open:
            closed.append(self.flush())
        if not self.open:
            self.opened_at = self.clock()
        self.open[view] = path
        if all(v in self.open for v in self.views):
            closed.append(self.flush())
        return closed

    def due(self) -> bool:
        return bool(self.open) and self.clock() - self.opened_at >= self.set_timeout

    def flush(self) -> dict[str, Path]:
        s, self.open = self.open, {}
        return s


@dataclass
class WatchSummary:
    sets: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"clear": 0, "leftover": 0, "undecided": 0})
    ignored: list[str] = field(default_factory=list)
    stopped_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"sets": self.sets, "counts": self.counts, "ignored": self.ignored, "stopped_by": self.stopped_by}


def log_records(result: CheckResult, set_no: int) -> list[dict[str, Any]]:
    """One JSON-able record per view verdict of a set, as appended to the watch log."""
    return [{"set": set_no, "set_verdict": result.verdict, "set_exit_code": result.exit_code,
             "checked_utc": result.checked_utc, **v.to_dict()} for v in result.views]


def watch(
    checker: Checker,
    folder: str | os.PathLike,
    options: WatchOptions | None = None,
    *,
    log_path: str | os.PathLike | None = None,
    overlay_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    on_result: Callable[[CheckResult, int], None] | None = None,
    on_event: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    set_offset: int = 0,
) -> WatchSummary:
    """Run the watch loop until a stop condition; returns the counts. ``on_result(result, set_no)`` per set.

    Sets are numbered ``set_offset + 1``, ``set_offset + 2``, ... in the log, the overlay names and
    ``on_result`` (a caller that keeps numbering across runs, like ``lineclear serve``, passes its last number).
    """
    opts = options or WatchOptions()
    folder = Path(folder)
    tracker = FileTracker(folder, opts.settle, opts.recursive)
    if not opts.existing:
        tracker.mark_existing()
    assembler = SetAssembler(list(checker.views), opts.set_timeout)
    summary = WatchSummary()
    warned: set[Path] = set()
    event = on_event or (lambda msg: None)
    log = None
    if log_path:
        log, note = open_verdict_log(log_path)
        if note:
            event(note)
    t_start = time.monotonic()

    def run_set(images: dict[str, Path], reason: str) -> None:
        summary.sets += 1
        set_no = set_offset + summary.sets
        missing = f"no image for this view within {opts.set_timeout:g} s" if reason == "timeout" else (
            f"no image for this view ({reason})")
        try:
            # overlays carry the set number: cameras that always save "A.png" get one overlay per set
            result = checker.check(images, overlay_dir=overlay_dir, overwrite=overwrite, missing_reason=missing,
                                   overlay_prefix=f"set{set_no:06d}_")
        except Exception as exc:  # noqa: BLE001 - the loop must survive; the set is undecided
            result = CheckResult(str(checker.bundle.root), [
                ViewVerdict(v, UNDECIDED, f"internal error: {type(exc).__name__}: {exc}",
                            image=str(images[v]) if v in images else None) for v in checker.views],
                {"load": checker.load_ms}, str(checker.device))
        summary.counts[result.verdict] += 1
        if log is not None:
            append_verdict_log(log, log_records(result, set_no))
        if on_result is not None:
            on_result(result, set_no)

    def done() -> str:
        if opts.max_sets is not None and summary.sets >= opts.max_sets:
            return "max_sets"
        if opts.timeout is not None and time.monotonic() - t_start >= opts.timeout:
            return "timeout"
        if stop is not None and stop.is_set():
            return "stop"
        return ""

    try:
        while not (reason := done()):
            for path in tracker.poll():
                views = checker.views_for(path)
                if len(views) != 1:
                    if path not in warned:
                        warned.add(path)
                        what = "no view's pattern" if not views else f"several views' patterns ({', '.join(views)})"
                        summary.ignored.append(str(path))
                        event(f"{path.name}: matches {what}; ignored")
                    continue
                event(f"{path.name}: complete, view {views[0]}")
                for images in assembler.add(views[0], path):
                    run_set(images, "the next image of a view arrived first")
                    if done():
                        break
                if done():
                    break
            if assembler.due() and not done():
                run_set(assembler.flush(), "timeout")
            if not done():
                time.sleep(opts.poll)
        summary.stopped_by = reason
    except KeyboardInterrupt:
        summary.stopped_by = "interrupt"
    finally:
        try:
            if assembler.open and summary.stopped_by in ("timeout", "stop", "interrupt"):
                run_set(assembler.flush(), "watching stopped")
        except KeyboardInterrupt:
            pass
        if log is not None:
            os.close(log)
    return summary
