"""The twin of :func:`lineclear.scoring.score_arrays` for an exported model: same masks, seam and fill."""

from __future__ import annotations

import numpy as np

from lineclear.masking import counted_maps, scoring_masks
from lineclear.runtime.models import ExportedModel


def score_arrays(
    model: ExportedModel,
    images: np.ndarray,
    *,
    roi: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    mask_stage: str = "none",
    border_margin: int = 0,
    fill: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """As :func:`lineclear.scoring.score_arrays` (same arguments and results, no device)."""
    b, h, w, _ = images.shape
    images, pre, count = scoring_masks(images, roi, valid, mask_stage, border_margin, fill)
    maps, scores = model.forward(np.ascontiguousarray(images, np.float32), pre,
                                 valid if model.uses_validity else None)
    maps, scores = counted_maps(maps, scores, pre, count, model.image_score, (h, w))
    return maps, scores, count
