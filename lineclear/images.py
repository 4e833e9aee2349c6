"""Reading images into arrays: the one place that knows bit depths and channels.

Every model works on ``float32 (H,W,3)`` RGB in [0, 1]; grayscale images are
repeated to three channels, 16-bit images are scaled by 1/65535, alpha is dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from lineclear.errors import FormatError, LineclearError
from lineclear.formats.image_files import read_raw  # noqa: F401 - the one reader of image files, offered here

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def to_float_rgb(raw: np.ndarray) -> np.ndarray:
    """uint8/uint16 gray/RGB/RGBA → float32 (H,W,3) RGB in [0,1]."""
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    img = raw.astype(np.float32) / scale
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def read_rgb(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """float32 (H,W,3) RGB in [0,1]; resized to ``size`` = (H, W) with area interpolation."""
    img = to_float_rgb(read_raw(path))
    if size is not None and img.shape[:2] != tuple(size):
        img = resize(img, size)
    return img


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """uint8 (H,W) grayscale (16-bit images are scaled down), e.g. for feature matching."""
    raw = read_raw(path)
    if raw.dtype == np.uint16:
        raw = (raw / 257.0 + 0.5).astype(np.uint8)
    if raw.ndim == 3:
        raw = cv2.cvtColor(raw[:, :, :3], cv2.COLOR_RGB2GRAY)
    return raw


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H,W[,C]) to size = (H, W): area when shrinking, linear when enlarging."""
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if (size[0] < h or size[1] < w) else cv2.INTER_LINEAR
    out = cv2.resize(img, (int(size[1]), int(size[0])), interpolation=interp)
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise LineclearError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL raises SyntaxError/ValueError for some damaged headers, DecompressionBombError for absurd sizes
        raise FormatError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    return int(h), int(w)


def write_image(path: str | os.PathLike, img: np.ndarray, overwrite: bool = False) -> Path:
    """Write uint8/uint16 RGB/gray (or float in [0,1] → uint8) atomically; format from the suffix."""
    from lineclear.formats import atomic_path

    path = Path(path)
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    ext = path.suffix.lower() or ".png"
    ok, buf = cv2.imencode(ext, arr)
    if not ok:
        raise LineclearError(f"{path}: could not encode image as {ext}")
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path
