"""VIA shapes: a region as VGG Image Annotator stores it, and the validation of its shape.

The vocabulary that reading VIA files (:mod:`lineclear.formats.via`) and rasterising regions into
masks (:mod:`lineclear.labels`, where the coordinate conventions are) share; it depends on nothing
but :mod:`lineclear.errors`.

Shapes (VIA ``shape_attributes``):

========== ===============================================================
name       keys
========== ===============================================================
rect       x, y, width, height
circle     cx, cy, r
ellipse    cx, cy, rx, ry, theta (radians, clockwise on screen; default 0)
polygon    all_points_x, all_points_y (>= 3 points)
polyline   all_points_x, all_points_y (>= 2 points), drawn ``line_width`` wide
point      cx, cy, drawn as a disk of ``point_radius``
========== ===============================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from lineclear.errors import FormatError

SHAPES = ("rect", "circle", "ellipse", "polygon", "polyline", "point")
_KEYS = {
    "rect": ("x", "y", "width", "height"),
    "circle": ("cx", "cy", "r"),
    "ellipse": ("cx", "cy", "rx", "ry"),
    "polygon": ("all_points_x", "all_points_y"),
    "polyline": ("all_points_x", "all_points_y"),
    "point": ("cx", "cy"),
}


@dataclass(frozen=True)
class Region:
    """One annotated region: a validated VIA shape and its region attributes.

    ``where`` says where it came from (``file:line``) for messages.
    """

    shape: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)
    where: str = ""


# Coordinates and sizes beyond this many pixels are no image's: refused, so that drawing a shape never
# overflows (a radius of 1e200 squared, x + width of 1e308 + 1e308).
COORD_LIMIT = 1e7


def _number(v: Any, key: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise FormatError(f"{where}: shape key {key!r} must be a number, found {v!r}")
    try:
        f = float(v)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond float range
        raise FormatError(f"{where}: shape key {key!r} must be a number, found {str(v)[:40]!r}") from None
    if not math.isfinite(f):
        raise FormatError(f"{where}: shape key {key!r} is not finite ({v!r})")
    if abs(f) > COORD_LIMIT and key != "theta":
        raise FormatError(f"{where}: shape key {key!r} is out of range ({f:g}; |value| <= {COORD_LIMIT:g} px)")
    return f


def validate_shape(shape: Mapping[str, Any], where: str = "shape") -> dict[str, Any]:
    """Check a VIA ``shape_attributes`` dict; return it with numbers as floats.

    Raises :class:`FormatError` naming ``where`` for an unknown shape or a missing
    or non-numeric key.
    """
    if not isinstance(shape, Mapping):
        raise FormatError(f"{where}: region_shape_attributes must be a JSON object, found {shape!r}")
    name = shape.get("name")
    if name not in SHAPES:
        raise FormatError(f"{where}: unknown shape {name!r} (supported: {', '.join(SHAPES)})")
    for key in _KEYS[name]:
        if key not in shape:
            raise FormatError(f"{where}: {name} without {key!r}")
    out: dict[str, Any] = {"name": name}
    if name in ("polygon", "polyline"):
        xs, ys = shape["all_points_x"], shape["all_points_y"]
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
            raise FormatError(f"{where}: {name} needs all_points_x and all_points_y lists of equal length")
        need = 3 if name == "polygon" else 2
        if len(xs) < need:
            raise FormatError(f"{where}: {name} needs at least {need} points, found {len(xs)}")
        out["all_points_x"] = [_number(v, "all_points_x", where) for v in xs]
        out["all_points_y"] = [_number(v, "all_points_y", where) for v in ys]
        return out
    for key in _KEYS[name]:
        out[key] = _number(shape[key], key, where)
    if name == "ellipse":
        out["theta"] = _number(shape.get("theta", 0.0), "theta", where)
    for key in ("r", "rx", "ry"):
        if key in out and out[key] < 0:
            raise FormatError(f"{where}: {name} with negative {key} ({out[key]})")
    if name == "rect":
        # Some tools write a rect dragged up/left with a negative extent.
        if out["width"] < 0:
            out["x"], out["width"] = out["x"] + out["width"], -out["width"]
        if out["height"] < 0:
            out["y"], out["height"] = out["y"] + out["height"], -out["height"]
    return out
