"""The DDAD anomaly map (thesis eqs. 15–16), computed image by image.

    D_f = Σ_j (1 − cos(φ̃_j(x), φ̃_j(x̂)))              φ̃ = 3×3 patch mean of layer j, upsampled
    D_p = mean_c |x − x̂|                              pixel L1 distance
    D   = D_f + v · (max D_f / max D_p) · D_p         maxima PER IMAGE (the reference: per batch)
    map = GaussianBlur_σ(D);   score = max(map)

With an inspection mask (pre-masking, thesis 3.4) input and reconstruction are masked
before both distances, the maxima of the normalisation are taken inside the mask, and
the map is zero outside it: the masked-out region cannot change the map.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

_EPS = 1e-8


def patch_mean(feat: torch.Tensor, patch: int = 3) -> torch.Tensor:
    """(B,C,h,w) → (B,C,h,w): mean over a ``patch``×``patch`` neighbourhood, zero padded.

    Zero padding with the zeros counted matches PatchCore's ``Unfold`` + mean that DDAD uses.
    """
    return F.avg_pool2d(feat, patch, stride=1, padding=patch // 2, count_include_pad=True)


def feature_distance(
    feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], size: tuple[int, int]
) -> torch.Tensor:
    """Σ_j (1 − cos) over layers: lists of (B,C_j,h_j,w_j) → (B,1,H,W) at ``size`` (H,W)."""
    out = None
    for fa, fb in zip(feats_a, feats_b, strict=True):
        d = 1 - F.cosine_similarity(patch_mean(fa.float()), patch_mean(fb.float()), dim=1, eps=_EPS)
        d = F.interpolate(d[:, None], size=size, mode="bilinear", align_corners=True)
        out = d if out is None else out + d
    assert out is not None, "no feature layers"
    return out


def pixel_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) × 2 → (B,1,H,W) mean absolute difference over channels."""
    return (a.float() - b.float()).abs().mean(dim=1, keepdim=True)


def combine(d_f: torch.Tensor, d_p: torch.Tensor, v: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 16 with per-image maxima: (B,1,H,W) × 2 → (B,1,H,W).

    ``mask`` (B,1,H,W) in {0,1}: the maxima are taken inside it (pre-masking).
    """
    if mask is not None:
        d_f, d_p = d_f * mask, d_p * mask
    mf = d_f.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    mp = d_p.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    return d_f + v * (mf / mp.clamp_min(_EPS)) * d_p


def gaussian_kernel1d(sigma: float, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian with DDAD's size 2·int(4σ + 0.5) + 1."""
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B,1,H,W) with reflect borders (replicate if the map is tiny)."""
    if sigma <= 0:
        return m
    k = gaussian_kernel1d(sigma, m.device)
    r = k.numel() // 2
    h, w = m.shape[-2:]
    mode = "reflect" if r < h and r < w else "replicate"
    m = F.pad(m, (r, r, r, r), mode=mode)
    m = F.conv2d(m, k.view(1, 1, 1, -1))
    return F.conv2d(m, k.view(1, 1, -1, 1))


def anomaly_map(
    images: torch.Tensor,
    recon: torch.Tensor,
    feature_extractor: torch.nn.Module,
    v: float,
    sigma: float = 4.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """images, recon (B,3,H,W) in [0,1]; mask (B,1,H,W) {0,1} or None → map (B,H,W) float32.

    ``feature_extractor(x)`` returns the list of feature maps of the layers in J.
    Every image's map depends on that image alone.
    """
    if mask is not None:
        mask = mask.to(images.dtype)
        images, recon = images * mask, recon * mask
    size = tuple(images.shape[-2:])
    both = feature_extractor(torch.cat([images, recon]))
    b = images.shape[0]
    d_f = feature_distance([f[:b] for f in both], [f[b:] for f in both], size)
    d_p = pixel_distance(images, recon)
    m = gaussian_blur(combine(d_f, d_p, v, mask), sigma)
    if mask is not None:
        m = m * mask.float()
    return m[:, 0]


__all__ = [
    "anomaly_map",
    "combine",
    "feature_distance",
    "gaussian_blur",
    "gaussian_kernel1d",
    "patch_mean",
    "pixel_distance",
]
