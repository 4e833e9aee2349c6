"""Training an ensemble: fit each member, measure it on the normal validation images, choose the fusion.

The fusion (:data:`~lineclear.models.ensemble.config.CANDIDATES`) is chosen on validation data only, so
the choice is one a line can trust: synthetic anomalies (:func:`synthetic_anomalies`) are pasted into the
normal validation images, and the candidate whose fused maps tell them apart best wins — first by image
AUROC (normal validation images against their pasted copies), then by pixel AUROC, ties in the order of
``CANDIDATES``. The test split is never looked at.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lineclear import metrics as M
from lineclear.errors import LineclearError
from lineclear.models.base import resolve_config
from lineclear.models.ensemble.config import CANDIDATES
from lineclear.models.ensemble.model import EnsembleModel

PIXEL_SAMPLE = 200_000  # pixels per class at most in the pixel AUROC of the fusion choice


def synthetic_anomalies(images: torch.Tensor, per_image: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of ``images`` (N,3,H,W) in [0,1] with one pasted rectangle each: ``(images (N*k,3,H,W), gt (N*k,H,W))``.

    Rectangles of 6–18 % of each side; alternately a patch cut from elsewhere in the image (a misplaced
    part) and a bright, lightly textured one (a leaflet). Deterministic for a seed.
    """
    n, _, h, w = images.shape
    out, gts = [], []
    for i in range(n):
        for j in range(per_image):
            rng = np.random.default_rng([seed, i, j])
            x = images[i].clone()
            ph, pw = (max(2, int(s * rng.uniform(0.06, 0.18))) for s in (h, w))
            y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            if j % 2 == 0:
                ys, xs = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
                x[:, y0:y0 + ph, x0:x0 + pw] = images[i][:, ys:ys + ph, xs:xs + pw].flip(-1)
            else:
                tone = torch.tensor(rng.uniform(0.8, 1.0, 3), dtype=x.dtype).view(3, 1, 1)
                tex = torch.from_numpy(rng.normal(0, 0.03, (1, ph, pw)).astype(np.float32))
                x[:, y0:y0 + ph, x0:x0 + pw] = (tone + tex).clamp(0, 1)
            g = torch.zeros(h, w, dtype=torch.bool)
            g[y0:y0 + ph, x0:x0 + pw] = True
            out.append(x)
            gts.append(g)
    return torch.stack(out), torch.stack(gts)


@torch.inference_mode()
def _maps(model: EnsembleModel, images: torch.Tensor, device: torch.device, batch: int) -> torch.Tensor:
    """(M,N,H,W) member maps on the CPU."""
    parts = [model.member_maps(images[i:i + batch].to(device)).cpu() for i in range(0, len(images), batch)]
    return torch.cat(parts, dim=1)


def choose_fusion(model: EnsembleModel, normal: torch.Tensor, normal_valid: torch.Tensor,
                  synth: torch.Tensor, gt: torch.Tensor, seed: int) -> tuple[str, dict]:
    """The candidate that best separates ``synth`` (M,K,H,W member maps) from ``normal`` (M,N,H,W)."""
    rng = np.random.default_rng(seed)
    figures = {}
    for cand in CANDIDATES:
        fn, fs = model.fuse(normal, cand).numpy(), model.fuse(synth, cand).numpy()
        s_norm = np.array([m[v].max() if v.any() else 0.0 for m, v in zip(fn, normal_valid.numpy())])
        scores = np.r_[s_norm, fs.reshape(len(fs), -1).max(1)]
        labels = np.r_[np.zeros(len(fn), bool), np.ones(len(fs), bool)]
        g = gt.numpy()
        pos = fs[g]
        neg = np.r_[fn[normal_valid.numpy()], fs[~g]]
        pos = rng.choice(pos, min(pos.size, PIXEL_SAMPLE), replace=False) if pos.size > PIXEL_SAMPLE else pos
        neg = rng.choice(neg, min(neg.size, PIXEL_SAMPLE), replace=False) if neg.size > PIXEL_SAMPLE else neg
        figures[cand] = {"image_auroc": M.roc_auc(scores, labels),
                         "pixel_auroc": M.roc_auc(np.r_[pos, neg], np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)])}
    best = max(CANDIDATES, key=lambda c: (figures[c]["image_auroc"] or 0.0, figures[c]["pixel_auroc"] or 0.0,
                                          -CANDIDATES.index(c)))
    return best, figures


def train(model: EnsembleModel, session) -> None:
    """``ModelEntry.train``: each member with its own training function (at its preset's image size), then
    the validation statistics and the fusion."""
    from lineclear.models import get_model
    from lineclear.training import TrainSession

    cfg = session.config
    preset = str(session.extra_meta.get("preset") or "fast")
    if session.val_images is None or len(session.val_images) == 0:
        raise LineclearError("ensemble: no validation images to normalise its members on (hold some of train/good "
                             "out with --val-fraction, or give the view a val/good folder)")
    for name in cfg.member_names:
        entry = get_model(name)
        mcfg = resolve_config(entry, preset if preset in entry.presets else "fast", {"seed": cfg.seed})
        net = entry.build(mcfg, True).to(session.device)
        size = tuple(int(x) for x in mcfg.image_size)
        images, valid = session.images, session.valid
        if tuple(images.shape[-2:]) != size:  # each member at its own preset's size
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
            valid = F.interpolate(valid, size=size, mode="nearest") if valid is not None else None
        sub = TrainSession(images=images, config=mcfg, device=session.device, run_dir=None,
                           valid=valid, image_ids=session.image_ids, model_name=name,
                           progress=session.progress, world=session.world)
        entry.train(net, sub)
        model.members[name] = net.eval()
        cfg.member_configs[name] = mcfg.to_dict()
    model.to(session.device)
    batch = int(cfg.batch_size)
    val = session.val_images
    val_valid = (session.val_valid[:, 0] > 0.5) if session.val_valid is not None else torch.ones(
        val.shape[0], *val.shape[-2:], dtype=torch.bool)
    normal = _maps(model, val, session.device, batch)
    vals = [normal[k][val_valid] for k in range(len(cfg.member_names))]
    model.val_max.copy_(torch.stack([v.max() for v in vals]).clamp_min(1e-12))
    model.val_mean.copy_(torch.stack([v.mean() for v in vals]).clamp_min(1e-12))
    if cfg.fusion == "auto":
        synth, gt = synthetic_anomalies(val, cfg.synthetic_per_image, cfg.seed)
        chosen, figures = choose_fusion(model, normal, val_valid, _maps(model, synth, session.device, batch), gt,
                                        cfg.seed)
    else:
        chosen, figures = cfg.fusion, {}
    model.choice.fill_(CANDIDATES.index(chosen))
    info = {"members": cfg.member_names, "fusion": chosen, "chosen_on": "validation images with synthetic anomalies"
            if cfg.fusion == "auto" else "--fusion", "candidates": figures, "val_images": int(val.shape[0]),
            "val_max": model.val_max.tolist(), "val_mean": model.val_mean.tolist()}
    session.log(event="fusion", **info)
    session.extra_meta["ensemble"] = info  # into model.pt's metadata
