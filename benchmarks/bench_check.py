"""How long does the line wait for its verdict? ``lineclear check`` on five synthetic views with patchcore.

Builds a bundle from the synthetic dataset (synth → train patchcore → score val → calibrate ksigma →
deploy), then times one image set (one camera-shifted normal image per view):

* ``warm``  — :class:`lineclear.line.checker.Checker` built once (models loaded and warmed up), then ``check()``
  per set with the views checked side by side (one worker thread per core, one PyTorch thread each): what
  ``lineclear check`` does per set in ``--watch`` mode, and after its start-up otherwise;
* ``views one after another`` — the same with ``jobs=1``; and once more with PyTorch's and OpenCV's
  default thread pools (every core for each network) instead of one thread per view;
* ``cold`` (in-process baseline) — per view: load the checkpoint, build the registrar, register, score:
  what a script calling the stages per image pays (without the Python start-up).

Wall times are medians over repeats; CPU seconds (process time) are reported too because the machine
may be shared: on an idle machine the wall time of a set is at most about its CPU time.
``--quick``: two views at 384×256 with the demo preset, three repeats. ``--work=DIR`` builds the data,
runs and bundle in DIR and reuses them when DIR already holds a bundle.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _cli(args: list[str]) -> None:
    """Run a lineclear command in-process, its JSON result (stdout) discarded."""
    from lineclear.cli.main import run

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"lineclear {' '.join(args)} exited {exc.code}") from None


def _timed(fn) -> tuple[float, float, object]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def main(argv: list[str]) -> dict:
    import cv2
    import torch

    from lineclear.line.checker import Checker
    from lineclear.images import read_raw, to_float_rgb
    from lineclear.images import resize as resize_image
    from lineclear.register import RegistrationConfig, Registrar
    from lineclear.scoring import load_model, score_arrays
    from lineclear.synth import VIEWS, generate

    quick = "--quick" in argv
    views = ("A", "B") if quick else tuple(VIEWS)
    size = (384, 256) if quick else (768, 512)
    preset = "demo" if quick else "fast"
    repeats = 3 if quick else 5
    # --work DIR keeps (and on a second run reuses) the synthetic data, runs and bundle
    work = next((a.split("=", 1)[1] for a in argv if a.startswith("--work=")), None)
    tmp = Path(work) if work else Path(tempfile.mkdtemp(prefix="bench_check_"))
    t0 = time.perf_counter()
    if not (tmp / "line" / "manifest.json").is_file():
        print(f"building a {len(views)}-view bundle ({size[0]}x{size[1]}, patchcore {preset}) in {tmp} ...", flush=True)
        generate(tmp / "data", views=views, size=size, seed=0, n_train=8, n_good=1, n_shifted=1, n_anomalous=1)
        runs = []
        for v in views:
            view, run = tmp / "data" / v, tmp / "runs" / v
            _cli(["-q", "train", str(view), "--model", "patchcore", "--preset", preset, "--out", str(run),
                  "--device", "cpu"])
            _cli(["-q", "score", str(run), str(view), "--split", "val", "--out", str(run / "val_maps.h5"),
                  "--mask", str(view / "roi.png"), "--mask-stage", "post"])
            _cli(["-q", "calibrate", str(run / "val_maps.h5"), "--method", "ksigma"])
            runs.append(str(run))
        _cli(["-q", "deploy", *runs, "--out", str(tmp / "line")])
    else:
        print(f"reusing the bundle in {tmp}", flush=True)
    setup_s = time.perf_counter() - t0
    images = {v: tmp / "data" / v / "test" / "good" / "shift_000.png" for v in views}

    load_wall, load_cpu, checker = _timed(lambda: Checker(tmp / "line", "cpu"))
    assert not checker.errors, checker.errors

    mins: dict[int, float] = {}

    def series(fn) -> tuple[float, float, object]:
        walls, cpus, last = [], [], None
        print(".", end="", flush=True)
        for _ in range(repeats):
            w, c, last = _timed(fn)
            walls.append(w)
            cpus.append(c)
        mins[len(mins)] = min(walls)
        return statistics.median(walls), statistics.median(cpus), last

    warm_w, warm_c, result = series(lambda: checker.check(images))
    seq_w, seq_c, _ = series(lambda: checker.check(images, jobs=1))
    # PyTorch's default: one view after another, each network on all cores (its own thread pool)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    cv2.setNumThreads(cores)
    mt_w, mt_c, _ = series(lambda: checker.check(images, jobs=1))

    def cold() -> None:
        for v, spec in checker.bundle.views.items():
            model, _, cfg = load_model(spec.checkpoint, "cpu")
            reg = Registrar(read_raw(spec.reference), RegistrationConfig.from_dict(spec.registration))
            res = reg.register(read_raw(images[v]))
            x = resize_image(to_float_rgb(res.image), tuple(cfg.image_size))
            score_arrays(model, x[None], mask_stage="none", device="cpu")

    cold_w, cold_c, _ = series(cold)  # with PyTorch's default threads, as a plain script would run
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    stages: dict[str, list[float]] = {}
    for vv in result.views:  # type: ignore[union-attr]
        for k, ms in vv.timings_ms.items():
            stages.setdefault(k, []).append(ms)
    verdicts = {vv.view: vv.verdict for vv in result.views}  # type: ignore[union-attr]

    rows = [
        ("load bundle (once)", load_wall, load_cpu),
        (f"check {len(views)} views, warm", warm_w, warm_c),
        ("  views one after another", seq_w, seq_c),
        (f"  one after another, {cores} torch threads", mt_w, mt_c),
        (f"check {len(views)} views, cold (baseline)", cold_w, cold_c),
    ]
    print(f"\n{cores} cores, load average {os.getloadavg()[0]:.1f}, {repeats} repeats (median), setup {setup_s:.0f} s; "
          f"verdicts {verdicts}")
    print(f"{'':40s} {'wall s':>8s} {'min s':>8s} {'cpu s':>8s}")
    for i, (name, w, c) in enumerate(rows):
        best = f"{mins[i - 1]:8.3f}" if i > 0 else f"{'':8s}"
        print(f"{name:40s} {w:8.3f} {best} {c:8.3f}")
    print(f"speed-up warm vs cold: {cold_w / warm_w:.1f}x wall, {cold_c / warm_c:.1f}x cpu; views in parallel vs "
          f"one after another: {seq_w / warm_w:.2f}x; vs PyTorch's thread pool: {mt_w / warm_w:.2f}x")
    print("per-view stage medians (ms): " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in stages.items()))
    own = statistics.median([t - s for t, s in zip(stages.get("total", [0]), stages.get("score", [0]))])
    print(f"per view: model {statistics.median(stages.get('score', [0])):.0f} ms, everything else (read, image check, "
          f"registration, regions) {own:.0f} ms")
    return {
        "views": list(views), "image_size": list(size), "preset": preset, "repeats": repeats,
        "load_s": round(load_wall, 3), "load_cpu_s": round(load_cpu, 3),
        "warm_s": round(warm_w, 3), "warm_min_s": round(mins[0], 3), "warm_cpu_s": round(warm_c, 3),
        "warm_sequential_s": round(seq_w, 3), "warm_sequential_torch_threads_s": round(mt_w, 3),
        "warm_sequential_torch_threads_cpu_s": round(mt_c, 3), "cold_s": round(cold_w, 3), "cold_cpu_s": round(cold_c, 3),
        "load_average_1min": round(os.getloadavg()[0], 1), "cores": cores,
        "speedup_warm_vs_cold": round(cold_w / warm_w, 2),
        "stage_ms_median": {k: round(statistics.median(v), 1) for k, v in stages.items()},
        "verdicts_note": "shifted normal images; thresholds from 2 validation images per view (timing run, not a quality figure)",
        "verdicts": verdicts,
    }


if __name__ == "__main__":
    main(sys.argv[1:])
