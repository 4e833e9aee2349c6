"""Procedural machine interiors, one per view, drawn once per dataset on a canvas larger than the image.

The canvas has a margin of 10 % of the image width on every side, so a camera shift
shows real machine where the unshifted frame ended. Coordinates in :class:`Scene`
fields are **reference-frame** pixels (the unshifted image, VIA corner convention);
the canvas pixel is the reference pixel plus ``margin``.

Per image, :func:`render_layers` moves the moving parts (belt, arm, star wheel,
pusher, flap, loose cables) and warps or crops the canvas to the image frame; products
are then drawn in the image frame (:mod:`.products`) and :func:`finish` composites,
lights, defocuses and adds the illumination change and sensor noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from lineclear.labels import rasterise
from lineclear.synth.geometry import clip_polygon
from lineclear.synth.paint import Layer, Painter, brushed, smooth_noise

VIEWS = ("A", "A2", "B", "B2", "C")

DESCRIPTIONS = {
    "A": "machine bed and back wall, two guide rails, a swinging transfer arm",
    "A2": "conveyor belt (texture moves between images) between guides, plates above and below",
    "B": "oblique view, out of focus (blurrier corners), converging rails",
    "B2": "top-down clear view, perforated plate, diagonal guide, a pusher",
    "C": "cluttered: terminal blocks, perforated plates, gratings, cables, star wheel, gripper",
}


@dataclass
class Belt:
    """A horizontal conveyor band in canvas pixels and its texture strip (longer than the band)."""

    y0: int
    y1: int
    strip: np.ndarray  # float32 (y1-y0, canvas_w + period, 3)
    period: int


@dataclass
class Scene:
    name: str
    width: int
    height: int
    margin: int
    s: float
    back: Layer  # background albedo (alpha 1)
    fore: Layer  # parts that occlude products (rails), alpha = coverage
    light: np.ndarray  # float32 (Hc, Wc) illumination (vignetting, spots, shade)
    ignore: list[dict] = field(default_factory=list)  # VIA polygons, reference coords, with "reason"
    zones: list[tuple[float, float, float, float, float]] = field(default_factory=list)  # x0,y0,x1,y1,weight
    bands: list[tuple[tuple[float, float], tuple[float, float], float]] = field(default_factory=list)
    belt: Belt | None = None
    movers: list[Callable[[Painter, np.random.Generator, bool], None]] = field(default_factory=list)
    blur: float = 0.0  # Gaussian sigma (px) over the whole image
    corner_blur: float = 0.0  # extra sigma reached in the corners
    product_scale: float = 1.0
    _back4: np.ndarray | None = field(default=None, repr=False)
    _mover_box: tuple[int, int, int, int] | None = field(default=None, repr=False)

    @property
    def mover_box(self) -> tuple[int, int, int, int] | None:
        """Canvas box (x0, y0, x1, y1) the moving parts can draw into (found once by drawing them)."""
        if self._mover_box is None and self.movers:
            hc, wc = self.back.shape
            scratch = Layer.empty(hc, wc)
            probe = np.random.default_rng(12345)
            painter = Painter(scratch, probe, self.s, overlay=True)
            for k in range(12):
                for mover in self.movers:
                    mover(painter, probe, k == 0)
            ys, xs = np.nonzero(scratch.alpha > 0)
            pad = int(4 + 6 * self.s)  # random states beyond those probed move a few pixels further
            self._mover_box = (max(0, xs.min() - pad), max(0, ys.min() - pad),
                               min(wc, xs.max() + 1 + pad), min(hc, ys.max() + 1 + pad))
        return self._mover_box

    @property
    def back4(self) -> np.ndarray:
        """float32 (Hc, Wc, 4): albedo and light in one array (one warp per image)."""
        if self._back4 is None:
            self._back4 = np.ascontiguousarray(np.dstack([self.back.rgb, self.light]))
        return self._back4

    def ignore_mask(self) -> np.ndarray:
        """bool (H, W): pixels inside the ignore polygons (reference frame)."""
        return rasterise([r["shape"] for r in self.ignore], (self.height, self.width))


class _Frame:
    """Relative (u, v) in [0, 1] of the reference image → canvas pixels, and back."""

    def __init__(self, w: int, h: int, m: int) -> None:
        self.w, self.h, self.m = w, h, m

    def x(self, u: float) -> float:
        return self.m + u * self.w

    def y(self, v: float) -> float:
        return self.m + v * self.h

    def p(self, u: float, v: float) -> tuple[float, float]:
        return self.x(u), self.y(v)

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> list[tuple[float, float]]:
        return [self.p(u0, v0), self.p(u1, v0), self.p(u1, v1), self.p(u0, v1)]

    def ref_poly(self, uv: list[tuple[float, float]]) -> dict:
        """An ignore polygon in reference pixels (integer vertices, so VIA export is exact)."""
        xs, ys = [u * self.w for u, _ in uv], [v * self.h for _, v in uv]
        for a, b, c in ((1, 0, 0), (-1, 0, self.w), (0, 1, 0), (0, -1, self.h)):  # clip to the image
            xs, ys = clip_polygon(xs, ys, a, b, c)
        return {
            "name": "polygon",
            "all_points_x": [int(round(x)) for x in xs],
            "all_points_y": [int(round(y)) for y in ys],
        }


def _light_field(rng: np.random.Generator, hc: int, wc: int, spots: list[tuple[float, float, float, float]],
                 shade: list[tuple[float, float, float, float, float]], m: int, w: int, h: int) -> np.ndarray:
    """Vignetting + Gaussian light spots (u, v, radius, gain) + dark zones (u0, v0, u1, v1, factor); low-res then resized."""
    lh, lw = max(8, hc // 8), max(8, wc // 8)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    u = (xx + 0.5) / lw * wc / w - m / w
    v = (yy + 0.5) / lh * hc / h - m / h
    r2 = ((u - 0.5) ** 2 + (v - 0.5) ** 2 * (h / w) ** 2) / 0.5**2
    light = 1.0 - 0.32 * r2
    for su, sv, rad, gain in spots:
        light += gain * np.exp(-(((u - su) ** 2 + ((v - sv) * h / w) ** 2) / (2 * rad**2)))
    for u0, v0, u1, v1, f in shade:
        zone = ((u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)).astype(np.float32)
        zone = cv2.GaussianBlur(zone, (0, 0), 2.0)
        light *= 1 - (1 - f) * zone
    light *= 1 + 0.04 * smooth_noise(rng, lh, lw, max(lh, lw) / 3, 2)
    return cv2.resize(light.astype(np.float32), (wc, hc), interpolation=cv2.INTER_CUBIC)


def _base(rng: np.random.Generator, hc: int, wc: int, s: float, tone: float) -> Layer:
    back = Layer(np.empty((hc, wc, 3), np.float32), np.ones((hc, wc), np.float32))
    n = smooth_noise(rng, hc, wc, 60 * s, 3)
    back.rgb[:] = (tone * (1 + 0.15 * n))[:, :, None] * np.array([0.95, 0.98, 1.05], np.float32)
    return back


def build_scene(name: str, width: int, height: int, rng: np.random.Generator) -> Scene:
    """Draw the static machine interior of view ``name`` at ``width`` x ``height`` (reference frame)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown view {name!r} (known: {', '.join(VIEWS)})")
    s = width / 768.0
    m = int(round(0.1 * width))
    wc, hc = width + 2 * m, height + 2 * m
    return _BUILDERS[name](rng, width, height, m, s, wc, hc)


