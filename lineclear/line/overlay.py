"""The overlay of a verdict: the original image with each region's box and peak, and a banner saying the verdict.

An image that cannot be read still gets its overlay: a grey frame at the camera's size whose banner says why.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import cv2
import numpy as np

from lineclear.errors import LineclearError
from lineclear.images import read_raw, write_image
from lineclear.line.regions import Region
from lineclear.line.verdict import CLEAR, LEFTOVER, UNDECIDED, ViewVerdict, ms_since

_COLOURS = {CLEAR: (40, 170, 60), LEFTOVER: (220, 30, 30), UNDECIDED: (235, 140, 0)}


def overlay_name(view: str, image: Path) -> str:
    return f"{view}__{image.stem}.png"


def draw_overlay(raw: np.ndarray, verdict: ViewVerdict) -> np.ndarray:
    """The original image (uint8 RGB) with each region's box and peak, and a banner with the verdict."""
    img = raw
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = np.ascontiguousarray(img[:, :, :3]).copy()
    h, w = img.shape[:2]
    unit = max(1, round(max(h, w) / 400))
    colour = _COLOURS[verdict.verdict]
    for k, r in enumerate(verdict.regions, start=1):
        x, y, bw, bh = r.bbox if isinstance(r, Region) else r["bbox"]
        cv2.rectangle(img, (x, y), (x + bw - 1, y + bh - 1), _COLOURS[LEFTOVER] if verdict.verdict == LEFTOVER
                      else (230, 200, 0), unit)
        peak = r.peak_score if isinstance(r, Region) else r["peak_score"]
        cv2.putText(img, f"{k}: {peak:.3g}", (x, max(12 * unit, y - 3 * unit)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * unit, (255, 255, 255), unit, cv2.LINE_AA)
    text = verdict.verdict.upper()
    if verdict.level == "pixel" and verdict.pixel_threshold is not None:
        text += f"  any pixel above {verdict.pixel_threshold:.3g}?"
    elif verdict.score is not None and verdict.threshold is not None:
        text += f"  score {verdict.score:.3g} / threshold {verdict.threshold:.3g}"
    if verdict.verdict == UNDECIDED:
        text += f"  {verdict.reason}"
    _banner(img, text, colour, unit)
    return img


def _banner(img: np.ndarray, text: str, colour: tuple[int, int, int], unit: int) -> None:
    """Draw ``text`` in a band across the top of ``img`` (in place), wrapped to the image width."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * unit
    h, w = img.shape[:2]
    (cw, ch), _ = cv2.getTextSize("abcdefghijklmnopqrstuvwxyz", font, scale, unit)
    per_line = max(8, int((w - 8 * unit) / (cw / 26)))
    lines = textwrap.wrap(text, per_line, break_long_words=True) or [""]
    line_h = ch + 6 * unit
    band = min(h, line_h * len(lines) + 4 * unit)
    img[:band] = (0.4 * img[:band] + 0.6 * np.array(colour)).astype(np.uint8)
    for i, line in enumerate(lines):
        y = 2 * unit + line_h * (i + 1) - 4 * unit
        if y > h:
            break
        cv2.putText(img, line, (4 * unit, y), font, scale, (255, 255, 255), unit, cv2.LINE_AA)


def blank_frame(size: tuple[int, int]) -> np.ndarray:
    """A mid-grey uint8 RGB frame (H, W): what an overlay is drawn on when the image cannot be read."""
    return np.full((int(size[0]), int(size[1]), 3), 96, np.uint8)


def write_overlay(verdict: ViewVerdict, raw: np.ndarray | None, image_size: tuple[int, int], out_dir: Path,
                  overwrite: bool, prefix: str = "") -> None:
    """Draw and write the verdict's overlay into ``out_dir``; sets ``verdict.overlay`` (or ``overlay_error``).

    ``raw``: the image as read, or None to read it here; ``image_size`` (H, W): the camera's, for the
    grey frame of an image that cannot be read.
    """
    if verdict.image is None:
        return
    if raw is None:
        try:
            raw = read_raw(verdict.image)
        except (LineclearError, OSError):
            raw = blank_frame(image_size)
    t = time.perf_counter()
    path = out_dir / (prefix + overlay_name(verdict.view, Path(verdict.image)))
    try:
        write_image(path, draw_overlay(raw, verdict), overwrite=overwrite)
        verdict.overlay = str(path)
    except LineclearError as exc:
        verdict.overlay_error = str(exc)
    verdict.timings_ms["overlay"] = ms_since(t)
