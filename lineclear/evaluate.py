"""Test maps + ground truth + thresholds → every metric of thesis section 4, as one dict.

Pure orchestration over :mod:`lineclear.metrics`: it reads maps through a
:class:`~lineclear.formats.maps.MapsFile`-like object (``scores``, ``labels``,
``image_ids``, ``attrs``, ``map_size``, ``path``, ``iter_batches``) and ground truth
through a callable, and writes nothing. :class:`GroundTruth` is the default callable.

* Pixels outside ``/valid`` (inspection mask, registration border) are left out of every
  pixel metric. Ground truth is resized to the map resolution with nearest neighbour.
* Images with an unknown label (−1) are left out (a note says how many).
* Each thresholds file decides images at its ``level``: ``image`` = the image score above the
  image threshold; ``pixel`` = some counted (valid) pixel above the pixel threshold (thesis 3.5).
* "Best threshold" (thesis 5.6): the thresholds file with the highest image accuracy;
  ties go to ``max``, then ``ksigma``, then ``quantile``, then to fewer missed anomalies. It is
  chosen on the test labels and labelled so.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lineclear import metrics as M
from lineclear.errors import LineclearError
from lineclear.formats.masks import read_mask, resize_mask
from lineclear.formats.thresholds import level_of
from lineclear.progress import Progress, ensure

TIE_ORDER = ("max", "ksigma", "quantile")
BEST_RULE = "highest image accuracy; ties: max, then ksigma, then quantile, then fewer misses (thesis 5.6)"
VERDICTS = {(True, True): "TP", (True, False): "FP", (False, True): "FN", (False, False): "TN"}


class GroundTruth:
    """Ground-truth masks for image ids, at the map resolution.

    Default lookup (MVTec layout): the image ``<root>/<view>/test/<defect>/<stem>.png`` has
    its mask at ``<root>/<view>/ground_truth/<defect>/<stem>_mask.png``. With ``gt_dir``
    the mask is ``<gt_dir>/<defect>/<stem>_mask.png`` instead (``gt_dir`` laid out like one
    view's ``ground_truth/`` folder). Normal images (label 0) have an all-zero mask; an
    anomalous image without a mask is an error, and so is a mask whose size differs from the
    scored images' ``image_size`` (or, without it, whose aspect ratio differs from the maps').
    Masks are binarised at half range and resized to the map size with nearest neighbour.
    """

    def __init__(
        self,
        dataset_root: str | os.PathLike | None,
        gt_dir: str | os.PathLike | None = None,
        image_size: Sequence[int] | None = None,
    ) -> None:
        self.root = Path(dataset_root) if dataset_root else None
        self.gt_dir = Path(gt_dir) if gt_dir else None
        # (H, W) of the scored images (maps attribute image_size): a mask of another size
        # belongs to other images and is refused rather than silently stretched
        self.image_size = tuple(int(x) for x in image_size) if image_size else None
        if self.gt_dir is not None and not self.gt_dir.is_dir():
            raise LineclearError(f"{self.gt_dir}: no such ground-truth folder")

    def path_for(self, image_id: str) -> Path:
        p = Path(image_id)
        name = f"{p.stem}_mask.png"
        if self.gt_dir is not None:
            return self.gt_dir / p.parent.name / name
        if self.root is None:
            raise LineclearError("the maps file records no dataset_root: give the ground truth with --gt DIR")
        parts = p.parts
        # <view>/test/<defect>/<stem>.png → <view>/ground_truth/<defect>/<stem>_mask.png
        if len(parts) >= 3 and parts[-3] in ("test", "val", "train"):
            return self.root.joinpath(*parts[:-3], "ground_truth", parts[-2], name)
        return self.root / p.parent.parent / "ground_truth" / p.parent.name / name

    def __call__(self, image_id: str, label: int, shape: tuple[int, int]) -> np.ndarray:
        if label != 1:
            return np.zeros(shape, dtype=bool)
        path = self.path_for(image_id)
        if not path.is_file():
            raise LineclearError(f"{path}: ground-truth mask missing for anomalous image {image_id}")
        mask = read_mask(path)
        if self.image_size is not None and mask.shape != self.image_size:
            raise LineclearError(
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but the scored images are "
                f"{self.image_size[1]}x{self.image_size[0]} (width x height)"
            )
        if self.image_size is None and abs(mask.shape[0] / mask.shape[1] - shape[0] / shape[1]) > 0.02:
            raise LineclearError(
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, not the shape of the {shape[1]}x{shape[0]} maps"
            )
        return resize_mask(mask, shape)

    def describe(self) -> str:
        return str(self.gt_dir) if self.gt_dir else f"{self.root}/<view>/ground_truth" if self.root else ""


def config_name(attrs: dict[str, Any]) -> str:
    """Thesis column label from maps provenance: ``PO``/``PRE`` + ``M``/``NM`` + ``R``/``NR``.

    Without an inspection mask the stage does not matter, so the label is ``NM+R``/``NM+NR``.
    """
    stage = str(attrs.get("mask_stage") or "none")
    has_mask = bool(attrs.get("mask"))
    reg = "R" if int(attrs.get("registered") or 0) else "NR"
    if stage in ("pre", "post") and has_mask:
        return f"{'PRE' if stage == 'pre' else 'PO'}+M+{reg}"
    return f"NM+{reg}"


def provenance_warnings(thr: dict, attrs: dict[str, Any], map_size: tuple[int, int]) -> list[str]:
    """Differences between where thresholds were computed and the maps they are applied to."""
    src = thr.get("source", {}) or {}
    name = thr.get("path", "thresholds")
    out = []
    for key in ("model", "view", "checkpoint_sha256", "mask_stage", "registered"):
        a, b = src.get(key), attrs.get(key)
        if a not in (None, "") and b not in (None, "") and str(a) != str(b):
            out.append(f"{name}: computed on maps with {key}={a}, applied to maps with {key}={b}")
    if src.get("map_size") and list(src["map_size"]) != list(map_size):
        out.append(f"{name}: computed at map size {src['map_size']}, applied to maps of {list(map_size)}")
    return out


def foreign_thresholds(thr: dict, attrs: dict[str, Any]) -> str | None:
    """Why thresholds cannot apply to these maps at all (another view or model), or None.

    Other differences (checkpoint, mask stage, map size) are :func:`provenance_warnings`.
    """
    src = thr.get("source", {}) or {}
    name = thr.get("path", "thresholds")
    for key, what in (("view", "view"), ("model", "model")):
        a, b = src.get(key), attrs.get(key)
        if a not in (None, "") and b not in (None, "") and str(a) != str(b):
            return f"{name}: thresholds of {what} {a!r}, but the maps are of {what} {b!r}"
    return None


def choose_best(entries: Sequence[dict]) -> int:
    """Index of the thesis's best threshold set (highest accuracy; ties: max, ksigma, quantile)."""
    def key(i: int) -> tuple:
        acc = entries[i]["image"].get("accuracy")
        m = entries[i].get("method")
        rank = TIE_ORDER.index(m) if m in TIE_ORDER else len(TIE_ORDER)
        fn = entries[i]["image"].get("fn")
        return (-(acc if acc is not None else -1.0), rank, fn if fn is not None else math.inf, i)

    return min(range(len(entries)), key=key)


