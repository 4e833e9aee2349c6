"""Per-image overlays like the thesis's figures (sections 5.3, 5.7), as PNG bytes.

One row per image: the image with the ground-truth contour; for reconstruction models (DRAEM,
DDAD) what the model reconstructed (thesis figure 8); the anomaly heat map (ignored pixels hatched grey); the predicted regions (map > pixel threshold) on the image with the
ground-truth contour; and the image score against the image threshold.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lineclear.report.plots import png

GT_COLOUR = "#00e676"
PRED_COLOUR = "#ff1744"
OUTCOME_TEXT = {
    "TP": "anomaly found (TP)",
    "TN": "correctly normal (TN)",
    "FP": "FALSE ALARM (FP)",
    "FN": "MISSED ANOMALY (FN)",
    "?": "label unknown",
}


def _contour(ax, mask: np.ndarray, colour: str, lw: float = 1.6) -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=lw)


def overlay_png(
    image: np.ndarray | None,
    amap: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray,
    record: dict,
    pixel_threshold: float | None,
    image_threshold: float | None,
    vmax: float | None = None,
    score_range: tuple[float, float] | None = None,
    reconstruction: np.ndarray | None = None,
) -> bytes:
    """Render one image's overlay.

    ``image`` float (h,w,3) in [0,1], the map's aspect at any resolution (None: grey placeholder); ``amap`` (H,W);
    ``gt``/``valid`` bool (H,W); ``record`` an entry of ``metrics.json['images']`` (id, score,
    outcome, iou); ``vmax`` shared heat-map scale; ``score_range`` (lo, hi) of all image scores;
    ``reconstruction`` float (H',W',3) in [0,1] or None: the model's reconstruction, a panel after the image.
    """
    h, w = amap.shape
    base = image if image is not None else np.full((h, w, 3), 0.5, np.float32)
    # the photo may be sharper than the map: draw it over the map's pixel grid
    ext = (-0.5, w - 0.5, h - 0.5, -0.5)
    fig = Figure(figsize=(17.5 if reconstruction is not None else 14.0, 3.9))
    if reconstruction is not None:
        a0, ar, a1, a2, a3 = fig.subplots(1, 5, gridspec_kw={"width_ratios": [1, 1, 1.1, 1, 0.8]})
        ar.imshow(np.clip(reconstruction, 0, 1), interpolation="nearest", extent=ext)
        _contour(ar, gt, GT_COLOUR)
        ar.set_title("reconstruction (what the model expected)", fontsize=9)
        ar.set_xticks([])
        ar.set_yticks([])
    else:
        a0, a1, a2, a3 = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1.1, 1, 0.8]})
    a0.imshow(base, interpolation="nearest", extent=ext)
    _contour(a0, gt, GT_COLOUR)
    a0.set_title("image + ground truth" if image is not None else "(source image not found)", fontsize=9)

    lo = min(0.0, float(amap[valid].min())) if valid.any() else 0.0
    hi = vmax if vmax is not None and vmax > lo else (float(amap.max()) if amap.max() > lo else lo + 1)
    shown = np.ma.masked_where(~valid, amap)
    im = a1.imshow(shown, cmap="inferno", vmin=lo, vmax=hi, interpolation="nearest")
    if (~valid).any():
        a1.imshow(np.where(~valid, 1.0, np.nan), cmap="Greys", vmin=0, vmax=2, alpha=0.9, interpolation="nearest")
    fig.colorbar(im, ax=a1, fraction=0.046, pad=0.02)
    a1.set_title("anomaly map (grey: ignored)", fontsize=9)

    a2.imshow(base, interpolation="nearest", extent=ext)
    if pixel_threshold is not None:
        pred = (amap > pixel_threshold) & valid
        tint = np.zeros((h, w, 4), np.float32)
        tint[pred] = (1.0, 0.09, 0.27, 0.45)
        a2.imshow(tint, interpolation="nearest")
        _contour(a2, pred, PRED_COLOUR, 1.2)
        iou = record.get("iou")
        a2.set_title(f"predicted (map > {pixel_threshold:.4g})" + (f", IoU {100 * iou:.1f}%" if iou is not None else ""),
                     fontsize=9)
    else:
        a2.set_title("no pixel threshold", fontsize=9)
    _contour(a2, gt, GT_COLOUR)
    a2.legend(handles=[Patch(color=GT_COLOUR, label="ground truth"), Patch(color=PRED_COLOUR, label="predicted")],
              loc="lower right", fontsize=7, framealpha=0.7)
    for ax in (a0, a1, a2):
        ax.set_xticks([])
        ax.set_yticks([])

    score = record["score"]
    outcome = record.get("outcome", "?")
    colour = {"TP": "#2e7d32", "TN": "#2e7d32", "FP": "#c62828", "FN": "#c62828"}.get(outcome, "#555")
    a3.barh([0], [score], color=colour, height=0.5)
    if image_threshold is not None:
        a3.axvline(image_threshold, c="k", ls="--", lw=1.5)
        a3.annotate(f"threshold\n{image_threshold:.4g}", (image_threshold, 0.42), fontsize=8, ha="center")
    lo_s, hi_s = score_range if score_range else (min(0.0, score), max(score, image_threshold or score))
    pad = 0.05 * ((hi_s - lo_s) or 1.0)
    a3.set_xlim(min(lo_s, 0.0) - pad, hi_s + pad)
    a3.set_ylim(-0.6, 0.8)
    a3.set_yticks([])
    a3.set_xlabel("image score")
    a3.set_title(f"score {score:.4g} → {OUTCOME_TEXT.get(outcome, outcome)}", fontsize=9, color=colour)
    label = {0: "normal", 1: "anomalous"}.get(record.get("label"), "unknown")
    fig.suptitle(f"{record['id']}  (label: {label})", fontsize=10)
    # fixed margins: tight_layout would draw the figure twice
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.14, top=0.86, wspace=0.12)
    return png(fig, dpi=80)
