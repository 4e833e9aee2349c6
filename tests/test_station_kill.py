"""``lineclear serve`` SIGKILLed at seeded random moments: the record always verifies, agrees with the watch
log set by set, and the next start recovers the one set a kill can leave in the log only.

Real processes, forked from the crash-safety tests' kill host (tests/killhost.py), on the template bundle
those tests build.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from lineclear.formats.record import read_record, verify_record  # noqa: E402
from lineclear.formats.verdict import read_verdict_log  # noqa: E402
from tests.station_util import free_port  # noqa: E402
from tests.test_crash_safety import FAST, KILLS, KillHost, Rounds, host, line  # noqa: E402,F401 - fixtures


def _log_sets(log: Path) -> dict[int, str]:
    """Set number → checked time, from the watch log (a torn last line is set apart by the reader)."""
    return {r["set"]: r["checked_utc"] for r in read_verdict_log(log).records} if log.exists() else {}


def _record_sets(db: Path) -> dict[int, str]:
    with read_record(db) as rec:
        return {e.set_no: e.body["verdict"]["checked_utc"] for e in rec.entries() if e.kind == "set"}


def _wait_for_sets(log: Path, n: int, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while len(_log_sets(log)) < n and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    assert len(_log_sets(log)) >= n, f"{n} sets not logged within {timeout} s"


def test_sigkill_serve_keeps_record_and_log_in_step(host: KillHost, line: dict) -> None:  # noqa: F811
    base = host.cwd / "serve"
    db, log = base / "record.db", base / "verdicts.jsonl"
    src = line["view"] / "test" / "good" / "000.png"
    sets = 10

    def args(i: int) -> tuple:
        inbox = base / "inbox" / f"s{i:02d}"
        inbox.mkdir(parents=True)
        for k in range(sets):
            shutil.copyfile(src, inbox / f"A_{k:03d}.png")
        return ("-q", "serve", line["bundle"], "--watch", inbox, "--existing", "--record", db, "--log", log,
                "--port", str(free_port()), "--overlay-dir", base / "ov", "--settle", "0.05", "--poll", "0.02",
                *FAST)

    # a full run, stopped with Ctrl-C once its sets are logged, times the kills
    t0 = time.monotonic()
    pid, out = host.start(*args(99))
    _wait_for_sets(log, 1)
    first = time.monotonic()
    _wait_for_sets(log, sets)
    seconds = time.monotonic() - first  # checking the sets, start-up excluded
    time.sleep(0.3)  # the last set's record row follows its log line
    os.kill(pid, signal.SIGINT)
    assert host.wait(pid) == 0, Path(f"{out}.err").read_text()[-2000:]
    assert _record_sets(db) == _log_sets(log) and len(_log_sets(log)) == sets

    rounds = Rounds("serve", KILLS)
    for i, delay in enumerate(rounds.delays(seconds)):
        # every other kill falls while the sets are checked (timed from the first one), the others anywhere
        before = len(_log_sets(log))
        if i % 2:
            pid, out = host.start(*args(i))
            _wait_for_sets(log, before + 1)
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            status = host.wait(pid)
        else:
            status, out = host.kill_after(delay + (first - t0), *args(i))
        rounds.count(status)
        rep = verify_record(db)
        assert rep["ok"], rep["problems"]  # a SIGKILL never damages the record
        logged, recorded = _log_sets(log), _record_sets(db)
        # every recorded set is the logged set of that number (same check), and numbers run without gaps
        assert all(logged.get(n) == t for n, t in recorded.items()), (logged, recorded)
        assert sorted(recorded) == list(range(1, len(recorded) + 1))
        # at most the one set between the log's fsync and the record's commit is in the log only
        only_logged = sorted(set(logged) - set(recorded))
        assert only_logged in ([], [max(logged)]), only_logged
        rounds.kept += len(logged) - before

    # the next start recovers what a kill left in the log only; then record and log agree on every set
    pid, out = host.start(*args(98))
    _wait_for_sets(log, len(_log_sets(log)) + sets)
    time.sleep(0.3)
    os.kill(pid, signal.SIGINT)
    assert host.wait(pid) == 0, Path(f"{out}.err").read_text()[-2000:]
    assert verify_record(db)["ok"]
    assert _record_sets(db) == _log_sets(log)
    from tests import fuzzing

    k, f, kept = fuzzing.KILLS.get(rounds.name, (0, 0, 0))
    fuzzing.KILLS[rounds.name] = (k + rounds.killed, f + rounds.finished, kept + rounds.kept)
