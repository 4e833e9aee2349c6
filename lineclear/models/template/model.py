"""Golden template / variation model for fixed cameras, as a pure module.

Fitted on registered anomaly-free images (N,3,H,W) in [0,1]:

* ``lo``/``hi`` (3,H,W): the envelope of values seen near each pixel — the minimum (maximum) over the
  training images of each image's local minimum (maximum) over a (2r+1)² neighbourhood. Taking the
  neighbourhood makes the envelope tolerant of sub-pixel and one-pixel misalignment: an edge that
  moves by less than r pixels stays inside it.
* ``scale`` (3,H,W): per-pixel standard deviation over the training images plus a floor, so flat,
  noise-free regions do not turn tiny differences into huge scores.

Score of a test pixel: ``max over channels of max(lo − x, x − hi, 0) / scale`` (how many standard
deviations it lies outside everything seen there), blurred with a Gaussian; image score = the maximum.
A training image scores exactly 0 on itself.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from lineclear.models.base import AnomalyModel, AnomalyOutput
from lineclear.models.patchcore.model import gaussian_blur
from lineclear.models.template.config import TemplateConfig

log = logging.getLogger("lineclear.template")


class TemplateModel(AnomalyModel):
    def __init__(self, cfg: TemplateConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, w = cfg.image_size
        self.register_buffer("lo", torch.zeros(3, h, w))
        self.register_buffer("hi", torch.ones(3, h, w))
        self.register_buffer("scale", torch.ones(3, h, w))
        self.register_buffer("n_fitted", torch.zeros((), dtype=torch.int64))
        self._warned_resize = False

    @property
    def fitted(self) -> bool:
        return int(self.n_fitted) > 0

    @torch.no_grad()
    def fit(self, images: torch.Tensor, valid: torch.Tensor | None = None) -> dict:
        """images (N,3,H,W) in [0,1] at image_size; valid (N,1,H,W) {0,1} or None (all valid)."""
        x = images.to(self.lo.device).float()
        n = x.shape[0]
        v = torch.ones_like(x[:, :1]) if valid is None else (valid.to(x.device).float() > 0.5).float()
        r = self.cfg.radius
        k = 2 * r + 1
        # local envelope per image; invalid pixels must not widen it
        big = torch.finfo(torch.float32).max
        lo_img = -F.max_pool2d(-torch.where(v > 0, x, big), k, 1, r) if r else torch.where(v > 0, x, big)
        hi_img = F.max_pool2d(torch.where(v > 0, x, -big), k, 1, r) if r else torch.where(v > 0, x, -big)
        lo, hi = lo_img.amin(0), hi_img.amax(0)
        seen = v.sum(0)  # (1,H,W) valid training images per pixel
        unseen = (seen == 0).expand(3, -1, -1)
        lo = torch.where(unseen | (lo > 1e30), torch.zeros_like(lo), lo)  # nothing seen: accept everything
        hi = torch.where(unseen | (hi < -1e30), torch.ones_like(hi), hi)
        cnt = seen.clamp_min(1)
        mean = (x * v).sum(0) / cnt
        var = (((x - mean) ** 2) * v).sum(0) / cnt
        self.lo, self.hi = lo.contiguous(), hi.contiguous()
        self.scale = (var.sqrt() + self.cfg.std_floor).contiguous()
        self.n_fitted = torch.tensor(n, device=self.lo.device)
        return {"images": n, "unseen_pixels": int((seen == 0).sum()), "median_std": float(var.sqrt().median())}

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> AnomalyOutput:
        if not self.fitted:
            raise RuntimeError("TemplateModel is not fitted")
        h, w = self.cfg.image_size
        in_size = tuple(images.shape[-2:])
        x = images.float()
        if in_size != (h, w):
            if not self._warned_resize:
                log.warning("template: images of %dx%d resized to the fitted %dx%d", in_size[1], in_size[0], w, h)
                self._warned_resize = True
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            if mask is not None:
                mask = F.interpolate(mask.float(), size=(h, w), mode="nearest")
        with torch.autocast(x.device.type, enabled=False):
            excess = torch.maximum(self.lo - x, x - self.hi).clamp_min(0) / self.scale
            amap = excess.amax(1)  # (B,H,W): the worst channel
            if mask is not None:
                # per-pixel score: a hidden pixel cannot influence a visible one except through the
                # blur, so zero it before blurring (and after, for the contract)
                m = (mask[:, 0] > 0.5).float()
                amap = amap * m
            amap = gaussian_blur(amap, self.cfg.blur_sigma)
            if mask is not None:
                amap = amap * m
            if in_size != (h, w):
                amap = F.interpolate(amap[:, None], size=in_size, mode="bilinear", align_corners=False)[:, 0]
        return AnomalyOutput(anomaly_map=amap, score=self.image_score(amap))
