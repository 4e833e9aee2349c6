"""Synthetic camera shifts of normal images, registered back: what calibration must have seen. Pure.

Thresholds are fitted to normal validation images, which are taken with the camera in place. On the line
a nudged camera's image is registered to the reference first, and what registration leaves behind —
resampling blur, sub-pixel residue, the seam along the frame edge and the scene continued beyond it —
raises every model's map a little. Thresholds that never saw that residue flag clear shifted images.

:func:`shifted_copies` makes ``n`` copies of a normal image as a camera nudged by a random small
homography would have shot it, registers each back to the reference with lineclear's own registration
(the same :class:`~lineclear.register.Registrar` the line uses) and returns the registered images and
their validity masks, ready to be scored like any registered image.

A shifted camera sees the scene through another window, partly beyond the reference's frame. What it
would see there is unknown, so the simulated camera image is padded by reflection; registered back to the
reference, those pixels land outside the reference frame again and never reach the registered image
(except through the last pixel's interpolation), while the frame edge on the side the camera moved outward
stays valid, resampled, exactly like a real nudge. (A window kept inside the frame would give every copy an
invalid border on all four sides, and a model fitted on them would never see a resampled frame edge.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lineclear.errors import UsageError


@dataclass(frozen=True)
class ShiftRange:
    """How far a synthetic nudge moves the camera (uniform in ±each limit).

    The defaults cover what a fixed camera in a packaging machine gets from a knock or a service visit
    and stay well inside what registration quality control accepts
    (:class:`lineclear.register.QCLimits`: corner shifts up to 25 % of the diagonal).
    """

    translation: float = 0.03  # fraction of the frame's width (x) and height (y)
    rotation_deg: float = 1.5
    scale: float = 0.02  # zoom in or out
    perspective: float = 0.01  # independent corner jitter, fraction of the frame's size
    # A scene that is not flat moves by more than one homography when the camera moves (parallax): a
    # smooth displacement of up to this many pixels that registration leaves behind. 1 px is what the
    # registration's refinement still counts as fitting its homography (``refine_ransac_px``).
    parallax_px: float = 1.0

    def __post_init__(self) -> None:
        for name in ("translation", "rotation_deg", "scale", "perspective", "parallax_px"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise UsageError(f"shift range {name} must be a finite number >= 0, got {v}")
        if (self.translation > 0.2 or self.scale > 0.2 or self.perspective > 0.1 or self.rotation_deg > 15
                or self.parallax_px > 8):
            raise UsageError("shift range too large for a camera nudge (translation/scale <= 0.2, "
                             "perspective <= 0.1, rotation <= 15 degrees, parallax <= 8 px)")


def sample_window(rng: np.random.Generator, size: tuple[int, int], rng_limits: ShiftRange = ShiftRange()
                  ) -> np.ndarray:
    """The window a nudged camera sees: (4,2) float64 corners (x, y) in the frame of ``size`` = (H, W).

    Corners in the order top-left, top-right, bottom-right, bottom-left; the quadrilateral is convex and
    may reach past the frame by up to the shift range.
    """
    h, w = size
    c = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    centre = c.mean(0)
    th = math.radians(rng.uniform(-rng_limits.rotation_deg, rng_limits.rotation_deg))
    zoom = 1.0 + rng.uniform(-rng_limits.scale, rng_limits.scale)
    t = rng.uniform(-1, 1, 2) * rng_limits.translation * np.array([w, h])
    jitter = rng.uniform(-1, 1, (4, 2)) * rng_limits.perspective * np.array([w, h])
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    quad = (c - centre) @ R.T / zoom + centre + t + jitter
    return quad


def parallax_field(rng: np.random.Generator, size: tuple[int, int], px: float) -> np.ndarray | None:
    """A smooth displacement field (H,W,2) float32 of up to ``px`` pixels (None for 0): a few random
    vectors on a coarse 4×6 grid, interpolated — depth that varies slowly across the scene."""
    if px <= 0:
        return None
    h, w = size
    coarse = rng.uniform(-1.0, 1.0, (4, 6, 2)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * np.float32(px)


def camera_view(image: np.ndarray, window: np.ndarray, parallax: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """What the nudged camera records: the ``window`` of ``image`` resampled to the full frame.

    image (H,W[,C]) any dtype; window (4,2) from :func:`sample_window`; parallax (H,W,2) or None: a
    displacement (source pixels) added to where each camera pixel looks, which no homography explains
    (:func:`parallax_field`). Returns the camera image (same shape and dtype) and the (3,3) transform
    camera pixel → source pixel (the homography part).
    """
    h, w = image.shape[:2]
    frame = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    T = cv2.getPerspectiveTransform(frame, window.astype(np.float32)).astype(np.float64)
    if parallax is None:
        out = cv2.warpPerspective(image, T, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT_101)
    else:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        den = T[2, 0] * xx + T[2, 1] * yy + T[2, 2]
        mx = ((T[0, 0] * xx + T[0, 1] * yy + T[0, 2]) / den + parallax[..., 0]).astype(np.float32)
        my = ((T[1, 0] * xx + T[1, 1] * yy + T[1, 2]) / den + parallax[..., 1]).astype(np.float32)
        out = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out, T


def shifted_copies(
    image: np.ndarray,
    registrar: Any,
    n: int,
    rng: np.random.Generator,
    *,
    valid: np.ndarray | None = None,
    limits: ShiftRange = ShiftRange(),
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """``n`` synthetic camera shifts of a normal ``image``, each registered back to the reference.

    image (H,W[,C]) as read (uint8/uint16/float), in the reference's frame and size; registrar a
    :class:`lineclear.register.Registrar`; valid (H,W) bool: the image's own valid pixels (an image that
    was registered itself), or None. Returns the registered images (reference size, input dtype), their
    validity masks (H,W) bool, and how many copies failed registration quality control (those are left
    out: the line would call them undecided, so they say nothing about thresholds).
    """
    if n < 0:
        raise UsageError(f"number of shifts must be >= 0, got {n}")
    images, valids, failed = [], [], 0
    for _ in range(n):
        window = sample_window(rng, image.shape[:2], limits)
        cam, T = camera_view(image, window, parallax_field(rng, image.shape[:2], limits.parallax_px))
        res = registrar.register(cam)
        if not res.ok:
            failed += 1
            continue
        v = np.asarray(res.valid, bool)
        if valid is not None and not np.all(valid):
            # pixels the source image did not have either: through the window, then through registration
            src_valid = cv2.warpPerspective(np.asarray(valid, np.uint8), T, (image.shape[1], image.shape[0]),
                                            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            v &= registrar.warp(src_valid.astype(bool), res.transform)
        images.append(res.image)
        valids.append(v)
    return images, valids, failed


def augment_with_shifts(
    images: list[np.ndarray],
    valids: list[np.ndarray | None],
    reference: np.ndarray,
    n: int,
    seed: int,
    registration: dict | None = None,
    limits: ShiftRange = ShiftRange(parallax_px=0.0),
) -> tuple[list[np.ndarray], list[np.ndarray], list[int], int]:
    """``n`` registered camera shifts of each normal image, for fitting a model on what the line sees.

    A model fitted on images that were all taken with the camera in one place has only ever seen one
    sampling phase of the scene; a nudged camera's image, registered back, is resampled (a fraction of a
    pixel of blur, another phase of a strided network's grid) and a CNN-feature model reads that as an
    anomaly everywhere. Fitting on registered shifts as well teaches it what registration leaves behind.
    The training copies are flat nudges (no parallax): fitted on parallax copies, template's envelope
    widens until small items fit inside it (synthetic view A2: 1 → 11 of 16 leftovers missed) and
    patchcore's nudged-image score rose (1.19× → 2.3× on the registry test's scene). Parallax belongs to
    calibration (:func:`shifted_copies` with the default :class:`ShiftRange`), where it sets how much
    residue the thresholds must cover.

    images: raw arrays (H,W[,C]) in the reference's frame; valids: their validity masks or None;
    reference: the registration reference (raw array). The shifts of image ``i`` come from
    ``numpy.random.default_rng([seed, i])`` (reproducible). Returns the shifted images, their validity
    masks, the index of each copy's source image, and how many copies failed quality control.
    """
    from lineclear.register import RegistrationConfig, Registrar  # registration is heavy; only when shifting

    if n <= 0:
        return [], [], [], 0
    cfg = RegistrationConfig.from_dict(registration) if registration else RegistrationConfig()
    registrar = Registrar(reference, cfg)
    out_i, out_v, src, failed = [], [], [], 0
    for i, (img, v) in enumerate(zip(images, valids)):
        got, gv, f = shifted_copies(img, registrar, n, np.random.default_rng([seed, i]), valid=v, limits=limits)
        out_i += got
        out_v += gv
        src += [i] * len(got)
        failed += f
    return out_i, out_v, src, failed
