"""Pixel metrics streamed from HDF5 vs a naive in-memory reference, in the same run.

Builds a maps file (default 100 maps of 512x512, float32, with a masked strip and
rectangular ground-truth regions on half of the images), then computes pixel AUROC,
AP and AUPRO@0.3:

* streamed: :func:`lineclear.metrics.pixel_metrics` reading batches of 8 maps from the
  file, once forced to two passes (``keep_budget=0``: negatives only counted, memory ~
  ground-truth pixels) and once with the default budget (distinct negative values kept
  from the first pass when they fit);
* naive: every map and mask loaded at once, scikit-learn ``roc_auc_score`` and
  ``average_precision_score`` over all valid pixels, and the official sort-everything
  AUPRO structure.

Reports seconds, peak traced memory (numpy allocations, via tracemalloc) and the largest
difference between the two. ``--quick``: 12 maps of 256x256; ``--continuous``: map values
not rounded (by default they are rounded to 0.001, which gives many ties).
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from lineclear import metrics as M
from lineclear.formats import MapsFile, MapsWriter


def _gt(i: int, h: int, w: int) -> np.ndarray:
    g = np.zeros((h, w), bool)
    if i % 2:
        rng = np.random.default_rng(1000 + i)
        for _ in range(3):
            y, x = rng.integers(0, h - h // 8, 2)
            g[y:y + rng.integers(2, h // 8), x:x + rng.integers(2, w // 8)] = True
    return g


def _valid(h: int, w: int) -> np.ndarray:
    v = np.ones((h, w), bool)
    v[:, : w // 16] = False
    return v


def build(path: Path, n: int, h: int, w: int, rounded: bool = True) -> None:
    rng = np.random.default_rng(0)
    v = _valid(h, w)
    with MapsWriter(path, (h, w), attrs={"model": "bench"}, with_valid=True) as wr:
        for i in range(n):
            m = rng.random((h, w), dtype=np.float32) * 0.6
            g = _gt(i, h, w)
            m[g] += 0.3 * rng.random(int(g.sum()), dtype=np.float32)
            if rounded:
                m = np.round(m, 3)  # ties, as in quantised or partly zeroed maps
            wr.append(m[None], [float(m.max())], [f"V/test/{'bad' if i % 2 else 'good'}/{i:03d}.png"], [i % 2], valid=v[None])


def streamed(path: Path, keep_budget: int = 0) -> dict:
    with MapsFile(path) as f:
        h, w = f.map_size

        def batches():
            for sl, m, valid in f.iter_batches(8):
                g = np.stack([_gt(i, h, w) for i in range(sl.start, sl.stop)])
                yield m, g, valid, f.labels[sl] == 1

        res, _ = M.pixel_metrics(batches, [0.5], keep_budget=keep_budget)
    return {"auroc": res["auroc"], "ap": res["ap"], "aupro": res["aupro"]}


def naive(path: Path) -> dict:
    with MapsFile(path) as f:
        h, w = f.map_size
        maps = f._f["maps"][:]
        valid = f._f["valid"][:].astype(bool)
    gt = np.stack([_gt(i, h, w) for i in range(len(maps))])
    y, s = gt[valid], maps[valid]
    auroc = roc_auc_score(y, s)
    ap = average_precision_score(y, s)
    # official AUPRO structure over all valid pixels at once
    lab = np.zeros(gt.shape, np.int64)
    n_reg = 0
    for i in range(len(gt)):
        li, n = ndimage.label(gt[i], structure=np.ones((3, 3), int))
        lab[i] = np.where(li > 0, li + n_reg, 0)
        n_reg += n
    lv = lab[valid]
    sizes = np.bincount(lv, minlength=n_reg + 1)
    n_reg = int(np.count_nonzero(sizes[1:]))  # a region entirely in ignored pixels does not count
    fpc = (lv == 0).astype(np.float64)
    proc = np.where(lv > 0, 1.0 / np.maximum(sizes[lv], 1), 0.0)
    order = np.argsort(s, kind="stable")[::-1]
    ss = s[order]
    fpr = np.cumsum(fpc[order]) / fpc.sum()
    pro = np.cumsum(proc[order]) / n_reg
    last = np.append(np.diff(ss) != 0, True)
    x = np.r_[0.0, np.minimum(fpr[last], 1), 1.0]
    yy = np.r_[0.0, np.minimum(pro[last], 1), 1.0]
    aupro = M.trapezoid(x, yy, 0.3) / 0.3
    return {"auroc": float(auroc), "ap": float(ap), "aupro": float(aupro)}


def _measure(fn, *args) -> tuple[dict, float, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, dt, peak / 2**20


def main(argv: list[str]) -> dict:
    quick = "--quick" in argv
    continuous = "--continuous" in argv  # every pixel a distinct float (no rounding)
    n, h, w = (12, 256, 256) if quick else (100, 512, 512)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "maps.h5"
        t0 = time.perf_counter()
        build(path, n, h, w, rounded=not continuous)
        t_build = time.perf_counter() - t0
        a, t_s, m_s = _measure(streamed, path, 0)
        a1, t_1, m_1 = _measure(streamed, path, M.KEEP_BUDGET)
        b, t_n, m_n = _measure(naive, path)
    diff = max(max(abs(a[k] - b[k]), abs(a1[k] - b[k])) for k in a)
    pixels = n * h * w
    print(f"{n} maps of {h}x{w} = {pixels / 1e6:.1f} M pixels, {'continuous' if continuous else 'rounded to 0.001'} "
          f"values (file built in {t_build:.1f} s)")
    print(f"{'':28s}{'seconds':>10s}{'peak MiB':>12s}")
    print(f"{'streamed, two passes':28s}{t_s:10.2f}{m_s:12.1f}")
    print(f"{'streamed, default budget':28s}{t_1:10.2f}{m_1:12.1f}")
    print(f"{'naive (sklearn, all in RAM)':28s}{t_n:10.2f}{m_n:12.1f}")
    print(f"naive/streamed (two passes): time {t_n / t_s:.2f}x, memory {m_n / max(m_s, 1e-9):.1f}x; "
          f"default budget: time {t_n / t_1:.2f}x, memory {m_n / max(m_1, 1e-9):.1f}x")
    print("metric        streamed        naive")
    for k in a:
        print(f"{k:10s}{a[k]:14.9f}{b[k]:14.9f}")
    print(f"largest difference: {diff:.2e}")
    return {"maps": n, "size": [h, w], "continuous": continuous, "pixels": pixels, "streamed_s": t_s, "streamed_default_s": t_1, "naive_s": t_n,
            "streamed_peak_mib": m_s, "streamed_default_peak_mib": m_1, "naive_peak_mib": m_n, "time_ratio": t_n / t_s,
            "max_abs_diff": diff, "streamed": a, "naive": b}


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
