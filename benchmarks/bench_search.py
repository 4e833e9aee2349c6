"""PatchCore's position-aware search: lineclear's per-bank-cell products against one product per offset.

The bank is shaped as the default line model's on the photo benchmark: 16 training images plus two
registered training shifts each (48 patches a cell), 152 lite0 dimensions, radius 2, at the grids of
256x384 (32x48 cells) and 384x576 (48x72) — ``--grids 32x48,48x72``, ``--patches 48``. The baseline is
the straightforward implementation (one batched product per offset, each reading the whole bank), kept
here as the reference. Both must give the same distances (checked); the figure is CPU ms per image
(one thread, best of ``--repeat`` 5) and the speed-up baseline / lineclear, measured in the same run.
"""

from __future__ import annotations

import time

import torch

from benchmarks._args import option
from lineclear.models.patchcore.search import INF, dense_bank, positional_nn


@torch.no_grad()
def per_offset(test: torch.Tensor, feats: torch.Tensor, norms: torch.Tensor, radius: int) -> torch.Tensor:
    """The baseline: for every offset, one batched (B x C)·(C x K) product per cell."""
    b, hg, wg, c = test.shape
    best = torch.full((b, hg, wg), INF)
    r_i, r_j = min(radius, hg - 1), min(radius, wg - 1)
    for di in range(-r_i, r_i + 1):
        i0, i1 = max(0, -di), min(hg, hg - di)
        for dj in range(-r_j, r_j + 1):
            j0, j1 = max(0, -dj), min(wg, wg - dj)
            h, w = i1 - i0, j1 - j0
            t = test[:, i0:i1, j0:j1].permute(1, 2, 0, 3).reshape(h * w, b, c)
            f = feats[i0 + di:i1 + di, j0 + dj:j1 + dj].reshape(h * w, -1, c)
            n = norms[i0 + di:i1 + di, j0 + dj:j1 + dj].reshape(h * w, 1, -1)
            d2 = torch.baddbmm(n, t, f.transpose(1, 2), beta=1.0, alpha=-2.0).amin(2).T.reshape(b, h, w)
            best[:, i0:i1, j0:j1] = torch.minimum(best[:, i0:i1, j0:j1], d2)
    return (best + (test * test).sum(-1)).clamp_min_(0)


def _best_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def main(argv: list[str]) -> dict:
    torch.set_num_threads(1)
    grids = [tuple(int(v) for v in g.split("x")) for g in (option(argv, "--grids") or "32x48,48x72").split(",")]
    k = int(option(argv, "--patches", "48"))
    c = int(option(argv, "--dims", "152"))
    repeat = int(option(argv, "--repeat", "5"))
    radius = 2
    g = torch.Generator().manual_seed(0)
    out = {}
    print(f"{'grid':>7} {'bank':>8} {'per offset ms':>14} {'lineclear ms':>13} {'speed-up':>9}")
    for hg, wg in grids:
        pos = torch.stack(torch.meshgrid(torch.arange(hg), torch.arange(wg), indexing="ij"), -1).reshape(-1, 2)
        bank = torch.randn(hg * wg * k, c, generator=g).abs()
        dense = dense_bank(bank, pos.repeat(k, 1), (hg, wg))
        test = torch.randn(1, hg, wg, c, generator=g).abs()
        ref, got = per_offset(test, *dense, radius), positional_nn(test, *dense, radius)
        if not torch.allclose(ref, got, rtol=1e-4, atol=1e-3):
            raise SystemExit(f"search results differ at {hg}x{wg}: max {float((ref - got).abs().max())}")
        base = _best_ms(lambda: per_offset(test, *dense, radius), repeat)
        ours = _best_ms(lambda: positional_nn(test, *dense, radius), repeat)
        print(f"{hg:>3}x{wg:<3} {bank.shape[0]:>8} {base:>14.1f} {ours:>13.1f} {base / ours:>8.2f}x")
        out[f"{hg}x{wg}"] = {"bank": bank.shape[0], "per_offset_ms": round(base, 1), "lineclear_ms": round(ours, 1),
                             "speedup": round(base / ours, 2)}
    return out
