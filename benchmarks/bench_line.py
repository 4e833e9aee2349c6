"""Does the line catch every leftover? The user's whole path, per view, on the synthetic and the photo data.

For every dataset (``--datasets synth,photos``), view and model (``--models patchcore,template``) this runs
exactly what the README tells a user to run, through the CLI in this process:

    lineclear train VIEW -m MODEL                       (defaults: the fast preset)
    lineclear register VIEW                             (once per view)
    lineclear score RUN VIEW_registered --split val --mask roi.png [the calibration defaults]
    lineclear calibrate RUN/val_maps.h5                 (defaults)
    lineclear score RUN VIEW_registered --split test --mask roi.png
    lineclear evaluate RUN/test_maps.h5                 → image AUROC, pixel AUROC, AUPRO
    lineclear deploy RUN...                             (one bundle per dataset and model)
    lineclear check                                     on every *raw* test image (as the camera shot it)

and prints, per view: the three quality figures and the line verdicts with thresholds from normal images
only — leftovers missed, clear images raised as false alarms, undecided (each counted once per image:
an undecided leftover image is not a miss, but it is not a catch either, so it is reported on its own).

Datasets: ``synth`` is ``lineclear synth`` (seed 0, 768x512, defaults); ``photos`` is
``lineclear synth --photos builtin`` (real photographs shipped in installed packages) when that
generator is available. ``--data NAME=DIR`` benchmarks a dataset of your own (any lineclear layout).
``--work DIR`` keeps data, runs and bundles (and reuses them on a second run: delete a run to redo it).
``--score-args "…"`` / ``--val-args "…"`` / ``--train-args "…"`` add options to the commands, to compare a
setting against the defaults in one run (e.g. ``--val-args "--shifts 0"``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._args import option


def _cli(args: list[str]) -> dict | None:
    """Run a lineclear command in-process; its stdout parsed as JSON when it is JSON."""
    from lineclear.cli.main import run

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            run(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"lineclear {' '.join(args)} exited {exc.code}") from None
    try:
        return json.loads(buf.getvalue())
    except ValueError:
        return None


def _datasets(argv: list[str], work: Path) -> dict[str, Path]:
    names = (option(argv, "--datasets") or "synth,photos").split(",")
    own = dict(kv.split("=", 1) for kv in (option(argv, "--data") or "").split(",") if "=" in kv)
    out: dict[str, Path] = {}
    for name in names:
        if name in own:
            out[name] = Path(own[name])
            continue
        root = work / "data" / name
        if not (root / ".complete").is_file():
            if name == "synth":
                _cli(["-q", "synth", str(root), "--overwrite"])
            elif name == "photos":
                _cli(["-q", "synth", str(root), "--photos", "builtin", "--overwrite"])
            else:
                raise SystemExit(f"unknown dataset {name!r}: give --data {name}=DIR")
            (root / ".complete").write_text("")
        out[name] = root
    for name, root in own.items():
        out.setdefault(name, Path(root))
    return out


def _views(root: Path, wanted: str | None) -> list[str]:
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir())
    if wanted:
        found = [v for v in found if v in wanted.split(",")]
    return found


def _quality(metrics: dict) -> dict:
    img = metrics.get("image", {})
    pix = metrics.get("pixel", {})
    return {"image_auroc": img.get("auroc"), "pixel_auroc": pix.get("auroc"), "aupro": pix.get("aupro")}


def run_view(view_dir: Path, reg_dir: Path, run: Path, model: str, extra: dict[str, list[str]]) -> dict:
    """train → score val → calibrate → score test → evaluate for one view; returns the quality figures."""
    t0 = time.perf_counter()
    roi = ["--mask", str(reg_dir / "roi.png")] if (reg_dir / "roi.png").is_file() else []
    if not (run / "model.pt").is_file():
        _cli(["-q", "train", str(view_dir), "-m", model, "--out", str(run), "--device", "cpu", "--overwrite",
              *extra["train"]])
    train_s = time.perf_counter() - t0
    _cli(["-q", "score", str(run), str(reg_dir), "--split", "val", "--out", str(run / "val_maps.h5"), *roi,
          "--overwrite", *extra["score"], *extra["val"]])
    _cli(["-q", "calibrate", str(run / "val_maps.h5"), "--overwrite"])
    t1 = time.perf_counter()
    _cli(["-q", "score", str(run), str(reg_dir), "--split", "test", "--out", str(run / "test_maps.h5"), *roi,
          "--overwrite", *extra["score"]])
    score_s = time.perf_counter() - t1
    _cli(["-q", "evaluate", str(run / "test_maps.h5"), "-t", str(run / "thresholds.json"), "--out",
          str(run / "eval"), "--max-overlays", "0", "--overwrite"])
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    thr = json.loads((run / "thresholds.json").read_text())
    return {**_quality(metrics), "train_s": round(train_s, 1), "score_test_s": round(score_s, 1),
            "val_images": thr["image"]["stats"]["count"]}


def check_all(bundle: Path, root: Path, views: list[str]) -> dict[str, dict]:
    """Check every raw test image of every view; misses / false alarms / undecided per view."""
    from lineclear.line.checker import Checker
    from lineclear.dataset import View

    checker = Checker(bundle, "cpu")
    if checker.errors:
        raise RuntimeError(f"{bundle}: {checker.errors}")
    out: dict[str, dict] = {}
    for v in views:
        counts = {"leftover_images": 0, "clear_images": 0, "missed": 0, "false_alarms": 0,
                  "undecided_leftover": 0, "undecided_clear": 0, "missed_images": [], "false_alarm_images": []}
        ms: list[float] = []
        for s in View(root / v).test():
            vv = checker.check_one(v, s.path)
            if "total" in vv.timings_ms:
                ms.append(vv.timings_ms["total"])
            if s.label == 1:
                counts["leftover_images"] += 1
                if vv.verdict == "clear":
                    counts["missed"] += 1
                    counts["missed_images"].append(s.image_id)
                counts["undecided_leftover"] += vv.verdict == "undecided"
            else:
                counts["clear_images"] += 1
                if vv.verdict == "leftover":
                    counts["false_alarms"] += 1
                    counts["false_alarm_images"].append(s.image_id)
                counts["undecided_clear"] += vv.verdict == "undecided"
        counts["check_ms_median"] = round(statistics.median(ms), 1) if ms else None
        out[v] = counts
    return out


def _fmt(x: object) -> str:
    return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def main(argv: list[str]) -> dict:
    import torch

    torch.set_num_threads(int(option(argv, "--threads", "2")))
    work_arg = option(argv, "--work")
    work = Path(work_arg) if work_arg else Path(tempfile.mkdtemp(prefix="bench_line_"))
    models = (option(argv, "--models") or "patchcore,template").split(",")
    tag = option(argv, "--tag", "default")
    extra = {k: shlex.split(option(argv, f"--{k}-args", "") or "") for k in ("train", "score", "val")}
    results: dict = {"models": models, "tag": tag, "extra": extra, "datasets": {}}
    for ds, root in _datasets(argv, work).items():
        views = _views(root, option(argv, "--views"))
        dres: dict = {}
        for v in views:
            reg = work / "registered" / ds / v
            if not (reg / "reference.png").is_file():
                _cli(["-q", "register", str(root / v), "--out", str(reg), "--overwrite"])
        for model in models:
            runs = []
            for v in views:
                run = work / "runs" / tag / ds / f"{v}-{model}"
                print(f"[{ds}] {v} {model} ...", file=sys.stderr, flush=True)
                dres.setdefault(v, {})[model] = run_view(root / v, work / "registered" / ds / v, run, model, extra)
                runs.append(str(run))
            bundle = work / "bundles" / tag / ds / model
            _cli(["-q", "deploy", *runs, "--out", str(bundle), "--overwrite"])
            for v, c in check_all(bundle, root, views).items():
                dres[v][model].update(c)
        results["datasets"][ds] = dres
        print(f"\n{ds} ({root}), tag {tag}, extra {extra}")
        print(f"{'view':6s} {'model':10s} {'img AUROC':>9s} {'px AUROC':>9s} {'AUPRO':>7s} {'missed':>10s} "
              f"{'false al.':>10s} {'undecided':>9s} {'val imgs':>8s} {'check ms':>8s}")
        for model in models:
            tot = {"missed": 0, "leftover_images": 0, "false_alarms": 0, "clear_images": 0, "und": 0}
            for v in views:
                r = dres[v][model]
                und = r["undecided_leftover"] + r["undecided_clear"]
                for k in ("missed", "leftover_images", "false_alarms", "clear_images"):
                    tot[k] += r[k]
                tot["und"] += und
                print(f"{v:6s} {model:10s} {_fmt(r['image_auroc']):>9s} {_fmt(r['pixel_auroc']):>9s} "
                      f"{_fmt(r['aupro']):>7s} {r['missed']:>4d} of {r['leftover_images']:<3d} "
                      f"{r['false_alarms']:>4d} of {r['clear_images']:<3d} {und:>9d} {r['val_images']:>8d} "
                      f"{_fmt(r['check_ms_median']):>8s}")
            print(f"{'all':6s} {model:10s} {'':>9s} {'':>9s} {'':>7s} {tot['missed']:>4d} of "
                  f"{tot['leftover_images']:<3d} {tot['false_alarms']:>4d} of {tot['clear_images']:<3d} "
                  f"{tot['und']:>9d}")
    results["load_average_1min"] = round(os.getloadavg()[0], 1)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
