"""Each VIA shape rasterised against a hand-drawn mask, plus an independent oracle (matplotlib paths)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lineclear.errors import FormatError, UsageError
from lineclear.labels import (
    Region,
    match_names,
    outside_fraction,
    parse_where,
    rasterise,
    rasterise_shape,
    select_regions,
    validate_shape,
)


def draw(shape: dict, size, **kw) -> np.ndarray:
    return rasterise_shape(validate_shape(shape), size, **kw).astype(int)


def grid(text: str) -> np.ndarray:
    return np.array([[int(c) for c in row] for row in text.split()], dtype=int)


def test_rect_covers_its_pixels():
    got = draw({"name": "rect", "x": 1, "y": 1, "width": 3, "height": 2}, (4, 6))
    assert (got == grid("000000 011100 011100 000000")).all()


def test_rect_fractional_uses_pixel_centres():
    # Centres 1.5 and 2.5 lie in [0.6, 2.6); 0.5 and 3.5 do not.
    got = draw({"name": "rect", "x": 0.6, "y": 0, "width": 2, "height": 1}, (2, 5))
    assert (got == grid("01100 00000")).all()


def test_rect_negative_extent_is_normalised():
    a = draw({"name": "rect", "x": 4, "y": 3, "width": -3, "height": -2}, (4, 6))
    b = draw({"name": "rect", "x": 1, "y": 1, "width": 3, "height": 2}, (4, 6))
    assert (a == b).all()


def test_polygon_triangle_excludes_centres_on_the_right_edge():
    got = draw({"name": "polygon", "all_points_x": [0, 4, 0], "all_points_y": [0, 0, 4]}, (5, 5))
    assert (got == grid("11100 11000 10000 00000 00000")).all()


def test_polygon_square_equals_rect():
    poly = draw({"name": "polygon", "all_points_x": [1, 4, 4, 1], "all_points_y": [1, 1, 3, 3]}, (4, 6))
    assert (poly == grid("000000 011100 011100 000000")).all()


def test_polygon_nonzero_winding_like_the_via_canvas():
    # The square traced twice has winding number 2: filled under non-zero, empty under even-odd.
    xs, ys = [0, 4, 4, 0] * 2, [0, 0, 4, 4] * 2
    got = draw({"name": "polygon", "all_points_x": xs, "all_points_y": ys}, (5, 5))
    assert (got == grid("11110 11110 11110 11110 00000")).all()


def test_circle_includes_its_boundary():
    got = draw({"name": "circle", "cx": 2.5, "cy": 2.5, "r": 2}, (5, 5))
    assert (got == grid("00100 01110 11111 01110 00100")).all()


def test_ellipse_axis_aligned():
    got = draw({"name": "ellipse", "cx": 3.5, "cy": 2.5, "rx": 3, "ry": 1, "theta": 0}, (5, 7))
    assert (got == grid("0000000 0001000 1111111 0001000 0000000")).all()


def test_ellipse_theta_rotates_clockwise_on_screen():
    # theta = +45 degrees turns the long axis from +x towards +y (down): the main diagonal.
    got = draw({"name": "ellipse", "cx": 2.5, "cy": 2.5, "rx": 2.9, "ry": 0.5, "theta": math.pi / 4}, (5, 5))
    assert (got == np.eye(5, dtype=int)).all()


def test_ellipse_theta_defaults_to_zero():
    a = draw({"name": "ellipse", "cx": 3.5, "cy": 2.5, "rx": 3, "ry": 1}, (5, 7))
    b = draw({"name": "ellipse", "cx": 3.5, "cy": 2.5, "rx": 3, "ry": 1, "theta": 0}, (5, 7))
    assert (a == b).all()


def test_polyline_width():
    line = {"name": "polyline", "all_points_x": [0.5, 4.5], "all_points_y": [2.5, 2.5]}
    assert (draw(line, (5, 5), line_width=1) == grid("00000 00000 11111 00000 00000")).all()
    assert (draw(line, (5, 5), line_width=3) == grid("00000 11111 11111 11111 00000")).all()


def test_polyline_bends():
    line = {"name": "polyline", "all_points_x": [0.5, 2.5, 2.5], "all_points_y": [0.5, 0.5, 4.5]}
    assert (draw(line, (5, 5), line_width=1) == grid("11100 00100 00100 00100 00100")).all()


def test_point_radius():
    pt = {"name": "point", "cx": 2, "cy": 2}
    assert (draw(pt, (5, 5), point_radius=1) == grid("00000 01100 01100 00000 00000")).all()
    assert (draw(pt, (5, 5), point_radius=1.6) == grid("01100 11110 11110 01100 00000")).all()


def test_partly_outside_is_clipped():
    shape = validate_shape({"name": "rect", "x": -2, "y": -2, "width": 4, "height": 4})
    assert outside_fraction(shape, (5, 5))
    assert (rasterise_shape(shape, (5, 5)).astype(int) == grid("11000 11000 00000 00000 00000")).all()
    far = validate_shape({"name": "circle", "cx": 50, "cy": 50, "r": 3})
    assert not rasterise_shape(far, (5, 5)).any()


def test_regions_are_merged():
    regions = [
        Region(validate_shape({"name": "rect", "x": 0, "y": 0, "width": 2, "height": 1})),
        Region(validate_shape({"name": "point", "cx": 4.5, "cy": 2.5})),
    ]
    got = rasterise(regions, (3, 5), point_radius=0.5).astype(int)
    assert (got == grid("11000 00000 00001")).all()


@pytest.mark.parametrize("seed", range(6))
def test_polygon_and_ellipse_agree_with_matplotlib(seed):
    from matplotlib.path import Path as MplPath

    rng = np.random.default_rng(seed)
    h, w = 40, 50
    yy, xx = np.mgrid[0:h, 0:w]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    # A random star-shaped polygon with non-integer vertices.
    k = int(rng.integers(3, 12))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = rng.uniform(5, 18, k)
    px, py = 25 + rad * np.cos(ang), 20 + rad * np.sin(ang)
    poly = validate_shape({"name": "polygon", "all_points_x": px.tolist(), "all_points_y": py.tolist()})
    got = rasterise_shape(poly, (h, w)).ravel()
    path = MplPath(np.stack([px, py], axis=1))
    want = path.contains_points(centres)
    # Centres within 1e-6 of an edge may go either way; there are none in practice, but be exact about it.
    near = path.contains_points(centres, radius=1e-6) != path.contains_points(centres, radius=-1e-6)
    assert (got[~near] == want[~near]).all()
    # A rotated ellipse.
    cx, cy, rx, ry, th = 24.3, 19.7, rng.uniform(3, 15), rng.uniform(2, 9), rng.uniform(-3, 3)
    ell = validate_shape({"name": "ellipse", "cx": cx, "cy": cy, "rx": rx, "ry": ry, "theta": th})
    got = rasterise_shape(ell, (h, w)).ravel()
    # Oracle: the parametric boundary (VIA/canvas convention) as a dense polygon.
    t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    bx = cx + rx * np.cos(t) * math.cos(th) - ry * np.sin(t) * math.sin(th)
    by = cy + rx * np.cos(t) * math.sin(th) + ry * np.sin(t) * math.cos(th)
    boundary = MplPath(np.stack([bx, by], axis=1))
    want = boundary.contains_points(centres)
    near = boundary.contains_points(centres, radius=0.01) != boundary.contains_points(centres, radius=-0.01)
    assert (got[~near] == want[~near]).all()


@pytest.mark.parametrize(
    "shape, message",
    [
        ({"name": "hexagon"}, "unknown shape 'hexagon'"),
        ({"name": "rect", "x": 1, "y": 1, "width": 2}, "without 'height'"),
        ({"name": "circle", "cx": "a", "cy": 1, "r": 2}, "must be a number"),
        ({"name": "polygon", "all_points_x": [1, 2], "all_points_y": [1, 2]}, "at least 3 points"),
        ({"name": "polygon", "all_points_x": [1, 2, 3], "all_points_y": [1, 2]}, "equal length"),
        ({"name": "circle", "cx": 1, "cy": 1, "r": -2}, "negative r"),
    ],
)
def test_bad_shapes_are_refused(shape, message):
    with pytest.raises(FormatError, match=message):
        validate_shape(shape, "x.csv:3")


def test_where_selects_by_attribute():
    regs = [
        Region(validate_shape({"name": "point", "cx": 1, "cy": 1}), {"type": "leaflet"}),
        Region(validate_shape({"name": "point", "cx": 1, "cy": 1}), {"type": "cap", "side": "left"}),
        Region(validate_shape({"name": "point", "cx": 1, "cy": 1}), {"type": {"cap": True, "blister": False}}),
        Region(validate_shape({"name": "point", "cx": 1, "cy": 1}), {}),
    ]
    assert len(select_regions(regs, parse_where(["type=leaflet"]))) == 1
    assert len(select_regions(regs, parse_where(["type=cap"]))) == 2  # a VIA checkbox attribute counts
    assert len(select_regions(regs, parse_where(["type=cap", "type=leaflet"]))) == 3
    assert len(select_regions(regs, parse_where(["type=cap", "side=left"]))) == 1
    assert len(select_regions(regs, {})) == 4
    with pytest.raises(UsageError):
        parse_where(["type"])


def test_match_names():
    from pathlib import Path

    files = [Path("a/x.png"), Path("b/x.png"), Path("a/y.png")]
    found, missing, ambiguous = match_names(["x.png", "y.png", "z.png"], files)
    assert found == {"y.png": Path("a/y.png")}
    assert missing == ["z.png"]
    assert ambiguous == {"x.png": [Path("a/x.png"), Path("b/x.png")]}
