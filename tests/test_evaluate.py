"""evaluate(): the pure orchestration, on an in-memory maps object (no files, no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from lineclear.errors import LineclearError
from lineclear.evaluate import GroundTruth, choose_best, config_name, evaluate, provenance_warnings


class FakeMaps:
    def __init__(self, maps, scores, labels, valid=None, attrs=None):
        self.maps, self.scores, self.labels = np.asarray(maps, np.float32), np.asarray(scores, float), np.asarray(labels)
        self.valid_ = valid if valid is not None else np.ones(self.maps.shape, bool)
        self.image_ids = [f"V/test/{'bad' if l == 1 else 'good'}/{i:03d}.png" for i, l in enumerate(labels)]
        self.attrs = attrs or {"model": "toy", "mask_stage": "none", "registered": 0}
        self.path = Path("fake.h5")

    @property
    def map_size(self):
        return self.maps.shape[1:]

    def iter_batches(self, b):
        for i in range(0, len(self.maps), b):
            sl = slice(i, min(len(self.maps), i + b))
            yield sl, self.maps[sl], self.valid_[sl]


def _thr(method, pix, img, **src):
    return {"method": method, "params": {}, "pixel": {"threshold": pix}, "image": {"threshold": img},
            "source": src}


def _case(seed=0, n=10):
    rng = np.random.default_rng(seed)
    maps = rng.random((n, 12, 10)).astype(np.float32)
    gts = np.zeros(maps.shape, bool)
    labels = np.array([i % 3 == 0 for i in range(n)], int)
    for i in np.flatnonzero(labels):
        gts[i, 2:6, 3:5] = True
        maps[i][gts[i]] += 0.5
    valid = np.ones(maps.shape, bool)
    valid[:, 0, :] = False
    scores = maps.reshape(n, -1).max(1)
    return maps, gts, labels, valid, scores


def test_evaluate_matches_oracles():
    maps, gts, labels, valid, scores = _case()
    fm = FakeMaps(maps, scores, labels, valid)
    gt = lambda iid, lab, shape: gts[int(Path(iid).stem)]
    doc = evaluate(fm, [_thr("max", 0.9, 1.0), _thr("ksigma", 0.8, 0.95)], gt, batch=3, keep_budget=0)
    assert doc["pixel"]["auroc"] == pytest.approx(roc_auc_score(gts[valid], maps[valid]), abs=1e-9)
    assert doc["pixel"]["ap"] == pytest.approx(average_precision_score(gts[valid], maps[valid]), abs=1e-9)
    assert doc["image"]["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    acc = [np.mean((scores > t) == (labels == 1)) for t in (1.0, 0.95)]
    assert [e["image"]["accuracy"] for e in doc["thresholds"]] == pytest.approx(acc)
    best = int(np.argmax(acc)) if acc[0] != acc[1] else 0
    assert doc["best"]["index"] == best and doc["summary"]["accuracy"] == pytest.approx(max(acc))
    assert doc["config_name"] == "NM+NR"
    assert len(doc["images"]) == len(maps) and sorted(r["order"] for r in doc["images"]) == list(range(len(maps)))
    r0 = doc["images"][0]
    assert r0["gt_pixels"] == int(gts[0][valid[0]].sum()) and r0["valid_pixels"] == int(valid[0].sum())
    assert set(doc["curves"]) == {"image_roc", "pixel_roc", "pixel_pr", "pro", "iou"}


def test_unknown_labels_left_out_and_undefined_metrics():
    maps, gts, labels, valid, scores = _case(n=6)
    labels = np.zeros(6, int)
    labels[5] = -1
    fm = FakeMaps(maps, scores, labels, valid)
    doc = evaluate(fm, [_thr("max", 0.9, 1.0)], lambda i, l, s: np.zeros(s, bool))
    assert doc["image"]["auroc"] is None and doc["pixel"]["auroc"] is None and doc["pixel"]["aupro"] is None
    assert doc["counts"]["excluded"] == 1 and any("unknown label" in n for n in doc["notes"])
    assert doc["pixel"]["n_neg"] == int(valid[:5].sum())
    assert doc["summary"]["iou"] is None


def test_nan_and_bad_scores_are_refused():
    maps, gts, labels, valid, scores = _case(n=4)
    maps[2, 3, 3] = np.inf
    with pytest.raises(LineclearError, match="V/test/good/002.png"):
        evaluate(FakeMaps(maps, scores, labels), [_thr("max", 0.5, 0.5)], lambda i, l, s: np.zeros(s, bool))
    maps[2, 3, 3] = 0
    scores[1] = np.nan
    with pytest.raises(LineclearError, match="NaN"):
        evaluate(FakeMaps(maps, scores, labels), [_thr("max", 0.5, 0.5)], lambda i, l, s: np.zeros(s, bool))


def test_best_threshold_tie_order():
    e = lambda m, a: {"method": m, "image": {"accuracy": a}}
    assert choose_best([e("quantile", 0.8), e("ksigma", 0.8), e("max", 0.8)]) == 2
    assert choose_best([e("quantile", 0.8), e("ksigma", 0.8), e("max", 0.7)]) == 1
    assert choose_best([e("quantile", 0.9), e("ksigma", 0.8), e("max", 0.8)]) == 0
    assert choose_best([e("max", None), e("ksigma", 0.1)]) == 1


def test_config_names_and_provenance():
    assert config_name({"mask_stage": "post", "mask": "/m.png", "registered": 1}) == "PO+M+R"
    assert config_name({"mask_stage": "pre", "mask": "/m.png", "registered": 0}) == "PRE+M+NR"
    assert config_name({"mask_stage": "none", "mask": "", "registered": 1}) == "NM+R"
    w = provenance_warnings({"path": "t.json", "source": {"model": "draem", "map_size": [256, 256]}},
                            {"model": "ddad"}, (512, 512))
    assert len(w) == 2 and "model=draem" in w[0] and "[256, 256]" in w[1]
    assert provenance_warnings({"source": {"model": "x", "map_size": [4, 4]}}, {"model": "x"}, (4, 4)) == []


def test_ground_truth_lookup(tmp_path):
    import cv2

    root = tmp_path / "data"
    (root / "A/ground_truth/leaf").mkdir(parents=True)
    m = np.zeros((8, 8), np.uint8)
    m[0:4, 0:2] = 255
    cv2.imwrite(str(root / "A/ground_truth/leaf/003_mask.png"), m)
    g = GroundTruth(root)
    assert g.path_for("A/test/leaf/003.png") == root / "A/ground_truth/leaf/003_mask.png"
    small = g("A/test/leaf/003.png", 1, (4, 4))  # nearest-neighbour resize
    assert small.dtype == bool and small[:2, :1].all() and not small[2:, :].any() and not small[:, 1:].any()
    assert not g("A/test/good/001.png", 0, (4, 4)).any()
    with pytest.raises(LineclearError, match="ground-truth mask missing"):
        g("A/test/leaf/004.png", 1, (4, 4))
    with pytest.raises(LineclearError, match="mask is 8x8 but the scored images are 16x8"):
        GroundTruth(root, image_size=(8, 16))("A/test/leaf/003.png", 1, (4, 4))
    with pytest.raises(LineclearError, match="not the shape"):
        g("A/test/leaf/003.png", 1, (4, 8))
    assert GroundTruth(root, image_size=(8, 8))("A/test/leaf/003.png", 1, (4, 4)).sum() == 2
    g2 = GroundTruth(None, root / "A/ground_truth")
    assert g2.path_for("whatever/test/leaf/003.png") == root / "A/ground_truth/leaf/003_mask.png"
    with pytest.raises(LineclearError):
        GroundTruth(root, tmp_path / "nope")
