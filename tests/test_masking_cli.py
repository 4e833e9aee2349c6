"""``lineclear mask``: VIA regions to an inspection mask, dilate/erode, preview, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import run_cli

from lineclear.formats import read_mask, write_mask
from lineclear.formats.via import ImageAnnotation, write_via_csv
from lineclear.images import read_raw, write_image
from lineclear.labels import Region, validate_shape

H, W = 60, 90


def _via(path: Path, shapes: list[dict], name: str = "reference.png") -> Path:
    regions = [Region(shape=validate_shape(s)) for s in shapes]
    write_via_csv(path, [ImageAnnotation(filename=name, regions=regions), ImageAnnotation(filename="other.png")])
    return path


def _ref(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_image(tmp_path / "reference.png", rng.integers(0, 255, (H, W, 3)).astype(np.uint8))


def test_ignore_regions_to_mask_and_preview(tmp_path, capsys):
    ref = _ref(tmp_path)
    via = _via(tmp_path / "ignore.csv", [
        {"name": "rect", "x": 10, "y": 5, "width": 20, "height": 10},
        {"name": "polygon", "all_points_x": [50, 80, 80, 50], "all_points_y": [30, 30, 55, 55]},
    ])
    out, prev = tmp_path / "roi.png", tmp_path / "overlay.png"
    assert run_cli(["mask", "--ignore", str(via), "--ref", str(ref), "--out", str(out), "--preview", str(prev),
                    "--json"]) == 0
    raw = read_raw(out)
    assert raw.dtype == np.uint8 and raw.shape == (H, W) and set(np.unique(raw)) == {0, 255}
    m = raw > 0
    assert not m[5:15, 10:30].any() and m[5:15, 30:50].all()  # the rect is ignored, exactly
    assert not m[30:55, 50:80].any() and m[:30, 50:80].all()
    expect = 1 - (20 * 10 + 30 * 25) / (H * W)
    doc = json.loads(capsys.readouterr().out)
    assert abs(doc["inspect_fraction"] - expect) < 1e-6 and doc["size"] == [W, H]
    p = read_raw(prev)
    assert p.shape == (H, W, 3)
    r = read_raw(ref)
    assert not np.array_equal(p[8, 20], r[8, 20])  # ignored: tinted


def test_keep_from_and_dilate(tmp_path):
    ref = _ref(tmp_path)
    keep = _via(tmp_path / "keep.csv", [{"name": "rect", "x": 0, "y": 0, "width": 60, "height": 60}])
    base = np.ones((H, W), bool)
    base[:, :10] = False
    write_mask(tmp_path / "base.png", base)
    out = tmp_path / "m.png"
    assert run_cli(["mask", "--keep", str(keep), "--from", str(tmp_path / "base.png"), "--ref", str(ref),
                    "--out", str(out), "--dilate", "2"]) == 0
    m = read_mask(out)
    # inspected = columns 10..59, then the ignored area grows by 2 px on both sides
    assert m[:, 12:58].all() and not m[:, :12].any() and not m[:, 58:].any()
    # --erode shrinks the ignored area back; the existing mask is refused without --overwrite
    assert run_cli(["mask", "--from", str(out), "--out", str(out), "--erode", "2"]) == 1
    assert run_cli(["mask", "--from", str(out), "--out", str(out), "--erode", "2", "--overwrite"]) == 0
    m2 = read_mask(out)
    assert m2[:, 10:60].all() and not m2[:, :10].any()


def test_mask_bad_input(tmp_path, capsys):
    ref = _ref(tmp_path)
    empty = tmp_path / "empty.csv"
    write_via_csv(empty, [ImageAnnotation(filename="reference.png")])
    out = tmp_path / "m.png"
    assert run_cli(["mask", "--ignore", str(empty), "--ref", str(ref), "--out", str(out)]) == 1
    assert "no regions" in capsys.readouterr().err
    assert not out.exists()
    assert run_cli(["mask", "--ref", str(ref), "--out", str(out)]) == 2  # no source
    via = _via(tmp_path / "i.csv", [{"name": "rect", "x": 1, "y": 1, "width": 3, "height": 3}])
    assert run_cli(["mask", "--ignore", str(via), "--out", str(out)]) == 2  # no size
    assert run_cli(["mask", "--ignore", str(via), "--size", "90x60", "--preview", str(tmp_path / "p.png")]) == 2
    assert run_cli(["mask", "--ignore", str(via), "--size", "ninety", "--out", str(out)]) == 2
    assert run_cli(["mask", "--ignore", str(tmp_path / "missing.csv"), "--size", "90x60", "--out", str(out)]) == 1
    assert not out.exists()
    assert run_cli(["mask", "--ignore", str(via), "--size", "90x60", "--out", str(out)]) == 0
    assert read_mask(out).shape == (60, 90)
