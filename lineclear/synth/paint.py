"""Vectorised drawing of machine parts on float32 canvases (cv2 + numpy, no per-pixel Python).

A :class:`Layer` is an RGB canvas plus an alpha channel; the background layer has
alpha 1 everywhere. All coordinates are canvas pixels (corner convention, floats
allowed: cv2 draws them with 4 fractional bits and anti-aliasing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4
_ONE = 1 << _SHIFT


def _pts(points) -> np.ndarray:
    # cv2 draws at pixel centres; VIA-style corner coordinates are moved by -0.5.
    p = (np.asarray(points, dtype=np.float64) - 0.5) * _ONE
    return np.round(p).astype(np.int32).reshape(-1, 1, 2)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Fractal value noise in about [-1, 1], float32 (h, w); ``cell`` is the coarsest feature size in px."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
        cell = max(2.0, cell / 2.5)
    return out / total


def brushed(rng: np.random.Generator, h: int, w: int, length: float, horizontal: bool = True) -> np.ndarray:
    """Brushed-metal streaks, float32 (h, w), zero mean, unit-ish std."""
    k = max(3, int(length) | 1)
    white = rng.standard_normal((h, w)).astype(np.float32)
    streak = cv2.blur(white, (k, 1) if horizontal else (1, k))
    streak /= max(float(streak.std()), 1e-6)
    return streak


def clip_box(x0: float, y0: float, x1: float, y1: float, h: int, w: int) -> tuple[int, int, int, int] | None:
    a, b = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    c, d = min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))
    return (a, b, c, d) if a < c and b < d else None


@dataclass
class Layer:
    rgb: np.ndarray  # float32 (H, W, 3)
    alpha: np.ndarray  # float32 (H, W)

    @classmethod
    def empty(cls, h: int, w: int) -> "Layer":
        return cls(np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]

    def copy(self) -> "Layer":
        return Layer(self.rgb.copy(), self.alpha.copy())


class Painter:
    """Draws onto a :class:`Layer`; ``s`` is the scale (pixels per pixel at 768 px width)."""

    def __init__(self, layer: Layer, rng: np.random.Generator, s: float, overlay: bool = False,
                 origin: tuple[float, float] = (0.0, 0.0)) -> None:
        # On an overlay layer (composited over the background), a shadow is translucent black, so it
        # darkens whatever lies below; on the background it darkens the pixels themselves.
        # ``origin``: canvas coordinates of the layer's top-left pixel (a layer covering part of a canvas).
        self.layer, self.rng, self.s, self.overlay = layer, rng, s, overlay
        self.origin = np.asarray([int(origin[0]), int(origin[1])], np.float64)

    # -- primitives -----------------------------------------------------------
    def poly_alpha(self, points, pad: float = 2.0):
        """Anti-aliased coverage of a polygon on its bounding box: (alpha (h,w), (x0,y0,x1,y1)) or None."""
        p = np.asarray(points, np.float64).reshape(-1, 2) - self.origin
        h, w = self.layer.shape
        box = clip_box(p[:, 0].min() - pad, p[:, 1].min() - pad, p[:, 0].max() + pad, p[:, 1].max() + pad, h, w)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        a = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(a, [_pts(p - [x0, y0])], 1.0, cv2.LINE_AA, _SHIFT)
        return a, box

    def blend(self, alpha: np.ndarray, box, rgb) -> None:
        """Composite ``rgb`` (colour triple or (h,w,3) array) with coverage ``alpha`` into the box."""
        x0, y0, x1, y1 = box
        dst = self.layer.rgb[y0:y1, x0:x1]
        a = alpha[:, :, None]
        dst *= 1 - a
        dst += a * (np.asarray(rgb, np.float32) if np.ndim(rgb) == 3 else np.asarray(rgb, np.float32)[None, None, :])
        la = self.layer.alpha[y0:y1, x0:x1]
        np.maximum(la, alpha, out=la)

    def darken(self, alpha: np.ndarray, box, strength: float) -> None:
        x0, y0, x1, y1 = box
        self.layer.rgb[y0:y1, x0:x1] *= (1 - strength * alpha)[:, :, None]

    def shadow(self, points, dx: float, dy: float, blur: float, strength: float) -> None:
        """A soft drop shadow of a polygon, offset by (dx, dy), on this layer."""
        p = np.asarray(points, np.float64) + [dx, dy]
        got = self.poly_alpha(p, pad=3 * blur + 2)
        if got is None:
            return
        a, box = got
        a = cv2.GaussianBlur(a, (0, 0), max(blur, 0.5))
        if self.overlay:
            self.blend(a * strength, box, (0.0, 0.0, 0.0))
        else:
            self.darken(a, box, strength)

    def fill(self, points, colour, texture: np.ndarray | None = None, tex_amount: float = 0.0) -> None:
        got = self.poly_alpha(points)
        if got is None:
            return
        a, box = got
        col = np.asarray(colour, np.float32)
        if texture is not None:
            x0, y0, x1, y1 = box
            ox, oy = int(self.origin[0]), int(self.origin[1])
            t = texture[y0 + oy:y1 + oy, x0 + ox:x1 + ox]
            rgb = col[None, None, :] * (1 + tex_amount * t[:, :, None])
            self.blend(a, box, rgb)
        else:
            self.blend(a, box, col)

    def line(self, points, colour, width: float, closed: bool = False) -> None:
        """Anti-aliased polyline (drawn into rgb and alpha)."""
        t = max(1, int(round(width)))
        pts = _pts(np.asarray(points, np.float64).reshape(-1, 2) - self.origin)
        cv2.polylines(self.layer.rgb, [pts], closed, tuple(float(c) for c in colour), t, cv2.LINE_AA, _SHIFT)
        cv2.polylines(self.layer.alpha, [pts], closed, 1.0, t, cv2.LINE_AA, _SHIFT)

    def disc(self, cx: float, cy: float, r: float, colour) -> None:
        cx, cy = cx - self.origin[0], cy - self.origin[1]
        c = (int(round((cx - 0.5) * _ONE)), int(round((cy - 0.5) * _ONE)))
        cv2.circle(self.layer.rgb, c, max(1, int(round(r * _ONE))), tuple(float(v) for v in colour), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(self.layer.alpha, c, max(1, int(round(r * _ONE))), 1.0, -1, cv2.LINE_AA, _SHIFT)

    # -- machine parts --------------------------------------------------------
    def plate(self, points, tone: float, tint=(1.0, 1.0, 1.0), texture: np.ndarray | None = None,
              shadow: bool = True, bevel: bool = True) -> None:
        """A metal plate: drop shadow, brushed texture, dark edge and a lit upper/left bevel."""
        s = self.s
        if shadow:
            self.shadow(points, 5 * s, 7 * s, 5 * s, 0.45)
        col = np.asarray(tint, np.float32) * tone
        self.fill(points, col, texture, 0.07)
        if bevel:
            p = np.asarray(points, np.float64)
            self.line(p, col * 0.45, 1.6 * s, closed=True)
            # Edges whose outward normal points up or left catch the light.
            n = len(p)
            centre = p.mean(axis=0)
            for i in range(n):
                a, b = p[i], p[(i + 1) % n]
                mid = (a + b) / 2
                normal = mid - centre
                if normal[1] < -abs(normal[0]) * 0.3 or normal[0] < -abs(normal[1]) * 1.5:
                    inset = (centre - mid) / (np.linalg.norm(centre - mid) + 1e-9) * 1.8 * s
                    self.line([a + inset, b + inset], np.minimum(col * 1.45 + 0.05, 1.0), 1.2 * s)

    def screw(self, cx: float, cy: float, r: float, slot_angle: float | None = None) -> None:
        s = self.s
        self.disc(cx + 0.8 * s, cy + 1.0 * s, r * 1.15, (0.05, 0.05, 0.06))
        self.disc(cx, cy, r, (0.42, 0.43, 0.45))
        self.disc(cx - r * 0.2, cy - r * 0.2, r * 0.7, (0.62, 0.63, 0.65))
        self.disc(cx - r * 0.35, cy - r * 0.35, r * 0.25, (0.85, 0.86, 0.88))
        ang = self.rng.uniform(0, math.pi) if slot_angle is None else slot_angle
        dx, dy = math.cos(ang) * r * 0.8, math.sin(ang) * r * 0.8
        self.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], (0.1, 0.1, 0.11), max(1.0, r * 0.28))
        if self.rng.random() < 0.5:  # a Phillips cross
            self.line([(cx + dy, cy - dx), (cx - dy, cy + dx)], (0.1, 0.1, 0.11), max(1.0, r * 0.28))

    def rail(self, p0, p1, width: float, tone: float = 0.6, tint=(1.0, 1.0, 1.02)) -> None:
        """A round bar: a dark core widening to a lit centre line (cylindrical shading) and a specular line."""
        s = self.s
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        d = p1 - p0
        nrm = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
        self.line([p0 + nrm * width * 0.6 + [3 * s, 4 * s], p1 + nrm * width * 0.6 + [3 * s, 4 * s]], (0.03, 0.03, 0.035), width * 0.9)
        tint = np.asarray(tint, np.float32)
        steps = 6
        for i in range(steps):
            f = i / (steps - 1)
            wdt = width * (1 - 0.8 * f)
            self.line([p0, p1], tint * tone * (0.35 + 0.8 * f), wdt)
        off = -nrm * width * 0.22
        self.line([p0 + off, p1 + off], np.minimum(tint * (tone * 1.6 + 0.1), 1.0), max(1.0, width * 0.12))

    def cable(self, points, width: float, colour) -> None:
        """A cable along a Catmull–Rom spline through ``points``, with a shadow and a highlight."""
        pts = catmull_rom(np.asarray(points, float), 12)
        s = self.s
        col = np.asarray(colour, np.float32)
        self.line(pts + [2.5 * s, 3.5 * s], (0.02, 0.02, 0.02), width * 1.1)
        self.line(pts, col * 0.55, width)
        self.line(pts, col, width * 0.6)
        self.line(pts - [width * 0.18, width * 0.18], np.minimum(col * 1.7 + 0.12, 1.0), max(1.0, width * 0.15))

    def slot(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """A dark opening with a lit lower lip."""
        s = self.s
        self.fill([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], (0.03, 0.03, 0.035))
        self.line([(x0, y1 - 0.8 * s), (x1, y1 - 0.8 * s)], (0.55, 0.55, 0.57), 1.2 * s)

    def holes(self, x0: float, y0: float, x1: float, y1: float, pitch: float, r: float) -> None:
        """A perforated grid of round holes (fine detail)."""
        for yy in np.arange(y0 + pitch / 2, y1, pitch):
            for xx in np.arange(x0 + pitch / 2, x1, pitch):
                self.disc(xx + 0.4 * self.s, yy + 0.5 * self.s, r, (0.55, 0.56, 0.58))
                self.disc(xx, yy, r, (0.035, 0.035, 0.04))

    def sticker(self, x0: float, y0: float, w: float, h: float, colour, text_rows: int = 3) -> None:
        """A machine label: coloured card with a border, a symbol and printed rows (distractor for leaflets)."""
        rng, s = self.rng, self.s
        quad = [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]
        self.fill(quad, colour)
        self.line(quad, (0.08, 0.08, 0.08), max(1.0, 1.2 * s), closed=True)
        ink = (0.1, 0.1, 0.12)
        tri = [(x0 + 0.06 * w, y0 + 0.75 * h), (x0 + 0.18 * w, y0 + 0.2 * h), (x0 + 0.3 * w, y0 + 0.75 * h)]
        self.line(tri, ink, max(1.0, 1.5 * s), closed=True)
        for i in range(text_rows):
            yy = y0 + h * (0.25 + 0.55 * i / max(1, text_rows - 1))
            xe = x0 + w * rng.uniform(0.7, 0.93)
            self.line([(x0 + 0.38 * w, yy), (xe, yy)], ink, max(1.0, 0.9 * s))

    def gear(self, cx: float, cy: float, r: float, teeth: int, angle: float, tone: float = 0.5) -> None:
        """A toothed wheel (for star wheels and clutter)."""
        k = np.arange(teeth * 4)
        ang = angle + k * (2 * math.pi / (teeth * 4))
        rad = np.where((k % 4) < 2, r, r * 0.82)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
        self.shadow(pts, 4 * self.s, 5 * self.s, 4 * self.s, 0.5)
        self.fill(pts, (tone, tone, tone * 1.03))
        self.line(pts, (tone * 0.4,) * 3, 1.2 * self.s, closed=True)
        self.disc(cx, cy, r * 0.3, (tone * 0.5,) * 3)
        self.disc(cx, cy, r * 0.12, (0.05, 0.05, 0.05))


def catmull_rom(p: np.ndarray, n: int) -> np.ndarray:
    """Points on a Catmull–Rom spline through ``p`` (k,2), ``n`` samples per segment."""
    if len(p) < 3:
        return p
    q = np.vstack([p[0], p, p[-1]])
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    out = []
    for i in range(1, len(q) - 2):
        p0, p1, p2, p3 = q[i - 1], q[i], q[i + 1], q[i + 2]
        out.append(
            0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
        )
    out.append(p[-1][None, :])
    return np.vstack(out)
