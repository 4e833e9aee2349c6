"""Perlin noise and the DRAEM anomaly-shape masks made from it (numpy, seeded Generator)."""

from __future__ import annotations

import cv2
import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_2d(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gradient (Perlin) noise of ``shape`` (H,W) with ``res`` (ry, rx) lattice cells; float32 ≈ [-1, 1].

    Random unit gradients sit on an ``(ry+1) × (rx+1)`` lattice; each pixel interpolates
    the dot products with its four corner gradients using the quintic fade curve.
    """
    h, w = shape
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    ang = rng.uniform(0.0, 2 * np.pi, size=(ry + 1, rx + 1))
    gy, gx = np.sin(ang), np.cos(ang)
    ys = np.arange(h) * (ry / h)
    xs = np.arange(w) * (rx / w)
    yi, xi = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    fy, fx = (ys - yi)[:, None], (xs - xi)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        gyc = gy[(yi + dy)[:, None], (xi + dx)[None, :]]
        gxc = gx[(yi + dy)[:, None], (xi + dx)[None, :]]
        return gyc * (fy - dy) + gxc * (fx - dx)

    u, v = _fade(fy), _fade(fx)
    n0 = corner(0, 0) * (1 - v) + corner(0, 1) * v
    n1 = corner(1, 0) * (1 - v) + corner(1, 1) * v
    return (np.sqrt(2.0) * (n0 * (1 - u) + n1 * u)).astype(np.float32)


def fractal_perlin(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator, octaves: int = 4) -> np.ndarray:
    """Sum of ``octaves`` Perlin layers, each twice the frequency and half the amplitude."""
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        out += amp * perlin_2d(shape, (res[0] * 2**o, res[1] * 2**o), rng)
        total += amp
        amp *= 0.5
    return out / total


def rotate(img: np.ndarray, angle: float, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """Rotate an (H,W[,C]) array about its centre by ``angle`` degrees (same size)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    max_scale_exp: int = 6,
    threshold: tuple[float, float] = (0.5, 0.5),
) -> np.ndarray:
    """A binary anomaly-shape mask M_a (H,W) float32 {0,1}.

    As in DRAEM: lattice resolution ``2**a × 2**b`` with a, b uniform in
    ``[0, max_scale_exp)``, the noise rotated by a random angle in [-90°, 90°], then
    thresholded at a value drawn uniformly from ``threshold`` (the thesis's random threshold).
    """
    a, b = rng.integers(0, max_scale_exp, size=2)
    noise = perlin_2d(shape, (2**a, 2**b), rng)
    noise = rotate(noise, float(rng.uniform(-90, 90)))
    thr = float(rng.uniform(*threshold)) if threshold[1] > threshold[0] else float(threshold[0])
    return (noise > thr).astype(np.float32)
