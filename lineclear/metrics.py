"""Exact anomaly-detection metrics in plain numpy (scipy only for connected components).

Image level (small arrays, everything in memory): :func:`roc_auc`, :func:`roc_curve`,
:func:`average_precision`, :func:`confusion`.

Pixel level (streamed, bounded memory, exact): :class:`PixelAccumulator` gives the pixel
AUROC, the AUPRO up to an FPR limit exactly like the official MVTec AD evaluation
(``compute_pro`` + ``trapezoid``), the pixel average precision, the IoU at given
thresholds and the IoU-vs-threshold curve.

Why it is exact without holding every pixel: every one of these curves changes its *y*
value only at thresholds equal to a ground-truth (positive) pixel's score. Between two
consecutive distinct positive scores the curve only moves horizontally (more false
positives, same TPR / PRO / recall), so it is fully described by, for each distinct
positive score ``v``: the positives equal to ``v``, the PRO weight they carry, and the
numbers of negatives *strictly between* ``v`` and the next higher positive score and
*equal* to ``v``. The positives are kept (they are few: ground-truth pixels); the
negatives are only counted into those ``2U+1`` bins, in a second streaming pass (or in
the first pass when they fit a memory budget). Trapezoids over the collapsed point list
equal trapezoids over the full curve, tied scores are merged exactly as the official code
does (one curve point per distinct score), and the linear interpolation at the FPR limit
falls on the same segment. Counts are integers; the only rounding is float64 arithmetic.

Conventions: a pixel or image is predicted anomalous when its value is **strictly
greater** than the threshold (so the "max" threshold flags nothing on its own validation
set). Undefined metrics (one class only, empty union, ...) are ``None``.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

PRO_LIMIT = 0.3
# distinct normal-pixel values kept from the first pass (12 bytes each, ~24 MB); beyond
# it they are counted in a second pass instead (continuous maps of many images)
KEEP_BUDGET = 2_000_000
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as the official evaluation


# --------------------------------------------------------------------------- helpers


def trapezoid(x: np.ndarray, y: np.ndarray, x_max: float | None = None) -> float:
    """Area under a polyline with ascending ``x`` (duplicates allowed), up to ``x_max``.

    Same semantics as the official MVTec AD ``trapezoid``: when ``x_max`` is not a sample,
    ``y`` at ``x_max`` is linearly interpolated between its neighbours (the last sample with
    ``x <= x_max`` and the next one) and the partial trapezoid is added.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    extra = 0.0
    if x_max is not None:
        if not np.any(x == x_max):
            i = bisect_right(x.tolist(), x_max)
            if i == 0 or i == len(x):
                raise ValueError(f"x_max={x_max} lies outside the curve's range [{x[0]}, {x[-1]}]")
            y_at = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
            extra = 0.5 * (y_at + y[i - 1]) * (x_max - x[i - 1])
        inside = x <= x_max
        x, y = x[inside], y[inside]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + extra)


