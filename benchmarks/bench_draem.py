"""DRAEM benchmark: per synthetic view with the ``fast`` preset — training seconds, scoring
ms/image at 256² and 512², image and pixel AUROC, and the speed-up of the optimised inference
(batched, channels-last) over a plain one-image-at-a-time eager fp32 loop of the same network.

``python -m benchmarks draem [--quick] [--views=A,B] [--data=DIR] [--threads=N] [--preset=P] [--set="k=v;k=v"]``
``--quick``: one view, the ``demo`` preset, small scoring sets (a smoke run).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from benchmarks._args import option as _arg
from lineclear.dataset import View
from lineclear.images import read_gray, read_rgb, resize
from lineclear.models.base import resolve_config
from lineclear.models.draem import ENTRY, DraemModel
from lineclear.training import TrainSession




def _load(paths, size) -> torch.Tensor:
    return torch.from_numpy(np.stack([read_rgb(p, size) for p in paths])).permute(0, 3, 1, 2).contiguous()


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


def bench_view(view_dir: Path, preset: str, quick: bool, overrides: dict | None = None) -> dict:
    view = View(view_dir)
    cfg = resolve_config(ENTRY, preset, overrides)
    size = tuple(cfg.image_size)
    train_paths = [s.path for s in view.train()]
    images = _load(train_paths, size)
    torch.manual_seed(cfg.seed)
    model = ENTRY.build(cfg, False)
    with tempfile.TemporaryDirectory() as tmp:
        session = TrainSession(images=images, config=cfg, device=torch.device("cpu"), run_dir=Path(tmp), model_name="draem")
        t0 = time.perf_counter()
        ENTRY.train(model, session)
        train_s = time.perf_counter() - t0
    model.eval()

    tests = view.test()
    if quick:
        tests = [s for s in tests if s.label == 0][:3] + [s for s in tests if s.label == 1][:3]
    x = _load([s.path for s in tests], size)
    labels = np.array([s.label for s in tests])
    maps = _fast(model, x).numpy()
    scores = model.image_score(torch.from_numpy(maps)).numpy()
    gts = []
    for s in tests:
        g = view.gt_path(s)
        gts.append((resize(read_gray(g), size) > 127) if g else np.zeros(size, bool))
    gts = np.stack(gts)
    roi = view.roi
    res = {
        "view": view.name,
        "train_images": len(train_paths),
        "steps": cfg.epochs * (cfg.steps_per_epoch or -(-len(train_paths) // cfg.batch_size)),
        "train_s": round(train_s, 1),
        "image_auroc": float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None,
        "pixel_auroc": float(roc_auc_score(gts.ravel(), maps.ravel())) if gts.any() else None,
    }
    if roi is not None:  # post-masking with the view's inspection mask
        m = resize(read_gray(roi).astype(np.float32), size) > 0.5
        pm = maps * m[None]
        ps = model.image_score(torch.from_numpy(pm)).numpy()
        res["image_auroc_roi"] = float(roc_auc_score(labels, ps)) if len(set(labels)) == 2 else None
        res["pixel_auroc_roi"] = float(roc_auc_score(gts[:, m].ravel(), maps[:, m].ravel())) if gts[:, m].any() else None

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
    data = _arg(argv, "--data")
    views = (_arg(argv, "--views", "A" if quick else "A,A2,B,B2,C") or "A").split(",")
    tmp = None
    if data is None:
        from lineclear.synth import generate

        tmp = tempfile.TemporaryDirectory()
        data = tmp.name
        generate(data, views=tuple(views), size=(768, 512), seed=0)
    # --set=key=value;key=value overrides preset settings (e.g. --set=epochs=4;recon_width=16)
    overrides = dict(kv.split("=", 1) for kv in (_arg(argv, "--set", "") or "").split(";") if kv)
    rows = [bench_view(Path(data) / v, preset, quick, overrides) for v in views]
    if tmp is not None:
        tmp.cleanup()

    def f(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)

    print(f"DRAEM, preset {preset} {overrides or ''}, torch threads {torch.get_num_threads()}")
    print(f"{'view':6} {'steps':>6} {'train s':>8} {'img AUROC':>9} {'pix AUROC':>9} {'img/ROI':>8} {'pix/ROI':>8} "
          f"{'ms 256²':>8} {'x plain':>7} {'ms 512²':>8} {'x plain':>7}")
    for r in rows:
        print(f"{r['view']:6} {r['steps']:>6} {r['train_s']:>8.1f} {f(r['image_auroc']):>9} {f(r['pixel_auroc']):>9} "
              f"{f(r.get('image_auroc_roi')):>8} {f(r.get('pixel_auroc_roi')):>8} {r['score_ms_256']:>8.1f} "
              f"{r['speedup_256']:>7.2f} {r['score_ms_512']:>8.1f} {r['speedup_512']:>7.2f}")
    return {"preset": preset, "overrides": overrides, "threads": torch.get_num_threads(), "views": rows}


if __name__ == "__main__":  # pragma: no cover
    import sys

    main(sys.argv[1:])
