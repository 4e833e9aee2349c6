"""Side-by-side model benchmark on the synthetic dataset (issue 7 item 5).

For every synthetic view and every model of ``lineclear.models.MODELS`` (patchcore, template, and
DRAEM / DDAD when installed, each at its ``fast`` preset), with and without registration: fit seconds,
ms per test image, image AUROC, pixel AUROC, AUPRO (FPR ≤ 0.3). Maps are post-masked with the view's
``roi.png`` and, for registered images, with the validity mask eroded by the border margin — the pixels
that ``lineclear score`` would count.

Also measured in the same run:

* patchcore's position radius (cells) and the registration border margin (map pixels) — the figures
  behind both defaults;
* patchcore's scoring speed on a 512x768 image: the plain version (batch 1, global search) against
  batching, position-aware search and bf16 autocast, as ratios in this process.

Usage: ``python -m benchmarks models [--quick] [--data DIR] [--models a,b] [--views A,B]
[--radii 0,1,2,none] [--margins 0,2,4,8] [--threads N] [--no-registration | --registered-only] [--no-speed]
[--preset fast] [--set "k=v;k=v"]``; ``--set`` overrides preset settings of every model benchmarked. Without ``--data`` the dataset is generated
(seed 0) into ``bench-out/synth-models`` (``--quick``: a tiny one-view dataset in a temporary folder).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._args import dataset, settings
from benchmarks._args import option as _arg
from lineclear import metrics as M
from lineclear.dataset import View
from lineclear.formats import read_mask, resize_mask
from lineclear.images import read_raw, resize, to_float_rgb

from lineclear.masking import erode_valid


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
class ViewData:
    """Full-resolution float images of one view, raw and registered, with labels and masks."""

    def __init__(self, view_dir: Path, register: bool) -> None:
        view = View(view_dir)
        self.name = view.name
        self.train_paths = [s.path for s in view.train() + view.val()]  # the whole train/good folder
        tests = view.test()
        self.test_paths = [s.path for s in tests]
        self.labels = np.array([s.label for s in tests], dtype=np.int64)
        self.gt = [read_mask(view.gt_path(s)) if view.gt_path(s) else None for s in tests]
        roi = view.roi
        self.roi = read_mask(roi) if roi else None
        self.train = [to_float_rgb(read_raw(p)) for p in self.train_paths]
        self.test = [to_float_rgb(read_raw(p)) for p in self.test_paths]
        self.size = self.test[0].shape[:2]
        self.reg_seconds = None
        self.reg_failed = 0
        self.reg_train = self.reg_test = self.valid_train = self.valid_test = None
        if register:
            self._register(view)

    def _register(self, view: View) -> None:
        from lineclear.register import Registrar

        ref = read_raw(view.reference)
        reg = Registrar(ref)
        t0 = time.perf_counter()

        def run(imgs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
            out, val = [], []
            for im in imgs:
                res = reg.register((im * 255 + 0.5).astype(np.uint8))
                self.reg_failed += int(not res.ok)
                out.append(res.image.astype(np.float32) / 255.0)
                val.append(np.asarray(res.valid, dtype=bool))
            return out, val

        self.reg_train, self.valid_train = run(self.train)
        self.reg_test, self.valid_test = run(self.test)
        self.reg_seconds = (time.perf_counter() - t0) / (len(self.train) + len(self.test))

    def arrays(self, size: tuple[int, int], registered: bool) -> dict:
        """Everything at model size: train (N,3,H,W) tensor, valid, test (M,H,W,3), gt, roi, test valid."""
        tr = self.reg_train if registered else self.train
        te = self.reg_test if registered else self.test
        x = torch.from_numpy(np.stack([resize(i, size) for i in tr]).transpose(0, 3, 1, 2).copy())
        valid = None
        tv = None
        if registered:
            valid = torch.from_numpy(np.stack([resize_mask(v, size) for v in self.valid_train])[:, None].astype(np.float32))
            tv = np.stack([resize_mask(v, size) for v in self.valid_test])
        gt = np.stack([resize_mask(g, size) if g is not None else np.zeros(size, bool) for g in self.gt])
        roi = resize_mask(self.roi, size) if self.roi is not None else np.ones(size, bool)
        return {"train": x, "valid": valid, "test": np.stack([resize(i, size) for i in te]), "gt": gt, "roi": roi,
                "test_valid": tv}


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
def evaluate_maps(model, maps: np.ndarray, data: dict, labels: np.ndarray, margin: int) -> dict:
    """Post-mask ``maps`` (M,H,W) with roi ∧ eroded validity, then image/pixel metrics."""
    count = np.broadcast_to(data["roi"], maps.shape).copy()
    if data["test_valid"] is not None:
        count &= np.stack([erode_valid(v, margin) for v in data["test_valid"]])
    masked = maps * count
    scores = model.image_score(torch.from_numpy(masked)).numpy()
    batch = (masked, data["gt"], count, [bool(lab) for lab in labels])
    cur = M.PixelAccumulator().accumulate([batch], lambda: [batch]).curves()
    r = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
    return {"image_auroc": r(M.roc_auc(scores, labels)), "pixel_auroc": r(cur.auroc()), "aupro": r(cur.aupro())}


def fit_model(name: str, preset: str, data: dict, overrides: dict | None = None):
    from lineclear.models import get_model
    from lineclear.models.base import resolve_config
    from lineclear.training import TrainSession

    entry = get_model(name)
    cfg = resolve_config(entry, preset, overrides or {})
    t0 = time.perf_counter()
    model = entry.build(cfg, True)
    session = TrainSession(images=data["train"], config=cfg, device=torch.device("cpu"), valid=data["valid"],
                           model_name=name)
    entry.train(model, session)
    return model.eval(), cfg, time.perf_counter() - t0


@torch.inference_mode()
def score_all(model, test: np.ndarray, batch: int, masks: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """maps (M,H,W), wall ms/image, CPU ms/image; ``masks`` (M,H,W) bool → pre-masking."""
    x = torch.from_numpy(np.ascontiguousarray(test.transpose(0, 3, 1, 2)))
    m = None if masks is None else torch.from_numpy(masks[:, None].astype(np.float32))
    out = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(x), batch):
        mi = None if m is None else m[i : i + batch]
        out.append(model(x[i : i + batch], mi).anomaly_map.float().numpy())
    return np.concatenate(out), (time.perf_counter() - t0) / len(x) * 1000, (time.process_time() - c0) / len(x) * 1000


@torch.inference_mode()
def patchcore_radius_sweep(model, data: dict, labels: np.ndarray, radii: list[str], margin: int, batch: int,
                           pre: bool = False) -> dict:
    """Features once, then the search at every radius (the fitted bank is the same).

    ``pre``: the registration validity is a pre-mask (hidden pixels get the mean training image).
    """
    from lineclear.models.patchcore.config import radius_of

    x = torch.from_numpy(np.ascontiguousarray(data["test"].transpose(0, 3, 1, 2)))
    masks = [None] * len(x)
    if pre and data["test_valid"] is not None:
        m = torch.from_numpy(data["test_valid"][:, None].astype(np.float32))
        x = x * m + model.mean_image[None] * (1 - m)
        masks = [m[i : i + batch] for i in range(0, len(x), batch)]
    feats = [model.embed(x[i : i + batch]) for i in range(0, len(x), batch)]
    res = {}
    old = model.radius
    for r in radii:
        model.radius = radius_of(type(model.cfg)(position_radius=r))
        model._dense = None
        t0, c0 = time.perf_counter(), time.process_time()
        maps = np.concatenate([model.map_from_features(f, mk).numpy() for f, mk in zip(feats, masks)])
        ms = (time.perf_counter() - t0) / len(x) * 1000
        cpu = (time.process_time() - c0) / len(x) * 1000
        res[r] = {**evaluate_maps(model, maps, data, labels, margin), "search_ms": round(ms, 1), "search_cpu_ms": round(cpu, 1)}
    model.radius, model._dense = old, None
    return res


@torch.inference_mode()
def speed_patchcore(view: ViewData, quick: bool) -> dict:
    """ms/image scoring a 512x768 source image, variants as ratios against the plain version."""
    size = (256, 384)
    data = view.arrays(size, registered=False)
    model, cfg, _ = fit_model("patchcore", "fast", data)
    src = np.stack(view.test[: (4 if quick else 8)])  # full-resolution source images (H,W,3)
    reps = 1 if quick else 2

    def run(batch: int, radius: str, bf16: bool) -> tuple[float, float]:
        from lineclear.models.patchcore.config import radius_of

        model.radius = radius_of(type(cfg)(position_radius=radius))
        model._dense = None
        model.cfg.bf16 = bf16
        best = (float("inf"), float("inf"))
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(src), batch):
                # the resize from 512x768 is part of the cost (as in lineclear score)
                x = np.stack([resize(im, size) for im in src[i : i + batch]])
                model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
            cur = ((time.perf_counter() - t0) / len(src) * 1000, (time.process_time() - c0) / len(src) * 1000)
            best = min(best, cur)
        return best

    variants = {
        "plain: batch 1, global search, fp32": (1, "none", False),
        "batch 8, global search": (8, "none", False),
        f"batch 1, position-aware r={cfg.position_radius}": (1, cfg.position_radius, False),
        f"batch 8, position-aware r={cfg.position_radius} (default)": (8, cfg.position_radius, False),
        "batch 8, position-aware, bf16 autocast backbone": (8, cfg.position_radius, True),
    }
    if quick:
        variants.pop("batch 8, position-aware, bf16 autocast backbone")
    out = {k: run(*v) for k, v in variants.items()}
    base = out["plain: batch 1, global search, fp32"]
    print(f"\npatchcore scoring speed, {src.shape[2]}x{src.shape[1]} source → {size[1]}x{size[0]} "
          f"(torch threads {torch.get_num_threads()}); ratio = plain / variant:")
    print(f"  {'variant':<55} {'wall ms':>8} {'ratio':>6} {'CPU ms':>8} {'ratio':>6}")
    for k, (ms, cpu) in out.items():
        print(f"  {k:<55} {ms:8.1f} {base[0] / ms:6.2f} {cpu:8.1f} {base[1] / cpu:6.2f}")
    model.cfg.bf16 = False
    return {"wall_ms_per_image": {k: round(v[0], 1) for k, v in out.items()},
            "cpu_ms_per_image": {k: round(v[1], 1) for k, v in out.items()},
            "speedup_vs_plain_wall": {k: round(base[0] / v[0], 2) for k, v in out.items()},
            "speedup_vs_plain_cpu": {k: round(base[1] / v[1], 2) for k, v in out.items()}}


# --------------------------------------------------------------------------------------------
def main(argv: list[str]) -> dict:
    from lineclear.synth import VIEWS

    views = _arg(argv, "--views")
    with dataset(argv, views.split(",") if views else VIEWS, "--quick" in argv, cache="bench-out/synth-models") as root:
        return _run(argv, root)


def _run(argv: list[str], root: Path) -> dict:
    quick = "--quick" in argv
    if _arg(argv, "--threads"):
        # on a shared, overloaded machine one intra-op thread is far faster than two spinning ones
        torch.set_num_threads(int(_arg(argv, "--threads")))
    from lineclear.models import MODELS

    models = (_arg(argv, "--models") or ",".join(MODELS)).split(",")
    radii = (_arg(argv, "--radii") or ("2,none" if quick else "0,1,2,3,4,none")).split(",")
    margins = [int(m) for m in (_arg(argv, "--margins") or ("0,4" if quick else "0,2,4,8")).split(",")]
    default_margin = int(_arg(argv, "--border-margin") or 4)
    preset = _arg(argv, "--preset") or "fast"
    overrides = settings(argv)
    variants = [v for v in ("raw", "registered") if not (v == "registered" and "--no-registration" in argv)
                and not (v == "raw" and "--registered-only" in argv)]
    views = (_arg(argv, "--views") or ",".join(sorted(p.name for p in root.iterdir() if (p / "train").is_dir()))).split(",")
    results: dict = {"models": {}, "radius": {}, "margin": {}, "views": views, "data": str(root)}
    print(f"models {models} on views {views} of {root}; variants {variants}; preset {preset} {overrides or ''}; "
          f"torch threads {torch.get_num_threads()}")
    header = f"{'view':<5} {'variant':<10} {'model':<10} {'fit s':>7} {'ms/img':>8} {'cpu ms':>8} {'img AUROC':>9} {'px AUROC':>9} {'AUPRO':>7}"
    rows = []
    first_view = None
    for vname in views:
        vd = ViewData(root / vname, register="registered" in variants)
        first_view = first_view or vd
        if vd.reg_seconds is not None:
            print(f"view {vname}: registration {vd.reg_seconds * 1000:.0f} ms/image, {vd.reg_failed} failed")
        for variant in variants:
            reg = variant == "registered"
            for name in models:
                if name not in MODELS:
                    continue
                from lineclear.models.base import resolve_config

                size = tuple(resolve_config(MODELS[name], preset, overrides).image_size)
                data = vd.arrays(size, registered=reg)
                model, cfg, fit_s = fit_model(name, preset, data, overrides)
                maps, ms, cpu_ms = score_all(model, data["test"], getattr(cfg, "batch_size", 8) or 8)
                res = {"fit_seconds": round(fit_s, 2), "ms_per_image": round(ms, 1), "cpu_ms_per_image": round(cpu_ms, 1),
                       **evaluate_maps(model, maps, data, vd.labels, default_margin)}
                results["models"].setdefault(name, {}).setdefault(vname, {})[variant] = res
                rows.append(f"{vname:<5} {variant:<10} {name:<10} {res['fit_seconds']:>7.2f} {res['ms_per_image']:>8.1f} {res['cpu_ms_per_image']:>8.1f} "
                            f"{res['image_auroc']!s:>9} {res['pixel_auroc']!s:>9} {res['aupro']!s:>7}")
                print(rows[-1], flush=True)
                if reg:
                    results["margin"].setdefault(name, {})[vname] = {
                        m: evaluate_maps(model, maps, data, vd.labels, m) for m in margins}
                    # the validity mask as a pre-mask (lineclear score --mask-stage pre): the model
                    # never sees the black fill outside the registered frame
                    pmaps, pms, pcpu = score_all(model, data["test"], getattr(cfg, "batch_size", 8) or 8,
                                                 masks=data["test_valid"])
                    pres = {"fit_seconds": round(fit_s, 2), "ms_per_image": round(pms, 1), "cpu_ms_per_image": round(pcpu, 1),
                            **evaluate_maps(model, pmaps, data, vd.labels, default_margin)}
                    results["models"][name][vname]["registered+pre"] = pres
                    rows.append(f"{vname:<5} {'reg+pre':<10} {name:<10} {pres['fit_seconds']:>7.2f} {pres['ms_per_image']:>8.1f} "
                                f"{pres['cpu_ms_per_image']:>8.1f} {pres['image_auroc']!s:>9} {pres['pixel_auroc']!s:>9} {pres['aupro']!s:>7}")
                    print(rows[-1], flush=True)
                    results["margin_pre"] = results.get("margin_pre", {})
                    results["margin_pre"].setdefault(name, {})[vname] = {
                        m: evaluate_maps(model, pmaps, data, vd.labels, m) for m in margins}
                if name == "patchcore" and len(radii) > 1:
                    results["radius"].setdefault(variant, {})[vname] = patchcore_radius_sweep(
                        model, data, vd.labels, radii, default_margin, cfg.batch_size)
                    if reg:
                        results["radius"].setdefault("registered+pre", {})[vname] = patchcore_radius_sweep(
                            model, data, vd.labels, radii, default_margin, cfg.batch_size, pre=True)
    print("\n" + header)
    print("\n".join(rows))
    _print_sweeps(results, radii, margins)
    if "--no-speed" not in argv and "patchcore" in models and first_view is not None:
        results["speed"] = speed_patchcore(first_view, quick)
    return results


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def _print_sweeps(results: dict, radii: list[str], margins: list[int]) -> None:
    for variant, per_view in results["radius"].items():
        print(f"\npatchcore position radius ({variant}), mean over views: image AUROC / pixel AUROC / AUPRO / search ms / search CPU ms")
        summary = {}
        for r in radii:
            cells = [per_view[v][r] for v in per_view]
            summary[r] = {k: _mean([c[k] for c in cells]) for k in ("image_auroc", "pixel_auroc", "aupro", "search_ms", "search_cpu_ms")}
            s = summary[r]
            print(f"  r={r:<5} {s['image_auroc']!s:>7} {s['pixel_auroc']!s:>7} {s['aupro']!s:>7} {s['search_ms']!s:>8} {s['search_cpu_ms']!s:>8}")
        per_view["_mean"] = summary
    for name, per_view in [(f"{n} post", pv) for n, pv in results["margin"].items()] + [
            (f"{n} pre", pv) for n, pv in results.get("margin_pre", {}).items()]:
        print(f"\n{name}: border margin (map px, registered), mean over views: image AUROC / pixel AUROC / AUPRO")
        summary = {}
        for m in margins:
            cells = [per_view[v][m] for v in per_view]
            summary[m] = {k: _mean([c[k] for c in cells]) for k in ("image_auroc", "pixel_auroc", "aupro")}
            s = summary[m]
            print(f"  margin={m:<3} {s['image_auroc']!s:>7} {s['pixel_auroc']!s:>7} {s['aupro']!s:>7}")
        per_view["_mean"] = summary


if __name__ == "__main__":  # pragma: no cover
    import sys

    main(sys.argv[1:])
