"""Detection quality of one trained model on one synthetic view, as lineclear scores it.

Shared by the DRAEM and DDAD benchmarks. A model is trained on the view's whole ``train/good``
folder at its preset's resolution, then every test image is scored twice:

* ``raw``: as shot, the map post-masked with the view's ``roi.png`` (configuration PO+M+NR);
* ``registered``: registered to the view's reference, the validity mask given to the model as a
  pre-mask and, eroded by the border margin, counted like the roi (PO+M+R, what ``make demo`` and
  the README's results run).

For each: image AUROC, pixel AUROC and AUPRO (lineclear.metrics), and the same figures for an
in-process baseline that any learned model must beat: the blurred L1 distance of each image to the
mean training image.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

import torch

from benchmarks.bench_models import ViewData, evaluate_maps, score_all
from lineclear.models import get_model
from lineclear.models.base import resolve_config
from lineclear.models.ddad.anomaly import gaussian_blur
from lineclear.training import TrainSession, seed_everything

BORDER_MARGIN = 4


class PrintProgress:
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


class _MeanImage:
    """The baseline: blurred mean absolute difference to the mean training image."""

    def __init__(self, train: torch.Tensor, sigma: float) -> None:
        self.mean, self.sigma = train.float().mean(0, keepdim=True), sigma

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        m = gaussian_blur((x - self.mean).abs().mean(1, keepdim=True), self.sigma)[:, 0]
        if mask is not None:
            m = m * mask[:, 0]
        return type("Out", (), {"anomaly_map": m})()

    @staticmethod
    def image_score(maps: torch.Tensor) -> torch.Tensor:
        return maps.flatten(1).amax(1)


def train_and_evaluate(model_name: str, vd: ViewData, preset: str, overrides: dict | None = None) -> tuple[object, dict]:
    """Train ``model_name`` on ``vd`` (registered training images) and measure it; returns (model, figures)."""
    entry = get_model(model_name)
    cfg = resolve_config(entry, preset, overrides or {})
    size = tuple(cfg.image_size)
    reg = vd.arrays(size, registered=True)
    raw = vd.arrays(size, registered=False)
    seed_everything(cfg.seed)
    model = entry.build(cfg, True)
    session = TrainSession(images=reg["train"], config=cfg, device=torch.device("cpu"), valid=reg["valid"],
                           model_name=model_name, progress=PrintProgress())
    t0 = time.perf_counter()
    entry.train(model, session)
    train_s = time.perf_counter() - t0
    model.eval()
    batch = int(getattr(cfg, "batch_size", 8) or 8)
    res: dict = {"view": vd.name, "train_images": int(reg["train"].shape[0]), "test_images": len(vd.labels),
                 "train_seconds": round(train_s, 1)}
    raw_maps, ms, cpu_ms = score_all(model, raw["test"], batch)
    res["score_ms_per_image"], res["score_cpu_ms_per_image"] = round(ms, 1), round(cpu_ms, 1)
    res["raw"] = evaluate_maps(model, raw_maps, raw, vd.labels, BORDER_MARGIN)
    reg_maps, _, _ = score_all(model, reg["test"], batch, masks=reg["test_valid"])
    res["registered"] = evaluate_maps(model, reg_maps, reg, vd.labels, BORDER_MARGIN)
    sigma = float(getattr(cfg, "blur_sigma", 2.0))
    base = _MeanImage(reg["train"], sigma)
    res["baseline_raw"] = evaluate_maps(base, score_all(base, raw["test"], 8)[0], raw, vd.labels, BORDER_MARGIN)
    res["baseline_registered"] = evaluate_maps(
        base, score_all(base, reg["test"], 8, masks=reg["test_valid"])[0], reg, vd.labels, BORDER_MARGIN)
    return model, res


QUALITY_COLUMNS = [
    ("registered", "image_auroc", "img AUROC reg"), ("registered", "pixel_auroc", "px AUROC reg"),
    ("registered", "aupro", "AUPRO reg"), ("raw", "image_auroc", "img AUROC raw"),
    ("raw", "pixel_auroc", "px AUROC raw"), ("baseline_registered", "image_auroc", "base img reg"),
    ("baseline_registered", "pixel_auroc", "base px reg"),
]


def quality_cells(r: dict) -> list[str]:
    return [str(r.get(group, {}).get(key, "-")) for group, key, _ in QUALITY_COLUMNS]
