"""Step 3 of a check: the anomaly map and image score, exactly as the thresholds were calibrated.

The view's model, inspection mask, mask stage and border margin go through
:func:`lineclear.scoring.score_arrays`, as ``lineclear score`` does: the scene is continued from the
reference outside the camera frame, and the seam, eroded by the border margin, never counts. An exported
view goes through its twin without PyTorch, :func:`lineclear.runtime.score.score_arrays`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import Any

import numpy as np

from lineclear.line.registration import Aligned
from lineclear.line.verdict import Undecidable
from lineclear.line.views import LoadedView
from lineclear.runtime import score as exported_score


@dataclass
class Scored:
    amap: np.ndarray  # (h,w) float32 at map size
    score: float
    counted: np.ndarray | None  # (h,w) bool: the pixels that count (mask ∧ eroded validity), None = all


def _score(view: LoadedView, x: np.ndarray, device: Any, bf16: bool, **kw: Any):
    if view.exported:
        return exported_score.score_arrays(view.model, x, roi=view.roi, mask_stage=view.mask_stage, **kw)
    from lineclear.scoring import score_arrays

    return score_arrays(view.model, x, roi=view.roi, mask_stage=view.mask_stage, device=device, bf16=bf16, **kw)


def score_view(view: LoadedView, aligned: Aligned, device: Any, bf16: bool = False) -> Scored:
    """Score one aligned image (see the module docstring)."""
    spec = view.spec
    maps, scores, count = _score(view, aligned.x[None], device, bf16,
                                 valid=None if aligned.valid is None else aligned.valid[None],
                                 border_margin=spec.border_margin, fill=view.fill)
    amap, score = maps[0], float(scores[0])
    return Scored(amap, score, None if count is None else count[0])


def check_usable(scored: Scored) -> None:
    """:class:`Undecidable` for a non-finite map or score, or when no pixel is left to inspect."""
    if not math.isfinite(scored.score) or not np.all(np.isfinite(scored.amap)):
        raise Undecidable("the model produced a non-finite score")
    if scored.counted is not None and not scored.counted.any():
        raise Undecidable("no pixel left to inspect (mask and registration border cover all)")


def warm_up(view: LoadedView, device: Any, bf16: bool = False) -> None:
    """One forward pass on a blank image: the first real check then runs at full speed."""
    h, w = view.spec.map_size
    _score(view, np.full((1, h, w, 3), 0.5, np.float32), device, bf16, valid=None)
