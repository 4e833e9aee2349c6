"""VIA regions → mask arrays (pure: no files here; reading VIA files is :mod:`lineclear.formats.via`).

Coordinates follow VIA: ``x`` to the right, ``y`` down, in image pixels, with the
pixel ``(row r, column c)`` covering the square ``[c, c+1) x [r, r+1)``; a VIA rect
``x=10, width=5`` therefore covers columns 10..14. A pixel belongs to a shape when its
**centre** ``(c+0.5, r+0.5)`` lies inside it. Centres exactly on an edge: the
left/top edges of rects and polygons are inside, the right/bottom edges outside
(so rects and polygons with integer corners cover exactly their area, and
neighbouring polygons never share a pixel); circles, ellipses, points and polylines
include their boundary. Polygons use the non-zero winding rule, as VIA's canvas does.

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
from typing import Any, Iterable, Mapping

import numpy as np

from lineclear.errors import FormatError, UsageError

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


def shape_bounds(shape: Mapping[str, Any], line_width: float = 1.0, point_radius: float = 3.0) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of a validated shape, in VIA pixel coordinates."""
    n = shape["name"]
    if n == "rect":
        return shape["x"], shape["y"], shape["x"] + shape["width"], shape["y"] + shape["height"]
    if n in ("circle", "point"):
        r = shape["r"] if n == "circle" else point_radius
        return shape["cx"] - r, shape["cy"] - r, shape["cx"] + r, shape["cy"] + r
    if n == "ellipse":
        c, s = math.cos(shape["theta"]), math.sin(shape["theta"])
        ex = math.hypot(shape["rx"] * c, shape["ry"] * s)
        ey = math.hypot(shape["rx"] * s, shape["ry"] * c)
        return shape["cx"] - ex, shape["cy"] - ey, shape["cx"] + ex, shape["cy"] + ey
    xs, ys = shape["all_points_x"], shape["all_points_y"]
    pad = line_width / 2 if n == "polyline" else 0.0
    return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad


def outside_fraction(shape: Mapping[str, Any], size: tuple[int, int], line_width: float = 1.0, point_radius: float = 3.0) -> bool:
    """True when the shape's bounding box reaches outside the image ``size`` = (H, W)."""
    x0, y0, x1, y1 = shape_bounds(shape, line_width, point_radius)
    h, w = size
    return x0 < 0 or y0 < 0 or x1 > w or y1 > h


