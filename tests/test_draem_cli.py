"""DRAEM through the CLI: `train --model draem` on a tiny view, then `score` → a valid maps file."""

from __future__ import annotations

import json

import numpy as np
import torch
import pytest

from lineclear.formats import MapsFile, load_checkpoint, read_mask
from tests.conftest import run_cli


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_train_then_score_pre_and_post(tiny_view, tmp_path):
    run = tmp_path / "run"
    code = run_cli(["-q", "train", str(tiny_view), "--model", "draem", "--preset", "demo", "--epochs", "2",
                    "--batch-size", "2", "--image-size", "32x64", "--out", str(run), "--device", "cpu"])
    assert code == 0
    sd, meta = load_checkpoint(run / "model.pt")
    assert meta["model"] == "draem" and meta["config"]["image_size"] == [32, 64]
    assert any(k.startswith("discriminative.") for k in sd) and any(k.startswith("reconstructive.") for k in sd)
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "epoch" in r][-1] == 2

    roi = read_mask(tiny_view / "roi.png")
    outs = {}
    for stage in ("pre", "post"):
        out = tmp_path / f"{stage}.h5"
        code = run_cli(["-q", "score", str(run / "model.pt"), str(tiny_view / "test"), "--out", str(out),
                        "--mask", str(tiny_view / "roi.png"), "--mask-stage", stage, "--device", "cpu"])
        assert code == 0
        with MapsFile(out) as mf:
            assert len(mf) == 4 and mf.map_size == (32, 64)
            maps = np.stack([mf.map(i) for i in range(len(mf))])
            assert sorted(mf.labels.tolist()) == [0, 0, 1, 1]
            assert np.isfinite(maps).all() and np.isfinite(mf.scores).all()
            outs[stage] = (maps, mf.scores.copy())
    import cv2

    m = cv2.resize(roi.astype(np.uint8), (64, 32), interpolation=cv2.INTER_NEAREST) > 0
    for stage, (maps, _) in outs.items():
        assert (maps[:, ~m] == 0).all(), stage  # both stages: zero exactly outside the mask
    assert (outs["post"][0][:, m] > 0).any()

    # the report's overlays carry the reconstruction panel (thesis figure 8), unless told not to
    from lineclear.images import read_rgb
    from lineclear.scoring import load_model

    model, _, _ = load_model(run / "model.pt")
    x = torch.from_numpy(read_rgb(tiny_view / "test" / "good" / "000.png", (32, 64)).transpose(2, 0, 1)[None].copy())
    rec = model.reconstruction(x)
    assert rec.shape == (1, 3, 32, 64) and float(rec.min()) >= 0 and float(rec.max()) <= 1
    val = tmp_path / "val.h5"
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--split", "train", "--out", str(val), "--device", "cpu"]) == 0
    assert run_cli(["-q", "calibrate", str(val), "--out", str(tmp_path / "t.json")]) == 0
    widths = {}
    for flag in ("--reconstructions", "--no-reconstructions"):
        rep = tmp_path / f"rep{flag}"
        assert run_cli(["-q", "evaluate", str(tmp_path / "post.h5"), "-t", str(tmp_path / "t.json"), "--out", str(rep),
                        "--max-overlays", "1", flag]) == 0
        png = next((rep / "overlays").glob("*.png"))
        widths[flag] = cv2.imread(str(png)).shape[1]
    assert widths["--reconstructions"] > 1.2 * widths["--no-reconstructions"]  # one more panel


@pytest.mark.slow
def test_resume_flag_continues_a_run(tiny_view, tmp_path):
    run = tmp_path / "run"
    args = ["-q", "train", str(tiny_view), "--model", "draem", "--preset", "demo", "--image-size", "32x64",
            "--out", str(run), "--device", "cpu"]
    assert run_cli([*args, "--epochs", "2"]) == 0
    state_epoch = json.loads((run / "train_log.jsonl").read_text().splitlines()[-1]).get("epoch")
    assert state_epoch == 2
    assert run_cli([*args, "--epochs", "3", "--resume"]) == 0
    epochs = [json.loads(x).get("epoch") for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e for e in epochs if e is not None][-1] == 3 and epochs.count(1) == 1  # epochs 1–2 were not redone
