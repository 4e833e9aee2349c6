"""DdadModel: U-Net + noise schedule + (domain-adapted) feature extractor, as one module.

The state dict holds the U-Net and the feature extractor (``unet.*``,
``feature_extractor.*``), so a checkpoint is self-contained: loading it needs no
backbone weights file.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from lineclear.models.base import AnomalyModel, AnomalyOutput
from lineclear.models.ddad.anomaly import anomaly_map
from lineclear.models.ddad.config import DdadConfig
from lineclear.models.ddad.diffusion import NoiseSchedule, conditioned_reconstruction
from lineclear.models.ddad.unet import UNet


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CPU/CUDA when asked for, else a no-op context."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def build_unet(cfg: DdadConfig) -> UNet:
    return UNet(
        in_channels=3,
        channels=tuple(cfg.unet_channels),
        res_blocks=cfg.unet_res_blocks,
        attention_res=cfg.unet_attention_res,
        heads=cfg.unet_heads,
        dropout=cfg.dropout,
        image_size=tuple(cfg.image_size),
    )


class DdadModel(AnomalyModel):
    """Conditioned-diffusion reconstruction + feature/pixel distance anomaly map.

    ``forward(images (B,3,H,W) [0,1], mask (B,1,H,W) {0,1} | None)`` →
    :class:`AnomalyOutput` with map (B,H,W) and score (B,) = max of the map.
    Scoring is deterministic and per image: the DDIM noise is drawn from a generator
    seeded with ``config.seed`` at every call, one (1,3,H,W) draw shared by all images
    of the batch, so an image scores the same alone or among others.
    """

    def __init__(self, cfg: DdadConfig, feature_extractor: nn.Module):
        super().__init__()
        self.config = cfg
        self.unet = build_unet(cfg)
        self.feature_extractor = feature_extractor
        self.schedule = NoiseSchedule(cfg.T, cfg.beta_start, cfg.beta_end)

    def _fixed_noise(self, like: torch.Tensor):
        dev = like.device
        g = torch.Generator(device=dev).manual_seed(int(self.config.seed))
        shape = (1, *like.shape[1:])

        def draw() -> torch.Tensor:
            return torch.randn(shape, generator=g, device=dev, dtype=like.dtype).expand_as(like)

        return draw

    def reconstruct(
        self, images: torch.Tensor, target: torch.Tensor | None = None, w: float | None = None,
        noise=None,
    ) -> torch.Tensor:
        """(B,3,H,W) [0,1] → reconstruction (B,3,H,W) [0,1] conditioned on ``target`` (default: itself).

        Without ``noise`` the per-image-deterministic noise is used.
        """
        cfg = self.config
        x = images * 2 - 1
        y = x if target is None else target * 2 - 1
        if noise is None:
            noise = self._fixed_noise(x)
        with autocast(x.device, cfg.bf16):
            out = conditioned_reconstruction(
                self.unet, self.schedule, x, y, cfg.t_prime, cfg.skip,
                cfg.w if w is None else w, cfg.eta, noise,
            )
        return ((out.float() + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def reconstruction(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,3,H,W) [0,1] → the conditioned reconstruction the map compares them with (report panels)."""
        images = images.float()
        if mask is not None:
            images = images * mask.to(images.device, images.dtype)
        return self.reconstruct(images)

    def feature_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) → what the feature extractor sees: resized by ``feature_scale``."""
        s = float(self.config.feature_scale)
        if s == 1.0:
            return images
        h, w = images.shape[-2:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) [0,1] → feature maps of the layers in ``feature_layers`` (float32)."""
        images = self.feature_input(images)
        with autocast(images.device, self.config.bf16):
            feats = self.feature_extractor(images)
        return [f.float() for f in feats]

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> AnomalyOutput:
        cfg = self.config
        images = images.float()
        if mask is not None:
            mask = mask.to(images.device, images.dtype)
            # pre-masking: the masked-out region is blanked before the reconstruction too,
            # so its content cannot reach the map through the U-Net's receptive field
            images = images * mask
        with torch.no_grad():
            recon = self.reconstruct(images)
            amap = anomaly_map(images, recon, self.features, cfg.v, cfg.blur_sigma, mask)
        return AnomalyOutput(anomaly_map=amap, score=self.image_score(amap))
