"""Threshold level and ensemble, per view, on the synthetic and the photo benchmark (issue 15).

Reads two reproduction grids (``examples/Makefile``: every model's ``eval/<model>/<view>/<config>/metrics.json``
with thresholds calibrated at both levels, ``LEVELS="image pixel"``) and prints, per dataset, model and view:

* **levels**: for each rule (max, quantile, ksigma) at the image level (the image score against a threshold
  fitted to the normal validation images' scores) and at the pixel level (any counted pixel above a
  threshold fitted to every counted validation pixel): accuracy, misses (FN: leftover called clear, the
  costly error on a line) and false alarms (FP), with totals over the views;
* **stricter pixel rules**: the pixel level with ``quantile`` p = 0.999 / 0.9999 and ``ksigma`` k = 5 / 8
  (computed in this process from the grid's validation and test maps), misses and false alarms in total;
* **ensemble**: the ensemble against each of its members: image AUROC, pixel AUROC, AUPRO, and misses /
  false alarms at one fixed rule (``--rule``, default ``max·image``, the same for every model, so no
  choice on the test labels enters the comparison).

Usage: ``python -m benchmarks levels [--synth-grid DIR] [--photo-grid DIR] [--config po-m-r] [--rule max-image]``.
Without a grid the benchmark builds it (``make -C examples``, patchcore, template and their ensemble at
``fast``; about 10 min per dataset on 2 cores) into ``bench-out/levels-synth`` and ``bench-out/levels-photos``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks._args import option
from lineclear.formats.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("patchcore", "template", "ensemble")
PHOTO_VIEWS = "P1_coffee P2_chelsea P3_rocket P4_motorcycle_left P5_astronaut"


def build_grid(out: Path, photos: bool) -> Path:
    """Synthesise the dataset and run the examples grid over it (patchcore, template, ensemble; fast)."""
    lc = [sys.executable, "-m", "lineclear"]
    data = out / "data"
    if not data.is_dir():
        subprocess.run([*lc, "-q", "synth", str(data), *(["--photos", "builtin"] if photos else [])], check=True)
    views = PHOTO_VIEWS if photos else "A A2 B B2 C"
    if photos:
        # the photo views ship their ground truth: the labels stage has nothing to draw
        for v in views.split():
            lab = out / "labels" / v
            lab.mkdir(parents=True, exist_ok=True)
            if not (lab / "ground_truth").exists():
                (lab / "ground_truth").symlink_to((data / v / "ground_truth").resolve())
            (lab / ".lineclear-labels").touch()
    wrapper = out / "lineclear"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m lineclear \"$@\"\n")
    wrapper.chmod(0o755)
    subprocess.run(["make", "-C", str(ROOT / "examples"), f"OUT={out}", f"DATA={data}", f"VIEWS={views}",
                    f"MODELS={' '.join(MODELS)}", f"CONFIGS={'po-nm-r' if photos else 'po-m-r'}", "PRESET=fast",
                    "EVAL_ARGS=--max-overlays 0", f"LINECLEAR={wrapper}", f"PYTHON={sys.executable}", "tables"],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    return out


def _cells(grid: Path, config: str) -> dict[tuple[str, str], dict]:
    out = {}
    for p in sorted(grid.glob(f"eval/*/*/{config}/metrics.json")):
        model, view = p.parts[-4], p.parts[-3]
        out[(model, view)] = read_metrics(p)
    return out


def _entry(doc: dict, rule: str) -> dict | None:
    method, level = rule.split("-")
    return next((e for e in doc["thresholds"] if e["method"] == method and e.get("level", "image") == level), None)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def levels_table(cells: dict, name: str) -> dict:
    rules = [f"{m}-{lv}" for m in ("max", "quantile", "ksigma") for lv in ("image", "pixel")]
    print(f"\n{name}: accuracy % / misses / false alarms per view (image = score vs image threshold; "
          "pixel = any counted pixel vs pixel threshold)")
    print("| model | view | " + " | ".join(r.replace("-", "·") for r in rules) + " |")
    print("|---|---|" + "---|" * len(rules))
    totals: dict = {}
    for (model, view), doc in cells.items():
        row = []
        for r in rules:
            e = _entry(doc, r)
            if e is None:
                row.append("–")
                continue
            im = e["image"]
            t = totals.setdefault(model, {}).setdefault(r, {"fn": 0, "fp": 0, "n": 0, "ok": 0})
            t["fn"] += im["fn"]
            t["fp"] += im["fp"]
            t["n"] += im["tp"] + im["fp"] + im["tn"] + im["fn"]
            t["ok"] += im["tp"] + im["tn"]
            row.append(f"{_pct(im['accuracy'])} / {im['fn']} / {im['fp']}")
        print(f"| {model} | {view} | " + " | ".join(row) + " |")
    for model, per in totals.items():
        print(f"| {model} | **all** | " + " | ".join(
            f"{100 * per[r]['ok'] / per[r]['n']:.1f} / {per[r]['fn']} / {per[r]['fp']}" if r in per else "–"
            for r in rules) + " |")
    return totals


def ensemble_table(cells: dict, name: str, rule: str) -> dict:
    views = sorted({v for _, v in cells})
    print(f"\n{name}: ensemble vs members — image AUROC / pixel AUROC / AUPRO (%), misses / false alarms at "
          f"{rule.replace('-', '·')}")
    print("| view | " + " | ".join(m for m in MODELS) + " |")
    print("|---|" + "---|" * len(MODELS))
    res: dict = {}
    for v in views:
        row = []
        for m in MODELS:
            doc = cells.get((m, v))
            if doc is None:
                row.append("–")
                continue
            s = doc["summary"]
            e = _entry(doc, rule)
            fn_fp = f"{e['image']['fn']} / {e['image']['fp']}" if e else "–"
            res.setdefault(m, {})[v] = {"auroc_image": s["auroc_image"], "auroc_pixel": s["auroc_pixel"],
                                        "aupro": s["aupro"], "fn": e["image"]["fn"] if e else None,
                                        "fp": e["image"]["fp"] if e else None}
            row.append(f"{_pct(s['auroc_image'])} / {_pct(s['auroc_pixel'])} / {_pct(s['aupro'])}, {fn_fp}")
        print(f"| {v} | " + " | ".join(row) + " |")
    for m, per in res.items():
        vals = [x for x in per.values()]
        mean = {k: sum(x[k] for x in vals if x[k] is not None) / max(1, sum(x[k] is not None for x in vals))
                for k in ("auroc_image", "auroc_pixel", "aupro")}
        print(f"  {m}: mean image AUROC {_pct(mean['auroc_image'])}, pixel AUROC {_pct(mean['auroc_pixel'])}, "
              f"AUPRO {_pct(mean['aupro'])}; misses {sum(x['fn'] or 0 for x in vals)}, "
              f"false alarms {sum(x['fp'] or 0 for x in vals)} over {len(vals)} views")
    return res


STRICT = (("quantile", 0.999), ("quantile", 0.9999), ("ksigma", 5.0), ("ksigma", 8.0))


def strict_pixel_rules(grid: Path, config: str, name: str) -> dict:
    """Misses / false alarms of stricter pixel-level rules, per model over every view (in-process)."""
    import numpy as np

    from lineclear.calibrate import pixel_stats, rule
    from lineclear.formats import MapsFile

    totals: dict = {}
    for val_path in sorted(grid.glob(f"maps/*/*/{config}-val.h5")):
        model = val_path.parts[-3]
        test_path = val_path.with_name(f"{config}-test.h5")
        if not test_path.is_file():
            continue
        with MapsFile(val_path) as vf, MapsFile(test_path) as tf:
            normal = vf.labels != 1

            def pixels(vf=vf, normal=normal):
                for sl, m, valid in vf.iter_batches(16):
                    sel = normal[sl]
                    yield m[sel][valid[sel]]

            peaks = np.array([float(m[v].max()) if v.any() else -np.inf for _, mm, vv in tf.iter_batches(16)
                              for m, v in zip(mm, vv)])
            y = tf.labels == 1
            known = tf.labels >= 0
            for method, x in STRICT:
                st = pixel_stats(pixels, x if method == "quantile" else 0.99)
                t = rule(st, method, p=x if method == "quantile" else 0.99, k=x if method == "ksigma" else 3.0)
                pred = peaks > t
                c = totals.setdefault(model, {}).setdefault(f"{method} {x:g}", {"fn": 0, "fp": 0, "n": 0, "ok": 0})
                c["fn"] += int((~pred & y & known).sum())
                c["fp"] += int((pred & ~y & known).sum())
                c["n"] += int(known.sum())
                c["ok"] += int(((pred == y) & known).sum())
    print(f"\n{name}: stricter pixel-level rules, accuracy % / misses / false alarms over every view")
    for model, per in totals.items():
        print(f"  {model}: " + "; ".join(f"{k}: {100 * v['ok'] / v['n']:.1f} / {v['fn']} / {v['fp']}"
                                        for k, v in per.items()))
    return totals


def main(argv: list[str]) -> dict:
    synth = option(argv, "--synth-grid", None)
    photo = option(argv, "--photo-grid", None)
    rule = option(argv, "--rule", "max-image")
    out = {}
    for name, grid, photos, config in (("synthetic", synth, False, option(argv, "--synth-config", "po-m-r")),
                                       ("photos", photo, True, option(argv, "--photo-config", "po-nm-r"))):
        g = Path(grid) if grid else build_grid(Path("bench-out") / f"levels-{'photos' if photos else 'synth'}", photos)
        cells = _cells(g, config)
        if not cells:
            print(f"{g}: no eval/*/*/{config}/metrics.json", file=sys.stderr)
            continue
        out[name] = {"levels": levels_table(cells, f"{name} ({config})"),
                     "strict_pixel": strict_pixel_rules(g, config, f"{name} ({config})"),
                     "ensemble": ensemble_table(cells, f"{name} ({config})", rule)}
    return out
