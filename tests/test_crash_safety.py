"""Crash safety, measured: ``train``, ``score``, ``register``, ``deploy`` and ``check --watch --log`` are
SIGKILLed at seeded random moments, and every output must then be the previous complete file or the new
complete file (read back by lineclear's own readers), with no litter that lineclear could take for output,
and the watch log must keep every line that was fsynced before the kill.

The commands are real ``lineclear`` processes, forked from one server that has imported lineclear and
PyTorch once (tests/killhost.py), so each kill costs the command's own run time rather than 4 s of
imports. Each command is first run to completion to learn how long it takes; the kills fall uniformly
over that time. ``KILLS`` kills per command in CI; the slow test kills many more.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lineclear.dataset import list_images
from lineclear.formats import MapsFile, load_checkpoint, read_json, read_mask, read_thresholds
from lineclear.formats.deploy import read_manifest, verify_files
from lineclear.formats.registration import read_marker, read_report
from lineclear.formats.run import RUN_SCHEMA
from lineclear.formats.verdict import read_verdict_log, validate_log_record
from lineclear.images import read_raw
from tests.test_deploy import make_view

ROOT = Path(__file__).resolve().parents[1]
KILLS = 6  # per command in CI
SEED = 14
# what an interrupted atomic write leaves: mkstemp's hidden ".<name>.<8 chars>.tmp", deploy's hidden
# temporary bundle ".<out>.<8 chars>.tmp/" and the previous bundle on its way out ".<out>.old-<pid>/"
LITTER = re.compile(r"^\.[^/]+\.([a-z0-9_]{8}\.tmp|old-\d+)$")
FAST = ["--device", "cpu"]
KILLED = -signal.SIGKILL


class KillHost:
    """Client of tests/killhost.py: ``start`` a lineclear command, ``kill`` it, ``wait`` for its status."""

    def __init__(self, cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
        self.cwd = cwd
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "killhost.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)
        self.n = 0

    def _ask(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the kill host died"
        return json.loads(line)

    def start(self, *args: str) -> tuple[int, Path]:
        self.n += 1
        out = self.cwd / f"cmd{self.n:03d}"
        pid = self._ask({"run": [str(a) for a in args], "out": f"{out}.out", "err": f"{out}.err",
                         "cwd": str(self.cwd)})["pid"]
        return pid, out

    def wait(self, pid: int) -> int:
        return self._ask({"wait": pid})["status"]

    def run(self, *args: str) -> tuple[float, Path]:
        """Run to completion (must succeed): ``(seconds, stdout/stderr file stem)``."""
        t0 = time.monotonic()
        pid, out = self.start(*args)
        status = self.wait(pid)
        assert status == 0, f"{args}: exit {status}\n{Path(f'{out}.err').read_text()[-3000:]}"
        return time.monotonic() - t0, out

    def kill_after(self, delay: float, *args: str, after_output: bool = False) -> tuple[int, Path]:
        """Start the command, SIGKILL it ``delay`` s later (if it is still running): ``(status, stem)``.
        ``after_output``: ``delay`` counts from its first line on stdout (for check --watch: from the
        first set, so the kill hits the sets rather than the start-up, however loaded the machine is)."""
        pid, out = self.start(*args)
        if after_output:
            _first_line(out, timeout=60)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        os.kill(pid, signal.SIGKILL)  # a finished child is a zombie until waited for: the pid is still its own
        return self.wait(pid), out

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = KillHost(tmp_path_factory.mktemp("kill"))
    yield h
    h.close()


def _first_line(stem: Path, timeout: float) -> None:
    """Wait until the command's stdout has a line (or ``timeout`` s)."""
    stdout, t0 = Path(f"{stem}.out"), time.monotonic()
    while not (stdout.exists() and b"\n" in stdout.read_bytes()) and time.monotonic() - t0 < timeout:
        time.sleep(0.005)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _litter(folder: Path, expected: set[str]) -> list[str]:
    """Names in ``folder`` (recursively) that are neither expected nor an atomic write's hidden temporary."""
    bad = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if str(rel) in expected or any(LITTER.match(part) for part in rel.parts):
            continue
        if p.is_file() or not any(str(e).startswith(f"{rel}/") for e in expected):
            bad.append(str(rel))
    return bad


def _complete_image(p: Path) -> None:
    from lineclear.check import file_problem

    assert file_problem(p) is None, f"{p}: {file_problem(p)}"  # the end marker is there: not cut short
    assert read_raw(p).size