def _check_binary(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    return s, y.astype(bool)


def binary_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative counts at each distinct score, highest first.

    Returns ``(thresholds (T,), tp (T,), fp (T,))``: ``tp[i]``/``fp[i]`` = positives /
    negatives with score >= ``thresholds[i]`` (ties merged into one point).
    """
    s, y = _check_binary(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.array([], dtype=np.int64)
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return s[last], tp.astype(np.int64), fp.astype(np.int64)


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(fpr, tpr, thresholds)`` starting at (0, 0) (threshold +inf); ``None`` with one class."""
    thr, tp, fp = binary_curve(scores, labels)
    if tp.size == 0 or tp[-1] == 0 or fp[-1] == 0:
        return None
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]], np.r_[np.inf, thr]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count one half); ``None`` unless both classes occur."""
    curve = roc_curve(scores, labels)
    return None if curve is None else trapezoid(curve[0], curve[1])


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(precision, recall, thresholds)`` at each distinct score, highest first; ``None`` without positives."""
    thr, tp, fp = binary_curve(scores, labels)
    if tp.size == 0 or tp[-1] == 0:
        return None
    return tp / (tp + fp), tp / tp[-1], thr


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """``sum_n (R_n - R_{n-1}) P_n`` (scikit-learn's definition, no interpolation)."""
    curve = pr_curve(scores, labels)
    if curve is None:
        return None
    precision, recall, _ = curve
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def confusion(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Classification at ``threshold`` (anomalous when score > threshold).

    Returns tp, fp, tn, fn, accuracy, precision, recall, f1, specificity (``None`` when
    the denominator is zero).
    """
    s, y = _check_binary(scores, labels)
    return {"threshold": float(threshold), **confusion_of(s > threshold, y)}


def confusion_of(predicted: np.ndarray, labels: np.ndarray) -> dict:
    """:func:`confusion` from decisions already made: ``predicted`` (N,) bool, True = anomalous."""
    pred = np.asarray(predicted, dtype=bool).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if pred.shape != y.shape:
        raise ValueError(f"{pred.size} decisions for {y.size} labels")
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "specificity": _ratio(tn, tn + fp),
    }


def gt_components(gt: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a bool (H,W) ground truth: ``(labels int32 (H,W), n)``."""
    lab, n = ndimage.label(np.asarray(gt, dtype=bool), structure=_EIGHT)
    return lab.astype(np.int32, copy=False), int(n)


# --------------------------------------------------------------------------- pixel level


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct float32 values and their int64 counts."""
    vals, counts = np.unique(np.asarray(values, dtype=np.float32), return_counts=True)
    return vals, counts.astype(np.int64)


@dataclass
class ImagePixelStats:
    """Per-image figures at the given thresholds (all over valid pixels)."""

    valid: int
    gt: int
    regions: int
    max: float | None
    predicted: list[int]  # per threshold: pixels > t
    hit: list[int]  # per threshold: GT pixels > t (intersection)

    def iou(self, i: int) -> float | None:
        return _ratio(self.hit[i], self.gt + self.predicted[i] - self.hit[i])


@dataclass
class PixelCurves:
    """The collapsed exact description of every pixel curve (see the module docstring).

    ``values`` (U,) distinct positive scores, descending; ``pos`` (U,) positives equal to
    each; ``pro`` (U,) sum of 1/region_size over them; ``neg_between`` (U,) negatives
    strictly between ``values[j]`` and ``values[j-1]`` (above ``values[0]`` for j=0);
    ``neg_equal`` (U,) negatives equal to ``values[j]``; ``neg_below`` negatives below
    ``values[-1]``. ``n_neg`` counts every valid non-GT pixel.
    """

    values: np.ndarray
    pos: np.ndarray
    pro: np.ndarray
    neg_between: np.ndarray
    neg_equal: np.ndarray
    neg_below: int
    n_pos: int
    n_neg: int
    n_regions: int

    def _cum(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tp = np.cumsum(self.pos)
        fp_ge = np.cumsum(self.neg_between + self.neg_equal)  # negatives >= values[j]
        fp_gt = fp_ge - self.neg_equal  # negatives > values[j]
        return tp, fp_ge, fp_gt

    def auroc(self) -> float | None:
        """Mann-Whitney form of the trapezoidal ROC area (identical, less rounding)."""
        if self.n_pos == 0 or self.n_neg == 0:
            return None
        _, fp_ge, _ = self._cum()
        below = self.n_neg - fp_ge  # negatives strictly below values[j]
        wins = np.sum(self.pos * (below + 0.5 * self.neg_equal))
        return float(wins / (float(self.n_pos) * float(self.n_neg)))

    def roc(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(fpr, tpr)`` polyline from (0,0) to (1,1): the full curve minus collinear points."""
        if self.n_pos == 0 or self.n_neg == 0:
            return None
        tp, fp_ge, fp_gt = self._cum()
        tp_prev = np.r_[0, tp[:-1]]
        fpr = np.column_stack([fp_gt, fp_ge]).ravel() / self.n_neg
        tpr = np.column_stack([tp_prev, tp]).ravel() / self.n_pos
        return np.r_[0.0, fpr, 1.0], np.r_[0.0, tpr, 1.0]

    def average_precision(self) -> float | None:
        if self.n_pos == 0:
            return None
        tp, fp_ge, _ = self._cum()
        return float(np.sum((self.pos / self.n_pos) * (tp / (tp + fp_ge))))

    def pr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(precision, recall, thresholds)`` at each distinct positive score (where recall changes)."""
        if self.n_pos == 0:
            return None
        tp, fp_ge, _ = self._cum()
        return tp / (tp + fp_ge), tp / self.n_pos, self.values.astype(np.float64)

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(fpr, pro)`` exactly as the official ``compute_pro`` (with its (0,0) and (1,1) ends)."""
        if self.n_regions == 0 or self.n_neg == 0:
            return None
        _, fp_ge, fp_gt = self._cum()
        pro = np.cumsum(self.pro) / self.n_regions
        pro_prev = np.r_[0.0, pro[:-1]]
        fpr = np.column_stack([fp_gt, fp_ge]).ravel() / self.n_neg
        prov = np.column_stack([pro_prev, pro]).ravel()
        fpr = np.minimum(fpr, 1.0)
        prov = np.minimum(prov, 1.0)
        # after the lowest positive score the remaining negatives move the curve to FPR 1
        return np.r_[0.0, fpr, 1.0, 1.0], np.r_[0.0, prov, min(1.0, prov[-1]) if prov.size else 0.0, 1.0]

    def aupro(self, limit: float = PRO_LIMIT) -> float | None:
        """Area under the PRO curve up to FPR ``limit``, divided by ``limit``."""
        curve = self.pro_curve()
        if curve is None:
            return None
        return trapezoid(curve[0], curve[1], x_max=limit) / limit


# (maps (b,H,W), gt (b,H,W) bool, valid (b,H,W) bool, anomalous (b,)): one batch of the pixel metrics
Batch = tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[bool]]
Batches = Callable[[], Iterable[Batch]]


