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
Runtimes (``--runtimes torch,onnx,openvino``, issue 17): the same five views deployed with ``deploy --runtime``
each; per runtime

* ``start-up`` — ``lineclear check BUNDLE --verify`` as a separate process (Python start, imports, verify the
  hashes, load, warm up): wall and CPU seconds (the child's own accounting), median over three runs, and the
  checker's own load time inside it;
* ``warm`` — one image set through a :class:`Checker` built once, as above;

each as a ratio against the torch runtime in the same run, the runtimes measured in turn (torch, onnx,
openvino, torch, ...) so that the shared machine's drift moves them alike. Then **agreement**: every test image of every view,
on the synthetic views and on the photo benchmark (``lineclear synth --photos builtin``), with patchcore and
template: the maps of each exported model against PyTorch's (worst difference relative to the map range) and
the verdict of ``check`` per image (identical or not). ``--no-agreement`` skips it, ``--no-photos`` the photos.

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


RUNTIMES = ("torch", "onnx", "openvino")


def _startup(bundle: Path) -> tuple[float, float, float]:
    """``lineclear check BUNDLE --verify`` in a fresh process: (wall s, CPU s of the child, in-process load s)."""
    import json
    import resource
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "lineclear", "-q", "check", str(bundle), "--verify"],
                         capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"check --verify of {bundle} failed: {res.stderr.strip()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(res.stdout)["load_ms"] / 1000


def _deploy_runtimes(runs: list[str], out: Path, runtimes) -> dict[str, Path]:
    """One bundle per runtime (the exports are made, fidelity-checked, in each run's folder once)."""
    bundles = {}
    for rt in runtimes:
        b = out.parent / f"{out.name}-{rt}" if rt != "torch" else out
        if not (b / "manifest.json").is_file():
            _cli(["-q", "deploy", *runs, "--out", str(b), "--runtime", rt])
        bundles[rt] = b
    return bundles


def _train_calibrated(data: Path, views, model: str, preset: str, runs_dir: Path) -> list[str]:
    runs = []
    for v in views:
        view, run = data / v, runs_dir / v
        if not (run / "thresholds.json").is_file():
            _cli(["-q", "train", str(view), "--model", model, "--preset", preset, "--out", str(run), "--device", "cpu",
                  "--overwrite"])
            roi = ["--mask", str(view / "roi.png"), "--mask-stage", "post"] if (view / "roi.png").is_file() else []
            _cli(["-q", "score", str(run), str(view), "--split", "val", "--out", str(run / "val_maps.h5"), *roi,
                  "--overwrite"])
            _cli(["-q", "calibrate", str(run / "val_maps.h5"), "--method", "ksigma", "--overwrite"])
        runs.append(str(run))
    return runs


