"""Verdict document: JSON, schema ``lineclear.verdict/1`` (``lineclear check`` on stdout and ``--out``).

=========================== ===================================================================
key                         meaning
=========================== ===================================================================
schema                      ``lineclear.verdict/1``
verdict                     ``clear`` | ``leftover`` | ``undecided`` for the whole image set
exit_code                   0 clear, 3 leftover, 4 undecided (what the command exits with)
bundle                      the deployment bundle used
views[]                     one object per expected view (below)
timings_ms                  ``load`` (bundle, models, warm-up) and ``check`` (this set), ms
device, checked_utc         where and when; ``lineclear_version``
=========================== ===================================================================

Per view: ``view``, ``verdict``, ``reason``, ``image``, ``model``, ``score``, ``threshold`` (image
level), ``pixel_threshold``, ``regions[]`` (``bbox`` [x, y, w, h] and ``area_px`` in original-image
pixels, ``peak_score``, ``peak_xy``, ``bbox_map``, ``area_map_px``), ``regions_total``, ``peak_xy``,
``registration`` (``ok``, ``reason``, ``transform`` image→reference and the QC figures, or null),
``image_qc`` (gray-level statistics), ``timings_ms``, ``overlay`` (PNG path or null), and when they apply
``raised_fraction`` (share of the inspected area above the pixel threshold; beyond the manifest's
``max_raised_fraction`` the view is undecided, "scene changed"), ``notes[]`` (e.g. the image was resized)
and ``overlay_error``.

The watch log (``--log``) holds one JSON object per line and per view: the per-view object above plus
``set`` (sequence number), ``set_verdict``, ``set_exit_code`` and ``checked_utc``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lineclear.errors import FormatError
from lineclear.formats._io import read_json, write_json

VERDICT_SCHEMA = "lineclear.verdict/1"
_VERDICTS = ("clear", "leftover", "undecided")
_EXIT = {"clear": 0, "leftover": 3, "undecided": 4}


def validate_view(path: Any, v: Any) -> None:
    if not isinstance(v, dict):
        raise FormatError(f"{path}: a view verdict must be an object")
    for key in ("view", "verdict", "reason", "regions"):
        if key not in v:
            raise FormatError(f"{path}: view verdict without {key!r}")
    if v["verdict"] not in _VERDICTS:
        raise FormatError(f"{path}: verdict {v['verdict']!r} is not one of {_VERDICTS}")
    if v["verdict"] == "leftover" and v.get("score") is None:
        raise FormatError(f"{path}: a leftover verdict for view {v['view']} without a score")
    for r in v["regions"]:
        bbox = r.get("bbox") if isinstance(r, dict) else None
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(x, int) for x in bbox)):
            raise FormatError(f"{path}: region of view {v['view']} needs bbox [x, y, w, h] integers")


def validate_verdict(path: Any, doc: dict[str, Any]) -> None:
    if doc.get("verdict") not in _VERDICTS:
        raise FormatError(f"{path}: verdict {doc.get('verdict')!r} is not one of {_VERDICTS}")
    views = doc.get("views")
    if not isinstance(views, list):
        raise FormatError(f"{path}: 'views' must be a list")
    for v in views:
        validate_view(path, v)
    worst = "undecided" if not views else max((v["verdict"] for v in views), key=("clear", "leftover", "undecided").index)
    if doc["verdict"] != worst or doc.get("exit_code") != _EXIT[worst]:
        raise FormatError(f"{path}: set verdict {doc['verdict']!r} / exit code {doc.get('exit_code')} disagree "
                          f"with the views' verdicts (expected {worst!r} / {_EXIT[worst]})")


def write_verdict(path: str | os.PathLike, doc: dict[str, Any], overwrite: bool = False) -> Path:
    validate_verdict(path, {"schema": VERDICT_SCHEMA, **doc})
    return write_json(path, doc, VERDICT_SCHEMA, overwrite=overwrite)


def read_verdict(path: str | os.PathLike) -> dict[str, Any]:
    doc = read_json(path, VERDICT_SCHEMA)
    validate_verdict(path, doc)
    return doc
