"""Fitting PatchCore: extract every training patch, drop invalid ones, subsample, store the bank."""

from __future__ import annotations

import time

import torch

from lineclear.errors import LineclearError
from lineclear.models.patchcore.model import PatchCoreModel, valid_cells
from lineclear.progress import Progress, ensure


def greedy_coreset(x: torch.Tensor, n: int, proj_dim: int = 128, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` rows of ``x`` (M,C) chosen by greedy k-center selection (the paper's coreset).

    As in the paper, distances are measured after a seeded Gaussian random projection to
    ``proj_dim`` dimensions (Johnson–Lindenstrauss) to keep selection cheap; the first centre is
    a seeded random row.
    """
    m = x.shape[0]
    if n >= m:
        return torch.arange(m, device=x.device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = x.float()
    if z.shape[1] > proj_dim:
        proj = torch.randn(z.shape[1], proj_dim, generator=g) / proj_dim**0.5
        z = z @ proj.to(z.device)
    first = int(torch.randint(m, (1,), generator=g))
    chosen = torch.empty(n, dtype=torch.long, device=x.device)
    chosen[0] = first
    mind = ((z - z[first]) ** 2).sum(1)
    for i in range(1, n):
        nxt = int(torch.argmax(mind))
        chosen[i] = nxt
        mind = torch.minimum(mind, ((z - z[nxt]) ** 2).sum(1))
    return chosen


@torch.no_grad()
def fit(
    model: PatchCoreModel,
    images: torch.Tensor,
    valid: torch.Tensor | None = None,
    progress: Progress | None = None,
) -> dict:
    """Fill ``model``'s memory bank from ``images`` (N,3,H,W) in [0,1] at ``cfg.image_size``.

    ``valid`` (N,1,H,W) {0,1}: registration validity; patches touching invalid pixels are left out.
    Returns a summary dict (patches, kept, grid, seconds).
    """
    cfg = model.cfg
    n = images.shape[0]
    if n < 2:
        raise LineclearError(f"patchcore needs at least 2 training images, got {n} (train/good minus the images "
                             "held out for validation): add anomaly-free images to train/good, or give the view a val/good")
    if tuple(images.shape[-2:]) != tuple(cfg.image_size):
        raise LineclearError(f"training images are {images.shape[-1]}x{images.shape[-2]}, expected image_size "
                             f"{cfg.image_size[1]}x{cfg.image_size[0]}")
    t0 = time.perf_counter()
    dev = next(model.backbone.parameters()).device
    model.eval()
    feats = []
    with ensure(progress).task("patchcore: features", n) as task:
        for i in range(0, n, cfg.batch_size):
            x = images[i : i + cfg.batch_size].to(dev).float()
            f = model.embed(x)
            if i == 0:
                c, hg, wg = f.shape[1:]
                kept = n * hg * wg * cfg.coreset_ratio
                mb = kept * c * 4 / 2**20
                if mb > cfg.max_bank_mb:
                    raise LineclearError(
                        f"patchcore memory bank would need {mb:.0f} MB ({int(kept)} patches x {c} dims; limit "
                        f"max_bank_mb={cfg.max_bank_mb:g}): subsample with --coreset-ratio "
                        f"{max(0.01, round(cfg.coreset_ratio * cfg.max_bank_mb / mb / 2, 2)):g}, or use fewer or smaller images"
                    )
            feats.append(f.permute(0, 2, 3, 1).cpu())
            task.advance(x.shape[0])
    allf = torch.cat(feats)  # (N,Hg,Wg,C)
    c = allf.shape[-1]
    rows = torch.arange(hg).view(1, hg, 1).expand(n, hg, wg)
    cols = torch.arange(wg).view(1, 1, wg).expand(n, hg, wg)
    keep = torch.ones(n, hg, wg, dtype=torch.bool)
    if valid is not None:
        keep = valid_cells(valid.cpu(), (hg, wg), cfg.neighbourhood)
        if not keep.any():
            raise LineclearError("patchcore: no training patch lies inside the registration validity masks")
    bank = allf[keep]
    pos = torch.stack([rows[keep], cols[keep]], 1)
    total = bank.shape[0]
    if cfg.coreset_ratio < 1:
        target = max(1, int(round(total * cfg.coreset_ratio)))
        try:
            with ensure(progress).task("patchcore: coreset", None):
                idx = greedy_coreset(bank.to(dev), target, cfg.coreset_dim, cfg.seed).cpu()
        except (RuntimeError, MemoryError) as exc:
            if "memory" not in str(exc).lower() and not isinstance(exc, MemoryError):
                raise
            raise LineclearError(f"patchcore: out of memory selecting the coreset of {total} patches: "
                                 "use a smaller --coreset-ratio or fewer/smaller images") from None
        bank, pos = bank[idx], pos[idx]
    # the per-pixel mean training image fills pre-masked pixels (see model.forward)
    mean_image = images.float().mean(0)
    model.set_bank(bank.to(dev), pos.to(dev), (hg, wg), mean_image.to(dev))
    return {"images": n, "grid": [hg, wg], "dims": c, "patches": total, "kept": int(bank.shape[0]),
            "invalid_patches": int((~keep).sum()), "seconds": round(time.perf_counter() - t0, 3)}


def train(model: PatchCoreModel, session) -> None:
    """``ModelEntry.train``: one pass over the session's images (no epochs, no optimiser)."""
    info = fit(model, session.images, session.valid, session.progress)
    session.log(event="fit", **info)
