"""Nearest-neighbour search of test patches in the memory bank: global and position-aware.

Distances are Euclidean, computed as ``sqrt(|t|² + |b|² − 2 t·b)`` in float32 blocks so that
no (patches x bank) matrix larger than ``block_mb`` exists at once.
"""

from __future__ import annotations

import torch

INF = float("inf")


def _rows_per_block(cols: int, block_mb: float) -> int:
    return max(1, int(block_mb * 2**20 / 4 / max(cols, 1)))


def global_nn(test: torch.Tensor, bank: torch.Tensor, block_mb: float = 64.0) -> torch.Tensor:
    """test (P,C), bank (M,C) → (P,) squared distance to the nearest bank row."""
    test, bank = test.float(), bank.float()
    bank_sq = (bank * bank).sum(1)
    best = torch.full((test.shape[0],), INF, device=test.device)
    cols = min(bank.shape[0], 8192)
    rows = _rows_per_block(cols, block_mb)
    for i in range(0, test.shape[0], rows):
        t = test[i : i + rows]
        t_sq = (t * t).sum(1, keepdim=True)
        cur = best[i : i + rows]
        for j in range(0, bank.shape[0], cols):
            b = bank[j : j + cols]
            # addmm fuses t_sq + b_sq - 2 t·bᵀ into one pass
            d2 = torch.addmm(t_sq + bank_sq[j : j + cols][None], t, b.T, beta=1.0, alpha=-2.0)
            cur = torch.minimum(cur, d2.amin(1))
        best[i : i + rows] = cur
    return best.clamp_min_(0)


def dense_bank(bank: torch.Tensor, pos: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Group a flat bank by grid cell: (Hg,Wg,K,C) features and (Hg,Wg,K) squared norms.

    K = the most patches any cell holds; empty slots get norm +inf so they never win.
    """
    hg, wg = grid
    c = bank.shape[1]
    cell = pos[:, 0].long() * wg + pos[:, 1].long()
    counts = torch.bincount(cell, minlength=hg * wg)
    k = int(counts.max().item()) if counts.numel() else 0
    k = max(k, 1)
    order = torch.argsort(cell, stable=True)
    cell_sorted = cell[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(cell.shape[0], device=bank.device) - starts[cell_sorted]
    feats = torch.zeros(hg * wg, k, c, dtype=torch.float32, device=bank.device)
    norms = torch.full((hg * wg, k), INF, dtype=torch.float32, device=bank.device)
    b = bank[order].float()
    feats[cell_sorted, slot] = b
    norms[cell_sorted, slot] = (b * b).sum(1)
    return feats.view(hg, wg, k, c), norms.view(hg, wg, k)


def positional_nn(test: torch.Tensor, feats: torch.Tensor, norms: torch.Tensor, radius: int) -> torch.Tensor:
    """Position-aware nearest neighbour on a fixed camera's grid.

    test (B,Hg,Wg,C); feats (Hg,Wg,K,C), norms (Hg,Wg,K) from :func:`dense_bank`.
    Test cell (i,j) is compared only with bank patches of cells (i+di, j+dj), |di|,|dj| ≤ radius.
    Returns (B,Hg,Wg) squared distances (+inf where no bank patch lies within the radius).

    One batched matmul per offset: (Hg·Wg) small (B x C)·(C x K) products, so the cost is
    (2r+1)² · B·Hg·Wg·K·C — linear in the grid, unlike global search's quadratic cost.
    """
    test = test.float()
    b, hg, wg, c = test.shape
    t_sq = (test * test).sum(-1)  # (B,Hg,Wg)
    best = torch.full((b, hg, wg), INF, device=test.device)
    r_i, r_j = min(radius, hg - 1), min(radius, wg - 1)
    for di in range(-r_i, r_i + 1):
        i0, i1 = max(0, -di), min(hg, hg - di)
        for dj in range(-r_j, r_j + 1):
            j0, j1 = max(0, -dj), min(wg, wg - dj)
            h, w = i1 - i0, j1 - j0
            t = test[:, i0:i1, j0:j1].permute(1, 2, 0, 3).reshape(h * w, b, c)
            f = feats[i0 + di : i1 + di, j0 + dj : j1 + dj].reshape(h * w, -1, c)
            n = norms[i0 + di : i1 + di, j0 + dj : j1 + dj].reshape(h * w, 1, -1)
            d2 = torch.baddbmm(n, t, f.transpose(1, 2), beta=1.0, alpha=-2.0)  # (hw,B,K), without |t|²
            d2 = d2.amin(2).T.reshape(b, h, w)
            best[:, i0:i1, j0:j1] = torch.minimum(best[:, i0:i1, j0:j1], d2)
    return (best + t_sq).clamp_min_(0)

