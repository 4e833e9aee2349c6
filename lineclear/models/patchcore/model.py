"""PatchCore (Roth et al., CVPR 2022) as a pure module, with position-aware search for fixed cameras.

``forward(images (B,3,H,W) in [0,1], mask (B,1,H,W) | None)`` → anomaly map (B,H,W) in feature-distance
units and image score (B,) = the map's maximum. The memory bank lives in buffers (``bank`` (M,C),
``bank_pos`` (M,2) grid row/column of each patch, ``mean_image`` (3,H,W)), so a checkpoint is a plain
state dict; the bank's size varies with the data and is taken from the checkpoint on load.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from lineclear.models.backbones import FeatureExtractor
from lineclear.models.base import AnomalyModel, AnomalyOutput
from lineclear.models.patchcore.config import PatchCoreConfig, radius_of
from lineclear.models.patchcore.search import dense_bank, global_nn, positional_nn

log = logging.getLogger("lineclear.patchcore")

_BANK_BUFFERS = ("bank", "bank_pos", "mean_image", "grid")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B,H,W), kernel ±4σ, reflect padding."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(4 * sigma)))
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    k = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    y = x[:, None]
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return y[:, 0]


def valid_cells(valid: torch.Tensor, grid: tuple[int, int], neighbourhood: int) -> torch.Tensor:
    """(N,1,H,W) registration validity → (N,Hg,Wg) bool: cells whose whole support is valid.

    A cell is dropped when any pixel it covers, or covers through the p x p neighbourhood
    average, lies outside the registered frame: those features describe the black fill.
    """
    inv = F.adaptive_max_pool2d(1.0 - (valid.float() > 0.5).float(), grid)
    p = neighbourhood
    if p > 1:
        inv = F.max_pool2d(inv, p, stride=1, padding=p // 2)
    return inv[:, 0] < 0.5


class PatchCoreModel(AnomalyModel):
    uses_validity = True  # forward(..., valid=): the seam never reaches the map (see map_from_features)

    def __init__(self, cfg: PatchCoreConfig, extractor: FeatureExtractor) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = extractor
        h, w = cfg.image_size
        self.register_buffer("bank", torch.zeros(0, 1))
        self.register_buffer("bank_pos", torch.zeros(0, 2, dtype=torch.int32))
        self.register_buffer("mean_image", torch.full((3, h, w), 0.5))
        self.register_buffer("grid", torch.zeros(2, dtype=torch.int64))  # (Hg, Wg); 0 = not fitted
        self.radius = radius_of(cfg)
        self.block_mb = 64.0
        self._dense: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warned_resize = False

    # -- state -------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return int(self.grid[0]) > 0 and self.bank.shape[0] > 0

    def set_bank(self, bank: torch.Tensor, pos: torch.Tensor, grid: tuple[int, int], mean_image: torch.Tensor) -> None:
        self.bank = bank.detach().float().contiguous()
        self.bank_pos = pos.detach().to(torch.int32).contiguous()
        self.grid = torch.tensor(grid, dtype=torch.int64, device=self.bank.device)
        self.mean_image = mean_image.detach().float().to(self.bank.device)
        self._dense = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # The bank's size is the data's: take each buffer's shape from the checkpoint before copying.
        for name in _BANK_BUFFERS:
            t = state_dict.get(prefix + name)
            if isinstance(t, torch.Tensor) and t.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty(t.shape, dtype=t.dtype, device=getattr(self, name).device))
        self._dense = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def _apply(self, fn, recurse=True):  # .to(device) etc.: rebuild the search cache lazily
        self._dense = None
        return super()._apply(fn, recurse)

    # -- features ----------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] → patch features (B,C,Hg,Wg) on the grid of the first layer."""
        dev = images.device.type
        ctx = torch.autocast(dev, dtype=torch.bfloat16) if self.cfg.bf16 else nullcontext()
        h, w = int(images.shape[-2]), int(images.shape[-1])  # plain ints: constants in an exported graph
        pad = min(int(self.cfg.frame_pad), 16 * ((min(h, w) - 1) // 16))  # reflection needs pad < size
        if pad:  # the scene mirrored past the frame edge: edge patches see context, not the network's zeros
            images = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        with ctx:
            feats = self.backbone(images)
        p = self.cfg.neighbourhood
        d = self.cfg.feature_dim // len(feats) if self.cfg.feature_dim else 0
        out = []
        size = (int(feats[0].shape[-2]), int(feats[0].shape[-1]))
        for f in feats:
            f = f.float()
            if p > 1:  # the paper's local neighbourhood aggregation (3x3 average)
                f = F.avg_pool2d(f, p, stride=1, padding=p // 2, count_include_pad=False)
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            if d and f.shape[1] != d:  # the paper's adaptive average over channels, per layer
                b, c, hh, ww = f.shape
                f = F.adaptive_avg_pool1d(f.permute(0, 2, 3, 1).reshape(-1, 1, c), d).view(b, hh, ww, d).permute(0, 3, 1, 2)
            out.append(f)
        out = torch.cat(out, 1)
        if pad:  # back to the frame: the cells of the mirrored margin are cut off
            cy = pad * size[0] // (h + 2 * pad)  # pad / stride: pad is a multiple of every stride up to 16
            cx = pad * size[1] // (w + 2 * pad)
            out = out[..., cy:size[0] - cy, cx:size[1] - cx]
        return out

    # -- search ------------------------------------------------------------------------------
    def patch_distances(self, feats: torch.Tensor) -> torch.Tensor:
        """(B,C,Hg,Wg) → (B,Hg,Wg) Euclidean distance to the nearest allowed bank patch."""
        b, c, hg, wg = feats.shape
        t = feats.permute(0, 2, 3, 1)
        grid = (int(self.grid[0]), int(self.grid[1]))
        if self.radius is None or self.radius >= max(grid) - 1 and self.bank.shape[0] * c * 4 < 2**30:
            d2 = global_nn(t.reshape(-1, c), self.bank, self.block_mb).view(b, hg, wg)
        else:
            if self._dense is None:
                self._dense = dense_bank(self.bank, self.bank_pos, grid)
            d2 = positional_nn(t, *self._dense, self.radius)
            lost = ~torch.isfinite(d2)
            if lost.any():  # no bank patch within the radius (registration border, coreset): search all
                d2[lost] = global_nn(t[lost], self.bank, self.block_mb)
        return d2.sqrt()

    def map_from_features(self, feats: torch.Tensor, mask: torch.Tensor | None = None,
                          valid: torch.Tensor | None = None) -> torch.Tensor:
        """Patch features (B,C,Hg,Wg) → anomaly map (B,H,W) at image_size (float32).

        ``mask`` (B,1,H,W): patches with no visible pixel score 0 and the map is zeroed outside it.
        ``valid`` (B,1,H,W): registration validity. Patches whose support reaches outside the camera frame
        (:func:`valid_cells`, the rule that keeps them out of the bank) describe the seam, not the scene:
        they get no weight in the map, which is then a validity-weighted blur of the other patches'
        distances. A plain blur spreads the seam's high distances ±4σ into the inspected area, past any
        border margin (the photo benchmark: the maximum of most camera-shifted clear images lay on the
        first counted pixel beside the seam; README.md, "Detection on real cameras").
        """
        h, w = self.cfg.image_size
        hg, wg = feats.shape[-2:]
        if (hg, wg) != (int(self.grid[0]), int(self.grid[1])):
            raise RuntimeError(f"feature grid {hg}x{wg} differs from the fitted {int(self.grid[0])}x{int(self.grid[1])}")
        dist = self.patch_distances(feats)
        m = None
        if mask is not None:
            m = (mask > 0.5).float()
            seen = F.adaptive_max_pool2d(m, (hg, wg))[:, 0]
            dist = dist * seen
        up = lambda a: F.interpolate(a[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]  # noqa: E731
        # One cell further than the bank's rule: the stride-16 layer is interpolated onto this grid, so a
        # cell beside a dropped one still carries features of the seam (measured: a nudged clear image's
        # score 1.36x the unshifted one with the bank's rule, 1.29x with this; tests/test_models_registry.py)
        cells = None if valid is None else valid_cells(valid, (hg, wg), self.cfg.neighbourhood + 2)
        if cells is None or bool(cells.all()):
            amap = gaussian_blur(up(dist), self.cfg.blur_sigma)
        else:
            wgt = cells.float()
            num = gaussian_blur(up(dist * wgt), self.cfg.blur_sigma)
            den = gaussian_blur(up(wgt), self.cfg.blur_sigma)
            amap = torch.where(den > 1e-3, num / den.clamp_min(1e-3), torch.zeros_like(num))
        if m is not None:
            amap = amap * m[:, 0]
        return amap

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> AnomalyOutput:
        if not self.fitted:
            raise RuntimeError("PatchCoreModel has an empty memory bank: fit it first")
        h, w = self.cfg.image_size
        in_size = images.shape[-2:]
        if tuple(in_size) != (h, w):
            if not self._warned_resize:
                log.warning("patchcore: images of %dx%d resized to the fitted %dx%d", in_size[1], in_size[0], w, h)
                self._warned_resize = True
            images = F.interpolate(images.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            if mask is not None:
                mask = F.interpolate(mask.float(), size=(h, w), mode="nearest")
            if valid is not None:
                valid = F.interpolate(valid.float(), size=(h, w), mode="nearest")
        images = images.float()
        if mask is not None:
            # Pre-masking: hidden pixels show what the training images showed there on average, so
            # neither leftover product nor an edge artefact inside the hidden region reaches a feature.
            m = (mask > 0.5).float()
            images = images * m + self.mean_image[None] * (1 - m)
        with torch.autocast(images.device.type, enabled=False):
            amap = self.map_from_features(self.embed(images), mask, valid)
            if tuple(in_size) != (h, w):
                amap = F.interpolate(amap[:, None], size=tuple(in_size), mode="bilinear", align_corners=False)[:, 0]
        return AnomalyOutput(anomaly_map=amap, score=self.image_score(amap))
