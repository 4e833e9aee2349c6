"""Compatibility: the checker now lives in :mod:`lineclear.line` (one module per step of a check).

Kept for one release for code that imports ``lineclear.check``; import from :mod:`lineclear.line.checker`
and its sibling modules instead.
"""

from __future__ import annotations

from lineclear.line.checker import Checker
from lineclear.line.image import ImageQC, file_problem, image_problem, image_stats, is_candidate
from lineclear.line.matching import match_images, name_matches, views_for
from lineclear.line.overlay import blank_frame, draw_overlay, overlay_name
from lineclear.line.regions import MAX_REGIONS, Region, find_regions, raised_fraction
from lineclear.line.verdict import (
    CLEAR, EXIT_CODES, LEFTOVER, UNDECIDED, VERDICTS, CheckResult, ViewVerdict, combine,
)

__all__ = [
    "CLEAR", "EXIT_CODES", "LEFTOVER", "MAX_REGIONS", "UNDECIDED", "VERDICTS", "CheckResult", "Checker", "ImageQC",
    "Region", "ViewVerdict", "blank_frame", "combine", "draw_overlay", "file_problem", "find_regions",
    "image_problem", "image_stats", "is_candidate", "match_images", "name_matches", "overlay_name",
    "raised_fraction", "views_for",
]