@dataclass
class _Cache:
    """Ground truth of every image kept as packed bits for the second pass (1 bit per pixel)."""

    shape: tuple[int, int]
    packed: list[np.ndarray]

    def get(self, i: int) -> np.ndarray:
        h, w = self.shape
        return np.unpackbits(self.packed[i], count=h * w).reshape(h, w).astype(bool)


def evaluate(
    maps: Any,
    thresholds: Sequence[dict],
    gt: Callable[[str, int, tuple[int, int]], np.ndarray],
    batch: int = 8,
    keep_budget: int = M.KEEP_BUDGET,
    pro_limit: float = M.PRO_LIMIT,
    progress: Progress | None = None,
) -> dict:
    """All metrics for a maps file. ``thresholds``: thresholds documents (``path`` key optional).

    Returns a ``lineclear.metrics/1`` document without ``files`` (see
    :mod:`lineclear.formats.metrics`); ``images`` are in file order with ``index`` and an
    ``order`` rank for overlays (worst first).
    """
    progress = ensure(progress)
    if not thresholds:
        raise LineclearError("no thresholds to evaluate with (run lineclear calibrate first)")
    path = getattr(maps, "path", "maps")
    h, w = maps.map_size
    labels = np.asarray(maps.labels, dtype=np.int64)
    scores = np.asarray(maps.scores, dtype=np.float64)
    ids = list(maps.image_ids)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise LineclearError(f"{path}: image score of {ids[bad[0]]} is NaN or infinite")
    use = labels >= 0
    notes: list[str] = []
    if (~use).any():
        notes.append(f"{int((~use).sum())} image(s) with unknown label left out (not under good/ or test/<defect>/)")
    if not use.any():
        raise LineclearError(f"{path}: no image with a known label (normal or anomalous) to evaluate")
    pix_t = [t["pixel"].get("threshold") for t in thresholds]
    pix_t_num = [x if x is not None else math.inf for x in pix_t]

    cache = _Cache((h, w), [])
    n = len(ids)

    def first_pass():
        with progress.task("evaluate: maps", total=n) as task:
            for sl, m, valid in maps.iter_batches(batch):
                idx = range(sl.start, sl.stop)
                if not np.all(np.isfinite(m)):
                    j = sl.start + int(np.flatnonzero(~np.isfinite(m).reshape(len(m), -1).all(1))[0])
                    raise LineclearError(f"{path}: anomaly map of {ids[j]} contains NaN or infinite values")
                g = np.stack([gt(ids[i], int(labels[i]), (h, w)) if labels[i] >= 0 else np.zeros((h, w), bool) for i in idx])
                cache.packed.extend(np.packbits(x.ravel()) for x in g)
                keep = use[sl]
                valid = valid & keep[:, None, None]  # unknown-label images contribute no pixel
                task.advance(len(m))
                yield m, g, valid, labels[sl] == 1

    def second_pass():
        with progress.task("evaluate: exact counts", total=n) as task:
            for sl, m, valid in maps.iter_batches(batch):
                g = np.stack([cache.get(i) for i in range(sl.start, sl.stop)])
                task.advance(len(m))
                yield m, g, valid & use[sl][:, None, None], labels[sl] == 1

    acc = M.PixelAccumulator(pix_t_num, keep_budget=keep_budget).accumulate(first_pass(), second_pass)
    pixel = acc.result(pro_limit)
    notes += pixel.pop("notes")
    at = pixel.pop("at_thresholds")

    # image level
    y = labels[use] == 1
    s = scores[use]
    image = {"auroc": M.roc_auc(s, y), "ap": M.average_precision(s, y)}
    if image["auroc"] is None:
        notes.append("only one class among the test images: image AUROC is undefined")
    entries = []
    decisions = []  # per thresholds file: (N,) bool, every image's decision, or None
    for j, (t, pat) in enumerate(zip(thresholds, at)):
        lv = level_of(t)
        it = t["image"].get("threshold")
        if lv == "pixel":
            # anomalous when any counted pixel is above the pixel threshold
            pred = np.array([st.predicted[j] > 0 for st in acc.images], dtype=bool)
            img = {"threshold": float(pix_t[j]), **M.confusion_of(pred[use], y)}
        elif it is not None:
            pred = scores > it
            img = M.confusion(s, y, it)
        else:
            pred, img = None, {"threshold": None}
        decisions.append(pred)
        pa = dict(pat)
        if t["pixel"].get("threshold") is None:
            pa = {k: None for k in pa}
        entries.append({
            "method": t.get("method"), "params": t.get("params", {}), "level": lv, "path": str(t.get("path", "")),
            "image": img, "pixel": pa,
        })
    best = choose_best(entries)
    be = entries[best]

    # per image at the best threshold
    images = []
    it_best = be["image"].get("threshold")
    pred_best = decisions[best]
    # what the decision compared with the threshold: the image score, or the highest counted pixel
    decided_on = scores if be["level"] == "image" else np.array(
        [st.max if st.max is not None else -math.inf for st in acc.images], dtype=np.float64)
    for i, st in enumerate(acc.images):
        lab = int(labels[i])
        rec: dict[str, Any] = {
            "index": i, "id": ids[i], "label": lab, "score": float(scores[i]), "max": st.max,
            "valid_pixels": st.valid, "gt_pixels": st.gt,
            "predicted_pixels": st.predicted[best] if pix_t[best] is not None else None,
            "iou": st.iou(best) if (pix_t[best] is not None and lab == 1) else None,
        }
        if pred_best is not None:
            pred = bool(pred_best[i])
            rec["verdict"] = "anomalous" if pred else "normal"
            rec["outcome"] = VERDICTS[(pred, lab == 1)] if lab >= 0 else "?"
            rec["correct"] = (pred == (lab == 1)) if lab >= 0 else None
        else:
            rec["verdict"], rec["outcome"], rec["correct"] = None, "?", None
        images.append(rec)
    for rank, i in enumerate(overlay_order(images, it_best, decided_on)):
        images[i]["order"] = rank

    curves = _curves(s, y, acc)
    summary = {
        "auroc_image": image["auroc"],
        "auroc_pixel": pixel["auroc"],
        "aupro": pixel["aupro"],
        "ap": pixel["ap"],
        "iou": be["pixel"].get("iou"),
        "accuracy": be["image"].get("accuracy"),
        "method": be["method"],
        "level": be["level"],
    }
    attrs = dict(getattr(maps, "attrs", {}) or {})
    for t in thresholds:
        notes += provenance_warnings(t, attrs, (h, w))
    return {
        "config_name": config_name(attrs),
        "source": {
            "path": str(path),
            **{k: attrs.get(k) for k in ("model", "view", "checkpoint", "checkpoint_sha256", "mask_stage", "mask",
                                         "registered", "dataset_root", "split", "checkpoint_epoch")},
            "map_size": [h, w],
        },
        "counts": {"images": n, "normal": int(np.sum(labels == 0)), "anomalous": int(np.sum(labels == 1)),
                   "excluded": int(np.sum(~use))},
        "image": image,
        "pixel": pixel,
        "thresholds": entries,
        # the normal validation images' statistics the thresholds came from (what a choice that never
        # looks at the test labels can use, e.g. lineclear.selection.line_pick)
        "validation": {"image": (thresholds[0].get("image") or {}).get("stats") or {},
                       "pixel": (thresholds[0].get("pixel") or {}).get("stats") or {}},
        "best": {"index": best, "method": be["method"], "level": be["level"], "path": be["path"], "rule": BEST_RULE,
                 "chosen_on": "test labels"},
        "summary": summary,
        "curves": curves,
        "images": images,
        "notes": notes,
    }


