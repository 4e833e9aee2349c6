"""Metric curves as PNG bytes (matplotlib Agg, no global backend state)."""

from __future__ import annotations

import io
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CURVE_FILES = {
    "image_roc": "roc_image.png",
    "pixel_roc": "roc_pixel.png",
    "pixel_pr": "pr_pixel.png",
    "pro": "pro.png",
    "iou": "iou.png",
}
TITLES = {
    "image_roc": "Image ROC",
    "pixel_roc": "Pixel ROC",
    "pixel_pr": "Pixel precision–recall",
    "pro": "Per-region overlap (PRO)",
    "iou": "IoU vs pixel threshold",
}


def png(fig: Figure, dpi: int = 100) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # fast zlib level: encoding dominated the rendering time at the default level
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": 2})
    return buf.getvalue()


def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.4g}"


def curve_png(
    name: str,
    curve: dict,
    metric: float | None = None,
    pro_limit: float = 0.3,
    markers: Sequence[tuple[str, float, bool]] = (),
) -> bytes:
    """One curve from ``metrics.json['curves'][name]`` (x, y, x_label, y_label).

    ``metric`` goes into the title (AUROC, AP, AUPRO); ``markers`` are (label, threshold,
    is_best) vertical lines on the IoU curve.
    """
    fig = Figure(figsize=(4.6, 4.0))
    ax = fig.add_subplot(111)
    x, y = curve["x"], curve["y"]
    title = TITLES.get(name, name)
    if name in ("image_roc", "pixel_roc"):
        ax.plot([0, 1], [0, 1], ls=":", c="0.6", lw=1)
        ax.plot(x, y, c="C0", lw=2, drawstyle="default")
        ax.fill_between(x, y, alpha=0.12, color="C0")
        title += f" — AUROC {_fmt(metric)}"
    elif name == "pixel_pr":
        ax.plot(x, y, c="C2", lw=2, drawstyle="steps-post")
        title += f" — AP {_fmt(metric)}"
    elif name == "pro":
        ax.axvspan(0, pro_limit, color="C1", alpha=0.08, label=f"integrated (FPR ≤ {pro_limit:g})")
        ax.plot(x, y, c="C1", lw=2)
        ax.axvline(pro_limit, c="C1", ls="--", lw=1)
        ax.legend(loc="lower right", fontsize=8)
        title = f"PRO — AUPRO@{pro_limit:g} {_fmt(metric)}"
    elif name == "iou":
        ax.plot(x, y, c="C3", lw=2)
        for label, t, best in markers:
            ax.axvline(t, c="k" if best else "0.55", ls="-" if best else "--", lw=1.5 if best else 1)
            ax.annotate(label + (" (best)" if best else ""), (t, 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7)
    ax.set_xlabel(curve.get("x_label", "x"))
    ax.set_ylabel(curve.get("y_label", "y"))
    if name != "iou":
        ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.14, right=0.96, bottom=0.13, top=0.91)  # tight_layout would draw twice
    return png(fig)


def all_curves(doc: dict) -> dict[str, bytes]:
    """``{file name: PNG}`` for every curve present in a metrics document."""
    curves = doc.get("curves", {})
    metric = {
        "image_roc": doc.get("image", {}).get("auroc"),
        "pixel_roc": doc.get("pixel", {}).get("auroc"),
        "pixel_pr": doc.get("pixel", {}).get("ap"),
        "pro": doc.get("pixel", {}).get("aupro"),
    }
    best = doc.get("best", {}).get("index")
    markers = [
        (e.get("method") or "?", e["pixel"]["threshold"], i == best)
        for i, e in enumerate(doc.get("thresholds", []))
        if e.get("pixel", {}).get("threshold") is not None
    ]
    out = {}
    for name, fname in CURVE_FILES.items():
        if name in curves:
            out[fname] = curve_png(name, curves[name], metric.get(name), doc.get("pixel", {}).get("pro_limit", 0.3),
                                   markers if name == "iou" else ())
    return out
