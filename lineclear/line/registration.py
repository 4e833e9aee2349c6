"""Step 2 of a check: bring the image into the view's reference frame, then to the model's map size.

With registration (:mod:`lineclear.register`, with quality control) a failed registration means the
camera moved beyond what can be trusted: :class:`~lineclear.line.verdict.Undecidable`. Without it
(cameras that cannot move) the image is resized to the reference's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lineclear.formats.deploy import ViewSpec
from lineclear.images import resize as resize_image
from lineclear.images import to_float_rgb
from lineclear.line.verdict import Evidence, Undecidable
from lineclear.masking import valid_at
from lineclear.register import Registrar, RegistrationResult, resize_transform


@dataclass
class Aligned:
    """The image in the view's frame at map size."""

    x: np.ndarray  # (h,w,3) float32 in [0,1], registered, at map size
    valid: np.ndarray | None  # (h,w) bool at map size (not eroded: scoring erodes by the border margin)
    transform: np.ndarray  # (3,3) float64 image → reference


def report(res: RegistrationResult) -> dict[str, Any]:
    """The registration as the verdict reports it: ok, reason, transform and the finite QC figures."""
    return {"ok": bool(res.ok), "reason": res.reason, "transform": np.round(res.transform, 8).tolist(),
            **{k: val for k, val in res.qc.items() if not isinstance(val, float) or math.isfinite(val)}}


def size_note(in_size: tuple[int, int], spec: ViewSpec, registered: bool) -> str | None:
    """A note when the image is not the size of the view's reference."""
    if in_size == tuple(spec.image_size):
        return None
    return (f"image is {in_size[1]}x{in_size[0]}, the view's reference {spec.image_size[1]}x"
            f"{spec.image_size[0]}: {'registered' if registered else 'resized'} to it")


def align(raw: np.ndarray, spec: ViewSpec, registrar: Registrar | None, evidence: Evidence) -> Aligned:
    """Register (or resize) ``raw`` to the reference, then bring it to map size; timings and the
    registration report go into ``evidence``."""
    in_size = (int(raw.shape[0]), int(raw.shape[1]))
    note = size_note(in_size, spec, registrar is not None)
    if note:
        evidence.notes.append(note)
    if registrar is not None:
        with evidence.timed("register"):
            res = registrar.register(raw)
            evidence.registration = report(res)
        if not res.ok:
            raise Undecidable(f"camera moved / registration failed: {res.reason}")
        warped, valid_ref, T = res.image, res.valid, res.transform
    else:
        T = resize_transform(in_size, tuple(spec.image_size))
        warped = raw if in_size == tuple(spec.image_size) else resize_image(raw, tuple(spec.image_size))
        valid_ref = None
    with evidence.timed("resize"):
        x = to_float_rgb(warped)
        if x.shape[:2] != tuple(spec.map_size):
            x = resize_image(x, tuple(spec.map_size))
        valid = None if valid_ref is None else valid_at(valid_ref, tuple(spec.map_size))
    return Aligned(x, valid, np.asarray(T, np.float64))
