"""End to end on the synthetic dataset: synth → train (patchcore, demo) → score → calibrate → deploy → check.

A clear image set exits 0 (including a camera-shifted image that registration has to undo); a set with a
leaflet left behind exits 3 with the leaflet's region in the verdict JSON.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lineclear.formats import read_mask
from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("restore_thread_counts")]


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _iou(a: list[int], b: list[int]) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_synthetic_line_end_to_end(tmp_path: Path, capsys) -> None:
    from lineclear.models import MODELS
    from lineclear.synth import generate

    assert "patchcore" in MODELS
    data = tmp_path / "data"
    generate(data, views=("A",), size=(288, 192), seed=0, n_train=10, n_good=1, n_shifted=1, n_anomalous=1)
    view, run = data / "A", tmp_path / "run_A"
    assert run_cli(["-q", "train", str(view), "--model", "patchcore", "--preset", "demo", "--image-size", "128x192",
                    "--out", str(run), "--device", "cpu"]) == 0
    assert run_cli(["-q", "score", str(run), str(view), "--split", "val", "--out", str(run / "val_maps.h5"),
                    "--mask", str(view / "roi.png"), "--mask-stage", "post"]) == 0
    assert run_cli(["-q", "calibrate", str(run / "val_maps.h5"), "--method", "ksigma"]) == 0
    line = tmp_path / "line"
    assert run_cli(["-q", "deploy", str(run), "--out", str(line)]) == 0
    manifest = json.loads((line / "manifest.json").read_text())
    assert manifest["views"]["A"]["mask_stage"] == "post"  # as calibrated

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(view / "test" / "good" / "shift_000.png", inbox / "A.png")
    capsys.readouterr()
    rc = run_cli(["check", str(line), str(inbox / "A.png"), "--device", "cpu"])
    clear = json.loads(capsys.readouterr().out)
    assert rc == 0 and clear["verdict"] == "clear", clear["views"][0]["reason"]
    assert clear["views"][0]["registration"]["ok"] and clear["views"][0]["registration"]["max_corner_shift_px"] > 1

    leaflet = view / "test" / "leaflet" / "leaflet_000.png"
    rc = run_cli(["check", str(line), "--view", f"A={leaflet}", "--device", "cpu", "--overlay-dir", str(tmp_path / "ov")])
    doc = json.loads(capsys.readouterr().out)
    v = doc["views"][0]
    assert rc == 3 and v["verdict"] == "leftover" and v["score"] > v["threshold"]
    truth = _bbox(read_mask(view / "ground_truth" / "leaflet" / "leaflet_000_mask.png"))
    best = v["regions"][0]  # regions come strongest first: the leaflet's
    assert _iou(best["bbox"], truth) > 0, (best, truth)
    x, y, w, h = truth
    px, py = best["peak_xy"]
    assert x - 4 <= px <= x + w + 4 and y - 4 <= py <= y + h + 4, (best, truth)  # its peak is on the leaflet
    bx, by, bw, bh = best["bbox"]
    assert bx <= x + w / 2 <= bx + bw and by <= y + h / 2 <= by + bh
    assert Path(v["overlay"]).is_file()
