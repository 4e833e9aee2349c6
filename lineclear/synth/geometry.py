"""Homographies for the synthetic camera shifts, and moving VIA shapes through them.

Two pixel conventions meet here:

* OpenCV (and the ``H`` written to ``shifts.json``): integer coordinates are pixel
  **centres**, so ``cv2.warpPerspective(reference, H, (W, H))`` renders a shifted view.
* VIA (and :mod:`lineclear.labels`): pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``,
  its centre is ``(c+0.5, r+0.5)``.

``via_matrix`` converts a centre-convention matrix to the corner convention.
"""

from __future__ import annotations

import math

import numpy as np


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def similarity(angle_deg: float, scale: float, cx: float, cy: float) -> np.ndarray:
    """Rotation by ``angle_deg`` (clockwise on screen, y down) and scale about (cx, cy)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    rs = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return translation(cx, cy) @ rs @ translation(-cx, -cy)


def sample_shift(rng: np.random.Generator, width: int, height: int, strength: float = 1.0) -> tuple[np.ndarray, dict]:
    """A small random camera shift as a homography (OpenCV centre convention).

    Translation up to 3 % of the image size, rotation up to 3 degrees, scale within
    ±3 %, and a slight perspective (the far edge up to ±1.5 % larger), all about the
    image centre. Returns ``(H (3,3) float64, params)``; ``H`` maps reference pixel
    coordinates to the shifted image.
    """
    cx, cy = (width - 1) / 2, (height - 1) / 2
    tx = float(rng.uniform(-0.03, 0.03) * width * strength)
    ty = float(rng.uniform(-0.03, 0.03) * height * strength)
    rot = float(rng.uniform(-3.0, 3.0) * strength)
    scale = float(1.0 + rng.uniform(-0.03, 0.03) * strength)
    px = float(rng.uniform(-0.015, 0.015) * strength)
    py = float(rng.uniform(-0.015, 0.015) * strength)
    # Perspective about the centre: w = 1 + px*(x-cx)/(W/2) + py*(y-cy)/(H/2).
    persp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [px / (width / 2), py / (height / 2), 1.0]])
    hmat = translation(cx + tx, cy + ty) @ similarity(rot, scale, 0, 0) @ persp @ translation(-cx, -cy)
    hmat = hmat / hmat[2, 2]
    params = {"tx_px": tx, "ty_px": ty, "rotation_deg": rot, "scale": scale, "perspective": [px, py]}
    return hmat, params


def via_matrix(h_centre: np.ndarray) -> np.ndarray:
    """The same mapping in VIA's corner convention: ``T(+0.5) H T(-0.5)``."""
    return translation(0.5, 0.5) @ h_centre @ translation(-0.5, -0.5)


def centre_matrix(h_corner: np.ndarray) -> np.ndarray:
    """Inverse of :func:`via_matrix`: corner-convention matrix → OpenCV convention."""
    return translation(-0.5, -0.5) @ h_corner @ translation(0.5, 0.5)


def apply(h: np.ndarray, xs, ys) -> tuple[np.ndarray, np.ndarray]:
    pts = np.stack([np.asarray(xs, float), np.asarray(ys, float), np.ones(len(xs))])
    q = h @ pts
    return q[0] / q[2], q[1] / q[2]


def is_similarity(h: np.ndarray, tol: float = 1e-9) -> bool:
    """True when ``h`` maps circles to circles (no shear, equal scale, no perspective)."""
    a = h[:2, :2] / h[2, 2]
    return (
        abs(h[2, 0]) < tol
        and abs(h[2, 1]) < tol
        and abs(a[0, 0] - a[1, 1]) < tol
        and abs(a[0, 1] + a[1, 0]) < tol
    )


def jacobian(h: np.ndarray, x: float, y: float) -> np.ndarray:
    """2x2 derivative of the homography at (x, y) (its local affine part)."""
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    u = h[0, 0] * x + h[0, 1] * y + h[0, 2]
    v = h[1, 0] * x + h[1, 1] * y + h[1, 2]
    return np.array(
        [
            [(h[0, 0] * w - u * h[2, 0]) / w**2, (h[0, 1] * w - u * h[2, 1]) / w**2],
            [(h[1, 0] * w - v * h[2, 0]) / w**2, (h[1, 1] * w - v * h[2, 1]) / w**2],
        ]
    )


def _round(v: float, nd: int = 2) -> float:
    return float(round(float(v), nd))


def transform_shape(shape: dict, h_corner: np.ndarray) -> dict:
    """Map a VIA shape through a corner-convention homography; coordinates rounded to 0.01 px.

    Rects and polygons map exactly (a rect becomes a polygon unless ``h`` is a pure
    translation+scale); circles and ellipses become the ellipse of the local affine
    part of ``h`` at their centre (the products are small, so the perspective
    curvature across them is far below a pixel).
    """
    n = shape["name"]
    if n == "rect":
        x, y, w, hh = shape["x"], shape["y"], shape["width"], shape["height"]
        shape = {"name": "polygon", "all_points_x": [x, x + w, x + w, x], "all_points_y": [y, y, y + hh, y + hh]}
        n = "polygon"
    if n in ("polygon", "polyline"):
        xs, ys = apply(h_corner, shape["all_points_x"], shape["all_points_y"])
        return {"name": n, "all_points_x": [_round(v) for v in xs], "all_points_y": [_round(v) for v in ys]}
    if n in ("circle", "ellipse"):
        rx = shape["r"] if n == "circle" else shape["rx"]
        ry = shape["r"] if n == "circle" else shape["ry"]
        th = 0.0 if n == "circle" else shape.get("theta", 0.0)
        (cx,), (cy,) = apply(h_corner, [shape["cx"]], [shape["cy"]])
        a = jacobian(h_corner, shape["cx"], shape["cy"])
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        m = a @ rot @ np.diag([rx, ry])
        u, s, _ = np.linalg.svd(m)
        theta = math.atan2(u[1, 0], u[0, 0])
        return {"name": "ellipse", "cx": _round(cx), "cy": _round(cy), "rx": _round(s[0]), "ry": _round(s[1]),
                "theta": _round(theta, 4)}
    raise ValueError(f"cannot transform shape {n!r}")


def clip_polygon(xs: list[float], ys: list[float], a: float, b: float, c: float) -> tuple[list[float], list[float]]:
    """Sutherland–Hodgman: the part of a polygon where ``a*x + b*y + c >= 0``."""
    out_x: list[float] = []
    out_y: list[float] = []
    n = len(xs)
    for i in range(n):
        x0, y0, x1, y1 = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
        d0, d1 = a * x0 + b * y0 + c, a * x1 + b * y1 + c
        if d0 >= 0:
            out_x.append(x0)
            out_y.append(y0)
        if (d0 >= 0) != (d1 >= 0):
            t = d0 / (d0 - d1)
            out_x.append(x0 + t * (x1 - x0))
            out_y.append(y0 + t * (y1 - y0))
    return out_x, out_y
