"""The ensemble as a pure module: its members' maps, each normalised by its own validation statistics, fused.

``members`` are fitted lineclear models (any of the registry), each at its own preset's image size: the
images are resized to it (after the pre-mask is applied, so hidden content cannot mix into visible
pixels) and its map is resized back to the ensemble's.
Buffers (so a checkpoint is a plain state dict): ``val_max`` and ``val_mean`` (M,), each member's maximum
and mean anomaly-map value over the counted pixels of the normal validation images, and ``choice``, the
index into :data:`~lineclear.models.ensemble.config.CANDIDATES` of the fusion in use.

Map = FUSE over members of ``map_m / stat_m`` (stat = ``val_max`` or ``val_mean``); 1.0 is then "as high
as the member went on normal validation images" (max) or "its usual level" (mean), so members of
different scales weigh alike. Image score = the fused map's maximum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lineclear.models.base import AnomalyModel, AnomalyOutput
from lineclear.models.ensemble.config import CANDIDATES, EnsembleConfig


def resize_for(images: torch.Tensor, mask: torch.Tensor | None, size: tuple[int, int]):
    """Images (B,3,H,W) and pre-mask (B,1,H,W) or None at ``size``: the mask applied first, so the resizing
    mixes no hidden pixel into a visible one; the mask resized with nearest neighbour."""
    if mask is not None:
        images = images * (mask > 0.5).to(images.dtype)
        mask = F.interpolate(mask.float(), size=size, mode="nearest")
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True), mask


class EnsembleModel(AnomalyModel):
    def __init__(self, cfg: EnsembleConfig, members: dict[str, AnomalyModel] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.names = cfg.member_names
        self.members = nn.ModuleDict(members or {})
        n = len(self.names)
        self.register_buffer("val_max", torch.ones(n))
        self.register_buffer("val_mean", torch.ones(n))
        self.register_buffer("choice", torch.zeros((), dtype=torch.int64))

    @property
    def fusion(self) -> str:
        return CANDIDATES[int(self.choice)]

    def member_size(self, name: str) -> tuple[int, int]:
        return tuple(int(x) for x in self.cfg.member_configs[name]["image_size"])  # type: ignore[return-value]

    def member_maps(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
        """(M,B,H,W): each member's map of ``images`` (B,3,H,W), at the images' size; ``valid`` (B,1,H,W)
        reaches the members that use the registration validity (see lineclear.models.base)."""
        out = []
        for name in self.names:
            x, m = images, mask
            size = self.member_size(name)
            if tuple(x.shape[-2:]) != size:
                x, m = resize_for(x, m, size)
            member = self.members[name]
            kw = {}
            if valid is not None and getattr(member, "uses_validity", False):
                kw["valid"] = valid if tuple(valid.shape[-2:]) == size else F.interpolate(valid.float(), size=size, mode="nearest")
            amap = member(x, m, **kw).anomaly_map.float()
            if amap.shape[-2:] != images.shape[-2:]:
                amap = F.interpolate(amap[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            out.append(amap)
        return torch.stack(out)

    def fuse(self, maps: torch.Tensor, fusion: str | None = None) -> torch.Tensor:
        """(M,B,H,W) member maps → (B,H,W) with ``fusion`` (default: the one chosen in training)."""
        norm, how = (fusion or self.fusion).split("-")
        stat = (self.val_max if norm == "max" else self.val_mean).to(maps.device).clamp_min(1e-12)
        z = maps / stat.view(-1, 1, 1, 1)
        return z.mean(0) if how == "mean" else z.amax(0)

    uses_validity = True  # passed on to the members that use it

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> AnomalyOutput:
        # each member honours the pre-mask its own way; the fused map is zeroed outside it for the contract
        amap = self.fuse(self.member_maps(images, mask, valid))
        if mask is not None:
            amap = amap * (mask[:, 0] > 0.5).float()
        return AnomalyOutput(anomaly_map=amap, score=self.image_score(amap))