class PixelAccumulator:
    """Stream ``(maps, gt, valid)`` batches; exact pixel metrics with memory ~ GT pixels.

    Usage (:func:`pixel_metrics` wraps it)::

        acc = PixelAccumulator(thresholds=[0.5]).accumulate(batches(), batches)
        result = acc.result()

    :meth:`accumulate` owns the order of the two passes; the steps it takes (:meth:`add` per batch, then
    only when :attr:`needs_second_pass` :meth:`add_negatives` per batch and :meth:`finish_second_pass`)
    stay available for a caller that drives them itself.

    ``maps`` (b,H,W) float, ``gt`` (b,H,W) bool, ``valid`` (b,H,W) bool, ``anomalous`` (b,)
    bool image labels (the IoU is over anomalous images only). ``keep_budget`` is the number
    of distinct negative values (per image, 12 bytes each) kept in memory during the first
    pass; beyond it the negatives are counted in a second pass over the same batches.
    """

    def __init__(self, thresholds: Sequence[float] = (), iou_points: int = 101, keep_budget: int = KEEP_BUDGET) -> None:
        self.thresholds = np.asarray(list(thresholds), dtype=np.float64)
        self.iou_points = int(iou_points)
        self.keep_budget = int(keep_budget)
        self._pos_vals: list[np.ndarray] = []
        self._pos_w: list[np.ndarray] = []
        self._pos_anom: list[np.ndarray] = []  # GT pixel values of anomalous images (for the IoU curve)
        self._kept: list[tuple[np.ndarray, np.ndarray, bool]] | None = []  # (values, counts, anomalous)
        self._kept_n = 0
        self.n_neg = 0
        self.n_regions = 0
        self.n_regions_masked = 0  # GT regions with no valid pixel (dropped)
        self.images: list[ImagePixelStats] = []
        self._flags: list[bool] = []  # image label (anomalous) per image, in order
        self._anom_lo = np.inf
        self._anom_hi = -np.inf
        self._curves: PixelCurves | None = None
        self._grid: np.ndarray | None = None
        self._grid_fp: np.ndarray | None = None
        self._bins: np.ndarray | None = None
        self._second_done = False

    def accumulate(self, first: Iterable[Batch], again: Callable[[], Iterable[Batch]]) -> "PixelAccumulator":
        """Both passes in the order they must run; returns ``self``, ready for :meth:`result`.

        Every ``(maps, gt, valid, anomalous)`` batch of ``first`` goes through :meth:`add`; when the
        negatives did not fit ``keep_budget``, ``again()`` must yield the same batches in the same order
        (it is not called otherwise), and they go through :meth:`add_negatives`.
        """
        for maps, gt, valid, anomalous in first:
            self.add(maps, gt, valid, anomalous)
        if self.needs_second_pass:
            for maps, gt, valid, anomalous in again():
                self.add_negatives(maps, gt, valid, anomalous)
            self.finish_second_pass()
        return self

    # -- pass 1
    def add(self, maps: np.ndarray, gt: np.ndarray, valid: np.ndarray, anomalous: Sequence[bool]) -> None:
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim == 2:
            maps, gt, valid = maps[None], np.asarray(gt)[None], np.asarray(valid)[None]
        gt = np.asarray(gt, dtype=bool)
        valid = np.asarray(valid, dtype=bool)
        anomalous = np.asarray(anomalous, dtype=bool).reshape(maps.shape[0])
        if gt.shape != maps.shape or valid.shape != maps.shape:
            raise ValueError(f"maps {maps.shape}, gt {gt.shape} and valid {valid.shape} differ")
        if not np.all(np.isfinite(maps)):
            raise ValueError("anomaly maps contain NaN or infinite values")
        for m, g, v, a in zip(maps, gt, valid, anomalous):
            self._add_one(m, g, v, bool(a))

    def _add_one(self, m: np.ndarray, g: np.ndarray, v: np.ndarray, anomalous: bool) -> None:
        self._flags.append(anomalous)
        lab, n = gt_components(g)
        lab = np.where(v, lab, 0)
        if n:
            sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
            present = sizes > 0
            self.n_regions += int(present.sum())
            self.n_regions_masked += int((~present).sum())
            inside = lab > 0
            vals = m[inside]
            w = 1.0 / sizes[lab[inside] - 1]
            self._pos_vals.append(vals)
            self._pos_w.append(w)
            if anomalous:
                self._pos_anom.append(vals)
            n_reg = int(present.sum())
        else:
            inside = np.zeros_like(v)
            vals = np.empty(0, np.float32)
            n_reg = 0
        neg_mask = v & ~inside
        negs = m[neg_mask]
        self.n_neg += negs.size
        if self._kept is not None:
            # distinct values with counts: often far fewer than pixels (quantised or
            # zeroed maps); sorted keys also make the later binary searches cache-friendly
            vc = _distinct(negs)
            if self._kept_n + vc[0].size <= self.keep_budget:
                self._kept.append((*vc, anomalous))
                self._kept_n += vc[0].size
            else:
                self._kept = None  # over budget: count the negatives in a second pass
        valid_vals = m[v]
        if anomalous and valid_vals.size:
            self._anom_lo = min(self._anom_lo, float(valid_vals.min()))
            self._anom_hi = max(self._anom_hi, float(valid_vals.max()))
        t = self.thresholds
        self.images.append(
            ImagePixelStats(
                valid=int(v.sum()),
                gt=int(vals.size),
                regions=n_reg,
                max=float(valid_vals.max()) if valid_vals.size else None,
                predicted=[int(np.count_nonzero(valid_vals > x)) for x in t],
                hit=[int(np.count_nonzero(vals > x)) for x in t],
            )
        )

    @property
    def needs_second_pass(self) -> bool:
        return self._kept is None and not self._second_done

    def _prepare(self) -> None:
        if self._bins is not None:
            return
        vals = np.concatenate(self._pos_vals) if self._pos_vals else np.empty(0, np.float32)
        w = np.concatenate(self._pos_w) if self._pos_w else np.empty(0, np.float64)
        order = np.argsort(vals, kind="stable")
        vals, w = vals[order], w[order]
        starts = np.r_[0, np.flatnonzero(np.diff(vals) != 0) + 1] if vals.size else np.empty(0, np.int64)
        self._asc = vals[starts] if vals.size else vals  # distinct positive values, ascending
        self._asc_pos = np.diff(np.r_[starts, vals.size]).astype(np.int64)
        self._asc_pro = np.add.reduceat(w, starts) if vals.size else w
        self._pos_sorted = np.sort(np.concatenate(self._pos_anom)) if self._pos_anom else np.empty(0, np.float32)
        self._pos_anom = []
        self._pos_vals, self._pos_w = [], []
        if np.isfinite(self._anom_lo):
            lo, hi = self._anom_lo, self._anom_hi
            self._grid = np.unique(np.r_[np.linspace(lo, hi, self.iou_points), self.thresholds])
        else:
            self._grid = np.unique(self.thresholds)
        self._bins = np.zeros(2 * self._asc.size + 1, dtype=np.int64)
        self._grid_fp = np.zeros(self._grid.size + 1, dtype=np.int64)

    def _count(self, vals: np.ndarray, counts: np.ndarray, anomalous: bool) -> None:
        """Count negatives given as distinct sorted ``vals`` with their ``counts``."""
        if vals.size == 0:
            return
        u = self._asc
        if u.size:
            idx = np.searchsorted(u, vals, side="left")
            eq = u[np.minimum(idx, u.size - 1)] == vals
            eq &= idx < u.size
            self._bins += np.bincount(2 * idx + eq, weights=counts, minlength=self._bins.size).astype(np.int64)
        else:
            self._bins[0] += int(counts.sum())
        if anomalous and self._grid.size:
            # number of grid thresholds strictly below each value = thresholds it exceeds
            k = np.searchsorted(self._grid, vals.astype(np.float64), side="left")
            self._grid_fp += np.bincount(k, weights=counts, minlength=self._grid_fp.size).astype(np.int64)

    # -- pass 2
    def add_negatives(self, maps: np.ndarray, gt: np.ndarray, valid: np.ndarray, anomalous: Sequence[bool]) -> None:
        """Second pass over the same batches in the same order (only when :attr:`needs_second_pass`)."""
        self._prepare()
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim == 2:
            maps, gt, valid = maps[None], np.asarray(gt)[None], np.asarray(valid)[None]
        anomalous = np.asarray(anomalous, dtype=bool).reshape(maps.shape[0])
        neg = np.asarray(valid, dtype=bool) & ~np.asarray(gt, dtype=bool)
        for m, nm, a in zip(maps, neg, anomalous):
            self._count(*_distinct(m[nm]), bool(a))

    def finish_second_pass(self) -> None:
        self._second_done = True

    def curves(self) -> PixelCurves:
        if self._curves is not None:
            return self._curves
        self._prepare()
        if self._kept is not None:
            for vals, counts, a in self._kept:
                self._count(vals, counts, a)
            self._kept = []
            self._kept_n = 0
        elif not self._second_done:
            raise RuntimeError("negatives were not kept: run the second pass (add_negatives) first")
        b = self._bins
        u = self._asc.size
        # ascending bins: 2i = strictly below asc[i] (above asc[i-1]), 2i+1 = equal asc[i], 2u = above all
        between_asc = b[2 : 2 * u + 1 : 2]  # strictly between asc[i] and asc[i+1] (or above the top)
        equal_asc = b[1 : 2 * u : 2]
        self._curves = PixelCurves(
            values=self._asc[::-1].copy(),
            pos=self._asc_pos[::-1].copy(),
            pro=self._asc_pro[::-1].copy(),
            neg_between=between_asc[::-1].copy(),
            neg_equal=equal_asc[::-1].copy(),
            neg_below=int(b[0]),
            n_pos=int(self._asc_pos.sum()),
            n_neg=int(self.n_neg),
            n_regions=int(self.n_regions),
        )
        return self._curves

    def iou_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(thresholds, IoU)`` over the anomalous images' valid pixels (pooled), exact at each threshold."""
        self.curves()
        if self._grid is None or self._grid.size == 0:
            return None
        fp = np.cumsum(self._grid_fp[::-1])[::-1][1:]  # negatives (anomalous images) > grid[k]
        n_pos = self._pos_sorted.size
        tp = n_pos - np.searchsorted(self._pos_sorted.astype(np.float64), self._grid, side="right")
        den = n_pos + fp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(den > 0, tp / np.maximum(den, 1), np.nan)
        return self._grid.copy(), iou

    def result(self, limit: float = PRO_LIMIT) -> dict:
        """Threshold-free pixel metrics plus the figures at each threshold of the constructor."""
        c = self.curves()
        notes: list[str] = []
        if c.n_pos == 0:
            notes.append("no ground-truth pixel among the valid pixels: pixel AUROC, AP and AUPRO are undefined")
        if c.n_neg == 0:
            notes.append("no normal (non-ground-truth) valid pixel: pixel AUROC and AUPRO are undefined")
        if self.n_regions_masked:
            notes.append(f"{self.n_regions_masked} ground-truth region(s) lie entirely in ignored pixels and were left out")
        at = []
        for i, t in enumerate(self.thresholds):
            pred = sum(im.predicted[i] for im in self.images)
            hit = sum(im.hit[i] for im in self.images)
            fp = pred - hit
            anom = list(zip(self.images, self._flags))
            a_pred = sum(im.predicted[i] for im, a in anom if a)
            a_hit = sum(im.hit[i] for im, a in anom if a)
            a_gt = sum(im.gt for im, a in anom if a)
            per = [im.iou(i) for im, a in anom if a]
            per = [x for x in per if x is not None]
            at.append({
                "threshold": float(t),
                "iou": _ratio(a_hit, a_gt + a_pred - a_hit),
                "iou_mean_per_image": float(np.mean(per)) if per else None,
                "tpr": _ratio(hit, c.n_pos),
                "fpr": _ratio(fp, c.n_neg),
                "precision": _ratio(hit, pred),
                "f1": _ratio(2 * hit, pred + c.n_pos),
            })
        return {
            "auroc": c.auroc(),
            "aupro": c.aupro(limit),
            "pro_limit": limit,
            "ap": c.average_precision(),
            "n_pos": c.n_pos,
            "n_neg": c.n_neg,
            "n_regions": c.n_regions,
            "at_thresholds": at,
            "notes": notes,
        }