# -- the five views -----------------------------------------------------------------


def _view_a(rng, w, h, m, s, wc, hc) -> Scene:
    f = _Frame(w, h, m)
    back = _base(rng, hc, wc, s, 0.13)
    fore = Layer.empty(hc, wc)
    pb, pf = Painter(back, rng, s), Painter(fore, rng, s, overlay=True)
    tex_h = brushed(rng, hc, wc, 40 * s, True)
    tex_v = brushed(rng, hc, wc, 30 * s, False)
    pb.plate(f.rect(-0.2, -0.2, 1.2, 0.30), 0.50, (0.98, 1.0, 1.04), tex_h)
    for u in (0.08, 0.30, 0.74):
        pb.slot(f.x(u), f.y(0.06), f.x(u + 0.12), f.y(0.12))
    for u in np.arange(0.03, 1.0, 0.095):
        pb.screw(f.x(u), f.y(0.255), 4.2 * s)
    pb.sticker(f.x(0.52), f.y(0.04), 0.11 * w, 0.13 * h, (0.93, 0.80, 0.12))
    pb.cable([f.p(1.15, 0.02), f.p(1.0, 0.12), f.p(0.93, 0.2), f.p(0.96, 0.32)], 7 * s, (0.12, 0.12, 0.13))
    pb.cable([f.p(1.15, 0.10), f.p(1.03, 0.16), f.p(0.99, 0.33)], 5 * s, (0.15, 0.28, 0.55))
    pb.plate(f.rect(-0.2, 0.44, 1.2, 1.2), 0.60, (1.0, 1.0, 1.02), tex_h)
    pb.plate(f.rect(0.14, 0.56, 0.56, 0.86), 0.68, (1.0, 1.0, 1.0), tex_v)
    for u, v in ((0.16, 0.58), (0.54, 0.58), (0.16, 0.84), (0.54, 0.84)):
        pb.screw(f.x(u), f.y(v), 3.5 * s)
    pb.plate([f.p(-0.2, 0.30), f.p(0.06, 0.30), f.p(0.10, 1.2), f.p(-0.2, 1.2)], 0.40, (1.0, 1.0, 1.05), tex_v)
    for v in (0.5, 0.7, 0.9):
        pb.screw(f.x(0.035), f.y(v), 4 * s)
    bands = []
    for v in (0.355, 0.405):
        pf.rail(f.p(-0.2, v), f.p(1.2, v), 0.022 * h + 2 * s, 0.62)
        bands.append(((-0.2 * w, v * h), (1.2 * w, v * h), (0.022 * h + 2 * s) / 2))
    for u in (0.2, 0.5, 0.8):  # rail brackets
        pf.fill(f.rect(u - 0.012, 0.33, u + 0.012, 0.43), (0.3, 0.3, 0.32))
    light = _light_field(rng, hc, wc, [(0.32, 0.62, 0.18, 0.35), (0.8, 0.15, 0.12, 0.25)], [(0.0, 0.3, 1.0, 0.44, 0.7)], m, w, h)
    pivot = f.p(0.88, 0.02)
    reach = 0.34 * w
    a_lo, a_hi = math.radians(100), math.radians(145)

    def arm(p: Painter, r: np.random.Generator, rest: bool) -> None:
        a = (a_lo + a_hi) / 2 if rest else r.uniform(a_lo, a_hi)
        d = np.array([math.cos(a), math.sin(a)])
        n = np.array([-d[1], d[0]])
        base = np.array(pivot)
        tip = base + d * reach
        wd = 0.028 * w
        quad = [base + n * wd, tip + n * wd * 0.8, tip - n * wd * 0.8, base - n * wd]
        p.shadow(quad, 8 * s, 10 * s, 8 * s, 0.5)
        p.plate(quad, 0.72, (1.0, 0.97, 0.9), None, shadow=False)
        p.disc(*base, wd * 0.9, (0.25, 0.25, 0.27))
        p.disc(*tip, wd * 1.1, (0.2, 0.2, 0.22))
        p.disc(*(tip - n * wd * 0.3), wd * 0.35, (0.75, 0.75, 0.78))

    # The region the arm can sweep (plus a margin), as a convex polygon in (u, v).
    rad = (reach + 0.06 * w) / w
    sweep = [(0.94, -0.05), (0.82, -0.05)] + [
        (0.88 + rad * math.cos(a), 0.02 + rad * math.sin(a) * w / h) for a in np.linspace(a_lo - 0.12, a_hi + 0.12, 9)
    ]
    ignore = [{"shape": f.ref_poly(_convex(sweep)), "reason": "moving transfer arm"}]
    return Scene("A", w, h, m, s, back, fore, light, ignore,
                 zones=[(0.10 * w, 0.47 * h, 0.72 * w, 0.95 * h, 3.0), (0.05 * w, 0.31 * h, 0.70 * w, 0.44 * h, 1.0)],
                 bands=bands, movers=[arm], product_scale=1.0)


