"""Step 3 of a check: the anomaly map and image score, exactly as the thresholds were calibrated.

The view's model, inspection mask, mask stage and border margin go through
:func:`lineclear.scoring.score_arrays`, as ``lineclear score`` does: the scene is continued from the
reference outside the camera frame, and the seam, eroded by the border margin, never counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lineclear.line.registration import Aligned
from lineclear.line.verdict import Undecidable
from lineclear.line.views import LoadedView
from lineclear.scoring import score_arrays


@dataclass
class Scored:
    amap: np.ndarray  # (h,w) float32 at map size
    score: float
    counted: np.ndarray | None  # (h,w) bool: the pixels that count (mask ∧ eroded validity), None = all


def score_view(view: LoadedView, aligned: Aligned, device: torch.device, bf16: bool = False) -> Scored:
    """Score one aligned image (see the module docstring)."""
    spec = view.spec
    maps, scores, count = score_arrays(
        view.model, aligned.x[None], roi=view.roi, valid=None if aligned.valid is None else aligned.valid[None],
        mask_stage=view.mask_stage, border_margin=spec.border_margin, fill=view.fill, device=device, bf16=bf16)
    amap, score = maps[0], float(scores[0])
    return Scored(amap, score, None if count is None else count[0])


def check_usable(scored: Scored) -> None:
    """:class:`Undecidable` for a non-finite map or score, or when no pixel is left to inspect."""
    if not math.isfinite(scored.score) or not np.all(np.isfinite(scored.amap)):
        raise Undecidable("the model produced a non-finite score")
    if scored.counted is not None and not scored.counted.any():
        raise Undecidable("no pixel left to inspect (mask and registration border cover all)")


def warm_up(view: LoadedView, device: torch.device, bf16: bool = False) -> None:
    """One forward pass on a blank image: the first real check then runs at full speed."""
    h, w = view.spec.map_size
    x = np.full((1, h, w, 3), 0.5, np.float32)
    score_arrays(view.model, x, roi=view.roi, valid=None, mask_stage=view.mask_stage, device=device, bf16=bf16)
