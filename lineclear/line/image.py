"""Step 1 of a check: read the file and sanity-check its pixels before anything trusts them.

A truncated PNG/JPEG (still being written?) or an undecodable file is refused; so are pixels that
are black, saturated or uniform (camera covered, lights off, sensor fault). Each refusal is an
:class:`~lineclear.line.verdict.Undecidable` with the reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from lineclear.errors import LineclearError, UsageError
from lineclear.images import is_image_path, read_raw
from lineclear.line.verdict import Undecidable


@dataclass(frozen=True)
class ImageQC:
    """Limits of the pixel sanity check that runs before registration (values in [0,1] of full scale).

    black:     the 99th percentile of the gray levels is below ``dark_level`` (lights off, lens cap)
    saturated: more than ``max_saturated_fraction`` of the pixels are at or above ``bright_level``
    uniform:   the gray levels' standard deviation is below ``min_std`` (covered, defocused, sensor fault)
    """

    dark_level: float = 0.06
    bright_level: float = 0.98
    max_saturated_fraction: float = 0.9
    min_std: float = 0.01

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ImageQC":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"unknown image check setting(s) {sorted(unknown)} (known: {sorted(known)})")
        return cls(**{k: float(v) for k, v in d.items()})


def image_stats(raw: np.ndarray) -> dict[str, float]:
    """Gray-level statistics of a raw image (uint8/uint16, gray/RGB[A]) on a ≤512 px copy, values in [0,1]."""
    img = raw
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_RGB2GRAY)
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    h, w = img.shape[:2]
    s = min(1.0, 512 / max(h, w))
    if s < 1:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    g = img.astype(np.float32) / scale
    return {
        "mean": round(float(g.mean()), 5),
        "std": round(float(g.std()), 5),
        "p99": round(float(np.percentile(g, 99)), 5),
        "saturated_fraction": round(float((g >= 0.98).mean()), 5),
    }


def image_problem(stats: Mapping[str, float], limits: ImageQC) -> str | None:
    """Why the pixels cannot be trusted, or None."""
    if stats["p99"] < limits.dark_level:
        return f"image is black (99% of pixels below {limits.dark_level:.0%} brightness: lights off or camera covered?)"
    if stats["saturated_fraction"] > limits.max_saturated_fraction:
        return f"image is saturated ({stats['saturated_fraction']:.0%} of pixels white: overexposed or blinded?)"
    if stats["std"] < limits.min_std:
        return f"image is uniform (gray-level spread {stats['std']:.4f} < {limits.min_std}: covered, defocused or a sensor fault?)"
    return None


def file_problem(path: Path) -> str | None:
    """A PNG without its IEND chunk or a JPEG without its end marker was cut short (still being written?)."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if b"IEND" not in tail[-12:]:
            return "truncated PNG (no end chunk)"
    elif head.startswith(b"\xff\xd8"):
        if b"\xff\xd9" not in tail.rstrip(b"\x00"):
            return "truncated JPEG (no end marker)"
    return None


def is_candidate(path: Path) -> bool:
    """A file the checker may be given: an image, not hidden, not a temporary file."""
    return is_image_path(path) and not path.name.startswith(".")


def read_image(path: Path) -> np.ndarray:
    """The image as stored (uint8/uint16, gray/RGB[A]); :class:`Undecidable` when missing, cut short or undecodable."""
    if not path.is_file():
        raise Undecidable(f"image not found: {path}")
    problem = file_problem(path)
    if problem:
        raise Undecidable(f"unreadable image: {problem}")
    try:
        return read_raw(path)
    except LineclearError as exc:
        raise Undecidable(f"unreadable image: {exc}") from None


def check_pixels(stats: Mapping[str, float], limits: ImageQC) -> None:
    """:class:`Undecidable` when the pixels cannot be trusted (see :func:`image_problem`)."""
    problem = image_problem(stats, limits)
    if problem:
        raise Undecidable(problem)