def agreement(data: Path, views, bundles: dict[str, Path]) -> dict:
    """Maps and verdicts of every runtime against torch on every test image of ``views``."""
    import numpy as np

    from lineclear.dataset import View, list_images
    from lineclear.images import read_rgb
    from lineclear.line.checker import Checker
    from lineclear.runtime import load_export
    from lineclear.runtime.score import score_arrays as score_exported
    from lineclear.scoring import load_model, score_arrays

    checkers = {rt: Checker(b, "cpu") for rt, b in bundles.items()}
    torch_bundle = checkers["torch"].bundle
    out = {rt: {"images": 0, "verdicts_differ": 0, "max_map_diff_rel": 0.0, "max_score_diff_rel": 0.0,
                "differing": []} for rt in bundles if rt != "torch"}
    counts = {"clear": 0, "leftover": 0, "undecided": 0}
    for v in views:
        spec = torch_bundle.views[v]
        model, _, _ = load_model(spec.checkpoint, "cpu")
        exported = {rt: load_export(c.bundle.views[v].export) for rt, c in checkers.items() if rt != "torch"}
        paths = list_images(Path(data) / v / "test")
        x = np.stack([read_rgb(p, tuple(spec.map_size)) for p in paths])
        ref_maps, ref_scores = [], []
        for i in range(len(x)):  # one image at a time: as the line scores
            m, s, _ = score_arrays(model, x[i:i + 1], device="cpu")
            ref_maps.append(m)
            ref_scores.append(s)
        rm, rs = np.concatenate(ref_maps), np.concatenate(ref_scores)
        rng = float(rm.max() - rm.min()) or 1.0
        ref_verdicts = [checkers["torch"].check_one(v, p).verdict for p in paths]
        for verdict in ref_verdicts:
            counts[verdict] += 1
        for rt, em in exported.items():
            gm, gs, _ = score_exported(em, x)
            o = out[rt]
            o["images"] += len(paths)
            o["max_map_diff_rel"] = max(o["max_map_diff_rel"], float(np.abs(gm - rm).max()) / rng)
            o["max_score_diff_rel"] = max(o["max_score_diff_rel"], float(np.abs(gs - rs).max()) / rng)
            for p, ref in zip(paths, ref_verdicts):
                got = checkers[rt].check_one(v, p).verdict
                if got != ref:
                    o["verdicts_differ"] += 1
                    o["differing"].append(f"{v}/{p.name}: torch {ref}, {rt} {got}")
    for o in out.values():
        o["max_map_diff_rel"] = float(f"{o['max_map_diff_rel']:.3g}")
        o["max_score_diff_rel"] = float(f"{o['max_score_diff_rel']:.3g}")
    return {"torch_verdicts": counts, **out}


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
    runtimes = tuple((next((a.split("=", 1)[1] for a in argv if a.startswith("--runtimes=")), None)
                      or ",".join(RUNTIMES)).split(","))
    if not (tmp / "data" / views[-1]).is_dir():
        print(f"building a {len(views)}-view bundle ({size[0]}x{size[1]}, patchcore {preset}) in {tmp} ...", flush=True)
        generate(tmp / "data", views=views, size=size, seed=0, n_train=8, n_good=2, n_shifted=2, n_anomalous=4)
    else:
        print(f"reusing the data in {tmp}", flush=True)
    runs = _train_calibrated(tmp / "data", views, "patchcore", preset, tmp / "runs")
    bundles = _deploy_runtimes(runs, tmp / "line", runtimes)
    setup_s = time.perf_counter() - t0
    images = {v: tmp / "data" / v / "test" / "good" / "shift_000.png" for v in views}

    load_wall, load_cpu, checker = _timed(lambda: Checker(bundles["torch"], "cpu"))
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
    # runtimes: interleaved (torch, onnx, openvino, torch, ...) so that a drift of the shared machine's speed
    # moves every runtime alike and the ratios stay meaningful
    checkers = {}
    for rt, b in bundles.items():
        checkers[rt] = Checker(b, "cpu")
        assert not checkers[rt].errors, checkers[rt].errors
    samples: dict[str, dict[str, list[float]]] = {rt: {k: [] for k in ("su", "su_cpu", "su_load", "w", "w_cpu")}
                                                  for rt in bundles}
    results = {}
    for _ in range(3):
        for rt, b in bundles.items():
            print(".", end="", flush=True)
            w, c, ld = _startup(b)
            samples[rt]["su"].append(w)
            samples[rt]["su_cpu"].append(c)
            samples[rt]["su_load"].append(ld)
    for _ in range(repeats):
        for rt, ch in checkers.items():
            w, c, results[rt] = _timed(lambda ch=ch: ch.check(images))
            samples[rt]["w"].append(w)
            samples[rt]["w_cpu"].append(c)
    med = statistics.median
    rt_rows = {rt: {"startup_s": round(med(x["su"]), 3), "startup_cpu_s": round(med(x["su_cpu"]), 3),
                    "startup_load_s": round(med(x["su_load"]), 3), "warm_s": round(med(x["w"]), 3),
                    "warm_cpu_s": round(med(x["w_cpu"]), 3),
                    "verdicts": {vv.view: vv.verdict for vv in results[rt].views}}  # type: ignore[union-attr]
               for rt, x in samples.items()}
    base = rt_rows.get("torch")
    print(f"\nruntimes, {len(views)}-view bundle (patchcore {preset}); start-up = `check --verify` in a new process")
    print(f"{'runtime':10s} {'start-up s':>10s} {'cpu s':>6s} {'(load s)':>9s} {'rt/torch':>9s} {'warm s':>8s} "
          f"{'cpu s':>7s} {'torch/rt':>9s} {'(cpu)':>7s}")
    for rt, r in rt_rows.items():
        if base:
            r["startup_vs_torch"] = round(r["startup_s"] / base["startup_s"], 3)
            r["startup_cpu_vs_torch"] = round(r["startup_cpu_s"] / base["startup_cpu_s"], 3)
            r["warm_speedup_vs_torch"] = round(base["warm_s"] / r["warm_s"], 2)
            r["warm_cpu_speedup_vs_torch"] = round(base["warm_cpu_s"] / r["warm_cpu_s"], 2)
        print(f"{rt:10s} {r['startup_s']:10.3f} {r['startup_cpu_s']:6.2f} {r['startup_load_s']:9.3f} "
              f"{r.get('startup_vs_torch', 0):9.2f} {r['warm_s']:8.3f} {r['warm_cpu_s']:7.3f} "
              f"{r.get('warm_speedup_vs_torch', 0):8.2f}x {r.get('warm_cpu_speedup_vs_torch', 0):6.2f}x")
    agree: dict = {}
    if "--no-agreement" not in argv and len(bundles) > 1:
        agree["synth/patchcore"] = agreement(tmp / "data", views, bundles)
        t_runs = _train_calibrated(tmp / "data", views, "template", "fast", tmp / "runs-template")
        agree["synth/template"] = agreement(tmp / "data", views, _deploy_runtimes(t_runs, tmp / "line-template", runtimes))
        if "--no-photos" not in argv:
            from lineclear.synth.photos import generate_photos

            photos = tmp / "photos"
            if not photos.is_dir():
                generate_photos(photos, "builtin", seed=0)
            pviews = sorted(p.name for p in photos.iterdir() if (p / "train").is_dir())[: 2 if quick else None]
            for model, pre in (("patchcore", preset), ("template", "fast")):
                p_runs = _train_calibrated(photos, pviews, model, pre, tmp / f"runs-photos-{model}")
                agree[f"photos/{model}"] = agreement(
                    photos, pviews, _deploy_runtimes(p_runs, tmp / f"line-photos-{model}", runtimes))
        print("agreement with torch (every test image; map difference relative to the map range):")
        for key, a in agree.items():
            for rt, o in a.items():
                if rt == "torch_verdicts":
                    continue
                print(f"  {key:20s} {rt:9s} {o['images']:4d} images  maps {o['max_map_diff_rel']:.1e}  scores "
                      f"{o['max_score_diff_rel']:.1e}  verdicts differ: {o['verdicts_differ']}  "
                      f"(torch: {a['torch_verdicts']})")
                for d in o["differing"][:5]:
                    print(f"      {d}")
    return {
        "runtimes": rt_rows, "agreement": agree,
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
