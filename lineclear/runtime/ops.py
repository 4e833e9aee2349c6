"""The non-network parts of the exported models in plain numpy/OpenCV, each the twin of a PyTorch function.

Every function here reproduces one PyTorch computation of :mod:`lineclear.models` to float32 rounding
(tests/test_export.py compares each with its twin): the Gaussian blur of the maps
(:func:`lineclear.models.patchcore.model.gaussian_blur`), the bilinear resize of ``F.interpolate``
(``align_corners=False``), ``F.adaptive_max_pool2d``, DRAEM's mean filter with zero padding, and
patchcore's nearest-neighbour searches (:mod:`lineclear.models.patchcore.search`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

INF = np.float32(np.inf)


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (H,W) float32, kernel ±4σ, reflect padding (torch ``reflect`` = OpenCV 101)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(4 * sigma)))
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    k = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(np.float32(-0.5) * (k / np.float32(sigma)) ** 2).astype(np.float32)
    k = (k / k.sum()).astype(np.float32)
    return cv2.sepFilter2D(np.ascontiguousarray(x, np.float32), cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT_101)


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h,w) float32 → (H,W): ``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel centres)."""
    if x.shape[:2] == tuple(size):
        return x.astype(np.float32, copy=True)
    return cv2.resize(np.ascontiguousarray(x, np.float32), (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def adaptive_max_pool(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H,W) → (h,w): ``F.adaptive_max_pool2d`` (bin i spans ``floor(i·H/h) .. ceil((i+1)·H/h)``)."""
    H, W = x.shape
    h, w = size
    rows = [(i * H // h, -(-(i + 1) * H // h)) for i in range(h)]
    cols = [(j * W // w, -(-(j + 1) * W // w)) for j in range(w)]
    if H % h == 0 and W % w == 0:
        return x.reshape(h, H // h, w, W // w).max(axis=(1, 3))
    out = np.empty((h, w), x.dtype)
    for i, (r0, r1) in enumerate(rows):
        band = x[r0:r1].max(axis=0)
        for j, (c0, c1) in enumerate(cols):
            out[i, j] = band[c0:c1].max()
    return out


def valid_cells(valid: np.ndarray, grid: tuple[int, int], neighbourhood: int) -> np.ndarray:
    """(H,W) registration validity → (Hg,Wg) bool: cells whose whole support is valid
    (:func:`lineclear.models.patchcore.model.valid_cells`: adaptive max pool of the invalid pixels, then a
    ``neighbourhood``² max pool)."""
    inv = adaptive_max_pool(1.0 - (np.asarray(valid) > 0.5).astype(np.float32), grid)
    if neighbourhood > 1:
        # max pool with stride 1 and padding p//2: PyTorch pads with -inf, a 0 border is the same for values ≥ 0
        inv = cv2.dilate(inv, np.ones((neighbourhood, neighbourhood), np.uint8), borderType=cv2.BORDER_CONSTANT,
                         borderValue=0)
    return inv < 0.5


def mean_filter_max(x: np.ndarray, size: int) -> float:
    """Max of ``F.avg_pool2d(x, size, stride=1, padding=size//2, count_include_pad=True)`` of (H,W)."""
    x = x.astype(np.float32)
    if size <= 1:
        return float(x.max())
    p = size // 2
    c = np.pad(x.astype(np.float64), ((p + 1, p), (p + 1, p)))
    c = c.cumsum(0).cumsum(1)
    s = c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]
    return float(np.float32(s.max() / (size * size)))


# -- patchcore's nearest-neighbour search ------------------------------------------------------------------


def dense_bank(bank: np.ndarray, pos: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Group a flat bank (M,C) by grid cell: (Hg,Wg,K,C) features and (Hg,Wg,K) squared norms (+inf = empty)."""
    hg, wg = grid
    c = bank.shape[1]
    cell = pos[:, 0].astype(np.int64) * wg + pos[:, 1].astype(np.int64)
    counts = np.bincount(cell, minlength=hg * wg)
    k = max(int(counts.max()) if counts.size else 0, 1)
    order = np.argsort(cell, kind="stable")
    cell_sorted = cell[order]
    starts = np.cumsum(counts) - counts
    slot = np.arange(cell.shape[0]) - starts[cell_sorted]
    feats = np.zeros((hg * wg, k, c), np.float32)
    norms = np.full((hg * wg, k), INF, np.float32)
    b = bank[order].astype(np.float32)
    feats[cell_sorted, slot] = b
    norms[cell_sorted, slot] = (b * b).sum(1)
    return feats.reshape(hg, wg, k, c), norms.reshape(hg, wg, k)


def positional_nn(test: np.ndarray, feats: np.ndarray, norms: np.ndarray, radius: int) -> np.ndarray:
    """Position-aware nearest neighbour: test (Hg,Wg,C) against bank cells within ``radius`` → (Hg,Wg) d².

    The twin of :func:`lineclear.models.patchcore.search.positional_nn`, organised per *bank* cell: the
    (2r+1)² test cells around a bank cell are multiplied with its K patches in one small matrix product, so
    each bank patch is read once (PyTorch's version reads it once per offset). +inf where no bank patch lies
    within the radius.
    """
    hg, wg, c = test.shape
    r = max(0, min(int(radius), max(hg, wg) - 1))
    k = 2 * r + 1
    pad = np.zeros((hg + 2 * r, wg + 2 * r, c), np.float32)
    pad[r:r + hg, r:r + wg] = test
    nb = sliding_window_view(pad, (k, k), axis=(0, 1))  # (Hg,Wg,C,k,k): test cells around each bank cell
    nb = np.ascontiguousarray(nb.transpose(0, 1, 3, 4, 2)).reshape(hg * wg, k * k, c)
    g = np.matmul(nb, feats.reshape(hg * wg, -1, c).transpose(0, 2, 1))  # (P, k², K)
    g *= np.float32(-2)
    g += norms.reshape(hg * wg, 1, -1)
    e = g.min(-1).reshape(hg, wg, k, k)  # e[qi,qj,a,b]: test cell (qi+a-r, qj+b-r) against bank cell q
    best = np.full((hg + 2 * r, wg + 2 * r), INF, np.float32)
    for a in range(k):
        for b in range(k):
            np.minimum(best[a:a + hg, b:b + wg], e[:, :, a, b], out=best[a:a + hg, b:b + wg])
    best = best[r:r + hg, r:r + wg]
    return np.maximum(best + (test * test).sum(-1), 0)


def global_nn(test: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray | None = None,
              block_mb: float = 64.0) -> np.ndarray:
    """test (P,C), bank (M,C) → (P,) squared distance to the nearest bank row, in blocks of ``block_mb``."""
    test = test.astype(np.float32, copy=False)
    if bank_sq is None:
        bank_sq = (bank * bank).sum(1)
    best = np.full(test.shape[0], INF, np.float32)
    cols = min(bank.shape[0], 8192)
    rows = max(1, int(block_mb * 2**20 / 4 / max(cols, 1)))
    for i in range(0, test.shape[0], rows):
        t = test[i:i + rows]
        t_sq = (t * t).sum(1, keepdims=True)
        cur = best[i:i + rows]
        for j in range(0, bank.shape[0], cols):
            d2 = t @ bank[j:j + cols].T
            d2 *= np.float32(-2)
            d2 += t_sq + bank_sq[j:j + cols][None]
            cur = np.minimum(cur, d2.min(1))
        best[i:i + rows] = cur
    return np.maximum(best, 0)
