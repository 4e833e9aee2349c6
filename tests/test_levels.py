"""Threshold level (thesis 3.5): calibrate --level, and every reader deciding at the file's level."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lineclear.errors import FormatError
from lineclear.evaluate import GroundTruth, evaluate
from lineclear.formats import MapsFile, MapsWriter, provenance, read_thresholds, write_thresholds
from lineclear.report.tables import markdown_table, threshold_labels
from tests.test_evaluate_cli import _run, make_run


def _tiny_val(path: Path) -> None:
    """Two normal 2x2 maps (one pixel not counted) and one anomalous map calibrate must leave out."""
    maps = np.array([[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]], [[9.0, 9.0], [9.0, 9.0]]], np.float32)
    valid = np.ones((3, 2, 2), bool)
    valid[0, 0, 0] = False  # the 0.1 does not count
    attrs = provenance(model="toy", view="A", map_size=[2, 2], mask_stage="post", split="val")
    ids = ["A/val/good/0.png", "A/val/good/1.png", "A/test/leaflet/2.png"]
    with MapsWriter(path, (2, 2), attrs=attrs, with_valid=True) as w:
        w.append(maps, np.array([0.4, 0.8, 9.0], np.float32), ids, [0, 0, 1], valid=valid)


def test_pixel_level_reproduces_hand_worked_thresholds(tmp_path: Path, capsys) -> None:
    _tiny_val(tmp_path / "val.h5")
    out = tmp_path / "t.json"
    assert _run(["calibrate", str(tmp_path / "val.h5"), "--method", "all", "--level", "pixel", "--p", "0.5",
                 "--k", "1", "--out", str(out)]) == 0
    # the counted normal pixels are 0.2 … 0.8: max 0.8, median 0.5, mean 0.5, population σ 0.2
    got = {m: read_thresholds(tmp_path / f"t_{m}.json") for m in ("max", "quantile", "ksigma")}
    assert got["max"]["pixel"]["threshold"] == pytest.approx(0.8)
    assert got["quantile"]["pixel"]["threshold"] == pytest.approx(0.5)
    assert got["ksigma"]["pixel"]["threshold"] == pytest.approx(0.7)
    assert all(d["level"] == "pixel" and d["schema"] == "lineclear.thresholds/2" for d in got.values())
    # image-level statistics are still recorded beside them (2 normal scores: 0.4 and 0.8)
    assert got["ksigma"]["image"]["threshold"] == pytest.approx(0.6 + 0.2)
    err = capsys.readouterr().err
    assert "Samuelson" not in err  # the pixel level does not rest on the image scores


def test_pixel_thresholds_match_numpy_over_the_counted_pixels(tmp_path: Path, capsys) -> None:
    d = make_run(tmp_path, n_val=5)
    maps = d["run"] / "val_maps.h5"
    assert _run(["calibrate", str(maps), "--method", "all", "--level", "both", "--p", "0.9", "--k", "2"]) == 0
    pix = d["vmaps"][:, d["valid"]].astype(np.float64).ravel()
    oracle = {"max": pix.max(), "quantile": np.percentile(pix, 90), "ksigma": pix.mean() + 2 * pix.std()}
    for m, t in oracle.items():
        for lv in ("pixel", "image"):
            doc = read_thresholds(d["run"] / f"thresholds_{m}_{lv}.json")
            assert doc["level"] == lv and doc["method"] == m
            assert doc["pixel"]["threshold"] == pytest.approx(t, rel=1e-6)
    # the image rule rests on 5 scores: Samuelson's bound is stated, and k=2 ≥ √4 puts ksigma above max
    err = capsys.readouterr().err
    assert "Samuelson" in err and "μ + 2.00σ" in err and "ksigma with k=2 ≥ 2.00 lies above max" in err
    s = d["vscores"].astype(np.float64)
    img = read_thresholds(d["run"] / "thresholds_ksigma_image.json")["image"]["threshold"]
    assert img >= s.max() - 1e-9 and s.max() <= s.mean() + math.sqrt(len(s) - 1) * s.std() + 1e-9


def test_level_option_is_checked_and_default_is_image(tmp_path: Path, capsys) -> None:
    d = make_run(tmp_path)
    assert _run(["calibrate", str(d["run"] / "val_maps.h5"), "--level", "voxel"]) == 2
    assert _run(["calibrate", str(d["run"] / "val_maps.h5")]) == 0
    assert read_thresholds(d["run"] / "thresholds.json")["level"] == "image"
    assert "Samuelson" in capsys.readouterr().err


def _doc(level: str, pixel: float | None, image: float | None) -> dict:
    return {"method": "max", "params": {}, "level": level, "pixel": {"threshold": pixel, "stats": {}},
            "image": {"threshold": image, "stats": {}}, "source": {"view": "A", "model": "toy"}}


def test_old_files_read_as_image_level_and_bad_levels_are_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    doc = _doc("image", 0.5, 0.7)
    doc.pop("level")
    old.write_text(json.dumps({"schema": "lineclear.thresholds/1", **doc}))
    assert read_thresholds(old)["level"] == "image"
    (tmp_path / "v3.json").write_text(json.dumps({"schema": "lineclear.thresholds/3", **doc}))
    with pytest.raises(FormatError, match="not supported"):
        read_thresholds(tmp_path / "v3.json")
    with pytest.raises(FormatError, match="'level' must be one of"):
        write_thresholds(tmp_path / "bad.json", _doc("voxel", 0.5, 0.7))
    with pytest.raises(FormatError, match="pixel threshold, which is null"):
        write_thresholds(tmp_path / "bad.json", _doc("pixel", None, 0.7))


def test_evaluate_decides_at_each_files_level(tmp_path: Path) -> None:
    d = make_run(tmp_path, n_good=5, n_bad=5)
    t = 0.62
    maps = d["maps"]
    docs = [_doc("pixel", t, 1e9), _doc("image", t, float(np.median(d["scores"])))]
    for i, x in enumerate(docs):
        x["path"] = f"t{i}.json"
    with MapsFile(d["run"] / "test_maps.h5") as f:
        res = evaluate(f, docs, GroundTruth(d["root"]))
    y = d["labels"] == 1
    pred_pixel = np.array([(m[d["valid"]] > t).any() for m in maps])
    pred_image = d["scores"] > docs[1]["image"]["threshold"]
    for e, pred in zip(res["thresholds"], (pred_pixel, pred_image)):
        assert e["image"]["tp"] == int((pred & y).sum()) and e["image"]["fp"] == int((pred & ~y).sum())
        assert e["image"]["fn"] == int((~pred & y).sum())
    assert [e["level"] for e in res["thresholds"]] == ["pixel", "image"]
    # the pixel level ignored its image threshold of 1e9 (an image-level decision would flag nothing)
    assert pred_pixel.any() and res["thresholds"][0]["image"]["threshold"] == t
    best = res["best"]["index"]
    chosen = (pred_pixel, pred_image)[best]
    assert [r["verdict"] == "anomalous" for r in res["images"]] == list(chosen)
    assert res["summary"]["level"] == res["best"]["level"] == ("pixel", "image")[best]
    # the table says which rule and level each column's figures were decided with
    res["config_name"] = "PO+M+NR"
    md = markdown_table([res])
    assert f"| threshold | max · {res['summary']['level']} |" in md and "| checkpoint | final |" in md
    assert threshold_labels(res["thresholds"]) == ["max · pixel", "max · image"]


def test_a_spike_outside_the_counted_pixels_does_not_decide(tmp_path: Path) -> None:
    d = make_run(tmp_path, n_good=3, n_bad=3)
    maps = d["maps"].copy()
    maps[0][~d["valid"]] = 50.0  # normal image 0: a spike where nothing counts
    with MapsFile(d["run"] / "test_maps.h5") as f:
        attrs = dict(f.attrs)
    with MapsWriter(tmp_path / "spiked.h5", maps.shape[1:], attrs=attrs, with_valid=True) as w:
        w.append(maps, d["scores"], [f"A/test/{'leaflet' if b else 'good'}/{i:03d}.png" for i, b in
                                     enumerate(d["labels"])], list(d["labels"]),
                 valid=np.repeat(d["valid"][None], len(maps), 0))
    t = float(max(m[d["valid"]].max() for m, b in zip(maps, d["labels"]) if not b))  # above every normal pixel
    with MapsFile(tmp_path / "spiked.h5") as f:
        res = evaluate(f, [_doc("pixel", t, 1.0)], GroundTruth(d["root"]))
    assert res["thresholds"][0]["image"]["fp"] == 0 and res["images"][0]["verdict"] == "normal"


def test_check_decides_at_the_bundles_level(tmp_path: Path, capsys) -> None:
    from lineclear.models import MODELS
    from tests.conftest import run_cli
    from tests.test_check import LEAFLET, _check, _image
    from tests.test_deploy import MAP, make_view
    from tests.test_deploy import make_run as make_line_run
    from tests.toy import toy_entry

    MODELS["toylevel"] = toy_entry("toylevel", MAP)
    try:
        a = make_view(tmp_path / "data", "A", seed=1)
        # an image threshold no score reaches: only the pixel level can find the leftover
        run = make_line_run(a, tmp_path / "runs" / "A", "toylevel", image_thr=1e3, level="pixel")
        assert run_cli(["-q", "deploy", str(run), "--out", str(tmp_path / "line")]) == 0
        man = json.loads((tmp_path / "line" / "manifest.json").read_text())
        assert '"thresholds_level": "pixel"' in json.dumps(man)
        rc, doc = _check(tmp_path / "line", str(_image(1, tmp_path / "bad_A.png", leaflet=LEAFLET)), capsys=capsys)
        v = doc["views"][0]
        assert rc == 3 and v["verdict"] == "leftover" and v["level"] == "pixel", v
        assert v["score"] < v["threshold"] and "pixel threshold" in v["reason"]
        rc, doc = _check(tmp_path / "line", str(_image(1, tmp_path / "ok_A.png")), capsys=capsys)
        assert rc == 0 and doc["views"][0]["verdict"] == "clear", doc["views"][0]
    finally:
        MODELS.pop("toylevel", None)