def _convex(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    hull = cv2.convexHull(np.asarray(points, np.float32)).reshape(-1, 2)
    return [(float(x), float(y)) for x, y in hull]


def _belt_strip(rng, h: int, length: int, s: float, period: int) -> np.ndarray:
    base = 0.17 + 0.03 * smooth_noise(rng, h, length, 25 * s, 3)
    grain = 0.025 * rng.standard_normal((h, length)).astype(np.float32)
    strip = base + cv2.GaussianBlur(grain, (0, 0), 0.7 * s + 0.3)
    x = np.arange(length)
    cleat = ((x % period) < max(2, int(0.18 * period))).astype(np.float32)
    edge = ((x % period) == max(2, int(0.18 * period))).astype(np.float32)
    strip = strip * (1 - 0.45 * cleat[None, :]) + 0.18 * edge[None, :] + 0.05 * cleat[None, :]
    # Worn marks and dust that travel with the belt.
    for _ in range(max(4, length // int(60 * s + 1))):
        cx, cy = rng.uniform(0, length), rng.uniform(0, h)
        cv2.ellipse(strip, (int(cx), int(cy)), (int(rng.uniform(2, 9) * s) + 1, int(rng.uniform(1, 3) * s) + 1),
                    rng.uniform(0, 180), 0, 360, float(rng.uniform(0.25, 0.4)), -1, cv2.LINE_AA)
    rgb = np.stack([strip * 0.95, strip, strip * 1.05], axis=2)
    return np.clip(rgb, 0, 1).astype(np.float32)


def _view_a2(rng, w, h, m, s, wc, hc) -> Scene:
    f = _Frame(w, h, m)
    back = _base(rng, hc, wc, s, 0.12)
    fore = Layer.empty(hc, wc)
    pb, pf = Painter(back, rng, s), Painter(fore, rng, s, overlay=True)
    tex = brushed(rng, hc, wc, 45 * s, True)
    pb.plate(f.rect(-0.2, -0.2, 1.2, 0.45), 0.55, (1.0, 1.0, 1.03), tex)
    pb.plate(f.rect(0.30, 0.06, 0.68, 0.30), 0.63, (1.0, 1.0, 1.0), brushed(rng, hc, wc, 30 * s, False))
    for u, v in ((0.32, 0.08), (0.66, 0.08), (0.32, 0.28), (0.66, 0.28)):
        pb.screw(f.x(u), f.y(v), 3.6 * s)
    pb.slot(f.x(0.75), f.y(0.08), f.x(0.95), f.y(0.14))
    pb.sticker(f.x(0.76), f.y(0.20), 0.12 * w, 0.12 * h, (0.92, 0.93, 0.9))
    pb.cable([f.p(-0.2, 0.05), f.p(0.1, 0.1), f.p(0.2, 0.03), f.p(0.28, -0.2)], 6 * s, (0.1, 0.1, 0.1))
    pb.plate(f.rect(-0.2, 0.86, 1.2, 1.2), 0.62, (1.0, 1.0, 1.02), tex)
    for u in np.arange(0.05, 1.0, 0.15):
        pb.screw(f.x(u), f.y(0.93), 3.8 * s)
    y0, y1 = int(round(f.y(0.515))), int(round(f.y(0.805)))
    period = max(8, int(0.055 * w))
    strip = _belt_strip(rng, y1 - y0, wc + period, s, period)
    back.rgb[y0:y1] = strip[:, :wc]
    bands = []
    for v in (0.50, 0.82):
        pf.rail(f.p(-0.2, v), f.p(1.2, v), 0.03 * h + 2 * s, 0.55)
        bands.append(((-0.2 * w, v * h), (1.2 * w, v * h), (0.03 * h + 2 * s) / 2))
    light = _light_field(rng, hc, wc, [(0.5, 0.2, 0.2, 0.3), (0.2, 0.9, 0.15, 0.2)], [(0.0, 0.5, 1.0, 0.82, 0.8)], m, w, h)
    lo, hi = 0.02, 0.16

    def pusher(p: Painter, r: np.random.Generator, rest: bool) -> None:
        u = (lo + hi) / 2 if rest else r.uniform(lo, hi)
        quad = f.rect(u, 0.22, u + 0.08, 0.43)
        p.shadow(quad, 6 * s, 8 * s, 6 * s, 0.5)
        p.plate(quad, 0.7, (0.95, 0.97, 1.0), None, shadow=False)
        p.fill(f.rect(u + 0.01, 0.24, u + 0.07, 0.27), (0.15, 0.4, 0.75))

    ignore = [
        {"shape": f.ref_poly([(0.0, 0.485), (1.0, 0.485), (1.0, 0.835), (0.0, 0.835)]), "reason": "conveyor belt"},
        {"shape": f.ref_poly([(0.0, 0.19), (0.27, 0.19), (0.27, 0.46), (0.0, 0.46)]), "reason": "moving pusher"},
    ]
    return Scene("A2", w, h, m, s, back, fore, light, ignore,
                 zones=[(0.30 * w, 0.05 * h, 0.95 * w, 0.45 * h, 3.0), (0.05 * w, 0.86 * h, 0.95 * w, 0.98 * h, 1.5),
                        (0.05 * w, 0.56 * h, 0.95 * w, 0.78 * h, 0.4)],
                 bands=bands, belt=Belt(y0, y1, strip, period), movers=[pusher], product_scale=0.95)


def _view_b(rng, w, h, m, s, wc, hc) -> Scene:
    f = _Frame(w, h, m)
    back = _base(rng, hc, wc, s, 0.1)
    fore = Layer.empty(hc, wc)
    pb, pf = Painter(back, rng, s), Painter(fore, rng, s, overlay=True)
    pb.plate(f.rect(-0.2, -0.2, 1.2, 0.33), 0.45, (1.0, 1.0, 1.05), brushed(rng, hc, wc, 30 * s, True))
    for u in (0.1, 0.42, 0.7):
        pb.slot(f.x(u), f.y(0.08), f.x(u + 0.14), f.y(0.17))
    floor = [f.p(-0.3, 1.2), f.p(1.3, 1.2), f.p(0.86, 0.31), f.p(0.14, 0.31)]
    pb.plate(floor, 0.58, (1.0, 1.0, 1.0), brushed(rng, hc, wc, 35 * s, True))
    inner = [f.p(0.22, 1.0), f.p(0.78, 1.0), f.p(0.66, 0.45), f.p(0.34, 0.45)]
    pb.plate(inner, 0.66, (1.02, 1.0, 0.98), brushed(rng, hc, wc, 25 * s, False))
    for v in (0.5, 0.7, 0.92):
        k = 0.6 + 0.6 * v  # nearer screws look bigger
        half = 0.2 + 0.12 * (v - 0.45) / 0.55
        for u in (0.5 - half, 0.5 + half):
            pb.screw(f.x(u), f.y(v), 4.5 * s * k)
    pb.cable([f.p(1.2, 0.7), f.p(1.0, 0.8), f.p(0.92, 1.0), f.p(1.0, 1.2)], 9 * s, (0.1, 0.1, 0.11))
    bands = []
    for (u0, v0), (u1, v1) in (((0.16, 1.2), (0.36, 0.31)), ((0.84, 1.2), (0.64, 0.31))):
        pf.rail(f.p(u0, v0), f.p(u1, v1), 0.026 * w, 0.6)
        bands.append(((u0 * w, v0 * h), (u1 * w, v1 * h), 0.013 * w))
    light = _light_field(rng, hc, wc, [(0.5, 0.55, 0.22, 0.3)], [(0.0, 0.0, 1.0, 0.3, 0.75)], m, w, h)
    pivot = f.p(0.06, 0.08)

    def flap(p: Painter, r: np.random.Generator, rest: bool) -> None:
        a = math.radians(35 if rest else r.uniform(15, 60))
        d = np.array([math.cos(a), math.sin(a)]) * 0.13 * w
        n = np.array([-d[1], d[0]]) / np.linalg.norm(d) * 0.03 * w
        b = np.array(pivot)
        p.plate([b + n, b + d + n, b + d - n, b - n], 0.7, (1.0, 0.95, 0.85), None)

    ignore = [
        {"shape": f.ref_poly([(0.0, 0.0), (0.24, 0.0), (0.0, 0.34)]), "reason": "blurry corner, moving flap"},
        {"shape": f.ref_poly([(0.80, 0.0), (1.0, 0.0), (1.0, 0.30)]), "reason": "blurry corner"},
        {"shape": f.ref_poly([(0.0, 0.72), (0.18, 1.0), (0.0, 1.0)]), "reason": "blurry corner"},
        {"shape": f.ref_poly([(0.84, 1.0), (1.0, 0.68), (1.0, 1.0)]), "reason": "blurry corner, cable"},
    ]
    return Scene("B", w, h, m, s, back, fore, light, ignore,
                 zones=[(0.28 * w, 0.40 * h, 0.72 * w, 0.92 * h, 3.0), (0.25 * w, 0.20 * h, 0.75 * w, 0.30 * h, 0.7)],
                 bands=bands, movers=[flap], blur=1.6 * s, corner_blur=4.5 * s, product_scale=0.7)


def _view_b2(rng, w, h, m, s, wc, hc) -> Scene:
    f = _Frame(w, h, m)
    back = _base(rng, hc, wc, s, 0.12)
    fore = Layer.empty(hc, wc)
    pb, pf = Painter(back, rng, s), Painter(fore, rng, s, overlay=True)
    pb.plate(f.rect(-0.2, -0.2, 1.2, 1.2), 0.6, (1.0, 1.0, 1.02), brushed(rng, hc, wc, 50 * s, True), shadow=False)
    pb.plate(f.rect(0.62, 0.08, 0.96, 0.52), 0.5, (1.0, 1.0, 1.04), brushed(rng, hc, wc, 20 * s, False))
    pb.holes(f.x(0.64), f.y(0.10), f.x(0.94), f.y(0.50), 0.035 * w, 0.008 * w)
    pb.slot(f.x(0.08), f.y(0.12), f.x(0.50), f.y(0.18))
    for u in np.arange(0.04, 1.0, 0.12):
        pb.screw(f.x(u), f.y(0.04), 4 * s)
    pb.sticker(f.x(0.08), f.y(0.75), 0.1 * w, 0.1 * h, (0.9, 0.9, 0.86), 2)
    bands = []
    p0, p1 = (0.0, 0.56), (0.62, 0.98)
    pf.rail(f.p(*p0), f.p(*p1), 0.03 * w, 0.64)
    bands.append(((p0[0] * w, p0[1] * h), (p1[0] * w, p1[1] * h), 0.015 * w))
    light = _light_field(rng, hc, wc, [(0.35, 0.4, 0.25, 0.25), (0.85, 0.3, 0.1, 0.2)], [], m, w, h)

    def pusher(p: Painter, r: np.random.Generator, rest: bool) -> None:
        v = 0.8 if rest else r.uniform(0.66, 0.9)
        quad = f.rect(0.74, v - 0.04, 0.99, v + 0.04)
        p.plate(quad, 0.74, (1.0, 0.98, 0.94), None)
        p.fill(f.rect(0.72, v - 0.07, 0.76, v + 0.07), (0.2, 0.2, 0.22))

    ignore = [{"shape": f.ref_poly([(0.70, 0.58), (1.0, 0.58), (1.0, 1.0), (0.70, 1.0)]), "reason": "moving pusher"}]
    return Scene("B2", w, h, m, s, back, fore, light, ignore,
                 zones=[(0.06 * w, 0.22 * h, 0.58 * w, 0.55 * h, 3.0), (0.2 * w, 0.55 * h, 0.68 * w, 0.95 * h, 1.0)],
                 bands=bands, movers=[pusher], product_scale=1.15)


def _view_c(rng, w, h, m, s, wc, hc) -> Scene:
    f = _Frame(w, h, m)
    back = _base(rng, hc, wc, s, 0.1)
    fore = Layer.empty(hc, wc)
    pb, pf = Painter(back, rng, s), Painter(fore, rng, s, overlay=True)
    tex_h = brushed(rng, hc, wc, 25 * s, True)
    tex_v = brushed(rng, hc, wc, 25 * s, False)
    # Many overlapping plates at random places, then dense detail on top.
    for _ in range(14):
        u, v = rng.uniform(-0.2, 1.0), rng.uniform(-0.2, 1.0)
        du, dv = rng.uniform(0.12, 0.35), rng.uniform(0.1, 0.3)
        pb.plate(f.rect(u, v, u + du, v + dv), rng.uniform(0.35, 0.62), (1.0, 1.0, rng.uniform(0.98, 1.08)),
                 tex_h if rng.random() < 0.5 else tex_v)
    pb.plate(f.rect(0.06, 0.52, 0.52, 0.95), 0.6, (1.0, 1.0, 1.02), tex_h)
    pb.plate(f.rect(0.28, 0.08, 0.6, 0.42), 0.56, (1.0, 1.0, 1.03), tex_v)
    pb.holes(f.x(0.62), f.y(0.05), f.x(0.98), f.y(0.30), 0.022 * w, 0.006 * w)
    for i in range(int(0.12 * w / max(1.0, 3 * s))):  # a fine grating
        x = f.x(0.02) + i * 3 * s
        pb.line([(x, f.y(0.06)), (x, f.y(0.42))], (0.7, 0.7, 0.72) if i % 2 else (0.08, 0.08, 0.09), max(1.0, 1.2 * s))
    for k in range(6):  # terminal block
        x0 = f.x(0.56 + k * 0.028)
        pb.fill(f.rect(0.56 + k * 0.028, 0.86, 0.58 + k * 0.028, 0.98), (0.2, 0.45, 0.2) if k % 3 else (0.6, 0.55, 0.1))
        pb.screw(x0 + 0.01 * w, f.y(0.89), 2.4 * s)
    for _ in range(40):
        pb.screw(f.x(rng.uniform(-0.1, 1.1)), f.y(rng.uniform(-0.1, 1.1)), rng.uniform(2.5, 4.5) * s)
    for _ in range(3):
        pb.sticker(f.x(rng.uniform(0.0, 0.9)), f.y(rng.uniform(0.0, 0.9)), 0.07 * w, 0.06 * h,
                   (0.95, 0.95, 0.92) if rng.random() < 0.5 else (0.95, 0.78, 0.1), 2)
    for _ in range(5):
        pb.gear(f.x(rng.uniform(0, 1)), f.y(rng.uniform(0, 1)), rng.uniform(0.02, 0.05) * w, int(rng.integers(8, 16)),
                rng.uniform(0, 6.3), rng.uniform(0.4, 0.6))
    pb.cable([f.p(-0.2, 0.45), f.p(0.1, 0.48), f.p(0.25, 0.46), f.p(0.55, 0.5), f.p(1.2, 0.47)], 5 * s, (0.55, 0.12, 0.1))
    bands = []
    for (u0, v0), (u1, v1), wd in (((-0.2, 0.50), (1.2, 0.50), 0.02 * h), ((0.6, -0.2), (0.6, 0.5), 0.018 * w)):
        pf.rail(f.p(u0, v0), f.p(u1, v1), wd + 2 * s, 0.58)
        bands.append(((u0 * w, v0 * h), (u1 * w, v1 * h), (wd + 2 * s) / 2))
    light = _light_field(rng, hc, wc, [(0.3, 0.3, 0.15, 0.35), (0.7, 0.8, 0.2, 0.25)], [(0.6, 0.0, 1.0, 0.5, 0.7)], m, w, h)
    wheel = f.p(0.80, 0.68)
    bundle = [f.p(-0.2, 0.05), f.p(0.05, 0.18), f.p(0.15, 0.3), f.p(0.1, 0.55), f.p(0.05, 1.2)]

    def star_wheel(p: Painter, r: np.random.Generator, rest: bool) -> None:
        p.gear(*wheel, 0.15 * h, 10, 0.0 if rest else r.uniform(0, 2 * math.pi / 10), 0.7)

    def cables(p: Painter, r: np.random.Generator, rest: bool) -> None:
        for i, col in enumerate(((0.1, 0.1, 0.1), (0.15, 0.3, 0.6), (0.5, 0.5, 0.1), (0.1, 0.1, 0.12))):
            jit = np.zeros((len(bundle), 2)) if rest else r.normal(0, 3 * s, (len(bundle), 2))
            pts = np.asarray(bundle) + [i * 6 * s, i * 2 * s] + jit
            p.cable(pts, 5 * s, col)

    ignore = [
        {"shape": f.ref_poly(_convex([(0.80 + 0.2 * h / w * math.cos(a), 0.68 + 0.2 * math.sin(a))
                                      for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)])),
         "reason": "rotating star wheel"},
        {"shape": f.ref_poly([(0.0, 0.0), (0.08, 0.0), (0.2, 0.3), (0.17, 0.6), (0.14, 1.0), (0.0, 1.0)]),
         "reason": "loose cable bundle"},
        {"shape": f.ref_poly([(0.62, 0.04), (0.98, 0.04), (0.98, 0.31), (0.62, 0.31)]), "reason": "fine perforation"},
    ]
    return Scene("C", w, h, m, s, back, fore, light, ignore,
                 zones=[(0.2 * w, 0.55 * h, 0.52 * w, 0.93 * h, 3.0), (0.3 * w, 0.1 * h, 0.58 * w, 0.42 * h, 1.5),
                        (0.45 * w, 0.52 * h, 0.65 * w, 0.85 * h, 1.0)],
                 bands=bands, movers=[star_wheel, cables], product_scale=0.9)


_BUILDERS = {"A": _view_a, "A2": _view_a2, "B": _view_b, "B2": _view_b2, "C": _view_c}


# -- per image ------------------------------------------------------------------


def render_layers(scene: Scene, rng: np.random.Generator, h_centre: np.ndarray | None, rest: bool = False):
    """The scene for one image, in the image frame.

    ``h_centre`` is the camera shift (reference → image, OpenCV convention) or None.
    Returns ``(back_rgb (H,W,3) own copy, light (H,W), fore_rgb (H,W,3), fore_alpha (H,W), movers)``;
    ``movers`` is None or ``(rgb, alpha, (x0, y0))``: the moving parts on a patch at image pixel (x0, y0),
    composited over the fore layer. ``rest`` puts the moving parts in their rest position.
    """
    back4 = scene.back4
    if scene.belt is not None:
        b = scene.belt
        back4 = back4.copy()
        off = 0 if rest else int(rng.integers(0, b.period * 4)) % (b.strip.shape[1] - back4.shape[1] + 1)
        back4[b.y0:b.y1, :, :3] = b.strip[:, off:off + back4.shape[1]]
    movers = None
    box = scene.mover_box
    if box is not None:
        # The moving parts are drawn on a small layer over their box only (not on a copy of the canvas).
        mx0, my0, mx1, my1 = box
        layer = Layer.empty(my1 - my0, mx1 - mx0)
        painter = Painter(layer, rng, scene.s, overlay=True, origin=(mx0, my0))
        for mover in scene.movers:
            mover(painter, rng, rest)
        movers = (layer, mx0, my0)
    m, w, h = scene.margin, scene.width, scene.height
    fore = scene.fore
    if h_centre is None:
        b4 = back4[m:m + h, m:m + w]
        out = [b4[:, :, :3].copy(), b4[:, :, 3], fore.rgb[m:m + h, m:m + w], fore.alpha[m:m + h, m:m + w]]
        to_img = np.array([[1.0, 0, -m], [0, 1.0, -m], [0, 0, 1.0]])
    else:
        to_img = h_centre @ np.array([[1.0, 0, -m], [0, 1.0, -m], [0, 0, 1.0]])

        def warp(a: np.ndarray) -> np.ndarray:
            return cv2.warpPerspective(a, to_img, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

        b4 = warp(back4)
        out = [b4[:, :, :3].copy(), b4[:, :, 3], warp(fore.rgb), warp(fore.alpha)]
    if movers is not None:
        layer, mx0, my0 = movers
        hh, ww = layer.shape
        corners = np.array([[mx0, mx0 + ww, mx0 + ww, mx0], [my0, my0, my0 + hh, my0 + hh], [1.0, 1, 1, 1]])
        q = to_img @ corners
        qx, qy = q[0] / q[2], q[1] / q[2]
        x0, y0 = max(0, int(np.floor(qx.min())) - 1), max(0, int(np.floor(qy.min())) - 1)
        x1, y1 = min(w, int(np.ceil(qx.max())) + 2), min(h, int(np.ceil(qy.max())) + 2)
        if x0 < x1 and y0 < y1:
            # Box pixel → canvas (+origin) → image (to_img) → patch (-x0, -y0).
            t = np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1.0]]) @ to_img @ np.array(
                [[1.0, 0, mx0], [0, 1.0, my0], [0, 0, 1.0]])
            rgb = cv2.warpPerspective(layer.rgb, t, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            alpha = cv2.warpPerspective(layer.alpha, t, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            out.append((rgb, alpha, (x0, y0)))
        else:
            out.append(None)
    else:
        out.append(None)
    return tuple(out)


def finish(scene: Scene, back: np.ndarray, light: np.ndarray, fore_rgb: np.ndarray, fore_alpha: np.ndarray,
           movers, rng: np.random.Generator, noise_seed: int, neutral: bool = False) -> np.ndarray:
    """Composite, light, defocus, vary the illumination, add sensor noise → uint8 (H, W, 3) RGB.

    ``back`` is modified in place (in-place arithmetic keeps this fast at 3072x2048).
    """
    img = back
    tmp = np.subtract(fore_rgb, img)
    tmp *= fore_alpha[:, :, None]
    img += tmp
    if movers is not None:
        rgb, alpha, (x0, y0) = movers
        sub = img[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]]
        sub += (rgb - sub) * alpha[:, :, None]
    h, w = img.shape[:2]
    if neutral:
        lf = light
        cast = np.ones(3, np.float32)
    else:
        gain = rng.uniform(0.86, 1.14)
        amp = rng.uniform(0.0, 0.14)
        phi = rng.uniform(0, 2 * math.pi)
        cast = (1 + rng.uniform(-0.025, 0.025, 3)).astype(np.float32)
        ramp_x = (np.arange(w, dtype=np.float32) / w - 0.5) * 2 * math.cos(phi)
        ramp_y = (np.arange(h, dtype=np.float32) / h - 0.5) * 2 * math.sin(phi)
        lf = light * (gain * (1 + amp * (ramp_y[:, None] + ramp_x[None, :]))).astype(np.float32)
    if scene.blur > 0:
        # Defocus acts on the scene radiance, before the global illumination change.
        img *= light[:, :, None]
        img = cv2.GaussianBlur(img, (0, 0), scene.blur)
        if scene.corner_blur > 0:
            more = cv2.GaussianBlur(img, (0, 0), scene.corner_blur)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            r = np.sqrt(((xx / w - 0.5) * 2) ** 2 + ((yy / h - 0.5) * 2) ** 2) / math.sqrt(2)
            wgt = np.clip((r - 0.55) / 0.35, 0, 1)[:, :, None]
            more -= img
            more *= wgt
            img += more
        lf = lf / np.maximum(light, 1e-6)
    img *= lf[:, :, None]
    img *= cast[None, None, :]
    sigma_read = 0.008 if neutral else float(rng.uniform(0.006, 0.014))
    noise = np.empty_like(img)
    cv2.setRNGSeed(int(noise_seed) & 0x7FFFFFFF)
    cv2.randn(noise, 0.0, 1.0)
    # Read noise plus shot noise that grows with the signal.
    np.clip(img, 0, 1, out=tmp)
    tmp *= 0.0004
    tmp += sigma_read**2
    np.sqrt(tmp, out=tmp)
    tmp *= noise
    img += tmp
    np.clip(img, 0, 1, out=img)
    return cv2.convertScaleAbs(img, alpha=255.0)
