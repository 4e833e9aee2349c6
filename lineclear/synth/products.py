"""Leftover products: leaflets, blisters, cartons and caps, drawn from the shapes that are annotated.

A product is a texture patch plus one VIA shape in patch coordinates and a matrix
``M`` placing the patch in the reference frame. In an image, the shape is moved by
the camera shift, clipped where a rail lies over it and at the image border, and
rounded to 0.01 px: **those** shapes are exported to the VIA CSV, rasterised by
:func:`lineclear.labels.rasterise` into the ground-truth mask, and that same mask
is the product's alpha. So the mask, the CSV and the pixels agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from lineclear.labels import rasterise, validate_shape
from lineclear.synth import geometry as g
from lineclear.synth.paint import Layer, Painter, brushed, smooth_noise

KINDS = ("leaflet", "blister", "carton", "cap")


@dataclass
class Product:
    kind: str
    patch: np.ndarray  # float32 (ph, pw, 3)
    shape: dict  # VIA shape in patch coordinates
    m: np.ndarray  # 3x3, patch (corner convention) → reference frame
    opacity: float
    axis_aligned: bool  # M is an integer translation: rects/circles stay rects/circles


def _leaflet(rng: np.random.Generator, s: float, k: float):
    long = max(12.0, rng.uniform(0.09, 0.15) * 768 * s * k)  # floors keep tiny images annotatable
    pw, ph = int(round(long)), int(round(long * rng.uniform(0.55, 0.78)))
    paper = rng.uniform(0.86, 0.97)
    tint = np.array([1.0, 1.0, rng.uniform(0.96, 1.02)], np.float32)
    layer = Layer(np.empty((ph, pw, 3), np.float32), np.ones((ph, pw), np.float32))
    layer.rgb[:] = (paper * (1 + 0.015 * smooth_noise(rng, ph, pw, 20 * s, 2)))[:, :, None] * tint
    p = Painter(layer, rng, s)
    ink = rng.uniform(0.25, 0.55)
    margin = 0.08 * pw
    pitch = max(2.0, 2.6 * s * k)
    y = 0.1 * ph
    p.fill([(margin, y), (pw * 0.6, y), (pw * 0.6, y + 2 * pitch), (margin, y + 2 * pitch)], (ink,) * 3)
    y += 3.5 * pitch
    cols = 2 if rng.random() < 0.5 else 1
    colw = (pw - 2 * margin) / cols
    while y < ph * 0.9:
        for c in range(cols):
            x = margin + c * colw
            end = x + colw * (0.92 if rng.random() > 0.15 else rng.uniform(0.3, 0.8))
            while x < end:  # words
                wl = rng.uniform(2, 9) * s * k
                p.line([(x, y), (min(x + wl, end), y)], (ink,) * 3, max(1.0, 0.55 * pitch))
                x += wl + 1.5 * s * k
        y += pitch * (1.0 if rng.random() > 0.1 else 2.0)
    # Fold lines: panels alternately lit and shaded.
    folds = int(rng.integers(1, 4))
    for i in range(1, folds + 1):
        x = pw * i / (folds + 1)
        if i % 2:
            layer.rgb[:, int(x):] *= rng.uniform(0.88, 0.95)
        p.line([(x, 0), (x, ph)], (paper * 0.7,) * 3, max(1.0, 0.8 * s))
    if rng.random() < 0.4:  # a dog-ear: the corner folded over
        c = rng.uniform(0.15, 0.3) * min(pw, ph)
        shape = {"name": "polygon", "all_points_x": [0, pw - c, pw, pw, 0], "all_points_y": [0, 0, c, ph, ph]}
        p.fill([(pw - c, 0), (pw, c), (pw - c, c)], (paper * 0.8,) * 3)
        p.line([(pw - c, 0), (pw, c)], (paper * 0.55,) * 3, max(1.0, 0.8 * s))
    else:
        shape = {"name": "rect", "x": 0, "y": 0, "width": pw, "height": ph}
    return layer.rgb, shape


def _blister(rng, s, k):
    pw = int(round(max(12.0, rng.uniform(0.10, 0.14) * 768 * s * k)))
    rows, cols = (2, 5) if rng.random() < 0.6 else (2, 4)
    ph = int(round(pw * rows / cols * rng.uniform(1.05, 1.25)))
    foil = rng.uniform(0.7, 0.85)
    tex = brushed(rng, ph, pw, 12 * s, bool(rng.random() < 0.5))
    layer = Layer(np.empty((ph, pw, 3), np.float32), np.ones((ph, pw), np.float32))
    yy = np.linspace(0, 1, ph, dtype=np.float32)[:, None]
    sheen = 1 + 0.12 * np.cos((yy + rng.uniform(0, 1)) * 2 * math.pi)
    layer.rgb[:] = (foil * sheen * (1 + 0.05 * tex))[:, :, None] * np.array([1.0, 1.0, 1.03], np.float32)
    p = Painter(layer, rng, s)
    pill = (0.95, 0.95, 0.93) if rng.random() < 0.6 else tuple(rng.uniform(0.5, 0.95, 3))
    cw, chh = pw / cols, ph / rows
    r = 0.33 * min(cw, chh)
    cavity_side = rng.random() < 0.7
    for i in range(rows):
        for j in range(cols):
            cx, cy = (j + 0.5) * cw, (i + 0.5) * chh
            if cavity_side:
                p.disc(cx + 0.15 * r, cy + 0.2 * r, r * 1.1, (foil * 0.45,) * 3)  # cavity shadow
                p.disc(cx, cy, r, (0.8, 0.82, 0.85))
                p.disc(cx, cy, r * 0.78, pill)
                p.disc(cx - 0.35 * r, cy - 0.35 * r, r * 0.22, (1.0, 1.0, 1.0))  # specular
            else:
                p.line([(cx - r, cy), (cx + r, cy)], (foil * 0.4,) * 3, 1.0)
                p.line([(cx - r, cy - r), (cx + r * 0.4, cy - r)], (foil * 0.5, foil * 0.5, foil * 0.8), 1.0)
    p.line([(1, 1), (pw - 1, 1), (pw - 1, ph - 1), (1, ph - 1)], (foil * 0.6,) * 3, max(1.0, 1.0 * s), closed=True)
    return layer.rgb, {"name": "rect", "x": 0, "y": 0, "width": pw, "height": ph}


def _carton(rng, s, k):
    tw = int(round(max(10.0, rng.uniform(0.06, 0.10) * 768 * s * k)))
    th = int(round(tw * rng.uniform(0.45, 0.7)))
    d = int(round(max(2.0, tw * rng.uniform(0.12, 0.22))))
    pw, ph = tw + d, th + d
    layer = Layer(np.zeros((ph, pw, 3), np.float32), np.ones((ph, pw), np.float32))
    p = Painter(layer, rng, s)
    base = np.array([0.92, 0.92, 0.9], np.float32) * rng.uniform(0.92, 1.0)
    hue = np.asarray(rng.choice([[0.15, 0.35, 0.75], [0.2, 0.6, 0.3], [0.75, 0.15, 0.15], [0.55, 0.2, 0.6]]), np.float32)
    side = [(tw, 0), (pw, d), (pw, ph), (d, ph), (0, th), (tw, th)]
    p.fill(side, base * 0.62)
    p.fill([(d, th), (pw, th + 0.0), (pw, ph), (d, ph)], base * 0.7)
    top = [(0, 0), (tw, 0), (tw, th), (0, th)]
    p.fill(top, base)
    p.fill([(0, th * 0.62), (tw, th * 0.62), (tw, th * 0.85), (0, th * 0.85)], hue)
    letters = "".join(rng.choice(list("ABCDEFGHKLMNPRSTXZ"), int(rng.integers(4, 8))))
    scale = max(0.2, th / 60)
    ink = np.zeros((ph, pw), np.uint8)  # cv2.putText draws on 8-bit images only
    cv2.putText(ink, letters, (int(0.08 * tw), int(0.4 * th)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                max(1, int(scale * 1.5)), cv2.LINE_AA)
    a = (ink.astype(np.float32) / 255)[:, :, None]
    layer.rgb[:] = layer.rgb * (1 - a) + hue * 0.7 * a
    p.line([(0.08 * tw, 0.52 * th), (0.7 * tw, 0.52 * th)], (0.35,) * 3, max(1.0, 0.6 * s))
    for i in range(int(d)):  # barcode on the side face
        if rng.random() < 0.5:
            x = d + i * (tw - d) / max(1, d) * 0.5 + 0.2 * tw
            p.line([(x, th + 0.2 * d), (x, th + 0.8 * d)], (0.1,) * 3, 1.0)
    p.line([(0, 0), (tw, 0), (pw, d), (pw, ph), (d, ph), (0, th), (0, 0)], base * 0.4, max(1.0, 0.8 * s))
    p.line([(tw, 0), (tw, th), (0, th)], base * 0.5, max(1.0, 0.6 * s))
    shape = {"name": "polygon", "all_points_x": [0, tw, pw, pw, d, 0], "all_points_y": [0, 0, d, ph, ph, th]}
    return layer.rgb, shape


def _cap(rng, s, k):
    r = max(3.0, rng.uniform(0.014, 0.024) * 768 * s * k)
    n = int(math.ceil(2 * r)) + 1
    c = n / 2
    layer = Layer(np.zeros((n, n, 3), np.float32), np.ones((n, n), np.float32))
    p = Painter(layer, rng, s)
    col = np.asarray(rng.choice([[0.93, 0.93, 0.92], [0.2, 0.35, 0.8], [0.85, 0.2, 0.15], [0.95, 0.8, 0.2]]), np.float32)
    p.disc(c, c, r, col * 0.6)
    for a in np.linspace(0, 2 * math.pi, max(12, int(r * 1.5)), endpoint=False):  # knurled rim
        p.line([(c + 0.8 * r * math.cos(a), c + 0.8 * r * math.sin(a)), (c + r * math.cos(a), c + r * math.sin(a))],
               col * 0.35, 1.0)
    p.disc(c, c, 0.74 * r, col)
    p.disc(c - 0.15 * r, c - 0.15 * r, 0.45 * r, np.minimum(col * 1.15 + 0.05, 1.0))
    p.disc(c - 0.3 * r, c - 0.3 * r, 0.12 * r, (1.0, 1.0, 1.0))
    return layer.rgb, {"name": "circle", "cx": c, "cy": c, "r": float(round(r, 2))}


_MAKERS = {"leaflet": _leaflet, "blister": _blister, "carton": _carton, "cap": _cap}


def make_product(kind: str, rng: np.random.Generator, s: float, scale: float) -> tuple[np.ndarray, dict]:
    """A texture patch float32 (ph, pw, 3) and its VIA shape in patch coordinates."""
    patch, shape = _MAKERS[kind](rng, s, scale)
    return np.clip(patch, 0, 1).astype(np.float32), shape


def _band_edges(band, h_corner):
    """The two long edges of a rail band as lines (a, b, c) with a*x+b*y+c >= 0 on the outside."""
    (x0, y0), (x1, y1), hw = band
    d = np.array([x1 - x0, y1 - y0], float)
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-12)
    lines = []
    for sign in (1.0, -1.0):
        pa = np.array([x0, y0]) + sign * hw * n
        pb = np.array([x1, y1]) + sign * hw * n
        (ax, bx), (ay, by) = g.apply(h_corner, [pa[0], pb[0]], [pa[1], pb[1]])
        (cx,), (cy,) = g.apply(h_corner, [x0 + (x1 - x0) / 2], [y0 + (y1 - y0) / 2])
        a, b = -(by - ay), bx - ax
        c = -(a * ax + b * ay)
        if a * cx + b * cy + c > 0:  # orient so the band centre is negative (inside)
            a, b, c = -a, -b, -c
        lines.append((a, b, c))
    return lines


def _area(xs, ys) -> float:
    x, y = np.asarray(xs), np.asarray(ys)
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def image_shapes(prod: Product, h_corner: np.ndarray | None, bands, width: int, height: int) -> list[dict]:
    """The product's visible outline(s) in an image: shifted, cut by rails and the image border, rounded."""
    if h_corner is None and prod.axis_aligned:
        tx, ty = prod.m[0, 2], prod.m[1, 2]
        sh = dict(prod.shape)
        if sh["name"] == "rect":
            sh = {**sh, "x": sh["x"] + tx, "y": sh["y"] + ty}
        elif sh["name"] == "circle":
            sh = {**sh, "cx": sh["cx"] + tx, "cy": sh["cy"] + ty}
        else:
            sh = g.transform_shape(sh, prod.m)
    else:
        total = prod.m if h_corner is None else h_corner @ prod.m
        sh = g.transform_shape(prod.shape, total)
    hh = np.eye(3) if h_corner is None else h_corner
    if sh["name"] == "rect" and (
        _touches_band(sh, bands, hh) or sh["x"] < 0 or sh["y"] < 0
        or sh["x"] + sh["width"] > width or sh["y"] + sh["height"] > height
    ):
        sh = g.transform_shape(sh, np.eye(3))  # as a polygon, so it can be cut
    if sh["name"] != "polygon":
        return [sh]
    pieces = [(sh["all_points_x"], sh["all_points_y"])]
    for band in bands:
        new = []
        for xs, ys in pieces:
            for a, b, c in _band_edges(band, hh):
                cx, cy = g.clip_polygon(xs, ys, a, b, c)
                if len(cx) >= 3 and _area(cx, cy) > 4.0:
                    new.append((cx, cy))
        pieces = new
    out = []
    for xs, ys in pieces:
        for a, b, c in ((1, 0, 0), (-1, 0, width), (0, 1, 0), (0, -1, height)):
            xs, ys = g.clip_polygon(xs, ys, a, b, c)
        if len(xs) >= 3 and _area(xs, ys) > 4.0:
            out.append({"name": "polygon", "all_points_x": [float(round(v, 2)) for v in xs],
                        "all_points_y": [float(round(v, 2)) for v in ys]})
    return out


