"""Registration report: JSON, schema ``lineclear.registration/1`` (written by ``lineclear register --report``).

=========================== ==================================================================================
key                         meaning
=========================== ==================================================================================
schema                      ``lineclear.registration/1``
lineclear_version           version that wrote it; ``created_utc`` when; ``argv`` the command line
reference                   ``{path, sha256, size: [W, H]}`` the image everything was registered to
config                      the registration settings (:class:`lineclear.register.RegistrationConfig`),
                            including ``limits``: the quality-control thresholds that decide "failed"
summary                     ``{images, registered, failed, resized, masks_warped, mean_ms, median_ms}``
images                      one entry per input image, in input order (below)
=========================== ==================================================================================

Each ``images[i]``:

=========================== ==================================================================================
input                       the input image path
output                      the written image (registered, or passed through on failure)
valid                       the validity mask PNG written for it (255 = pixel came from the camera frame)
mask_in / mask_out          ground-truth mask read / written with the same transform (null when none)
status                      ``registered`` or ``failed``
reason                      why it failed (null when registered)
size                        ``[W, H]`` of the input; ``resized`` true when it differs from the reference
transform                   3×3 matrix applied, image pixel → reference pixel (OpenCV pixel centres);
                            identity / plain resize for a failed image
estimate                    3×3 matrix found (also for a failed image), or null
qc                          quality-control figures: features, matches, inliers, inlier_ratio,
                            reprojection_rmse (px), refine, refined, refine_points, refine_inliers,
                            refine_change_px, max_corner_shift_px, mean_corner_shift_px, scale,
                            rotation_deg, shear, anisotropy, perspective, valid_fraction, degenerate, ms
=========================== ==================================================================================
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Any

from lineclear import __version__
from lineclear.errors import FormatError
from lineclear.formats._io import finite_number, read_json, write_json

REGISTRATION_SCHEMA = "lineclear.registration/1"
STATUSES = ("registered", "failed")


def write_report(path: str | os.PathLike, doc: dict[str, Any], overwrite: bool = False) -> Path:
    """Validate ``doc`` (without schema) and write it atomically."""
    doc = {
        "lineclear_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": " ".join(sys.argv),
        **doc,
    }
    _validate(Path(path), {"schema": REGISTRATION_SCHEMA, **doc})
    return write_json(path, doc, REGISTRATION_SCHEMA, overwrite)


def read_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a registration report."""
    doc = read_json(path, REGISTRATION_SCHEMA)
    _validate(Path(path), doc)
    return doc


def _matrix(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(r, list) and len(r) == 3 for r in value)
        and all(finite_number(v) for r in value for v in r)
    )


def _validate(path: Path, doc: dict[str, Any]) -> None:
    ref = doc.get("reference")
    if not isinstance(ref, dict) or "path" not in ref or "size" not in ref:
        raise FormatError(f"{path}: missing 'reference' (path and size)")
    if not isinstance(doc.get("config"), dict) or not isinstance(doc["config"].get("limits"), dict):
        raise FormatError(f"{path}: missing 'config' with its 'limits'")
    images = doc.get("images")
    if not isinstance(images, list):
        raise FormatError(f"{path}: 'images' must be a list")
    for i, item in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(item, dict):
            raise FormatError(f"{where}: must be an object")
        for key in ("input", "output", "status", "transform", "qc"):
            if key not in item:
                raise FormatError(f"{where}: missing {key!r}")
        if item["status"] not in STATUSES:
            raise FormatError(f"{where}: status must be one of {', '.join(STATUSES)}, found {item['status']!r}")
        if not _matrix(item["transform"]):
            raise FormatError(f"{where}: 'transform' must be a 3x3 matrix of finite numbers")
        if item.get("estimate") is not None and not _matrix(item["estimate"]):
            raise FormatError(f"{where}: 'estimate' must be a 3x3 matrix of finite numbers or null")
        if item["status"] == "failed" and not item.get("reason"):
            raise FormatError(f"{where}: a failed registration must give its 'reason'")
    summary = doc.get("summary")
    if not isinstance(summary, dict) or not isinstance(summary.get("images"), int):
        raise FormatError(f"{path}: missing 'summary'")
    if summary["images"] != len(images):
        raise FormatError(f"{path}: summary counts {summary['images']} images but 'images' lists {len(images)}")


# ---------------------------------------------------------------------------------------------- marker
# ``lineclear register`` leaves one small file in every output folder it fills, so that the stages after it
# (``score``) find the validity masks and the reference of registered images wherever they were written —
# a view's ``valid/`` folder or a plain folder's ``<out>_valid/`` beside it — without being told.

REGISTERED_SCHEMA = "lineclear.registered/1"
MARKER_NAME = "lineclear-registered.json"


def write_marker(folder: str | os.PathLike, reference: str | os.PathLike, reference_sha256: str,
                 valid_dir: str | os.PathLike, config: dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``folder/lineclear-registered.json``: the reference (absolute path and hash) and where the
    validity masks of the images below ``folder`` are (``valid_dir``, stored relative to ``folder``).

    An identical marker already there is left as it is (registering more images into the same folder).
    """
    folder = Path(folder)
    doc = {
        "lineclear_version": __version__,
        "reference": {"path": str(Path(reference).resolve()), "sha256": reference_sha256},
        "valid_dir": os.path.relpath(Path(valid_dir).resolve(), folder.resolve()),
        "config": config,
    }
    path = folder / MARKER_NAME
    if path.is_file():
        try:
            old = read_marker(path)
        except FormatError:
            old = None
        if old is not None and old["reference"] == doc["reference"] and old["valid_dir"] == doc["valid_dir"]:
            return path
    return write_json(path, doc, REGISTERED_SCHEMA, overwrite)


def read_marker(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a marker; ``valid_root`` (absolute Path) is added."""
    path = Path(path)
    doc = read_json(path, REGISTERED_SCHEMA)
    ref = doc.get("reference")
    if not isinstance(ref, dict) or not isinstance(ref.get("path"), str) or not isinstance(ref.get("sha256"), str):
        raise FormatError(f"{path}: 'reference' must give a path and a sha256")
    if not isinstance(doc.get("valid_dir"), str) or not doc["valid_dir"]:
        raise FormatError(f"{path}: missing 'valid_dir'")
    doc["valid_root"] = (path.parent / doc["valid_dir"]).resolve()
    return doc


def find_marker(image: str | os.PathLike, levels: int = 8) -> Path | None:
    """The marker of the nearest folder above ``image`` that ``lineclear register`` filled, or None."""
    p = Path(image).resolve().parent
    for folder in [p, *p.parents][:levels]:
        cand = folder / MARKER_NAME
        if cand.is_file():
            return cand
    return None
