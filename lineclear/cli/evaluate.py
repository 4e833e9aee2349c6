"""``lineclear evaluate [TEST_MAPS.h5] --thresholds thresholds.json --out REPORT_DIR``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.table import Table

from lineclear.cli import console
from lineclear.cli.options import JsonOut, Overwrite
from lineclear.errors import LineclearError, OutputExistsError
from lineclear.evaluate import GroundTruth, evaluate, foreign_thresholds
from lineclear.formats import MapsFile, read_thresholds, sha256_file
from lineclear.report.build import OUTPUTS, render_overlays, write_report_dir
from lineclear.report.plots import all_curves
from lineclear.report.tables import pct, threshold_labels

DEFAULT_TEST_MAPS = Path("test_maps.h5")
# what calibrate writes beside the maps by default: --method all adds _<method>, --level both _<level>
DEFAULT_THRESHOLDS = tuple(f"thresholds{m}{lv}.json" for m in ("", "_max", "_ksigma", "_quantile")
                           for lv in ("", "_pixel", "_image"))
DEFAULT_REPORT = "report"


def default_thresholds(maps_path: Path) -> list[Path]:
    found = [maps_path.parent / n for n in DEFAULT_THRESHOLDS if (maps_path.parent / n).is_file()]
    if not found:
        raise LineclearError(
            f"no thresholds given and none of {', '.join(DEFAULT_THRESHOLDS)} beside {maps_path} "
            "(run lineclear calibrate, or pass --thresholds FILE)"
        )
    return found


def check_report_dir(report_dir: Path) -> None:
    """Refuse, before minutes of work, a report folder that cannot be created or written."""
    if report_dir.exists() and not report_dir.is_dir():
        raise LineclearError(f"{report_dir}: exists and is not a folder (--out is the report folder)")
    parent = report_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise LineclearError(f"{report_dir}: cannot create the report folder ({parent} is not a writable folder)")


def same_thresholds_key(doc: dict) -> str:
    """What makes two thresholds documents the same for evaluation (not who wrote them when)."""
    src = doc.get("source") or {}
    return json.dumps([doc.get("method"), doc.get("params"), doc.get("level", "image"), (doc.get("pixel") or {}).get("threshold"),
                       (doc.get("image") or {}).get("threshold"), src.get("sha256") or src.get("path")],
                      sort_keys=True, default=str)


def reconstructor(attrs: dict):
    """For the maps of a reconstruction model (one with ``reconstruction``: DRAEM, DDAD) whose checkpoint is still
    where the maps say and unchanged: (H,W,3) image → its (H,W,3) reconstruction. Else None (with a note why)."""
    import numpy as np
    import torch

    from lineclear.scoring import load_model

    ckpt = attrs.get("checkpoint")
    if attrs.get("model") not in ("draem", "ddad") or not ckpt:
        return None
    path = Path(str(ckpt))
    if not path.is_file() or (attrs.get("checkpoint_sha256") and sha256_file(path) != attrs.get("checkpoint_sha256")):
        console.note(f"{path}: checkpoint missing or changed since scoring; overlays without the reconstruction panel")
        return None
    model, _, _ = load_model(path, "cpu")
    if not hasattr(model, "reconstruction"):
        return None

    def run(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32))
        with torch.inference_mode():
            return model.reconstruction(x)[0].permute(1, 2, 0).numpy()

    return run


def metrics_table(doc: dict) -> Table:
    t = Table(title=f"{doc['source'].get('model') or ''} · view {doc['source'].get('view') or '?'} · {doc['config_name']}")
    t.add_column("metric")
    for i, label in enumerate(threshold_labels(doc["thresholds"])):
        best = " (best)" if i == doc["best"]["index"] else ""
        t.add_column(f"{label}{best}", justify="right")
    n = len(doc["thresholds"])
    free = [("image AUROC", doc["image"]["auroc"]), ("pixel AUROC", doc["pixel"]["auroc"]),
            ("AUPRO@0.3", doc["pixel"]["aupro"]), ("pixel AP", doc["pixel"]["ap"])]
    for name, v in free:
        t.add_row(name, *[pct(v)] * n)
    rows = [("decides by", lambda e: "any pixel > pixel t" if e.get("level") == "pixel" else "score > image t"),
            ("decision threshold", lambda e: f"{e['image']['threshold']:.5g}" if e['image'].get('threshold') is not None else "–"),
            ("accuracy", lambda e: pct(e["image"].get("accuracy"))),
            ("precision", lambda e: pct(e["image"].get("precision"))),
            ("recall", lambda e: pct(e["image"].get("recall"))),
            ("F1", lambda e: pct(e["image"].get("f1"))),
            ("TP/FP/TN/FN", lambda e: "/".join(str(e["image"].get(k, "–")) for k in ("tp", "fp", "tn", "fn"))),
            ("pixel threshold", lambda e: f"{e['pixel']['threshold']:.5g}" if e['pixel'].get('threshold') is not None else "–"),
            ("IoU", lambda e: pct(e["pixel"].get("iou"))),
            ("pixel FPR", lambda e: pct(e["pixel"].get("fpr"), 2))]
    for name, f in rows:
        t.add_row(name, *[f(e) for e in doc["thresholds"]])
    return t


def evaluate_command(
    maps_path: Annotated[Path, typer.Argument(metavar="TEST_MAPS", help="Maps of the test images (lineclear score --split test).")] = DEFAULT_TEST_MAPS,
    thresholds: Annotated[Optional[List[Path]], typer.Option("--thresholds", "-t", help="Thresholds file(s); repeat to compare methods (default: thresholds*.json beside TEST_MAPS).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report directory (default: report/ beside TEST_MAPS).", show_default=False)] = None,
    gt: Annotated[Optional[Path], typer.Option("--gt", help="Ground-truth folder laid out like a view's ground_truth/ (<defect>/<stem>_mask.png) (default: <dataset_root>/<view>/ground_truth).", file_okay=False, show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Configuration name for comparison tables (default: from the maps provenance, e.g. PO+M+R).", show_default=False)] = None,
    max_overlays: Annotated[int, typer.Option("--max-overlays", min=0, help="Per-image overlays to draw, worst first.")] = 24,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Maps read per batch.")] = 8,
    reconstructions: Annotated[bool, typer.Option("--reconstructions/--no-reconstructions", help="DRAEM, DDAD: a panel in each overlay with the model's reconstruction of the image (the checkpoint the maps name is loaded).")] = True,
    force: Annotated[bool, typer.Option("--force", help="Evaluate even with thresholds calibrated for another view or model (a warning instead of an error).")] = False,
    json_out: JsonOut = False,
    overwrite: Overwrite = False,
) -> None:
    """Metrics, curves, overlays and report.html for a test maps file.

    Image AUROC; pixel AUROC, AUPRO@0.3 (as the official MVTec AD evaluation), pixel AP
    (valid pixels only); IoU over the anomalous images and accuracy/precision/recall/F1 at
    each thresholds file. The best thresholds file (thesis 5.6, chosen on the test labels)
    gives the summary, the overlays and the verdicts.
    """
    report_dir = out if out is not None else maps_path.parent / DEFAULT_REPORT
    existing = [n for n in OUTPUTS if (report_dir / n).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{report_dir}: already holds a report ({', '.join(existing)}); use --overwrite to replace it")
    check_report_dir(report_dir)
    paths = list(thresholds) if thresholds else default_thresholds(maps_path)
    docs, seen = [], {}
    for p in paths:
        d = read_thresholds(p)
        d["path"] = str(p)
        # the same thresholds twice (e.g. thresholds.json and thresholds_ksigma.json, both
        # written by calibrate --method ksigma from one maps file) would be two identical columns
        key = same_thresholds_key(d)
        if key in seen:
            console.note(f"{p}: same thresholds as {seen[key]}; evaluated once")
            continue
        seen[key] = p
        docs.append(d)
    with MapsFile(maps_path) as maps:
        for d in docs:
            problem = foreign_thresholds(d, maps.attrs)
            if problem and not force:
                raise LineclearError(f"{problem}; calibrate on this view's maps (or give --force)")
        truth = GroundTruth(maps.attrs.get("dataset_root"), gt, maps.attrs.get("image_size"))
        progress = console.rich_progress()
        doc = evaluate(maps, docs, truth, batch=batch_size, progress=progress)
        doc["source"]["path"] = str(maps_path.resolve())
        doc["source"]["sha256"] = sha256_file(maps_path)
        doc["source"]["gt"] = truth.describe()
        if name:
            doc["config_name"] = name
        for n in doc["notes"]:
            if ": computed " in n:
                console.warn(n)
        curves = all_curves(doc)
        recon = reconstructor(maps.attrs) if reconstructions and max_overlays else None
        overlays, notes = render_overlays(doc, maps, truth, max_overlays, progress, reconstruct=recon)
    doc["notes"] += notes
    for n in notes:
        console.note(n)
    doc = write_report_dir(report_dir, doc, curves, overlays, overwrite=overwrite)
    console.err.print(metrics_table(doc))
    console.note(f"best threshold: {doc['best']['method']} at {doc['best']['level']} level (chosen on the test labels); report: {report_dir / 'report.html'}")
    if json_out:
        console.print_json({k: v for k, v in doc.items() if k not in ("images", "curves")})
    else:
        typer.echo(str(report_dir / "metrics.json"))


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
