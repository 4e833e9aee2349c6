"""The diffusion part of DDAD: noise schedule, DDPM training loss, conditioned denoising.

Timesteps are 0-based indices ``t ∈ {0, …, T−1}`` into the linear β schedule;
``ᾱ(t) = ∏_{s≤t} (1 − β_s)`` and ``ᾱ(−1) = 1`` (the clean image). Images inside this
module live in [−1, 1] as in DDPM and the reference code.

Conditioned reconstruction (thesis eqs. 12–14, DDAD Alg. 1): the target ``y`` is
noised to level T′ (``x = √ᾱ y + √(1−ᾱ) ε``), then for ``t`` = T′−1, T′−1−skip, … ≥ 0::

    ε_t   = ε_θ(x_t, t)
    y_t   = √ᾱ_t y + √(1−ᾱ_t) ε_t                       # the target at x_t's noise level
    ε̂     = ε_t − w √(1−ᾱ_t) (y_t − x_t)                 # eq. 13: pull towards the target
    x̂_0   = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t
    x_next = √ᾱ_next x̂_0 + c₁ z + c₂ ε̂                  # eq. 14 (DDIM with η)
    c₁ = η √((1−ᾱ_t/ᾱ_next)(1−ᾱ_next)/(1−ᾱ_t)),  c₂ = √(1−ᾱ_next−c₁²)

That is ⌈T′/skip⌉ network passes (10 for T′ = 250, skip = 25).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class NoiseSchedule(nn.Module):
    """Linear β schedule; holds ᾱ as a non-persistent buffer (rebuilt from the config)."""

    def __init__(self, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        self.T = int(T)
        betas = torch.linspace(beta_start, beta_end, self.T, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) long timesteps in [−1, T−1] → (B,1,1,1) ᾱ(t); ᾱ(−1) = 1."""
        t = t.long().to(self.alphas_cumprod.device)
        one = torch.ones_like(self.alphas_cumprod[:1])
        a = torch.cat([one, self.alphas_cumprod]).index_select(0, t + 1)
        return a.view(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε. x0 (B,C,H,W), t (B,)."""
        a = self.alpha_bar(t).to(x0.dtype)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def step_sequence(self, t_prime: int, skip: int) -> list[int]:
        """Timesteps visited by the reconstruction: T′−1, T′−1−skip, … (all ≥ 0)."""
        return list(range(int(t_prime) - 1, -1, -int(skip)))


def ddpm_loss(
    unet: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    weight: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDPM noise-prediction loss ‖ε − ε_θ(x_t, t)‖² summed over pixels, mean over the batch.

    x0: (B,C,H,W) in [−1,1]; weight: optional (B,1,H,W) in {0,1} (pixels that count,
    e.g. registration validity). The sum-over-pixels scale follows the reference code.
    ``t`` (B,) and ``noise`` (B,C,H,W) are drawn (from ``generator``) unless given.
    """
    b = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.T, (b,), device=x0.device, generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    xt = schedule.q_sample(x0, t, noise)
    err = (noise - unet(xt, t).float()).square()
    if weight is not None:
        err = err * weight
    return err.sum(dim=(1, 2, 3)).mean()


NoiseFn = Callable[[], torch.Tensor]


def conditioned_reconstruction(
    unet: nn.Module,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    y: torch.Tensor,
    t_prime: int,
    skip: int,
    w: float,
    eta: float = 1.0,
    noise: NoiseFn | None = None,
) -> torch.Tensor:
    """Denoise ``x`` noised to T′, steered towards the target ``y`` by ``w`` (eqs. 12–14).

    x, y: (B,C,H,W) in [−1,1] (``x is y`` when scoring; different images in domain
    adaptation). ``noise()`` returns a tensor broadcastable to x's shape (default
    ``torch.randn_like(x)``); the scorer passes a per-image-deterministic source.
    Returns x̂_0 (B,C,H,W) in [−1,1] (not clamped, as in the reference).
    No gradients flow (the U-Net is fixed during scoring and domain adaptation).
    """
    if not 0 < t_prime <= schedule.T:
        raise ValueError(f"t_prime must be in (0, {schedule.T}], got {t_prime}")
    if skip < 1:
        raise ValueError(f"skip must be ≥ 1, got {skip}")
    draw = noise if noise is not None else (lambda: torch.randn_like(x))
    b = x.shape[0]
    seq = schedule.step_sequence(t_prime, skip)
    with torch.no_grad():
        a0 = schedule.alpha_bar(torch.full((b,), seq[0], dtype=torch.long)).to(x.device, x.dtype)
        xt = a0.sqrt() * x + (1 - a0).sqrt() * draw()
        for i, t in enumerate(seq):
            t_next = seq[i + 1] if i + 1 < len(seq) else -1
            tt = torch.full((b,), t, dtype=torch.long, device=x.device)
            at = schedule.alpha_bar(tt).to(x.dtype)
            an = schedule.alpha_bar(torch.full_like(tt, t_next)).to(x.dtype)
            et = unet(xt, tt).to(x.dtype)
            yt = at.sqrt() * y + (1 - at).sqrt() * et
            et_hat = et - w * (1 - at).sqrt() * (yt - xt)
            x0_t = (xt - (1 - at).sqrt() * et_hat) / at.sqrt()
            c1 = eta * ((1 - at / an) * (1 - an) / (1 - at)).clamp_min(0).sqrt()
            c2 = ((1 - an) - c1**2).clamp_min(0).sqrt()
            xt = an.sqrt() * x0_t + c2 * et_hat
            if eta > 0 and t_next >= 0:
                xt = xt + c1 * draw()
    return xt
