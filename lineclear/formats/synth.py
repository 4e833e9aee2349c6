"""The true camera shifts of a synthetic view: ``<view>/shifts.json``, schema ``lineclear.shifts/1``.

=================== ==========================================================================
key                 meaning
=================== ==========================================================================
schema              ``lineclear.shifts/1``
view                view name (``A``, ``A2``, ...)
image_size          ``[W, H]`` in pixels
convention          text: ``H`` maps reference pixel coordinates to the image's pixel
                    coordinates, OpenCV convention (integer coordinates = pixel centres):
                    ``image = cv2.warpPerspective(reference_scene, H, (W, H))`` and
                    ``reference ≈ cv2.warpPerspective(image, inv(H), (W, H))``
reference           ``reference.png`` (the unshifted frame ``H`` starts from)
images              one object per image of the view, sorted by ``image``:
images[].image      path relative to the view directory (``test/good/shift_000.png``)
images[].image_id   path relative to the dataset root (``A/test/good/shift_000.png``)
images[].shifted    true when the camera moved for this image
images[].H          3x3 homography (row-major nested lists, ``H[2][2] = 1``); identity if not shifted
images[].params     how it was drawn: ``tx_px``, ``ty_px``, ``rotation_deg``, ``scale``,
                    ``perspective`` ([px, py]), or null
=================== ==========================================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lineclear.errors import FormatError
from lineclear.formats._io import finite_number, read_json, write_json

SHIFTS_SCHEMA = "lineclear.shifts/1"
CONVENTION = (
    "H maps reference pixel coordinates to this image's pixel coordinates, OpenCV convention "
    "(integer coordinates are pixel centres): image = cv2.warpPerspective(reference_scene, H, (W, H))."
)


def write_shifts(path: str | os.PathLike, doc: dict[str, Any], overwrite: bool = False) -> Path:
    """Validate and write a shifts document (without ``schema``) atomically."""
    doc = {"convention": CONVENTION, **doc}
    _validate(Path(path), {"schema": SHIFTS_SCHEMA, **doc})
    return write_json(path, doc, SHIFTS_SCHEMA, overwrite)


def read_shifts(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate; each ``images[i]["H"]`` is returned as a float64 ``(3, 3)`` array."""
    doc = read_json(path, SHIFTS_SCHEMA)
    _validate(Path(path), doc)
    for item in doc["images"]:
        item["H"] = np.asarray(item["H"], dtype=np.float64)
    return doc


def shifts_by_image(doc: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{image (view-relative path): H}`` for a document from :func:`read_shifts`."""
    return {item["image"]: np.asarray(item["H"], dtype=np.float64) for item in doc["images"]}


def _validate(path: Path, doc: dict[str, Any]) -> None:
    size = doc.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise FormatError(f"{path}: 'image_size' must be [W, H] positive integers")
    images = doc.get("images")
    if not isinstance(images, list):
        raise FormatError(f"{path}: 'images' must be a list")
    for i, item in enumerate(images):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise FormatError(f"{path}: images[{i}] lacks 'image'")
        h = np.asarray(item.get("H"), dtype=object)
        if h.shape != (3, 3) or not all(finite_number(v) for v in h.ravel()):
            raise FormatError(f"{path}: images[{i}] ({item['image']}): 'H' must be a 3x3 matrix of finite numbers")
        if not isinstance(item.get("shifted"), bool):
            raise FormatError(f"{path}: images[{i}] ({item['image']}): 'shifted' must be true or false")
