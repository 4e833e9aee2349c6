"""Report pieces: thesis-style tables, curve PNGs, overlays, the self-contained HTML page."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lineclear.formats.metrics import read_metrics, write_metrics
from lineclear.errors import FormatError
from lineclear.report.html import render_report
from lineclear.report.overlays import overlay_png
from lineclear.report.plots import all_curves
from lineclear.report.tables import column_names, html_table, markdown_table, table_data, threshold_labels


def _doc(name, ai, ap_, pro, ap, iou, acc, view="A"):
    return {
        "config_name": name, "source": {"model": "draem", "view": view, "path": "m.h5", "map_size": [8, 8]},
        "summary": {"auroc_image": ai, "auroc_pixel": ap_, "aupro": pro, "ap": ap, "iou": iou, "accuracy": acc,
                    "method": "max"},
        "image": {"auroc": ai, "ap": 0.5}, "pixel": {"auroc": ap_, "aupro": pro, "ap": ap, "pro_limit": 0.3},
        "thresholds": [{"method": "max", "params": {}, "image": {"threshold": 0.5, "accuracy": acc},
                        "pixel": {"threshold": 0.4, "iou": iou}}],
        "best": {"index": 0, "method": "max", "rule": "r", "chosen_on": "test labels"},
        "counts": {"images": 2, "normal": 1, "anomalous": 1, "excluded": 0},
        "curves": {"image_roc": {"x": [0, 0, 1], "y": [0, 1, 1], "x_label": "fpr", "y_label": "tpr"},
                   "pro": {"x": [0, 0.5, 1], "y": [0, 0.9, 1]},
                   "iou": {"x": [0.1, 0.4, 0.8], "y": [0.2, 0.6, 0.1]}},
        "images": [{"index": 0, "id": "A/test/good/0<b>.png", "label": 0, "score": 0.3, "verdict": "normal",
                    "outcome": "TN", "correct": True, "max": 0.3, "gt_pixels": 0, "predicted_pixels": 0, "iou": None}],
        "notes": ["a note & more"],
    }


def test_thesis_table_layout_and_best_marks():
    docs = [_doc("PO+M+R", 0.68, 0.939, 0.917, 0.752, 0.524, 0.70),
            _doc("PO+NM+R", 0.60, 0.995, 0.913, 0.780, 0.549, 0.75),
            _doc("PO+M+NR", 0.867, 0.940, None, 0.750, 0.526, 0.75)]
    md = markdown_table(docs)
    lines = md.splitlines()
    header = next(l for l in lines if l.startswith("| |"))
    assert header == "| | PO+M+R | PO+NM+R | PO+M+NR |"
    rows = {l.split("|")[1].strip(): l for l in lines if l.startswith("| ") and not l.startswith("| |")}
    assert list(rows) == ["AUROC", "PRO", "IoU", "AP", "ACC", "threshold", "checkpoint"]
    assert "(68.0,93.9)" in rows["AUROC"] and "(60.0,**99.5**)" in rows["AUROC"] and "(**86.7**,94.0)" in rows["AUROC"]
    assert "**91.7**" in rows["PRO"] and "–" in rows["PRO"]
    assert rows["ACC"].count("**75.0**") == 2  # ties are all marked
    assert "draem" in md and "A view" in md
    h = html_table(docs, names=["a", "b", "c"])
    assert h.startswith("<!DOCTYPE html>") and h.count("<b class='best'>") == 2 + 1 + 1 + 1 + 2
    with pytest.raises(ValueError):
        table_data(docs, names=["x"])


def test_metrics_format_roundtrip(tmp_path):
    d = _doc("X", 0.5, 0.5, 0.5, 0.5, None, 1.0)
    p = write_metrics(tmp_path / "m.json", d)
    assert read_metrics(p)["summary"]["iou"] is None
    bad = _doc("X", 1.5, 0.5, 0.5, 0.5, None, 1.0)
    with pytest.raises(FormatError, match="auroc_image"):
        write_metrics(tmp_path / "b.json", bad)
    assert not (tmp_path / "b.json").exists()
    (tmp_path / "c.json").write_text('{"schema": "lineclear.thresholds/1"}')
    with pytest.raises(FormatError, match="expected lineclear.metrics/1"):
        read_metrics(tmp_path / "c.json")


def test_curves_overlay_and_html_are_self_contained():
    d = _doc("PO+M+R", 0.68, 0.939, 0.917, 0.752, 0.524, 0.70)
    curves = all_curves(d)
    assert set(curves) == {"roc_image.png", "pro.png", "iou.png"}
    assert all(v[:8] == b"\x89PNG\r\n\x1a\n" for v in curves.values())
    m = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    g = np.zeros((16, 16), bool)
    g[4:8, 4:8] = True
    v = np.ones_like(g)
    v[:, :2] = False
    rec = dict(d["images"][0], outcome="FP", score=0.7)
    ov = overlay_png(np.zeros((64, 64, 3), np.float32), m, g, v, rec, 0.5, 0.6, vmax=1.0, score_range=(0, 1))
    ov2 = overlay_png(None, m, g, v, rec, None, None)
    assert ov[:4] == b"\x89PNG" and ov2[:4] == b"\x89PNG"
    page = render_report(d, curves, [(d["images"][0], ov)])
    assert page.count("data:image/png;base64,") == 4
    # nothing loaded from elsewhere: only data: URIs and in-page anchors
    assert not re.search(r"""(src|href)=['"](?!data:|#)""", page)
    assert "0&lt;b&gt;.png" in page and "a note &amp; more" in page and "chosen on the" in page


def test_columns_of_several_models_say_which_model():
    """Regression: a table of patchcore and draem runs had columns 'PO+M+NR | PO+M+NR' (which is which?)."""
    a = _doc("PO+M+NR", 0.9, 0.9, 0.9, 0.9, 0.5, 0.9)
    b = _doc("PO+M+NR", 0.5, 0.5, 0.5, 0.5, 0.1, 0.5)
    b["source"]["model"] = "patchcore"
    c = _doc("PRE+M+NR", 0.5, 0.5, 0.5, 0.5, 0.1, 0.5)
    assert column_names([a, b, c]) == ["draem PO+M+NR", "patchcore PO+M+NR", "draem PRE+M+NR"]
    assert column_names([a, c]) == ["PO+M+NR", "PRE+M+NR"]  # one model: the thesis's labels as they are
    assert column_names([a, a]) == ["PO+M+NR (1)", "PO+M+NR (2)"]
    other_view = _doc("PO+M+NR", 0.5, 0.5, 0.5, 0.5, 0.1, 0.5, view="C")
    assert column_names([a, other_view]) == ["A PO+M+NR", "C PO+M+NR"]
    assert "| | draem PO+M+NR | patchcore PO+M+NR |" in markdown_table([a, b])
    assert markdown_table([a, b], names=["x", "y"]).count("| | x | y |") == 1


def test_threshold_labels_tell_same_method_apart():
    e = [{"method": "ksigma", "params": {"k": 3.0}, "path": "run/thresholds.json"},
         {"method": "max", "params": {}, "path": "run/thresholds_max.json"},
         {"method": "ksigma", "params": {"k": 2.0}, "path": ""}]
    assert threshold_labels(e) == ["ksigma (thresholds.json)", "max", "ksigma (k=2)"]
