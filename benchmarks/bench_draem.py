"""DRAEM benchmark: per synthetic view with the ``fast`` preset — training seconds, scoring
ms/image at the model size, 256² and 512², image AUROC, pixel AUROC and AUPRO (registered +
masked as lineclear scores, and raw; see ``benchmarks/_quality.py``, with a mean-image baseline), and
the speed-up of the optimised inference (batched, channels-last) over a plain one-image-at-a-time
eager fp32 loop of the same network.

``python -m benchmarks draem [--quick] [--speed-only] [--views=A,B] [--data=DIR] [--threads=N] [--preset=P] [--set="k=v;k=v"]``
``--quick``: one view, the ``demo`` preset, small scoring sets (a smoke run).
``--speed-only``: no training and no quality figures, only the scoring speed (untrained weights).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks._args import dataset, settings
from benchmarks._args import option as _arg
from benchmarks._quality import QUALITY_COLUMNS, quality_cells, train_and_evaluate
from benchmarks.bench_models import ViewData
from lineclear.models.base import resolve_config
from lineclear.models.draem import ENTRY, DraemModel


def _time(fn, reps: int = 2) -> float:
    fn()  # warm-up (allocator, oneDNN primitive cache)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _plain(model: DraemModel, x: torch.Tensor) -> None:
    """Baseline: eager fp32, contiguous NCHW, one image at a time (under no_grad)."""
    cl, bf = model.channels_last, model.infer_bf16
    model.channels_last = model.infer_bf16 = False
    try:
        with torch.no_grad():
            for i in range(x.shape[0]):
                model(x[i : i + 1])
    finally:
        model.channels_last, model.infer_bf16 = cl, bf


def _fast(model: DraemModel, x: torch.Tensor, batch: int = 8) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(x[i : i + batch]).anomaly_map for i in range(0, x.shape[0], batch)])


def bench_view(vd: ViewData, preset: str, quick: bool, overrides: dict | None = None, train: bool = True) -> dict:
    """Train and measure on ``vd``; with ``train=False`` only the speed part, on untrained weights."""
    if train:
        model, res = train_and_evaluate("draem", vd, preset, overrides)
        cfg = model.config
        res["steps"] = cfg.epochs * (cfg.steps_per_epoch or -(-res["train_images"] // cfg.batch_size))
    else:
        cfg = resolve_config(ENTRY, preset, overrides)
        model, res = DraemModel(cfg).eval(), {"view": vd.name, "steps": 0}
    size = tuple(cfg.image_size)
    x = torch.from_numpy(np.ascontiguousarray(vd.arrays(size, registered=False)["test"].transpose(0, 3, 1, 2)))

    # speed: trained weights in networks at 256² and 512² (fully convolutional)
    n = 4 if quick else 8
    for side in (256, 512):
        m2 = DraemModel(resolve_config(ENTRY, preset, {**(overrides or {}), "image_size": (side, side)}))
        m2.load_state_dict(model.state_dict())
        m2.eval()
        xs = torch.nn.functional.interpolate(x[:n], size=(side, side), mode="bilinear", align_corners=False)
        if xs.shape[0] < n:
            xs = xs.repeat(-(-n // xs.shape[0]), 1, 1, 1)[:n]
        t_plain = _time(lambda: _plain(m2, xs), 1)
        t_fast = _time(lambda: _fast(m2, xs), 1)
        with torch.inference_mode():
            ref = torch.cat([m2(xs[i : i + 1]).anomaly_map for i in range(n)])
        diff = float((_fast(m2, xs) - ref).abs().max())
        res[f"score_ms_{side}"] = round(1000 * t_fast / n, 1)
        res[f"plain_ms_{side}"] = round(1000 * t_plain / n, 1)
        res[f"speedup_{side}"] = round(t_plain / t_fast, 2)
        res[f"max_map_diff_{side}"] = diff
    return res


def main(argv: list[str]) -> dict:
    quick = "--quick" in argv
    preset = _arg(argv, "--preset", "demo" if quick else "fast")
    threads = _arg(argv, "--threads")
    if threads:
        torch.set_num_threads(int(threads))
    views = (_arg(argv, "--views", "A" if quick else "A,A2,B,B2,C") or "A").split(",")
    overrides = settings(argv)
    train = "--speed-only" not in argv
    rows = []
    with dataset(argv, views, quick) as root:
        for v in views:
            rows.append(bench_view(ViewData(root / v, register=train), preset, quick, overrides, train))
            print(f"{v}: {rows[-1]}", flush=True)

    print(f"\nDRAEM, preset {preset} {overrides or ''}, torch threads {torch.get_num_threads()}")
    head = ["view", "steps", "train s", "ms/img", *(h for _, _, h in QUALITY_COLUMNS), "ms 256²", "x plain", "ms 512²", "x plain"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(c) for c in [r["view"], r["steps"], r.get("train_seconds", "-"), r.get("score_ms_per_image", "-"), *quality_cells(r),
                                          r["score_ms_256"], r["speedup_256"], r["score_ms_512"], r["speedup_512"]]))
    return {"preset": preset, "overrides": overrides, "threads": torch.get_num_threads(), "views": rows}


if __name__ == "__main__":  # pragma: no cover
    import sys

    main(sys.argv[1:])