class Rounds:
    """Seeded kill delays, spread uniformly over a command's run time (plus 10 %, so some runs finish)."""

    def __init__(self, name: str, kills: int) -> None:
        self.rng = random.Random(f"{SEED}-{name}")
        self.kills, self.name = kills, name
        self.finished = self.killed = 0
        self.kept = 0  # check --watch: sets that killed runs had logged (all of them kept)

    def delays(self, seconds: float, start: float = 0.0):
        for _ in range(self.kills):
            yield self.rng.uniform(start, 1.1 * seconds)

    def count(self, status: int) -> None:
        assert status in (0, KILLED), f"{self.name}: exit {status}"
        self.killed += status == KILLED
        self.finished += status == 0


@pytest.fixture(scope="module")
def line(tmp_path_factory, host: KillHost) -> dict:
    """A view, a template run with calibrated thresholds, and its bundle."""
    tmp = host.cwd
    view = make_view(tmp / "data", "A", seed=1)
    run = tmp / "runs" / "A"
    host.run("-q", "train", view, "--model", "template", "--image-size", "48x64", "--shifts", "0", "--out", run,
             *FAST)
    host.run("-q", "score", run, view, "--split", "val", "--out", run / "val_maps.h5", "--shifts", "0", *FAST)
    host.run("-q", "calibrate", run / "val_maps.h5", "--method", "max", "--out", run / "thresholds.json")
    host.run("-q", "deploy", run, "--out", tmp / "deployed" / "line")
    return {"view": view, "run": run, "bundle": tmp / "deployed" / "line"}


def _train_rounds(host: KillHost, line: dict, base: Path, kills: int) -> Rounds:
    rounds = Rounds("train", kills)
    args = ("-q", "train", line["view"], "--model", "template", "--image-size", "48x64", "--shifts", "0", *FAST)
    seconds, _ = host.run(*args, "--out", base / "killed_runs" / "full")
    for i, delay in enumerate(rounds.delays(seconds)):
        out = base / "killed_runs" / f"r{i:02d}"
        status, _ = host.kill_after(delay, *args, "--out", out)
        rounds.count(status)
        if not out.exists():
            continue
        files = {p.name for p in out.iterdir()}
        assert not _litter(out, {"config.json", "model.pt", "train_log.jsonl", "train_state.pt"}), files
        if (out / "model.pt").exists():
            _, meta = load_checkpoint(out / "model.pt")
            assert meta["model"] == "template"
        if (out / "config.json").exists():
            assert read_json(out / "config.json", RUN_SCHEMA)["model"] == "template"
        if (out / "train_log.jsonl").exists():
            done = (out / "train_log.jsonl").read_bytes().split(b"\n")[:-1]
            assert all(isinstance(json.loads(x), dict) for x in done)
        if status == 0:
            assert (out / "model.pt").exists()
    return rounds


def _score_rounds(host: KillHost, line: dict, base: Path, kills: int) -> Rounds:
    rounds = Rounds("score", kills)
    maps = base / "scored" / "test_maps.h5"
    args = ("-q", "score", line["run"], line["view"], "--split", "test", "--out", maps, "--shifts", "0", *FAST)
    seconds, _ = host.run(*args)
    for delay in rounds.delays(seconds):
        before = maps.read_bytes()
        status, _ = host.kill_after(delay, *args, "--overwrite")
        rounds.count(status)
        if maps.read_bytes() != before:  # not the previous file: then the complete new one
            with MapsFile(maps) as f:
                assert len(f) == 1 and f.attrs["model"] == "template"
                assert [m.shape for _, m, _ in f.iter_batches()] == [(1, 48, 64)]
        assert not _litter(maps.parent, {maps.name})
        assert not list_images(maps.parent)
    return rounds


def _register_rounds(host: KillHost, line: dict, base: Path, kills: int) -> Rounds:
    rounds = Rounds("register", kills)
    out = base / "reg" / "registered"
    report = base / "reg" / "registration.json"
    args = ("-q", "register", line["view"] / "train" / "good", "--ref", line["view"] / "reference.png",
            "--out", out, "--report", report, "--jobs", "1")
    seconds, _ = host.run(*args)
    for delay in rounds.delays(seconds):
        before = _snapshot(out.parent)
        status, _ = host.kill_after(delay, *args, "--overwrite")
        rounds.count(status)
        after = _snapshot(out.parent)
        # every output is there: the previous one or the complete new one (a killed run's temporary file may
        # be in `before` and gone after, with the folder it was left in replaced)
        def outputs(snap: dict) -> set:
            return {k for k in snap if not LITTER.match(Path(k).name)}
        assert outputs(after) == outputs(before)
        for rel, data in after.items():
            p = out.parent / rel
            if rel not in before or data == before[rel]:
                continue
            if p == report:
                assert len(read_report(report)["images"]) == 5
            elif rel.endswith(".json"):
                assert read_marker(p)["reference"]
            elif "_valid" in rel:
                assert read_mask(p).any()
            else:
                _complete_image(p)
        assert not _litter(out.parent, set(before))
        assert len(list_images(out)) == 5
    return rounds