def pixel_metrics(
    batches: Batches, thresholds: Sequence[float] = (), keep_budget: int = KEEP_BUDGET, limit: float = PRO_LIMIT
) -> tuple[dict, PixelAccumulator]:
    """Run the accumulator over ``batches()`` (called once, or twice if over ``keep_budget``).

    ``batches`` yields ``(maps (b,H,W), gt (b,H,W) bool, valid (b,H,W) bool, anomalous (b,))``
    and must yield the same data each time it is called.
    """
    acc = PixelAccumulator(thresholds, keep_budget=keep_budget).accumulate(batches(), batches)
    return acc.result(limit), acc


def downsample_curve(x: np.ndarray, y: np.ndarray, n: int = 400) -> tuple[list[float], list[float]]:
    """At most ~``n`` points for plotting and JSON; keeps both ends and the shape."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size <= n:
        return x.tolist(), y.tolist()
    # pick points evenly along the curve's arc length so steep and flat parts both survive
    seg = np.hypot(np.diff((x - x.min()) / (np.ptp(x) or 1)), np.diff((y - np.nanmin(y)) / (np.nanmax(y) - np.nanmin(y) or 1)))
    arc = np.r_[0.0, np.cumsum(np.nan_to_num(seg))]
    targets = np.linspace(0, arc[-1], n)
    idx = np.unique(np.r_[0, np.searchsorted(arc, targets).clip(0, x.size - 1), x.size - 1])
    return x[idx].tolist(), y[idx].tolist()
