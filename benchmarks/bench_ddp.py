"""DDP on this machine's CPU: seconds per training step of DRAEM and DDAD with 2 processes against 1.

The same global batch (the preset's) and the same cores either way: one process with every core as
torch threads, one process with one thread (on a shared, loaded machine OpenMP threads waiting for a
descheduled sibling can make that the faster one), or 2 processes (torchrun, gloo over loopback)
with half of the cores each. Each process times its steps (median after 2 warm-up steps); the ratio
is the 2-process step time over the better 1-process one, so above 1 means DDP is slower. On a CPU
expect no gain: the cores were already busy, and each step adds a gradient all-reduce (and, for
DRAEM, one per BatchNorm layer). The load average is reported with the figures.

``python -m benchmarks ddp [--quick] [--models=draem,ddad] [--steps=N] [--preset=P]``
``--quick``: the ``demo`` preset, fewer steps (a smoke run).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._args import option as _arg

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES = 16
WARMUP = 2


def _images(n: int, h: int, w: int) -> torch.Tensor:
    """A smooth scene with noise, (n,3,h,w) in [0,1] (what is trained on does not change a step's time)."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = 0.4 + 0.15 * torch.sin(xx / 5.0) * torch.cos(yy / 7.0)
    return (base.expand(n, 3, h, w) + 0.05 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)


def _worker(model: str, preset: str, steps: int, out: str) -> None:
    """One process of a run (started by torchrun); rank 0 writes the median step seconds to ``out``."""
    from lineclear.distributed import start
    from lineclear.models import MODELS
    from lineclear.models.base import resolve_config
    from lineclear.progress import RecordingProgress
    from lineclear.training import TrainSession

    world, dev = start("cpu")
    try:
        entry = MODELS[model]
        overrides = {"domain_adaptation": False} if model == "ddad" else {"steps_per_epoch": steps + WARMUP, "threads": 0}
        cfg = resolve_config(entry, preset, overrides)
        per_epoch = 1 if model == "draem" else -(-N_IMAGES // cfg.batch_size)
        cfg.epochs = 1 if model == "draem" else -(-(steps + WARMUP) // per_epoch)
        torch.manual_seed(0)
        net = entry.build(cfg, True)
        clock = RecordingProgress()
        h, w = cfg.image_size
        t0 = time.perf_counter()
        entry.train(net, TrainSession(images=_images(N_IMAGES, h, w), config=cfg, device=dev, model_name=model,
                                      progress=clock, world=world))
        ticks = [t0, *clock.times]
        steps_per_tick = cfg.steps_per_epoch if model == "draem" else per_epoch
        if model == "draem":
            per_step = [b - a for a, b in zip(ticks, ticks[1:])][WARMUP:]
        else:
            per_step = [(b - a) / steps_per_tick for a, b in zip(ticks, ticks[1:])][max(1, WARMUP // per_epoch):]
        if world.is_main:
            Path(out).write_text(json.dumps({"step_s": statistics.median(per_step), "steps": len(per_step),
                                             "batch": cfg.batch_size, "image_size": list(cfg.image_size),
                                             "threads": torch.get_num_threads(), "world_size": world.size}))
    finally:
        world.close()


def _run(model: str, preset: str, steps: int, nproc: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="lineclear-bench-ddp-") as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                        "-m", "benchmarks.bench_ddp", "--worker", model, preset, str(steps), str(out)],
                       env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return json.loads(out.read_text())


def main(argv: list[str]) -> dict:
    quick = "--quick" in argv
    preset = _arg(argv, "--preset", "demo" if quick else "fast")
    steps = int(_arg(argv, "--steps", "4" if quick else "10"))
    models = (_arg(argv, "--models", "draem,ddad") or "draem,ddad").split(",")
    cores = os.cpu_count() or 1
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    rows = []
    for model in models:
        one = _run(model, preset, steps, 1, cores)
        one_t1 = _run(model, preset, steps, 1, 1) if cores > 1 else one
        two = _run(model, preset, steps, 2, max(1, cores // 2))
        best = min(one["step_s"], one_t1["step_s"])
        rows.append({"model": model, "preset": preset, "batch": one["batch"], "image_size": one["image_size"],
                     "one_process_s": round(one["step_s"], 4), "one_process_threads": one["threads"],
                     "one_process_one_thread_s": round(one_t1["step_s"], 4),
                     "two_process_s": round(two["step_s"], 4), "two_process_threads": two["threads"],
                     "ratio": round(two["step_s"] / best, 2)})
        print(f"{model}: {rows[-1]}", flush=True)
    print(f"\nDDP on {cores} CPU cores (load average before: {load}), preset {preset}, the preset's global batch: "
          "seconds per training step")
    print(f"model | image HxW | batch | 1 process, {cores} threads | 1 process, 1 thread | 2 processes | ratio 2 / best 1")
    for r in rows:
        print(f"{r['model']} | {r['image_size'][0]}x{r['image_size'][1]} | {r['batch']} | {r['one_process_s']} | "
              f"{r['one_process_one_thread_s']} | {r['two_process_s']} ({r['two_process_threads']} thread(s) each) | {r['ratio']}")
    return {"cores": cores, "load_average": load, "preset": preset, "rows": rows}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:  # pragma: no cover
        print(json.dumps(main(sys.argv[1:]), indent=2))