def _window(bounds: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Rows/cols (r0, r1, c0, c1) whose centres may fall inside ``bounds``, clipped to the image."""
    h, w = size
    x0, y0, x1, y1 = bounds
    c0, c1 = max(0, math.floor(x0 - 0.5)), min(w, math.ceil(x1 + 0.5))
    r0, r1 = max(0, math.floor(y0 - 0.5)), min(h, math.ceil(y1 + 0.5))
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def _fill_polygon(xs: np.ndarray, ys: np.ndarray, win: tuple[int, int, int, int]) -> np.ndarray:
    """Non-zero-winding scanline fill at pixel centres over the window; bool (r1-r0, c1-c0)."""
    r0, r1, c0, c1 = win
    yc = np.arange(r0, r1, dtype=np.float64) + 0.5
    x0, y0 = xs, ys
    x1, y1 = np.roll(xs, -1), np.roll(ys, -1)
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    # Half-open in y: a centre on a vertex is counted once, horizontal edges never.
    cross = (yc[:, None] >= lo) & (yc[:, None] < hi)
    dy = np.where(y1 != y0, y1 - y0, 1.0)
    xi = x0 + (yc[:, None] - y0) / dy * (x1 - x0)
    xi = np.where(cross, xi, np.inf)
    direction = np.where(cross, np.where(y1 > y0, 1, -1), 0)
    order = np.argsort(xi, axis=1, kind="stable")
    xi = np.take_along_axis(xi, order, axis=1)
    winding = np.cumsum(np.take_along_axis(direction, order, axis=1), axis=1)
    # The span between crossing k and k+1 is inside when the winding after k is non-zero.
    start, end = xi[:, :-1], xi[:, 1:]
    inside = (winding[:, :-1] != 0) & np.isfinite(end)
    width = c1 - c0
    # Centre c+0.5 in [start, end)  <=>  c in [ceil(start-0.5), ceil(end-0.5)).
    a = np.clip(np.ceil(start - 0.5) - c0, 0, width).astype(np.int64)
    b = np.clip(np.ceil(end - 0.5) - c0, 0, width).astype(np.int64)
    keep = inside & (b > a)
    diff = np.zeros((r1 - r0, width + 1), dtype=np.int32)
    rows = np.nonzero(keep)[0]
    np.add.at(diff, (rows, a[keep]), 1)
    np.add.at(diff, (rows, b[keep]), -1)
    return np.cumsum(diff[:, :width], axis=1) > 0


def _segment_distance(px: np.ndarray, py: np.ndarray, ax: float, ay: float, bx: float, by: float) -> np.ndarray:
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    t = np.zeros_like(px) if ll == 0 else np.clip(((px - ax) * dx + (py - ay) * dy) / ll, 0.0, 1.0)
    return np.hypot(px - (ax + t * dx), py - (ay + t * dy))


def rasterise_shape(
    shape: Mapping[str, Any],
    size: tuple[int, int],
    *,
    line_width: float = 1.0,
    point_radius: float = 3.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one validated shape into a bool ``(H, W)`` mask (``size`` = (H, W)); returns the mask.

    Parts outside the image are clipped. ``out`` is OR-ed into when given.
    """
    h, w = size
    mask = np.zeros((h, w), dtype=bool) if out is None else out
    n = shape["name"]
    win = _window(shape_bounds(shape, line_width, point_radius), size)
    if win is None:
        return mask
    r0, r1, c0, c1 = win
    view = mask[r0:r1, c0:c1]
    ycs = (np.arange(r0, r1, dtype=np.float64) + 0.5)[:, None]
    xcs = (np.arange(c0, c1, dtype=np.float64) + 0.5)[None, :]
    if n == "rect":
        x, y = shape["x"], shape["y"]
        inside = (xcs >= x) & (xcs < x + shape["width"]) & (ycs >= y) & (ycs < y + shape["height"])
    elif n == "circle":
        inside = (xcs - shape["cx"]) ** 2 + (ycs - shape["cy"]) ** 2 <= shape["r"] ** 2
    elif n == "point":
        inside = (xcs - shape["cx"]) ** 2 + (ycs - shape["cy"]) ** 2 <= point_radius**2
    elif n == "ellipse":
        rx, ry = shape["rx"], shape["ry"]
        if rx <= 0 or ry <= 0:
            return mask
        c, s = math.cos(shape["theta"]), math.sin(shape["theta"])
        dx, dy = xcs - shape["cx"], ycs - shape["cy"]
        u, v = dx * c + dy * s, -dx * s + dy * c
        inside = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    elif n == "polygon":
        inside = _fill_polygon(
            np.asarray(shape["all_points_x"], np.float64), np.asarray(shape["all_points_y"], np.float64), win
        )
    elif n == "polyline":
        xs, ys = shape["all_points_x"], shape["all_points_y"]
        half = line_width / 2
        px, py = np.broadcast_to(xcs, view.shape), np.broadcast_to(ycs, view.shape)
        inside = np.zeros(view.shape, dtype=bool)
        for i in range(len(xs) - 1):
            inside |= _segment_distance(px, py, xs[i], ys[i], xs[i + 1], ys[i + 1]) <= half
    else:  # validate_shape guarantees one of SHAPES
        raise FormatError(f"unknown shape {n!r}")
    view |= inside
    return mask


def rasterise(
    regions: Iterable[Region | Mapping[str, Any]],
    size: tuple[int, int],
    *,
    line_width: float = 1.0,
    point_radius: float = 3.0,
) -> np.ndarray:
    """Union of several regions (or validated shape dicts) as bool ``(H, W)``."""
    mask = np.zeros(tuple(size), dtype=bool)
    for reg in regions:
        shape = reg.shape if isinstance(reg, Region) else reg
        rasterise_shape(shape, size, line_width=line_width, point_radius=point_radius, out=mask)
    return mask


def parse_where(items: Iterable[str]) -> dict[str, set[str]]:
    """``["type=leaflet", "type=cap", "side=left"]`` → ``{"type": {"leaflet", "cap"}, "side": {"left"}}``."""
    out: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--where {item!r}: expected KEY=VALUE")
        out.setdefault(key.strip(), set()).add(value.strip())
    return out


def _attr_values(value: Any) -> set[str]:
    """A region attribute as strings; VIA checkbox attributes are dicts of {option: true}."""
    if isinstance(value, dict):
        return {str(k) for k, v in value.items() if v}
    if isinstance(value, list):
        return {str(v) for v in value}
    if isinstance(value, bool):
        return {str(value).lower()}
    return {str(value)}


def select_regions(regions: Iterable[Region], where: Mapping[str, set[str]]) -> list[Region]:
    """Keep regions whose attributes match: every key must match one of its values."""
    if not where:
        return list(regions)
    return [
        r
        for r in regions
        if all(k in r.attributes and _attr_values(r.attributes[k]) & set(vals) for k, vals in where.items())
    ]


def match_names(names: Iterable[str], files: Iterable[Any]) -> tuple[dict[str, Any], list[str], dict[str, list[Any]]]:
    """Match annotation base names to files (paths) by base name.

    Returns ``(found {name: path}, missing [names], ambiguous {name: [paths]})``.
    """
    by_name: dict[str, list[Any]] = {}
    for f in files:
        by_name.setdefault(getattr(f, "name", str(f)), []).append(f)
    found, missing, ambiguous = {}, [], {}
    for n in names:
        hits = by_name.get(n, [])
        if len(hits) == 1:
            found[n] = hits[0]
        elif not hits:
            missing.append(n)
        else:
            ambiguous[n] = sorted(hits)
    return found, missing, ambiguous