def _touches_band(rect: dict, bands, hh) -> bool:
    poly = g.transform_shape(rect, np.eye(3))
    xs, ys = poly["all_points_x"], poly["all_points_y"]
    for band in bands:
        e1, e2 = _band_edges(band, hh)
        # Entirely outside one edge → untouched by this band.
        if not any(all(a * x + b * y + c >= 0 for x, y in zip(xs, ys)) for a, b, c in (e1, e2)):
            return True
    return False


def composite(back: np.ndarray, prod: Product, shapes: list[dict], h_corner: np.ndarray | None, s: float) -> np.ndarray:
    """Draw ``prod`` into the image-frame albedo ``back`` (in place) with alpha = the rasterised ``shapes``.

    Returns the product's mask, bool (H, W).
    """
    h, w = back.shape[:2]
    mask = rasterise([validate_shape(sh) for sh in shapes], (h, w))
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return mask
    pad = int(math.ceil(8 * s)) + 2
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)
    sub = mask[y0:y1, x0:x1].astype(np.float32)
    # A soft contact shadow, offset away from the light (up-left).
    sh = np.zeros_like(sub)
    dx, dy = int(round(2 * s)) + 1, int(round(3 * s)) + 1
    sh[dy:, dx:] = sub[:-dy or None, :-dx or None]
    sh = cv2.GaussianBlur(sh, (0, 0), 2.5 * s + 0.5)
    back[y0:y1, x0:x1] *= (1 - 0.45 * sh * (1 - sub))[:, :, None]
    total = prod.m if h_corner is None else h_corner @ prod.m
    to_box = g.translation(-x0, -y0) @ total
    warped = cv2.warpPerspective(prod.patch, g.centre_matrix(to_box), (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    a = (sub * prod.opacity)[:, :, None]
    back[y0:y1, x0:x1] = back[y0:y1, x0:x1] * (1 - a) + warped * a
    return mask
