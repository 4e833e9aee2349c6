"""Evaluation results: JSON, schema ``lineclear.metrics/1`` (``REPORT_DIR/metrics.json``).

==================== ====================================================================
key                  meaning
==================== ====================================================================
schema               ``lineclear.metrics/1``
config_name          column label for comparison tables, e.g. ``PO+M+R`` (from the maps
                     provenance, or ``--name``)
source               the test maps: path (absolute), sha256, model, view, checkpoint(_sha256), map_size,
                     mask_stage, mask, registered, dataset_root, gt (ground-truth source)
counts               images, normal, anomalous, excluded (label unknown)
image                threshold-free image metrics: auroc, ap
pixel                threshold-free pixel metrics over valid pixels: auroc, aupro,
                     pro_limit, ap, n_pos, n_neg, n_regions
thresholds           one entry per thresholds file: method, params, path, image{threshold,
                     tp, fp, tn, fn, accuracy, precision, recall, f1, specificity},
                     pixel{threshold, iou, iou_mean_per_image, tpr, fpr, precision, f1}
validation           statistics of the normal validation maps the thresholds came from:
                     image{count, mean, std, ...} (their scores), pixel{...} (their pixels)
best                 method chosen as thesis 5.6 does (highest image accuracy; ties: max,
                     then ksigma, then quantile), rule, chosen_on = "test labels"
summary              the thesis table's figures at the best threshold: auroc_image,
                     auroc_pixel, aupro, ap, iou, accuracy (fractions in [0,1] or null),
                     method
curves               downsampled curves {x, y, x_label, y_label}: image_roc, pixel_roc,
                     pixel_pr, pro, iou
images               per image at the best threshold: id, label, score, verdict, correct,
                     max, valid_pixels, gt_pixels, predicted_pixels, iou, overlay
notes                why a metric is null, excluded images, provenance warnings
files                report, curves and overlays written beside metrics.json
lineclear_version    version that wrote it; ``created_utc`` when
==================== ====================================================================

Every undefined metric is ``null`` (JSON has no NaN) and ``notes`` says why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lineclear.errors import FormatError
from lineclear.formats._io import finite_number, read_checked_json, write_checked_json

METRICS_SCHEMA = "lineclear.metrics/1"
SUMMARY_KEYS = ("auroc_image", "auroc_pixel", "aupro", "ap", "iou", "accuracy")


def write_metrics(path: str | os.PathLike, doc: dict[str, Any], overwrite: bool = False) -> Path:
    """Validate ``doc`` and write it atomically (refuses an existing file unless ``overwrite``)."""
    return write_checked_json(path, doc, METRICS_SCHEMA, validate_metrics, overwrite)


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    return read_checked_json(path, METRICS_SCHEMA, validate_metrics)


def validate_metrics(path: Path, doc: dict[str, Any]) -> None:
    if not isinstance(doc.get("config_name"), str):
        raise FormatError(f"{path}: missing 'config_name'")
    summary = doc.get("summary")
    if not isinstance(summary, dict):
        raise FormatError(f"{path}: missing 'summary'")
    for key in SUMMARY_KEYS:
        if key not in summary:
            raise FormatError(f"{path}: 'summary.{key}' is missing")
        v = summary[key]
        if v is not None and (not finite_number(v) or not -1e-9 <= v <= 1 + 1e-9):
            raise FormatError(f"{path}: 'summary.{key}' must be a fraction in [0, 1] or null, found {v!r}")
    for key in ("source", "image", "pixel", "best"):
        if not isinstance(doc.get(key), dict):
            raise FormatError(f"{path}: missing '{key}'")
    if not isinstance(doc.get("thresholds"), list):
        raise FormatError(f"{path}: 'thresholds' must be a list")
    if not isinstance(doc.get("images", []), list):
        raise FormatError(f"{path}: 'images' must be a list")
