"""Thresholds file: JSON, schema ``lineclear.thresholds/1``.

==================== ============================================================
key                  meaning
==================== ============================================================
schema               ``lineclear.thresholds/1``
method               ``max`` | ``quantile`` | ``ksigma``
params               the rule's parameters, e.g. ``{"p": 0.99}`` or ``{"k": 3.0}``
pixel.threshold      segmentation threshold on anomaly-map values (valid pixels)
pixel.stats          statistics it came from (count, mean, std, min, max, quantile)
image.threshold      classification threshold on image scores
image.stats          statistics it came from
source               maps file it was computed on: path, sha256, and its provenance:
                     model, view, map_size, image_size, mask_stage, mask, mask_sha256,
                     registered, border_margin, checkpoint, checkpoint_sha256, dataset_root
lineclear_version    version that wrote it; ``created_utc`` when
==================== ============================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lineclear.errors import FormatError
from lineclear.formats._io import finite_number, read_checked_json, write_checked_json

THRESHOLDS_SCHEMA = "lineclear.thresholds/1"
METHODS = ("max", "quantile", "ksigma")


def write_thresholds(path: str | os.PathLike, doc: dict[str, Any], overwrite: bool = False) -> Path:
    """Validate ``doc`` (without schema) and write it atomically."""
    return write_checked_json(path, doc, THRESHOLDS_SCHEMA, _validate, overwrite)


def read_thresholds(path: str | os.PathLike) -> dict[str, Any]:
    return read_checked_json(path, THRESHOLDS_SCHEMA, _validate)


def _validate(path: Path, doc: dict[str, Any]) -> None:
    if doc.get("method") not in METHODS:
        raise FormatError(f"{path}: 'method' must be one of {', '.join(METHODS)}, found {doc.get('method')!r}")
    if not isinstance(doc.get("params", {}), dict):
        raise FormatError(f"{path}: 'params' must be an object")
    for level in ("pixel", "image"):
        part = doc.get(level)
        if not isinstance(part, dict) or "threshold" not in part:
            raise FormatError(f"{path}: missing '{level}.threshold'")
        t = part["threshold"]
        if t is not None and not finite_number(t):
            raise FormatError(f"{path}: '{level}.threshold' must be a finite number or null, found {t!r}")
    if not isinstance(doc.get("source"), dict):
        raise FormatError(f"{path}: missing 'source' (the maps file the thresholds came from)")
