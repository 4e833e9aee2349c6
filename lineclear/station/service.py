"""The station: the watch loop in a thread beside the servers; each set recorded, then told to the listeners.

Per image set, in this order: the watch loop appends the set to the ``--log`` and fsyncs it (its own
guarantee, :mod:`lineclear.line.watch`); the station hashes images and overlays and appends the ``set``
row to the record (committed, synced); then every listener (the page's event stream, the OPC UA server)
gets the set's summary. A set the record could not take (disk full, file gone) is still shown and
published, flagged ``recorded: false``, and the station's status carries the error: the OPC UA
``LineClear`` of such a set is false.

The watch loop keeps its guarantees with the server on: it never stops on a bad image (the checker makes
it ``undecided``), and nothing a listener does (an exception, a slow client) reaches it: listeners are
called in a guard, and the event stream only queues.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lineclear import __version__
from lineclear.errors import LineclearError
from lineclear.formats.record import Entry, Record, utc_now
from lineclear.line.checker import Checker
from lineclear.line.verdict import CheckResult
from lineclear.line.watch import WatchOptions, watch
from lineclear.formats.verdict import read_verdict_log
from lineclear.station.record import ack_body, bundle_info, set_body, sets_missing_from_record, start_body
from lineclear.station.shifts import count_per_shift, parse_shifts, shift_windows, DEFAULT_SHIFTS

Listener = Callable[[str, dict[str, Any]], None]


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Station:
    """Owns the checker, the record and the watch thread; the web app and the OPC UA server read from it.

    ``overlay_root``: overlays go to ``overlay_root/run-<UTC time>/`` (a fresh folder per run, so the
    ``set<N>_`` names of a restarted station never collide with the last run's); the web app serves files
    from ``overlay_root`` only.
    """

    def __init__(self, checker: Checker, watch_dir: str | os.PathLike, record: Record, overlay_root: str | os.PathLike,
                 options: WatchOptions | None = None, *, log_path: str | os.PathLike | None = None,
                 shifts: str = DEFAULT_SHIFTS, on_event: Callable[[str], None] | None = None) -> None:
        self.checker = checker
        self.watch_dir = Path(watch_dir)
        self.record = record
        self.overlay_root = Path(overlay_root).resolve()
        self.options = options or WatchOptions()
        self.log_path = log_path
        self.shift_starts = parse_shifts(shifts)
        self.on_event = on_event or (lambda msg: None)
        self.views = list(checker.views)
        self.bundle = bundle_info(checker.bundle.root)
        self.started_utc = utc_now()
        self.listeners: list[Listener] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.watch_error: str | None = None
        self.record_error: str | None = None
        self.listener_errors = 0
        self.latest: dict[str, Any] | None = None
        self.unrecorded: dict[int, dict[str, Any]] = {}  # sets the record could not take, by number
        self.events: list[str] = []
        self.version = 0  # bumped by every set, acknowledgement and event: the status cache's key
        self._status_cache: tuple[int, float, dict[str, Any]] | None = None
        self.sets_this_run = 0
        self.recovered = self._recover_from_log()
        self.next_no = record.last_set_no() + 1
        self.counts = record.verdict_counts()
        self.record.append("start", start_body(self.bundle, self.watch_dir, self.views))
        last = record.last_sets(1)
        if last:
            self.latest = self.summary(last[0], self.record.acks([last[0].set_no]).get(last[0].set_no, []))

    def _recover_from_log(self) -> list[int]:
        """Append to the record the sets the watch log has after the record's last one (a station killed
        between writing the log and the record); their image hashes are unknown, and the row says so."""
        if self.log_path is None or not Path(self.log_path).is_file():
            return []
        last = self.record.last_sets(1)
        if not last:
            return []
        try:
            log = read_verdict_log(self.log_path)
        except LineclearError as exc:
            self._event(f"watch log not read for recovery: {exc}")
            return []
        missing = sets_missing_from_record(log.records, int(last[0].set_no), last[0].body["verdict"].get("checked_utc"))
        for n, doc in missing:
            body = {**set_body(n, doc, self.bundle), "images": {}, "overlays": {},
                    "recovered_from_log": str(Path(self.log_path).resolve())}
            self.record.append_set(lambda no, body=body: {**body, "set": no}, doc["verdict"], at_least=n)
            self._event(f"set {n} recovered from the watch log into the record (image hashes unknown)")
        return [n for n, _ in missing]

    # -- reading ---------------------------------------------------------------------------------------------
    def overlay_url(self, path: str | None) -> str | None:
        """The page's URL of an overlay file, or None when it lies outside the overlay folder."""
        if not path:
            return None
        try:
            rel = Path(path).resolve().relative_to(self.overlay_root)
        except ValueError:
            return None
        return "/overlays/" + rel.as_posix()

    def summary(self, entry: Entry | dict[str, Any], acks: list[Entry] | None = None) -> dict[str, Any]:
        """What the page and the PLC need of a set: per view verdict, score, threshold, reason, overlay URL."""
        body = entry.body if isinstance(entry, Entry) else entry
        doc = body["verdict"]
        return {
            "set": body["set"],
            "verdict": doc["verdict"],
            "exit_code": doc["exit_code"],
            "checked_utc": doc.get("checked_utc"),
            "recorded": isinstance(entry, Entry),
            "row": ({"seq": entry.seq, "hash": entry.hash, "created_utc": entry.created_utc}
                    if isinstance(entry, Entry) else None),
            "views": [{"view": v["view"], "verdict": v["verdict"], "score": v.get("score"),
                       "threshold": v.get("threshold"), "reason": v.get("reason"), "image": v.get("image"),
                       "regions_total": v.get("regions_total", 0), "overlay_url": self.overlay_url(v.get("overlay")),
                       "overlay_error": v.get("overlay_error")}
                      for v in doc.get("views", [])],
            "acks": [a.body for a in acks or []],
        }

    def get_set(self, set_no: int) -> dict[str, Any] | None:
        """The set's summary with its full record row (``document``: verdict, image hashes, bundle), or None."""
        e = self.record.get_set(set_no)
        if e is None:
            body = self.unrecorded.get(set_no)
            return None if body is None else {**self.summary(body), "document": body}
        return {**self.summary(e, self.record.acks([set_no]).get(set_no, [])), "document": e.body}

    def list_sets(self, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.record.sets(since, limit)
        acks = self.record.acks([int(r.set_no) for r in rows])  # type: ignore[arg-type]
        out = [self.summary(r, acks.get(int(r.set_no), [])) for r in rows]  # type: ignore[arg-type]
        extra = [self.summary(b) for n, b in sorted(self.unrecorded.items()) if n > since]
        if extra:
            out = sorted(out + extra, key=lambda s: s["set"])[:limit]
        return out

    def last_sets(self, n: int) -> list[dict[str, Any]]:
        rows = self.record.last_sets(n)
        acks = self.record.acks([int(r.set_no) for r in rows])  # type: ignore[arg-type]
        return [self.summary(r, acks.get(int(r.set_no), [])) for r in rows]  # type: ignore[arg-type]

    def shifts(self, now: _dt.datetime | None = None, n: int = 3) -> list[dict[str, Any]]:
        now = now or _dt.datetime.now().astimezone()
        windows = shift_windows(now, self.shift_starts, n)
        since = windows[-1][0].astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds")
        return count_per_shift(windows, self.record.sets_since_utc(since))

    def status(self, max_age: float = 1.0) -> dict[str, Any]:
        """The station's state for the page; computed at most once per ``max_age`` seconds between changes
        (twenty clients polling it cost one computation, not twenty)."""
        cached = self._status_cache
        if cached is not None and cached[0] == self.version and time.monotonic() - cached[1] < max_age:
            return cached[2]
        version = self.version
        out = self._status()
        self._status_cache = (version, time.monotonic(), out)
        return out

    def _status(self) -> dict[str, Any]:
        with self.lock:
            latest, counts = self.latest, dict(self.counts)
        alive = self.thread is not None and self.thread.is_alive()
        return {
            "station": {"bundle": self.bundle, "views": self.views, "watch": str(self.watch_dir),
                        "lineclear_version": __version__, "started_utc": self.started_utc,
                        "record": None if str(self.record.path) == ":memory:" else str(self.record.path)},
            "watching": alive and not self.stop_event.is_set(),
            "watch_error": self.watch_error,
            "record_error": self.record_error,
            "last_set": latest["set"] if latest else None,
            "latest": latest,
            "counts": counts,
            "sets_this_run": self.sets_this_run,
            "shifts": self.shifts(),
            "events": self.events[-10:],
        }

    # -- writing ---------------------------------------------------------------------------------------------
    def acknowledge(self, set_no: int, name: str, comment: str, client: str | None = None) -> dict[str, Any]:
        """Append an ``ack`` row for a recorded set; KeyError when there is no such set."""
        if self.record.get_set(set_no) is None:
            raise KeyError(set_no)
        body = ack_body(set_no, name, comment, utc_now(), client)
        entry = self.record.append("ack", body, set_no=set_no)
        ack = {**body, "row": {"seq": entry.seq, "hash": entry.hash}}
        self._publish("ack", ack)
        return ack

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        self.version += 1
        for listener in list(self.listeners):
            try:
                listener(kind, data)
            except Exception as exc:  # noqa: BLE001 - a listener never stops the watch loop
                self.listener_errors += 1
                self._event(f"listener failed: {_short(exc)}")

    def _event(self, msg: str) -> None:
        self.version += 1
        self.events.append(f"{time.strftime('%H:%M:%S')} {msg}")
        del self.events[:-100]
        self.on_event(msg)

    def on_result(self, result: CheckResult, _watch_no: int) -> None:
        """Record the set, then tell the listeners; never raises (it runs inside the watch loop)."""
        try:
            doc = result.to_dict()
            body = set_body(0, doc, self.bundle)  # hashes taken outside the record's transaction
            try:
                # the record numbers the set inside its transaction: two stations on one file cannot collide
                # (at least next_no: numbers given to sets the record could not take are not reused)
                entry: Entry | dict[str, Any] = self.record.append_set(
                    lambda no: {**body, "set": no}, result.verdict, at_least=self.next_no)
                n = int(entry.set_no)  # type: ignore[union-attr,arg-type]
                self.record_error = None
            except Exception as exc:  # noqa: BLE001 - the set is still shown, flagged unrecorded
                n = max(self.next_no, max(self.unrecorded, default=0) + 1)
                self.record_error = f"set {n} could not be recorded: {_short(exc)}"
                self._event(self.record_error)
                entry = self.unrecorded[n] = {**body, "set": n}
            with self.lock:
                self.next_no = n + 1
            summary = self.summary(entry)
            with self.lock:
                self.latest = summary
                self.counts[result.verdict] += 1
                self.sets_this_run += 1
            self._publish("set", summary)
        except Exception as exc:  # noqa: BLE001
            self._event(f"internal error while recording a set: {_short(exc)}")

    # -- the watch thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self.stop_event.is_set():
            run_dir = self.overlay_root / ("run-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ"))
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
                # the log and the overlay names number sets as the record does (one station per record)
                summary = watch(self.checker, self.watch_dir, self.options, log_path=self.log_path,
                                overlay_dir=run_dir, on_result=self.on_result, on_event=self._event,
                                stop=self.stop_event, set_offset=self.next_no - 1)
                self._event(f"watch stopped ({summary.stopped_by}) after {summary.sets} set(s)")
                if summary.stopped_by in ("max_sets", "timeout"):
                    return
            except Exception as exc:  # noqa: BLE001 - say why on the page, try again
                self.watch_error = f"{_short(exc)} (restarting in 2 s)"
                self._event(f"watch loop failed: {self.watch_error}")
                self.stop_event.wait(2.0)

    def start(self) -> None:
        if not self.watch_dir.is_dir():
            raise LineclearError(f"{self.watch_dir}: no such folder to watch")
        self.thread = threading.Thread(target=self._run, name="lineclear-watch", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching: a set that is open is checked as it stands first (watch's rule), then return."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout)
