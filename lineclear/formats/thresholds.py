"""Thresholds file: JSON, schema ``lineclear.thresholds/2`` (``/1`` files are still read).

==================== ============================================================
key                  meaning
==================== ============================================================
schema               ``lineclear.thresholds/2``
method               ``max`` | ``quantile`` | ``ksigma``
params               the rule's parameters, e.g. ``{"p": 0.99}`` or ``{"k": 3.0}``
level                which threshold makes the *image* decision (leftover or clear):
                     ``image`` = the image score is above ``image.threshold``;
                     ``pixel`` = some counted pixel is above ``pixel.threshold`` (the
                     thesis's rule, section 3.5). A ``/1`` file has no level: ``image``.
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
from lineclear.formats._io import finite_number, read_json, write_checked_json

THRESHOLDS_SCHEMA = "lineclear.thresholds/2"
OLD_SCHEMAS = ("lineclear.thresholds/1",)  # read, with level "image" (what they decided by)
METHODS = ("max", "quantile", "ksigma")
LEVELS = ("pixel", "image")


def write_thresholds(path: str | os.PathLike, doc: dict[str, Any], overwrite: bool = False) -> Path:
    """Validate ``doc`` (without schema) and write it atomically."""
    return write_checked_json(path, doc, THRESHOLDS_SCHEMA, _validate, overwrite)


def read_thresholds(path: str | os.PathLike) -> dict[str, Any]:
    """The document, validated; ``level`` is always set (``image`` for a ``/1`` file)."""
    try:
        doc = read_json(path, THRESHOLDS_SCHEMA)
    except FormatError:
        doc = None
        for old in OLD_SCHEMAS:
            try:
                doc = read_json(path, old)
            except FormatError:
                continue
            doc.setdefault("level", "image")
            break
        if doc is None:
            raise
    doc.setdefault("level", "image")
    _validate(Path(path), doc)
    return doc


def decision_threshold(doc: dict[str, Any]) -> float | None:
    """The threshold the image decision compares with: the pixel one at level ``pixel``, else the image one."""
    return doc[level_of(doc)]["threshold"]


def level_of(doc: dict[str, Any]) -> str:
    return str(doc.get("level") or "image")


def _validate(path: Path, doc: dict[str, Any]) -> None:
    if doc.get("method") not in METHODS:
        raise FormatError(f"{path}: 'method' must be one of {', '.join(METHODS)}, found {doc.get('method')!r}")
    if not isinstance(doc.get("params", {}), dict):
        raise FormatError(f"{path}: 'params' must be an object")
    if doc.get("level", "image") not in LEVELS:
        raise FormatError(f"{path}: 'level' must be one of {', '.join(LEVELS)}, found {doc.get('level')!r}")
    for level in ("pixel", "image"):
        part = doc.get(level)
        if not isinstance(part, dict) or "threshold" not in part:
            raise FormatError(f"{path}: missing '{level}.threshold'")
        t = part["threshold"]
        if t is not None and not finite_number(t):
            raise FormatError(f"{path}: '{level}.threshold' must be a finite number or null, found {t!r}")
    if doc.get("level") == "pixel" and doc["pixel"]["threshold"] is None:
        raise FormatError(f"{path}: level 'pixel' decides by the pixel threshold, which is null")
    if not isinstance(doc.get("source"), dict):
        raise FormatError(f"{path}: missing 'source' (the maps file the thresholds came from)")
