"""What lineclear guarantees about files (the README's "Reliability" section points here).

Nothing clobbered: no output is replaced without --overwrite, not even one another run wrote while this
one was working (the final step is a no-replace link). Nothing lost: --overwrite never removes a file
lineclear did not write, and a Ctrl-C leaves no partial output. Each test fails on the code before the fix.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from lineclear.errors import LineclearError, OutputExistsError
from lineclear.formats import MapsFile, atomic_path, check_writable, write_json
from lineclear.images import write_image
from lineclear.models import MODELS
from tests.conftest import run_cli
from tests.toy import toy_entry


@pytest.fixture
def toy_model():
    MODELS["toy"] = toy_entry("toy")
    yield
    MODELS.pop("toy")


@pytest.fixture
def run(tiny_view: Path, tmp_path: Path, toy_model) -> Path:
    out = tmp_path / "run"
    assert run_cli(["-q", "train", str(tiny_view), "--model", "toy", "--out", str(out)]) == 0
    return out


def _err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# -- no-replace at the final rename ---------------------------------------------------------------------------


def test_the_final_rename_never_replaces_a_file_written_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(OutputExistsError, match="was written by another process meanwhile; not replaced"):
        with atomic_path(target) as tmp:
            tmp.write_text("second")
            target.write_text("first")  # another run, started at the same time, finished first
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # and no temporary file is left
    # with --overwrite the later writer wins, as asked
    write_json(target, {"k": 1}, "x/1", overwrite=True)
    assert json.loads(target.read_text())["k"] == 1


def test_two_scores_to_the_same_out_the_second_refuses(run: Path, tiny_view: Path, tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    import lineclear.cli.score as score_cli

    out = tmp_path / "same.h5"
    real = score_cli.score_paths

    def slower(*a, **kw):
        yield from real(*a, **kw)
        # the other `lineclear score --out same.h5` finishes while this one is still writing
        monkeypatch.setattr(score_cli, "score_paths", real)
        assert run_cli(["-q", "score", str(run), str(tiny_view), "--out", str(out), "--split", "train"]) == 0

    monkeypatch.setattr(score_cli, "score_paths", slower)
    capsys.readouterr()
    rc = run_cli(["-q", "score", str(run), str(tiny_view), "--out", str(out)])
    err = _err_lines(capsys)
    assert rc == 1
    assert err[-1] == (f"lineclear: error: {out}: was written by another process meanwhile; not replaced "
                       "(use --overwrite to replace it)")
    with MapsFile(out) as f:  # the other run's file, intact
        assert f.attrs["split"] == "train"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# -- folders are not files --------------------------------------------------------------------------------------


def test_a_folder_as_output_file_is_named_the_first_time(run: Path, tiny_view: Path, tmp_path: Path,
                                                          capsys) -> None:
    folder = tmp_path / "maps_dir"
    folder.mkdir()
    with pytest.raises(LineclearError, match="is a directory, expected a file path"):
        check_writable(folder, overwrite=False)
    for extra in ([], ["--overwrite"]):
        assert run_cli(["-q", "score", str(run), str(tiny_view), "--out", str(folder), *extra]) == 1
        assert _err_lines(capsys) == [f"lineclear: error: {folder}: is a directory, expected a file path"]
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--split", "val", "--out", str(tmp_path / "v.h5")]) == 0
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        assert run_cli(["-q", "calibrate", str(tmp_path / "v.h5"), "--out", str(folder), *extra]) == 1
        assert _err_lines(capsys)[-1] == f"lineclear: error: {folder}: is a directory, expected a file path"
    assert list(folder.iterdir()) == []


# -- train --overwrite deletes only a run's own files ---------------------------------------------------------


def test_train_refuses_a_folder_that_is_not_a_run(tiny_view: Path, tmp_path: Path, toy_model, capsys) -> None:
    work = tmp_path / "v"
    work.mkdir()
    (work / "precious.txt").write_text("x")
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert run_cli(["-q", "train", str(tiny_view), "--model", "toy", "--out", str(work), *extra]) == 1
        assert _err_lines(capsys) == [
            f"lineclear: error: {work}: not a lineclear run directory (no lineclear.run/1 config.json); "
            "choose another --out"]
        assert sorted(p.name for p in work.iterdir()) == ["precious.txt"]
    # nor the dataset itself
    assert run_cli(["-q", "train", str(tiny_view), "--model", "toy", "--out", str(tiny_view), "--overwrite"]) == 1
    assert (tiny_view / "train" / "good" / "000.png").is_file()


def test_train_overwrite_replaces_only_the_runs_files(run: Path, tiny_view: Path, capsys) -> None:
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch_1.pt").write_bytes(b"old")
    (run / "notes.txt").write_text("mine")
    (run / "thresholds.json").write_text("{}")  # another command's output: not train's to remove
    capsys.readouterr()
    assert run_cli(["-q", "train", str(tiny_view), "--model", "toy", "--out", str(run), "--overwrite",
                    "--seed", "3"]) == 0
    assert (run / "notes.txt").read_text() == "mine" and (run / "thresholds.json").read_text() == "{}"
    assert not (run / "checkpoints").exists()  # the old run's checkpoint went, and its empty folder
    assert json.loads((run / "config.json").read_text())["config"]["seed"] == 3
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 1  # a fresh log, not appended to


# -- Ctrl-C ---------------------------------------------------------------------------------------------------


def test_ctrl_c_in_score_says_interrupted_exits_130_and_leaves_nothing(run: Path, tiny_view: Path, tmp_path: Path,
                                                                       monkeypatch, capsys) -> None:
    import lineclear.cli.score as score_cli

    real = score_cli.score_paths

    def interrupted(model, paths, size, *, progress=None, **kw):
        with progress.task("scoring", len(paths)) as task:
            for i, batch in enumerate(real(model, paths, size, **{**kw, "batch_size": 1})):
                if i == 0:
                    try:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(1)  # the handler runs here
                    except KeyboardInterrupt:
                        pass  # dropped, as Python drops one raised in a garbage-collector callback
                task.advance(len(batch.paths))
                yield batch

    monkeypatch.setattr(score_cli, "score_paths", interrupted)
    out = tmp_path / "m.h5"
    capsys.readouterr()
    before = signal.getsignal(signal.SIGINT)  # the default, or SIG_IGN in a shell's background job
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--out", str(out)]) == 130
    assert _err_lines(capsys)[-1] == "lineclear: interrupted"
    assert not out.exists() and not list(tmp_path.glob(".m.h5*"))
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


# -- an image of another size ---------------------------------------------------------------------------------


def test_score_notes_an_image_of_another_size(run: Path, tiny_view: Path, tmp_path: Path, capsys) -> None:
    odd = tiny_view / "test" / "good" / "099.png"
    write_image(odd, np.full((40, 60, 3), 0.4, np.float32))
    capsys.readouterr()
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--out", str(tmp_path / "m.h5")]) == 0
    notes = [line for line in _err_lines(capsys) if "another size" in line]
    assert len(notes) == 1
    assert "1 image(s) of another size than 48x32 (the first image's): 60x40 (099.png)" in notes[0]
    with MapsFile(tmp_path / "m.h5") as f:
        assert "V/test/good/099.png" in f.image_ids and f.map_size == (16, 24)
