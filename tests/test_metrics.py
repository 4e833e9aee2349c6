"""lineclear.metrics against independent oracles: scikit-learn, brute force, hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from lineclear import metrics as M


def _batches(maps, gt, valid, anom, b=2):
    def gen():
        for i in range(0, len(maps), b):
            yield maps[i:i + b], gt[i:i + b], valid[i:i + b], anom[i:i + b]
    return gen


def _area(x, y, limit):
    """Independent clipped integral of a polyline (vertical segments have no area)."""
    total = 0.0
    for x0, y0, x1, y1 in zip(x[:-1], y[:-1], x[1:], y[1:]):
        if x1 <= x0 or x0 >= limit:
            continue
        xe = min(x1, limit)
        ye = y0 + (y1 - y0) * (xe - x0) / (x1 - x0)
        total += 0.5 * (y0 + ye) * (xe - x0)
    return total


def brute_aupro(maps, gt, valid, limit=0.3):
    """Definition: FPR and mean per-region overlap at every distinct score (>= t), 8-connected."""
    regions, negs = [], []
    for m, g, v in zip(maps, gt, valid):
        lab, n = ndimage.label(g, structure=np.ones((3, 3)))
        for k in range(1, n + 1):
            r = m[(lab == k) & v]
            if r.size:
                regions.append(r)
        negs.append(m[v & ~g])
    negs = np.concatenate(negs)
    if not regions or negs.size == 0:
        return None
    ts = np.unique(np.concatenate([negs, *regions]))[::-1]
    above = ts[:, None]  # one row per threshold: counts of values >= t
    xs = [0.0, *np.mean(negs[None, :] >= above, axis=1), 1.0]
    ys = [0.0, *np.mean([np.mean(r[None, :] >= above, axis=1) for r in regions], axis=0), 1.0]
    return _area(np.array(xs), np.array(ys), limit) / limit


def brute_iou(maps, gt, valid, anom, t):
    inter = union = 0
    for m, g, v, a in zip(maps, gt, valid, anom):
        if a:
            p = (m > t) & v
            gg = g & v
            inter += (p & gg).sum()
            union += (p | gg).sum()
    return inter / union if union else None


def _random_case(rng, kind):
    n = int(rng.integers(1, 6))
    h, w = (int(x) for x in rng.integers(2, 18, 2))
    if kind == "ties":
        maps = rng.integers(0, 4, (n, h, w)).astype(np.float32) / 3
    elif kind == "constant":
        maps = np.full((n, h, w), 0.25, np.float32)
    else:
        maps = rng.random((n, h, w)).astype(np.float32)
    gt = rng.random((n, h, w)) < rng.choice([0.02, 0.1, 0.4])
    gt[rng.random(n) < 0.3] = False  # some normal images
    if kind == "one-pixel":
        gt[:] = False
        gt[0, 0, 0] = True
    valid = rng.random((n, h, w)) < rng.choice([1.0, 0.8])
    anom = gt.reshape(n, -1).any(1)
    return maps, gt, valid, anom


@pytest.mark.parametrize("kind", ["random", "ties", "constant", "one-pixel"])
@pytest.mark.parametrize("budget", [0, 10**9])
def test_pixel_metrics_match_oracles(kind, budget):
    rng = np.random.default_rng(hash(kind) % 2**32)
    for _ in range(10):
        maps, gt, valid, anom = _random_case(rng, kind)
        thr = [0.3, float(np.median(maps))]
        res, acc = M.pixel_metrics(_batches(maps, gt, valid, anom), thr, keep_budget=budget)
        y, s = gt[valid], maps[valid]
        if y.any() and (~y).any():
            assert res["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
            assert M.trapezoid(*acc.curves().roc()) == pytest.approx(res["auroc"], abs=1e-9)
        else:
            assert res["auroc"] is None and res["notes"]
        if y.any():
            assert res["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
        else:
            assert res["ap"] is None
        ref = brute_aupro(maps, gt, valid)
        if ref is None:
            assert res["aupro"] is None
        else:
            assert res["aupro"] == pytest.approx(ref, abs=1e-9)
        for i, t in enumerate(thr):
            assert res["at_thresholds"][i]["iou"] == pytest.approx(brute_iou(maps, gt, valid, anom, t), abs=1e-12) \
                if brute_iou(maps, gt, valid, anom, t) is not None else res["at_thresholds"][i]["iou"] is None
        curve = acc.iou_curve()
        if curve is not None:
            for t, v in zip(curve[0][::7], curve[1][::7]):
                b = brute_iou(maps, gt, valid, anom, t)
                assert (np.isnan(v) and b is None) or v == pytest.approx(b, abs=1e-12)


def test_aupro_hand_worked_diagonal_components():
    # the two diagonal GT pixels form ONE 8-connected region (two with 4-connectivity)
    m = np.array([[0.9, 0.5, 0.2, 0.1], [0.3, 0.4, 0.6, 0.0], [0.7, 0.05, 0.15, 0.8]], np.float32)
    g = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], bool)
    res, acc = M.pixel_metrics(_batches(m[None], g[None], np.ones((1, 3, 4), bool), [True]))
    assert res["n_regions"] == 2
    # PRO is 0.75 from FPR 0 to 3/9 > 0.3, so AUPRO@0.3 = 0.75 (4-connectivity would give 2/3)
    assert res["aupro"] == pytest.approx(0.75, abs=1e-12)
    x, y = acc.curves().pro_curve()
    assert x[0] == 0 and y[0] == 0 and x[-1] == 1 and y[-1] == 1


def test_aupro_hand_worked_ties_and_interpolation():
    # a positive tied with two negatives at 0.5: one merged point (0.5, 1) reached by a diagonal
    m = np.array([[0.5, 0.5, 0.5, 0.1, 0.2]], np.float32)
    g = np.array([[1, 0, 0, 0, 0]], bool)
    res, _ = M.pixel_metrics(_batches(m[None], g[None], np.ones((1, 1, 5), bool), [True]))
    # y(0.3) = 0.6 on the segment (0,0)-(0.5,1): area 0.09, / 0.3 = 0.3
    assert res["aupro"] == pytest.approx(0.3, abs=1e-12)
    assert res["auroc"] == pytest.approx(roc_auc_score(g.ravel(), m.ravel()))


def test_aupro_masked_pixels_left_out():
    m = np.array([[0.9, 0.1, 0.8, 0.2]], np.float32)
    g = np.array([[1, 0, 0, 0]], bool)
    v = np.array([[1, 1, 0, 1]], bool)  # the high negative at 0.8 is masked
    res, _ = M.pixel_metrics(_batches(m[None], g[None], v[None], [True]))
    assert res["auroc"] == 1.0 and res["aupro"] == 1.0 and res["n_neg"] == 2
    # a GT region entirely masked is dropped with a note
    v2 = np.array([[0, 1, 1, 1]], bool)
    res2, _ = M.pixel_metrics(_batches(m[None], g[None], v2[None], [True]))
    assert res2["auroc"] is None and res2["aupro"] is None and any("entirely" in n for n in res2["notes"])


def test_trapezoid_official_semantics():
    x = np.array([0.0, 0.1, 0.2, 0.5, 1.0])
    y = np.array([0.0, 0.5, 0.5, 1.0, 1.0])
    assert M.trapezoid(x, y) == pytest.approx(_area(x, y, 1.0))
    assert M.trapezoid(x, y, 0.3) == pytest.approx(_area(x, y, 0.3))
    assert M.trapezoid(x, y, 0.2) == pytest.approx(0.025 + 0.05)


def test_image_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    for trial in range(24):
        n = int(rng.integers(2, 40))
        s = rng.integers(0, 5, n).astype(float) if trial % 2 else rng.random(n)
        y = rng.random(n) < 0.5
        t = float(np.median(s))
        c = M.confusion(s, y, t)
        pred = s > t
        assert c["accuracy"] == pytest.approx(accuracy_score(y, pred))
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=[False, True]).ravel()
        assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (tp, fp, tn, fn)
        if pred.any():
            assert c["precision"] == pytest.approx(precision_score(y, pred))
        else:
            assert c["precision"] is None
        if y.any():
            assert c["recall"] == pytest.approx(recall_score(y, pred))
            assert c["f1"] == pytest.approx(f1_score(y, pred))
            assert M.average_precision(s, y) == pytest.approx(average_precision_score(y, s))
        if y.any() and (~y).any():
            assert M.roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        else:
            assert M.roc_auc(s, y) is None


def test_undefined_metrics_are_none():
    assert M.roc_auc([0.1, 0.2], [0, 0]) is None
    assert M.average_precision([0.1, 0.2], [0, 0]) is None
    c = M.confusion([0.1, 0.2], [0, 0], 0.5)
    assert c["precision"] is None and c["recall"] is None and c["accuracy"] == 1.0
    # all-normal pixels: everything threshold-free is undefined, with notes
    res, _ = M.pixel_metrics(_batches(np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), bool),
                                      np.ones((2, 4, 4), bool), [False, False]), [0.5])
    assert res["auroc"] is None and res["aupro"] is None and res["ap"] is None and res["notes"]
    assert res["at_thresholds"][0]["iou"] is None and res["at_thresholds"][0]["fpr"] == 0.0
    with pytest.raises(ValueError):
        M.roc_auc([np.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        M.PixelAccumulator().add(np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2)), np.ones((1, 2, 2)), [False])


def test_bounded_memory_mode_is_identical():
    rng = np.random.default_rng(7)
    maps, gt, valid, anom = _random_case(rng, "ties")
    a, _ = M.pixel_metrics(_batches(maps, gt, valid, anom), [0.5], keep_budget=0)
    b, _ = M.pixel_metrics(_batches(maps, gt, valid, anom), [0.5], keep_budget=10**9)
    assert a == b


def test_accumulate_runs_the_second_pass_only_when_the_negatives_did_not_fit():
    rng = np.random.default_rng(8)
    maps, gt, valid, anom = _random_case(rng, "ties")
    calls = []

    def again():
        calls.append(1)
        return _batches(maps, gt, valid, anom)()

    kept = M.PixelAccumulator([0.5]).accumulate(_batches(maps, gt, valid, anom)(), again)
    assert calls == [] and not kept.needs_second_pass
    counted = M.PixelAccumulator([0.5], keep_budget=0).accumulate(_batches(maps, gt, valid, anom)(), again)
    assert calls == [1] and not counted.needs_second_pass
    assert counted.result() == kept.result()
    # the steps accumulate takes, driven by hand, give the same
    acc = M.PixelAccumulator([0.5], keep_budget=0)
    for batch in _batches(maps, gt, valid, anom)():
        acc.add(*batch)
    for batch in _batches(maps, gt, valid, anom)():
        acc.add_negatives(*batch)
    acc.finish_second_pass()
    assert acc.result() == kept.result()


def test_downsample_keeps_ends():
    x = np.linspace(0, 1, 10_000)
    y = x ** 0.2
    xs, ys = M.downsample_curve(x, y, 100)
    assert len(xs) <= 102 and xs[0] == 0 and xs[-1] == 1 and ys[-1] == 1


def _official_style_aupro(maps, gt, valid, limit=0.3):
    """The official compute_pro structure (flatten, sort descending, cumulative FP and PRO
    changes, keep the last point of each run of tied scores, trapezoid with interpolation),
    re-written here with valid pixels taken out, as a second reference."""
    scores, fpc, proc = [], [], []
    n_regions = 0
    for m, g, v in zip(maps, gt, valid):
        lab, n = ndimage.label(g, structure=np.ones((3, 3), int))
        lab[~v] = -1
        sizes = np.bincount(lab[lab > 0], minlength=n + 1)
        n_regions += int((sizes[1:] > 0).sum())
        keep = lab >= 0
        scores.append(m[keep])
        fpc.append((lab[keep] == 0).astype(np.float64))
        pc = np.zeros(keep.sum())
        pos = lab[keep] > 0
        pc[pos] = 1.0 / sizes[lab[keep][pos]]
        proc.append(pc)
    s, f, p = (np.concatenate(a) for a in (scores, fpc, proc))
    order = np.argsort(s, kind="stable")[::-1]
    s, f, p = s[order], np.cumsum(f[order]) / f.sum(), np.cumsum(p[order]) / n_regions
    last = np.append(np.diff(s) != 0, True)
    x = np.concatenate([[0.0], np.minimum(f[last], 1), [1.0]])
    y = np.concatenate([[0.0], np.minimum(p[last], 1), [1.0]])
    return M.trapezoid(x, y, limit) / limit


def test_aupro_matches_official_structure_on_larger_maps():
    rng = np.random.default_rng(11)
    n, h, w = 6, 48, 40
    maps = np.round(rng.random((n, h, w)), 2).astype(np.float32)  # many ties
    gt = np.zeros((n, h, w), bool)
    for i in range(1, n):
        for _ in range(3):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            gt[i, y:y + rng.integers(1, 8), x:x + rng.integers(1, 8)] = True
            maps[i][gt[i]] += 0.3
    valid = np.ones_like(gt)
    valid[:, :, :4] = False
    anom = gt.reshape(n, -1).any(1)
    res, _ = M.pixel_metrics(_batches(maps, gt, valid, anom), keep_budget=0)
    assert res["aupro"] == pytest.approx(_official_style_aupro(maps, gt, valid), abs=1e-9)
    assert res["auroc"] == pytest.approx(roc_auc_score(gt[valid], maps[valid]), abs=1e-9)
