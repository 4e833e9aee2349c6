"""Image files as stored: the one reader of images (bit depths, channel order, damaged files).

Stages read images through :func:`lineclear.images.read_raw`, which is this function; the mask reader
(:mod:`lineclear.formats.masks`) uses it too, so damaged files get the same one-line error everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from lineclear.errors import FormatError, LineclearError


def read_raw(path: str | os.PathLike) -> np.ndarray:
    """The image as stored: uint8 or uint16, ``(H,W)`` or ``(H,W,C)`` in RGB(A) order."""
    path = Path(path)
    if not path.is_file():
        raise LineclearError(f"{path}: no such image file")
    data = np.fromfile(str(path), dtype=np.uint8)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR) if data.size else None
    except cv2.error:  # e.g. a header claiming more pixels than OpenCV will allocate
        raise FormatError(f"{path}: not a readable image (corrupt, or a header claiming an absurd size)") from None
    if img is None:
        raise FormatError(f"{path}: not a readable image (unsupported or corrupt file)")
    if img.dtype not in (np.uint8, np.uint16):
        if img.dtype == np.float32 or img.dtype == np.float64:
            img = np.clip(img, 0, 1)
            img = (img * 65535).astype(np.uint16)
        else:
            raise FormatError(f"{path}: unsupported pixel type {img.dtype}")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.shape[2] == 1:
            img = img[:, :, 0]
    return img
