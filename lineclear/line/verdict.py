"""The verdict of one view and of an image set: clear, leftover (with where) or undecided (with why).

:class:`Undecidable` is how every step of a check says that it cannot establish what the verdict needs
(an unreadable image, a failed registration, a non-finite score, a changed scene): the checker turns it
into an ``undecided`` :class:`ViewVerdict`, never ``clear``. :class:`Evidence` collects what the steps
did establish (timings, pixel statistics, the registration report, notes), which every verdict carries
whatever its outcome.

Exit codes (the interface to a PLC): 0 every view clear, 3 leftover found in some view and no view
undecided, 4 some view undecided (it takes precedence: a view that could not be checked may hide
leftover product, so the machine must not restart either way).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from lineclear import __version__
from lineclear.errors import LineclearError
from lineclear.formats.verdict import VERDICT_SCHEMA
from lineclear.line.regions import Region

CLEAR, LEFTOVER, UNDECIDED = "clear", "leftover", "undecided"
VERDICTS = (CLEAR, LEFTOVER, UNDECIDED)
EXIT_CODES = {CLEAR: 0, LEFTOVER: 3, UNDECIDED: 4}


@dataclass
class ViewVerdict:
    view: str
    verdict: str
    reason: str
    image: str | None = None
    model: str | None = None
    score: float | None = None
    threshold: float | None = None
    pixel_threshold: float | None = None
    level: str = "image"  # what decided: the score against ``threshold`` (image) or any pixel (pixel)
    regions: list[Region] = field(default_factory=list)
    regions_total: int = 0
    peak_xy: list[float] | None = None
    registration: dict[str, Any] | None = None
    image_qc: dict[str, Any] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    overlay: str | None = None
    overlay_error: str | None = None
    raised_fraction: float | None = None  # share of the counted map pixels above the pixel threshold
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. the image was resized)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["regions"] = [r.to_dict() if isinstance(r, Region) else r for r in self.regions]
        for key in ("overlay_error", "raised_fraction"):
            if d[key] is None:
                d.pop(key)
        if not d["notes"]:
            d.pop("notes")
        return d


def combine(verdicts: Iterable[str]) -> str:
    """The set's verdict: undecided if any view is, else leftover if any view is, else clear."""
    vs = list(verdicts)
    if not vs or UNDECIDED in vs:
        return UNDECIDED
    return LEFTOVER if LEFTOVER in vs else CLEAR


@dataclass
class CheckResult:
    """One image set: one :class:`ViewVerdict` per expected view."""

    bundle: str
    views: list[ViewVerdict]
    timings_ms: dict[str, float]
    device: str
    checked_utc: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"))

    @property
    def verdict(self) -> str:
        return combine(v.verdict for v in self.views)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": VERDICT_SCHEMA,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "bundle": self.bundle,
            "views": [v.to_dict() for v in self.views],
            "timings_ms": self.timings_ms,
            "device": self.device,
            "checked_utc": self.checked_utc,
            "lineclear_version": __version__,
        }


class Undecidable(Exception):
    """A step cannot establish what the verdict needs: the view is ``undecided`` for ``reason``.

    ``fields`` are further :class:`ViewVerdict` fields the step did establish (``score``, ``raised_fraction``).
    """

    def __init__(self, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


def ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def short_error(exc: BaseException) -> str:
    """One line for an unexpected error: lineclear's own message, else the type and the first line."""
    if isinstance(exc, LineclearError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


@dataclass
class Evidence:
    """What the steps of one view's check established so far; every verdict of the view carries it."""

    timings_ms: dict[str, float] = field(default_factory=dict)
    image_qc: dict[str, Any] | None = None
    registration: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Record the step's milliseconds in ``timings_ms`` when it completes (a step that stops records none)."""
        t0 = time.perf_counter()
        yield
        self.timings_ms[step] = ms_since(t0)

    def fields(self) -> dict[str, Any]:
        return {"registration": self.registration, "image_qc": self.image_qc,
                "timings_ms": dict(self.timings_ms), "notes": list(self.notes)}


def decide(score: float, threshold: float, regions_total: int, peak_xy: list[float]) -> tuple[str, str]:
    """``(verdict, reason)`` from the image score: strictly above the image threshold is a leftover."""
    if score > threshold:
        where = f"{regions_total} region(s) above the pixel threshold" if regions_total else (
            f"no region above the pixel threshold; peak at x={peak_xy[0]:.0f}, y={peak_xy[1]:.0f}")
        return LEFTOVER, f"score {score:.4g} > threshold {threshold:.4g}; {where}"
    return CLEAR, f"score {score:.4g} <= threshold {threshold:.4g}"


def decide_by_pixels(peak: float, pixel_threshold: float, regions_total: int, peak_xy: list[float]) -> tuple[str, str]:
    """``(verdict, reason)`` at level pixel: a leftover when any counted pixel (``peak``: the highest) is
    strictly above the pixel threshold (thesis 3.5)."""
    if peak > pixel_threshold:
        return LEFTOVER, (f"map peak {peak:.4g} > pixel threshold {pixel_threshold:.4g}; "
                          f"{regions_total} region(s) above it")
    return CLEAR, (f"no counted pixel above the pixel threshold {pixel_threshold:.4g} "
                   f"(peak {peak:.4g} at x={peak_xy[0]:.0f}, y={peak_xy[1]:.0f})")


def scene_changed(raised: float, limit: float) -> str:
    """The reason for a map raised over more than ``limit`` of the inspected area."""
    # a leftover covers a small part of the frame: a map raised nearly everywhere means the scene
    # differs from the calibration, and a frame-sized box would tell nobody where to look
    return (f"scene changed: {raised:.0%} of the inspected area is above the pixel threshold (limit {limit:.0%}): "
            "lighting change, dirty lens or camera moved, or thresholds calibrated without camera shifts? "
            "Look at the line and the camera")