def _deploy_rounds(host: KillHost, line: dict, base: Path, kills: int) -> Rounds:
    rounds = Rounds("deploy", kills)
    bundle = line["bundle"]
    args = ("-q", "deploy", line["run"], "--out", bundle, "--overwrite")
    seconds, _ = host.run(*args)
    for delay in rounds.delays(seconds):
        status, _ = host.kill_after(delay, *args)
        rounds.count(status)
        b = read_manifest(bundle)  # never missing: the previous bundle or the new one
        assert verify_files(b) == {} and list(b.views) == ["A"]
        assert read_thresholds(b.views["A"].thresholds)["method"] == "max"
        assert all(LITTER.match(p.name) for p in bundle.parent.iterdir() if p != bundle)
        assert not _litter(bundle, set(b.files) | {"manifest.json"})
    return rounds


def _watch_rounds(host: KillHost, line: dict, base: Path, kills: int, sets: int = 6) -> Rounds:
    rounds = Rounds("check --watch", kills)
    bundle = line["bundle"]
    log = base / "verdicts.jsonl"
    src = line["view"] / "test" / "good" / "000.png"

    def args(i: int):
        inbox = base / "inbox" / f"w{i:02d}"
        inbox.mkdir(parents=True)
        for k in range(sets):
            shutil.copyfile(src, inbox / f"A_{k:03d}.png")
        return ("-q", "check", bundle, "--watch", inbox, "--existing", "--log", log, "--max-sets", str(sets),
                "--settle", "0.05", "--poll", "0.02", "--timeout", "60", *FAST)

    t0 = time.monotonic()
    pid, out = host.start(*args(99))
    _first_line(out, timeout=60)
    first_set = time.monotonic() - t0
    assert host.wait(pid) == 0
    seconds = time.monotonic() - t0
    total = sets
    assert [r["set"] for r in read_verdict_log(log).records] == list(range(1, sets + 1))
    for i, delay in enumerate(rounds.delays(seconds - first_set)):
        before = log.read_bytes()
        # every other kill times from the start (start-up included), the others from the first set
        status, out = host.kill_after(delay if i % 2 else delay * seconds / (seconds - first_set), *args(i),
                                      after_output=i % 2 == 1)
        rounds.count(status)
        data = log.read_bytes()
        assert data.startswith(before)  # every line written before this run is intact
        vlog = read_verdict_log(log)  # refuses nothing: a torn last line at most, set apart
        assert vlog.complete_bytes + len(vlog.torn) == len(data)
        new = vlog.records[total:]
        reported = [json.loads(x)["set"] for x in Path(f"{out}.out").read_text().splitlines() if x.strip()]
        # each set is printed only after its log line was fsynced: none of them may be missing
        assert [r["set"] for r in new][:len(reported)] == reported
        assert [r["set"] for r in new] == list(range(1, len(new) + 1))
        assert all(r["view"] == "A" and validate_log_record(log, r) is None for r in new)
        if status == 0:
            assert len(new) == sets
        else:
            assert new or i % 2 == 0  # killed after its first set was printed: that set is in the log
            rounds.kept += len(new)
        total = len(vlog.records)
    return rounds


STAGES = [_train_rounds, _score_rounds, _register_rounds, _deploy_rounds, _watch_rounds]


def test_sigkill_leaves_previous_or_new_outputs(host: KillHost, line: dict) -> None:
    rounds = [stage(host, line, host.cwd / "ci", KILLS) for stage in STAGES]
    _record(rounds)
    assert sum(r.killed for r in rounds) >= len(rounds)  # the kills did land mid-run


@pytest.mark.slow
def test_sigkill_many(host: KillHost, line: dict) -> None:
    rounds = [stage(host, line, host.cwd / "many", 25) for stage in STAGES]
    _record(rounds)
    assert all(r.killed >= 10 for r in rounds)


def _record(rounds: list[Rounds]) -> None:
    from tests import fuzzing

    for r in rounds:
        k, f, kept = fuzzing.KILLS.get(r.name, (0, 0, 0))
        fuzzing.KILLS[r.name] = (k + r.killed, f + r.finished, kept + r.kept)
