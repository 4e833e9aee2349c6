"""Assemble a report directory: curves, overlays, report.html and metrics.json.

``REPORT_DIR/`` after ``lineclear evaluate``::

    metrics.json            lineclear.metrics/1
    report.html             self-contained page (images embedded)
    curves/roc_image.png  roc_pixel.png  pr_pixel.png  pro.png  iou.png
    overlays/NNN_<OUTCOME>_<image>.png   worst first, at most --max-overlays

Everything is rendered in memory and staged in a hidden folder inside ``REPORT_DIR``;
only when all of it exists are the files moved into place, so a failure leaves the
previous report (or nothing) behind. ``--overwrite`` removes only the files the previous
report's metrics.json lists; without it, no file is replaced (not even one another run wrote meanwhile).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lineclear import __version__
from lineclear.errors import LineclearError, OutputExistsError
from lineclear.formats._io import make_temp_dir, publish
from lineclear.formats.metrics import write_metrics
from lineclear.images import read_rgb
from lineclear.progress import Progress, ensure
from lineclear.report.html import render_report
from lineclear.report.overlays import overlay_png

OUTPUTS = ("metrics.json", "report.html", "curves", "overlays")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80]


def render_overlays(
    doc: dict,
    maps: Any,
    gt: Callable[[str, int, tuple[int, int]], np.ndarray],
    max_overlays: int = 24,
    progress: Progress | None = None,
    reconstruct: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[list[tuple[dict, bytes, str]], list[str]]:
    """``[(image record, PNG, file name)]`` worst first, and notes (e.g. source images not found).

    ``reconstruct``: (H,W,3) float image at the map size → the model's reconstruction of it (DRAEM, DDAD),
    drawn as a panel of its own; None for models that reconstruct nothing.
    """
    progress = ensure(progress)
    images = sorted(doc["images"], key=lambda r: r.get("order", r["index"]))[: max(0, max_overlays)]
    best = doc["thresholds"][doc["best"]["index"]]
    pt, it = best["pixel"].get("threshold"), best["image"].get("threshold")
    if best.get("level") == "pixel":
        it = None  # the decision compared the map's peak with the pixel threshold, not the score with one
    root = doc["source"].get("dataset_root")
    scores = [r["score"] for r in doc["images"]]
    srange = (min(scores + ([it] if it is not None else [])), max(scores + ([it] if it is not None else [])))
    maxima = [r["max"] for r in images if r.get("max") is not None]
    vmax = max(maxima) if maxima else None
    h, w = maps.map_size
    f = max(1, 256 // max(h, w))  # small maps: show the photo at >= 256 px anyway
    out, missing = [], 0
    with progress.task("report: overlays", total=len(images)) as task:
        for rank, r in enumerate(images):
            i = r["index"]
            img = None
            src = Path(root) / r["id"] if root else None
            if src is not None and src.is_file():
                img = read_rgb(src, (h * f, w * f))
            else:
                missing += 1
            g = gt(r["id"], r["label"], (h, w)) if r["label"] >= 0 else np.zeros((h, w), bool)
            rec = None
            if reconstruct is not None and src is not None and src.is_file():
                rec = reconstruct(read_rgb(src, (h, w)))
            data = overlay_png(img, maps.map(i), g, maps.valid(i), r, pt, it, vmax=vmax, score_range=srange,
                               reconstruction=rec)
            name = f"{rank:03d}_{r.get('outcome', 'X').replace('?', 'U')}_{_safe(Path(r['id']).with_suffix('').as_posix())}.png"
            out.append((r, data, name))
            task.advance(1)
    notes = [f"{missing} source image(s) not found under {root}: overlays show a grey background"] if missing else []
    return out, notes


def write_report_dir(
    out_dir: str | os.PathLike,
    doc: dict,
    curves: dict[str, bytes],
    overlays: list[tuple[dict, bytes, str]],
    overwrite: bool = False,
) -> dict:
    """Write the report directory; returns the ``files`` entry (also stored in metrics.json)."""
    out = Path(out_dir)
    existing = [n for n in OUTPUTS if (out / n).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{out}: already holds a report ({', '.join(existing)}); use --overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LineclearError(f"{out}: cannot create the report folder ({exc.strerror or exc})") from None
    files = {
        "metrics": "metrics.json",
        "report": "report.html",
        "curves": [f"curves/{n}" for n in curves],
        "overlays": [f"overlays/{n}" for _, _, n in overlays],
    }
    doc = {**doc, "files": files}
    doc.setdefault("lineclear_version", __version__)
    doc.setdefault("created_utc", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    for r, _, n in overlays:
        r["overlay"] = f"overlays/{n}"
    previous = _previous_files(out) if overwrite else set()
    stage = make_temp_dir(out, "lineclear-report")
    try:
        (stage / "curves").mkdir()
        (stage / "overlays").mkdir()
        for n, data in curves.items():
            (stage / "curves" / n).write_bytes(data)
        for _, data, n in overlays:
            (stage / "overlays" / n).write_bytes(data)
        page = render_report(doc, curves, [(r, data) for r, data, _ in overlays])
        (stage / "report.html").write_text(page, encoding="utf-8")
        write_metrics(stage / "metrics.json", doc)
        # everything rendered: replace the old report file by file. Only the files the previous
        # metrics.json lists are removed; anything else in curves/ or overlays/ is not lineclear's.
        new = [*files["curves"], *files["overlays"], "report.html", "metrics.json"]
        for rel in sorted(previous - set(new)):
            (out / rel).unlink(missing_ok=True)
        for rel in new:
            (out / rel).parent.mkdir(exist_ok=True)
            publish(stage / rel, out / rel, overwrite)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return doc


def _previous_files(out: Path) -> set[str]:
    """Curves and overlays the report already in ``out`` consists of (from its metrics.json)."""
    from lineclear.formats.metrics import read_metrics

    if not (out / "metrics.json").is_file():
        return set()
    try:
        listed = read_metrics(out / "metrics.json").get("files") or {}
    except LineclearError:
        return set()
    rels = [*listed.get("curves", []), *listed.get("overlays", [])]
    return {r for r in rels if isinstance(r, str) and r.split("/")[0] in ("curves", "overlays") and ".." not in r}
