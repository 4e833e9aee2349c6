"""Anomaly source textures A (thesis eq. 6): a DTD-style folder, or an offline procedural source.

``--textures DIR`` points at any folder of images (searched at any depth, e.g. the
Describable Textures Dataset's ``dtd/images``). Without it, :class:`ProceduralTextures`
draws textures from a seeded generator — noise, stripes, checks, cells, marble, scratches,
printed text — so training needs no download and no network.
"""

from __future__ import annotations

import os
import string
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lineclear.errors import UsageError
from lineclear.models.draem.perlin import fractal_perlin

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class TextureSource(Protocol):
    """``sample(rng, (H, W))`` → uint8 (H,W,3) RGB texture."""

    def sample(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray: ...


class FolderTextures:
    """Images under ``root`` (any depth), read on demand and resized to the training size."""

    def __init__(self, root: str | os.PathLike, cache: int = 64) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"{self.root}: --textures folder not found")
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in _IMAGE_EXT and p.is_file())
        if not self.paths:
            raise UsageError(f"{self.root}: --textures folder holds no images (png, jpg, bmp, tif, webp)")
        self._cache: OrderedDict[tuple[int, tuple[int, int]], np.ndarray] = OrderedDict()
        self._cache_size = cache

    def sample(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        i = int(rng.integers(len(self.paths)))
        key = (i, tuple(size))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        img = cv2.imread(str(self.paths[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise UsageError(f"{self.paths[i]}: texture image is unreadable")
        img = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (size[1], size[0]), interpolation=cv2.INTER_AREA)
        self._cache[key] = img
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return img


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0, 255, size=(n, 3)).astype(np.float32)


def _colourise(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map a scalar field (H,W) in [0,1] through a random 2–4 colour gradient → (H,W,3) float."""
    n = int(rng.integers(2, 5))
    cols = _palette(rng, n)
    x = np.clip(t, 0, 1) * (n - 1)
    i = np.minimum(np.floor(x).astype(np.int64), n - 2)
    f = (x - i)[..., None]
    return cols[i] * (1 - f) + cols[i + 1] * f


def _norm(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo + 1e-8)


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    return np.mgrid[0:h, 0:w].astype(np.float32)


class ProceduralTextures:
    """Offline textures from a seeded generator; every call draws a kind then its parameters."""

    KINDS = ("noise", "stripes", "checks", "cells", "marble", "scratches", "text", "dots")

    def sample(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        kind = self.KINDS[int(rng.integers(len(self.KINDS)))]
        img = getattr(self, f"_{kind}")(rng, size)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _noise(self, rng, size):
        r = int(rng.integers(1, 9))
        return _colourise(_norm(fractal_perlin(size, (r, r), rng, octaves=int(rng.integers(1, 5)))), rng)

    def _stripes(self, rng, size):
        y, x = _grid(size)
        th = rng.uniform(0, np.pi)
        period = rng.uniform(3, max(4.0, min(size) / 3))
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(th) + y * np.sin(th)) / period)
        if rng.random() < 0.5:
            t = (t > rng.uniform(0.2, 0.8)).astype(np.float32)
        return _colourise(t, rng)

    def _checks(self, rng, size):
        y, x = _grid(size)
        cy, cx = rng.uniform(2, max(3.0, min(size) / 4), size=2)
        t = ((np.floor(y / cy) + np.floor(x / cx)) % 2).astype(np.float32)
        return _colourise(t, rng)

    def _cells(self, rng, size):
        h, w = size
        # Worley noise on a coarse grid (≤ 96 px side), then resized: the distance table is (h, w, n)
        f = min(1.0, 96 / max(h, w))
        sh, sw = max(1, int(h * f)), max(1, int(w * f))
        n = int(rng.integers(8, 64))
        pts = (rng.uniform(0, 1, size=(n, 2)) * np.array([sh, sw])).astype(np.float32)
        y, x = _grid((sh, sw))
        d = np.sqrt((y[..., None] - pts[:, 0]) ** 2 + (x[..., None] - pts[:, 1]) ** 2)
        d.sort(axis=-1)
        t = _norm(d[..., 1] - d[..., 0]) if rng.random() < 0.5 else _norm(d[..., 0])
        t = cv2.resize(t.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        return _colourise(t, rng)

    def _marble(self, rng, size):
        y, x = _grid(size)
        turb = fractal_perlin(size, (4, 4), rng, octaves=4)
        th = rng.uniform(0, np.pi)
        f = rng.uniform(0.02, 0.15)
        t = 0.5 + 0.5 * np.sin(f * (x * np.cos(th) + y * np.sin(th)) + rng.uniform(2, 8) * turb)
        return _colourise(t, rng)

    def _scratches(self, rng, size):
        h, w = size
        img = np.ascontiguousarray(np.broadcast_to(_palette(rng, 1)[0], (h, w, 3))).copy()
        for _ in range(int(rng.integers(5, 40))):
            p = rng.uniform(0, 1, 4) * np.array([w, h, w, h])
            col = tuple(float(c) for c in _palette(rng, 1)[0])
            cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), col, int(rng.integers(1, 4)), cv2.LINE_AA)
        return img

    def _text(self, rng, size):
        """Printed-matter look: lines of random glyphs (Hershey fonts ship with OpenCV)."""
        h, w = size
        paper = np.clip(rng.uniform(180, 255) + rng.uniform(-15, 15, 3), 0, 255).astype(np.uint8)
        img = np.ascontiguousarray(np.broadcast_to(paper, (h, w, 3))).copy()  # putText needs uint8
        ink = tuple(float(c) for c in rng.uniform(0, 120, 3))
        scale = rng.uniform(0.25, 0.8) * max(1.0, min(h, w) / 256)
        step = max(6, int(28 * scale))
        chars = string.ascii_letters + string.digits + "  .,-"
        for yy in range(step, h + step, step):
            line = "".join(chars[i] for i in rng.integers(0, len(chars), size=int(w / (12 * scale)) + 2))
            cv2.putText(img, line, (int(rng.uniform(-10, 5)), yy), int(rng.integers(0, 8)), scale, ink, 1, cv2.LINE_AA)
        return img

    def _dots(self, rng, size):
        h, w = size
        img = np.ascontiguousarray(np.broadcast_to(_palette(rng, 1)[0], (h, w, 3))).copy()
        for _ in range(int(rng.integers(10, 80))):
            c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            r = int(rng.uniform(1, max(2, min(h, w) / 10)))
            cv2.circle(img, c, r, tuple(float(v) for v in _palette(rng, 1)[0]), -1, cv2.LINE_AA)
        return img


def make_texture_source(path: str | os.PathLike | None) -> TextureSource:
    """A folder source for a non-empty path, else the offline procedural source."""
    return FolderTextures(path) if path else ProceduralTextures()
