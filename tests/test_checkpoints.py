"""Scoring a run's intermediate checkpoints, and choosing among them (thesis figures 20–21)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineclear.formats import MapsFile, load_checkpoint, save_checkpoint
from lineclear.models import MODELS
from lineclear.report.tables import markdown_table
from lineclear.selection import line_pick, selections, spread, thesis_pick
from tests.conftest import run_cli
from tests.toy import toy_entry


@pytest.fixture
def run_with_checkpoint(tiny_view: Path, tmp_path: Path):
    MODELS["toyckpt"] = toy_entry("toyckpt")
    run = tmp_path / "run"
    assert run_cli(["-q", "train", str(tiny_view), "--model", "toyckpt", "--out", str(run), "--device", "cpu"]) == 0
    sd, meta = load_checkpoint(run / "model.pt")
    sd = {k: v * 0.5 for k, v in sd.items()}  # another state: an earlier epoch's
    save_checkpoint(run / "checkpoints" / "epoch_3.pt", sd, {**meta, "epoch": 3})
    yield tiny_view, run
    MODELS.pop("toyckpt", None)


def test_score_a_checkpoint_by_epoch_or_all_of_them(run_with_checkpoint, tmp_path: Path, capsys) -> None:
    view, run = run_with_checkpoint
    base = ["-q", "score", str(run), str(view), "--split", "test"]
    assert run_cli([*base, "--checkpoint-epoch", "3", "--out", str(tmp_path / "e3.h5")]) == 0
    assert run_cli([*base, "--out", str(tmp_path / "final.h5")]) == 0
    with MapsFile(tmp_path / "e3.h5") as a, MapsFile(tmp_path / "final.h5") as b:
        assert a.attrs["checkpoint_epoch"] == 3 and a.attrs["checkpoint"].endswith("checkpoints/epoch_3.pt")
        assert "checkpoint_epoch" not in b.attrs and b.attrs["checkpoint"].endswith("model.pt")
        assert not np.allclose(a.scores, b.scores)  # another state, other maps
        e3_scores, final_scores = np.array(a.scores), np.array(b.scores)
    capsys.readouterr()
    assert run_cli([*base, "--checkpoint-epoch", "7", "--out", str(tmp_path / "e7.h5")]) == 1
    err = capsys.readouterr().err
    assert "no checkpoint of epoch 7" in err and "saved epochs: 3" in err
    assert run_cli([*base, "--all-checkpoints", "--out", str(tmp_path / "all.h5")]) == 0
    with MapsFile(tmp_path / "all.h5") as f, MapsFile(tmp_path / "all@e3.h5") as g:
        assert np.allclose(f.scores, final_scores) and np.allclose(g.scores, e3_scores)
    assert run_cli([*base, "--all-checkpoints", "--out", str(tmp_path / "all.h5")]) == 1  # exists: --overwrite
    assert run_cli([*base, "--all-checkpoints", "--checkpoint-epoch", "3"]) == 2


def _doc(config: str, acc: float, auroc: float, mean: float | None, std: float | None, epoch=None) -> dict:
    src = {"model": "draem", "view": "A", **({"checkpoint_epoch": epoch} if epoch is not None else {})}
    return {"config_name": config, "source": src,
            "summary": {"auroc_image": auroc, "auroc_pixel": 0.9, "aupro": 0.8, "ap": 0.5, "iou": 0.4,
                        "accuracy": acc, "method": "max", "level": "image"},
            "validation": {"image": {} if mean is None else {"mean": mean, "std": std}}}


def test_the_two_selections() -> None:
    docs = [_doc("PO+M+R@e2000", 0.90, 0.95, 2.0, 0.4, 2000),   # spread 0.20
            _doc("PO+M+R@e2250", 0.95, 0.97, 10.0, 3.0, 2250),  # spread 0.30, best on the test labels
            _doc("PO+M+R", 0.85, 0.99, 1.0, 0.1)]                # spread 0.10: the line's choice
    assert [spread(d) for d in docs] == pytest.approx([0.2, 0.3, 0.1])
    assert thesis_pick(docs) == 1 and line_pick(docs) == 2
    assert line_pick([_doc("X", 0.5, 0.5, None, None)]) is None
    other = _doc("PRE+M+R", 0.5, 0.5, 1.0, 0.5)  # alone in its configuration: no selection
    assert selections([*docs, other]) == ["", "test labels", "validation", ""]
    tie = [_doc("C@e1", 0.9, 0.9, 1.0, 0.1, 1), _doc("C", 0.8, 0.9, 1.0, 0.2)]
    assert selections(tie) == ["both", ""]
    md = markdown_table([*docs, other])
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "| checkpoint | epoch 2000 | epoch 2250 | final | final |" in md
    assert rows["selected"].split("|")[2:6] == [" – ", " test labels ", " validation ", " – "]
    assert "chosen on the test labels" in md and "chosen without test labels" in md
