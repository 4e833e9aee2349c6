"""Domain adaptation of the feature extractor (thesis L_DA, DDAD section 3.4).

For a pair (x, y) of training images, x is noised to T′ and denoised conditioned on y
(weight ``w_da``) into x̂₀ ≈ y. The extractor φ is tuned so that φ(x̂₀) matches φ(y),
while a frozen copy φ̄ of the pretrained network keeps it general::

    L_DA = Σ_j (1 − cos(φ_j(x̂₀), φ_j(y)))
         + λ_DL Σ_j (1 − cos(φ_j(y), φ̄_j(y)))
         + λ_DL Σ_j (1 − cos(φ_j(x̂₀), φ̄_j(x̂₀)))

Each cosine compares a whole flattened feature map per image (as the reference does);
the mean is over the batch.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _cos_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_j mean_batch (1 − cos(flatten a_j, flatten b_j))."""
    total = a[0].new_zeros((), dtype=torch.float32)
    for fa, fb in zip(a, b, strict=True):
        cos = F.cosine_similarity(fa.float().flatten(1), fb.float().flatten(1), dim=1)
        total = total + (1 - cos).mean()
    return total


def da_loss(
    fe: nn.Module, frozen: nn.Module, recon: torch.Tensor, target: torch.Tensor, lambda_dl: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_DA for recon x̂₀ and target y, both (B,3,H,W) in [0,1]. Returns (loss, parts)."""
    f_r = fe(recon)
    f_t = fe(target)
    with torch.no_grad():
        g_r = frozen(recon)
        g_t = frozen(target)
    sim = _cos_distance(f_r, f_t)
    dl_t = _cos_distance(f_t, g_t)
    dl_r = _cos_distance(f_r, g_r)
    loss = sim + lambda_dl * (dl_t + dl_r)
    parts = {"similarity": float(sim.detach()), "distill_target": float(dl_t.detach()), "distill_recon": float(dl_r.detach())}
    return loss, parts


def frozen_copy(fe: nn.Module) -> nn.Module:
    """An eval-mode, gradient-free copy of the extractor (φ̄, the pre-adaptation state)."""
    frozen = copy.deepcopy(fe).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def pair_indices(n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random pairing of n images: (inputs, targets) index tensors of length n.

    Every image is a target once; its input is a different image when n ≥ 2 (a shuffled
    cyclic shift, so no image is paired with itself). Unlike the reference, which splits
    batches of 16 in halves and drops incomplete ones, this uses every image at any n.
    """
    perm = torch.randperm(n, generator=generator)
    targets = perm
    inputs = torch.roll(perm, 1) if n > 1 else perm
    return inputs, targets


def adapt_feature_extractor(
    model: nn.Module,
    images: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    w_da: float,
    lambda_dl: float,
    task=None,
    log=None,
) -> list[float]:
    """Fine-tune ``model.feature_extractor`` in place with L_DA; returns the mean loss per epoch.

    ``model`` is a :class:`~lineclear.models.ddad.model.DdadModel` (its U-Net stays fixed);
    ``images`` (N,3,H,W) in [0,1] on the model's device. Batch-norm statistics are kept
    (the extractor stays in eval mode) because a handful of images would corrupt them.
    Randomness (pairing, noise) comes from torch's global RNG.
    """
    fe = model.feature_extractor
    frozen = frozen_copy(fe)
    fe.eval()
    params = [p for p in fe.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr)
    n = images.shape[0]
    losses: list[float] = []
    for epoch in range(epochs):
        inputs, targets = pair_indices(n)
        total, count = 0.0, 0
        for s in range(0, n, batch_size):
            x = images[inputs[s : s + batch_size].to(images.device)]
            y = images[targets[s : s + batch_size].to(images.device)]
            recon = model.reconstruct(x, target=y, w=w_da, noise=lambda x=x: torch.randn_like(x)).detach()
            with _autocast(images.device, getattr(model.config, "bf16", False)):
                loss, parts = da_loss(fe, frozen, model.feature_input(recon), model.feature_input(y), lambda_dl)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * x.shape[0]
            count += x.shape[0]
        losses.append(total / max(count, 1))
        if log is not None:
            log(phase="domain_adaptation", epoch=epoch + 1, loss=losses[-1], **parts)
        if task is not None:
            task.advance(1, loss=round(losses[-1], 5))
    for p in params:
        p.requires_grad_(False)
    return losses


def _autocast(device: torch.device, enabled: bool):
    from lineclear.models.ddad.model import autocast

    return autocast(device, enabled)
