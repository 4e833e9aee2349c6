"""DRAEM training loss: L2 + SSIM (reconstruction) + focal loss (segmentation).

``L = l2(I, I_r) + λ · L_SSIM(I, I_r) + L_focal(M_o, M_a)`` (thesis eqs. 2–5; λ = 1 as
in the original code). ``I`` is the *anomaly-free* image, ``I_r`` the reconstruction of
its augmented copy, ``M_a`` the synthetic anomaly mask and ``M_o`` the predicted map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bfloat16 (autocast) outputs in float32; float32 and float64 as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian window (size, size)."""
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Local SSIM (thesis eq. 1) per pixel and channel: (B,C,H,W) × 2 → (B,C,H,W).

    Gaussian-weighted statistics over a ``window × window`` neighbourhood, zero-padded
    at the borders like the original DRAEM code; ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²``.
    """
    c = a.shape[1]
    win = gaussian_window(window, sigma, a.device, a.dtype).expand(c, 1, window, window).contiguous()
    pad = window // 2

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, win, padding=pad, groups=c)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim_loss(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Thesis eq. 2: mean over pixels of ``1 − SSIM``. Scalar."""
    return 1.0 - ssim_map(a, b, window).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None) -> torch.Tensor:
    """Focal loss (thesis eq. 4) averaged over pixels. Scalar.

    logits (B,2,H,W) (class 1 = anomalous), target (B,1,H,W) or (B,H,W) in {0,1}.
    ``−α_t (1 − p_t)^γ ln p_t`` with ``p_t`` the softmax probability of the true class;
    ``alpha`` (weight of the anomalous class, normal gets ``1 − alpha``) is off by default
    as in the original code.
    """
    if target.dim() == 4:
        target = target[:, 0]
    t = (target > 0.5).long()
    logp = F.log_softmax(_at_least_float32(logits), dim=1)
    logp_t = logp.gather(1, t[:, None])[:, 0]
    p_t = logp_t.exp()
    loss = -((1.0 - p_t) ** gamma) * logp_t
    if alpha is not None:
        loss = loss * torch.where(t == 1, torch.full_like(p_t, alpha), torch.full_like(p_t, 1.0 - alpha))
    return loss.mean()


def draem_loss(
    image: torch.Tensor,
    reconstruction: torch.Tensor,
    logits: torch.Tensor,
    anomaly_mask: torch.Tensor,
    ssim_window: int = 11,
    ssim_weight: float = 1.0,
    focal_gamma: float = 2.0,
) -> dict[str, torch.Tensor]:
    """All terms: ``{"loss", "l2", "ssim", "focal"}`` (scalars; ``loss`` is differentiable)."""
    rec = _at_least_float32(reconstruction)
    l2 = F.mse_loss(rec, image)
    ss = ssim_loss(rec, image, ssim_window)
    fo = focal_loss(logits, anomaly_mask, focal_gamma)
    return {"loss": l2 + ssim_weight * ss + fo, "l2": l2, "ssim": ss, "focal": fo}