def overlay_order(images: list[dict], threshold: float | None, scores: np.ndarray) -> list[int]:
    """Image indices, worst first: FPs and FNs by how far their value (``scores``: what the decision
    compared with ``threshold``) is on the wrong side of it (relative to the spread), then anomalous
    images by lowest IoU, then normal images by highest value."""
    v = np.asarray(scores, dtype=np.float64)
    fin = np.isfinite(v)
    v = np.where(fin, v, v[fin].min() if fin.any() else 0.0)  # an image with no counted pixel
    spread = float(np.ptp(v)) or 1.0

    def key(i: int) -> tuple:
        r = images[i]
        if r["outcome"] in ("FP", "FN") and threshold is not None:
            return (0, -abs(v[i] - threshold) / spread)
        if r["outcome"] == "TP":
            return (1, r["iou"] if r["iou"] is not None else 2.0)
        if r["outcome"] == "TN":
            return (2, -v[i])
        return (3, 0.0)

    return sorted(range(len(images)), key=key)


def _curve(x, y, xl: str, yl: str) -> dict:
    xs, ys = M.downsample_curve(np.asarray(x), np.asarray(y))
    return {"x": xs, "y": ys, "x_label": xl, "y_label": yl}


def _curves(s: np.ndarray, y: np.ndarray, acc: M.PixelAccumulator) -> dict:
    out: dict[str, Any] = {}
    roc = M.roc_curve(s, y)
    if roc is not None:
        out["image_roc"] = _curve(roc[0], roc[1], "false positive rate", "true positive rate")
    c = acc.curves()
    r = c.roc()
    if r is not None:
        out["pixel_roc"] = _curve(r[0], r[1], "false positive rate", "true positive rate")
    pr = c.pr()
    if pr is not None:
        out["pixel_pr"] = _curve(pr[1], pr[0], "recall", "precision")
    pro = c.pro_curve()
    if pro is not None:
        out["pro"] = _curve(pro[0], pro[1], "false positive rate", "per-region overlap")
    iou = acc.iou_curve()
    if iou is not None:
        keep = np.isfinite(iou[1])
        if keep.any():
            out["iou"] = _curve(iou[0][keep], iou[1][keep], "pixel threshold", "IoU (anomalous images)")
    return out
