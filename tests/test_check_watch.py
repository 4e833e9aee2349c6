"""``lineclear check --watch``: complete files only, image sets, the log, surviving bad images."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from lineclear.line.checker import Checker
from lineclear.line.watch import FileTracker, SetAssembler, WatchOptions, watch
from tests.conftest import run_cli
from tests.test_check import LEAFLET, _image, bundle  # noqa: F401 - the module-scoped bundle fixture
from tests.test_deploy import make_scene  # noqa: F401


pytestmark = pytest.mark.usefixtures("restore_thread_counts")


def _slow_write(data: bytes, dest: Path, chunks: int = 6, pause: float = 0.25) -> threading.Thread:
    """Write ``data`` to ``dest`` in chunks with pauses, like a camera saving over a slow network."""

    def run() -> None:
        step = -(-len(data) // chunks)
        with open(dest, "wb") as f:
            for i in range(0, len(data), step):
                f.write(data[i:i + step])
                f.flush()
                time.sleep(pause)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def checker(bundle: Path) -> Checker:  # noqa: F811
    return Checker(bundle, "cpu", torch_threads=None)


def test_watch_picks_up_a_file_written_slowly(checker: Checker, tmp_path: Path) -> None:
    src = tmp_path / "src"
    a = _image(1, src / "A.png").read_bytes()
    b = _image(2, src / "B.png").read_bytes()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "old_A.png").write_bytes(a)  # there before watching starts: ignored
    log = tmp_path / "verdicts.jsonl"
    results = []
    writer = None

    def start_writing() -> None:
        nonlocal writer
        time.sleep(0.3)
        (inbox / "B.png").write_bytes(b)
        writer = _slow_write(a, inbox / "A.png")  # ~1.5 s, with pauses longer than the poll interval

    threading.Thread(target=start_writing, daemon=True).start()
    t0 = time.monotonic()
    summary = watch(checker, inbox, WatchOptions(poll=0.05, settle=0.4, set_timeout=30, max_sets=1, timeout=30),
                    log_path=log, on_result=lambda r, n: results.append((time.monotonic() - t0, r)))
    assert summary.sets == 1 and summary.stopped_by == "max_sets"
    elapsed, result = results[0]
    assert elapsed > 1.5  # not before the slow file was complete
    assert result.verdict == "clear", [v.reason for v in result.views]
    records = _read_log(log)
    assert [r["view"] for r in records] == ["A", "B"] and all(r["set"] == 1 for r in records)
    assert records[0]["image"].endswith("inbox/A.png") and records[0]["set_verdict"] == "clear"
    writer.join()


def test_watch_survives_bad_images_and_times_out_incomplete_sets(checker: Checker, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    log = tmp_path / "verdicts.jsonl"
    stop = threading.Event()
    results = []

    def feed() -> None:
        time.sleep(0.2)
        (inbox / "A_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage that never decodes IEND\xaeB`\x82")
        _image(2, inbox / "B_1.png")
        while len(results) < 1:
            time.sleep(0.05)
        _image(1, inbox / "A_2.png", leaflet=LEAFLET)  # set 2 never gets its B image
        (inbox / "notes.txt").write_text("ignored")
        _image(1, inbox / "unrelated.png")  # matches no view: ignored, the watch goes on
        while len(results) < 2:
            time.sleep(0.05)
        stop.set()

    threading.Thread(target=feed, daemon=True).start()
    events = []
    summary = watch(checker, inbox, WatchOptions(poll=0.05, settle=0.2, set_timeout=1.0, timeout=30), log_path=log,
                    on_result=lambda r, n: results.append(r), on_event=events.append, stop=stop)
    assert summary.stopped_by == "stop" and summary.sets == 2
    assert summary.counts == {"clear": 0, "leftover": 0, "undecided": 2}
    first, second = results
    assert first.views[0].verdict == "undecided" and first.views[0].reason.startswith("unreadable image")
    assert first.views[1].verdict == "clear"
    assert second.views[0].verdict == "leftover" and second.views[0].regions
    assert second.views[1].verdict == "undecided" and "within 1 s" in second.views[1].reason
    assert summary.ignored == [str(inbox / "unrelated.png")]
    assert any("unrelated.png: matches no view" in e for e in events)
    records = _read_log(log)
    assert [(r["set"], r["view"], r["verdict"]) for r in records] == [
        (1, "A", "undecided"), (1, "B", "clear"), (2, "A", "leftover"), (2, "B", "undecided")]
    assert all(r["set_exit_code"] == 4 for r in records)


def test_set_assembly_rules() -> None:
    now = [0.0]
    s = SetAssembler(["A", "B"], set_timeout=5, clock=lambda: now[0])
    assert s.add("A", Path("A1")) == [] and not s.due()
    assert s.add("B", Path("B1")) == [{"A": Path("A1"), "B": Path("B1")}]  # complete: checked at once
    assert s.add("A", Path("A2")) == []
    assert s.add("A", Path("A3")) == [{"A": Path("A2")}]  # a view's next image closes the open set
    now[0] = 5.0
    assert s.due() and s.flush() == {"A": Path("A3")}


def test_file_tracker_waits_until_a_file_stops_changing(tmp_path: Path) -> None:
    now = [0.0]
    t = FileTracker(tmp_path, settle=1.0, clock=lambda: now[0])
    p = tmp_path / "A.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 10)
    assert t.poll() == []  # first seen
    now[0] = 0.5
    assert t.poll() == []
    with open(p, "ab") as f:
        f.write(b"more")  # grew: the clock restarts
    now[0] = 1.2
    assert t.poll() == []
    now[0] = 2.3
    assert t.poll() == []  # settled but no PNG end chunk yet: the writer may only have paused
    with open(p, "ab") as f:
        f.write(b"IEND\xaeB`\x82")
    now[0] = 2.4
    t.poll()
    now[0] = 3.5
    assert t.poll() == [p]
    assert t.poll() == []  # reported once
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "B.png.part").write_bytes(b"x")
    now[0] = 9.0
    t.poll()
    now[0] = 20.0
    assert t.poll() == []


def test_watch_cli_appends_the_log_and_prints_one_line_per_set(bundle: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    log = tmp_path / "v.jsonl"
    log.write_text('{"earlier": true}\n')

    def feed() -> None:
        time.sleep(1.0)
        _image(1, inbox / "A.png")
        _image(2, inbox / "B.png")

    threading.Thread(target=feed, daemon=True).start()
    rc = run_cli(["check", str(bundle), "--watch", str(inbox), "--log", str(log), "--max-sets", "1",
                  "--timeout", "60", "--settle", "0.2", "--poll", "0.05", "--device", "cpu",
                  "--overlay-dir", str(tmp_path / "ov")])
    captured = capsys.readouterr()
    assert rc == 0
    lines = [json.loads(x) for x in captured.out.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0]["set"] == 1 and lines[0]["verdict"] == "clear"
    records = _read_log(log)
    assert records[0] == {"earlier": True} and [r["view"] for r in records[1:]] == ["A", "B"]
    assert "stopped (max_sets) after 1 set(s)" in captured.err
    assert (tmp_path / "ov" / "set000001_A__A.png").is_file()
