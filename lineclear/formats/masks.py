"""Mask PNGs: uint8, 255 = set (anomalous / inspect / valid), 0 = not set.

Reading accepts any single-channel or colour 8/16-bit image and binarises it at half
range, so a mask painted in an image editor works too.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from lineclear.errors import LineclearError
from lineclear.formats._io import atomic_path
from lineclear.formats.image_files import read_raw


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None, resize: bool = False) -> np.ndarray:
    """Read a mask as ``bool (H,W)``.

    ``shape`` (H, W) checks the size; with ``resize=True`` a mask of another size is
    resized with nearest neighbour instead of being refused.
    """
    path = Path(path)
    if not path.is_file():
        raise LineclearError(f"{path}: mask not found")
    raw = read_raw(path)
    if raw.ndim == 3:
        raw = raw.max(axis=2)
    half = 32768 if raw.dtype == np.uint16 else 128
    mask = raw >= half if raw.dtype != bool else raw
    if shape is not None and mask.shape != tuple(shape):
        if not resize:
            raise LineclearError(
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, expected {shape[1]}x{shape[0]} (width x height)"
            )
        mask = resize_mask(mask, shape)
    return mask


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (H, W), sampling at pixel centres.

    ``INTER_NEAREST_EXACT`` (not ``INTER_NEAREST``, which samples at pixel corners and shifts a
    3072→384 mask by ~0.44 output pixels against the maps).
    """
    if mask.shape == tuple(shape):
        return mask.astype(bool)
    out = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)
    return out.astype(bool)


def write_mask(path: str | os.PathLike, mask: np.ndarray, overwrite: bool = False) -> Path:
    """Write a bool/0-1/0-255 array as a uint8 0/255 PNG, atomically."""
    path = Path(path)
    arr = (np.asarray(mask) > 0).astype(np.uint8) * 255
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise LineclearError(f"{path}: could not encode PNG")
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path
