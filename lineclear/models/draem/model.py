"""DRAEM networks (Zavrtanik et al., ICCV 2021) as pure ``nn.Module`` s.

* :class:`ReconstructiveSubNetwork` — encoder–decoder without skip connections
  (4 poolings, widths ``w, 2w, 4w, 8w, 8w``) that maps an image to its anomaly-free
  reconstruction. ``w = 128`` in the paper.
* :class:`DiscriminativeSubNetwork` — a U-Net (5 poolings, widths ``w .. 8w``, skip
  connections) that maps ``cat(image, reconstruction)`` (6 channels) to 2-class logits
  (normal, anomalous). ``w = 64`` in the paper.
* :class:`DraemModel` — both, plus the lineclear contract (anomaly map, image score,
  pre-masking). Image height and width must be multiples of 32 (five 2× poolings).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from lineclear.errors import UsageError
from lineclear.models.base import AnomalyModel, AnomalyOutput


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _double(cin: int, cmid: int, cout: int | None = None) -> nn.Sequential:
    """Two 3×3 conv–BN–ReLU layers: ``cin → cmid → cout`` (``cout`` defaults to ``cmid``)."""
    return nn.Sequential(*_conv_bn_relu(cin, cmid), *_conv_bn_relu(cmid, cmid if cout is None else cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    """2× bilinear upsampling, then conv–BN–ReLU (the paper's decoder step)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *_conv_bn_relu(cin, cout))


class ReconstructiveSubNetwork(nn.Module):
    """(B,3,H,W) → (B,3,H,W) reconstruction; H, W multiples of 16."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_width: int = 128) -> None:
        super().__init__()
        w = base_width
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w]
        self.encoder = nn.ModuleList()
        cin = in_channels
        for c in widths:
            self.encoder.append(_double(cin, c))
            cin = c
        # decoder: 8w → 4w → 2w → w → w, no skip connections (the bottleneck must not copy anomalies)
        self.ups = nn.ModuleList([_up(8 * w, 8 * w), _up(4 * w, 4 * w), _up(2 * w, 2 * w), _up(w, w)])
        self.decs = nn.ModuleList([_double(8 * w, 8 * w, 4 * w), _double(4 * w, 4 * w, 2 * w), _double(2 * w, 2 * w, w), _double(w, w)])
        self.out = nn.Conv2d(w, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.encoder):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
        for up, dec in zip(self.ups, self.decs):
            x = dec(up(x))
        return self.out(x)


class DiscriminativeSubNetwork(nn.Module):
    """(B,6,H,W) → (B,2,H,W) logits; H, W multiples of 32."""

    def __init__(self, in_channels: int = 6, out_channels: int = 2, base_width: int = 64) -> None:
        super().__init__()
        w = base_width
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w]
        self.encoder = nn.ModuleList()
        cin = in_channels
        for c in widths:
            self.encoder.append(_double(cin, c))
            cin = c
        # decoder from the deepest block back up; each step concatenates the encoder skip
        self.ups = nn.ModuleList([_up(8 * w, 8 * w), _up(8 * w, 4 * w), _up(4 * w, 2 * w), _up(2 * w, w), _up(w, w)])
        self.decs = nn.ModuleList(
            [_double(16 * w, 8 * w), _double(12 * w, 4 * w), _double(6 * w, 2 * w), _double(3 * w, w), _double(2 * w, w)]
        )
        self.out = nn.Conv2d(w, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.decs):
            x = dec(torch.cat((up(x), skips.pop()), dim=1))
        return self.out(x)


def effective_filter_size(score_filter: int, image_size: tuple[int, int], reference: int) -> int:
    """The s_f actually used: ``score_filter`` scaled by ``min(H, W) / reference``, made odd.

    ``reference = 0`` disables scaling. s_f = 21 was chosen by the DRAEM authors for
    256-pixel MVTec images; scaling keeps the filter the same fraction of the image.
    """
    if score_filter <= 1:
        return 1
    if reference <= 0:
        s = score_filter
    else:
        s = int(round(score_filter * min(image_size) / reference))
    s = max(1, s)
    return s if s % 2 == 1 else s + 1


def image_score_from_map(anomaly_map: torch.Tensor, size: int) -> torch.Tensor:
    """Thesis eq. 7: max of the map after an ``size × size`` mean filter. (B,H,W) → (B,).

    Zero padding counts in the mean at the borders (as in the original code), so a map
    that is zero outside an inspection mask is scored consistently.
    """
    m = anomaly_map.float().unsqueeze(1)
    if size > 1:
        m = F.avg_pool2d(m, size, stride=1, padding=size // 2, count_include_pad=True)
    return m.flatten(1).amax(dim=1)


class DraemModel(AnomalyModel):
    """DRAEM under the lineclear contract.

    ``forward(images (B,3,H,W) in [0,1], mask=None)`` → ``AnomalyOutput(anomaly_map (B,H,W),
    score (B,))`` with ``anomaly_map = softmax(logits)[:, 1]`` (probability of "anomalous").

    Pre-masking (``mask`` (B|1,1,H,W) or (H,W), 1 = inspect): the input is multiplied by the
    mask *before* the reconstructive network (so masked pixels cannot reach the map
    through its receptive field), the reconstruction is masked again, both go to the
    discriminative network, and the logits outside the mask are excluded: the map is 0
    there. The softmax in DRAEM is over the two classes *per pixel*, so excluding a
    pixel's logits is the same as zeroing its probability; what pre-masking changes
    relative to post-masking is the discriminative network's *input* (see README).

    In eval mode the forward runs channels-last and, if ``infer_bf16``, under CPU/CUDA
    bfloat16 autocast; the map is returned as float32.
    """

    def __init__(self, config) -> None:  # config: DraemConfig
        super().__init__()
        h, w = config.image_size
        if h % 32 or w % 32:
            raise UsageError(f"draem: image size {h}x{w} must be a multiple of 32 in both dimensions (e.g. 128x192, 256x256)")
        self.config = config
        self.reconstructive = ReconstructiveSubNetwork(3, 3, config.recon_width)
        self.discriminative = DiscriminativeSubNetwork(6, 2, config.disc_width)
        self.filter_size = effective_filter_size(config.score_filter, tuple(config.image_size), config.score_filter_ref)
        self.infer_bf16 = bool(config.infer_bf16)
        self.channels_last = bool(config.channels_last)

    def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        return image_score_from_map(anomaly_map, self.filter_size)

    def networks(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs for training and inspection: ``(reconstruction (B,3,H,W), logits (B,2,H,W))``."""
        if mask is not None:
            images = images * mask
        rec = self.reconstructive(images)
        rec_in = rec * mask if mask is not None else rec
        logits = self.discriminative(torch.cat((images, rec_in), dim=1))
        return rec, logits

    @torch.no_grad()
    def reconstruction(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,3,H,W) [0,1] → what the reconstructive sub-network makes of them (B,3,H,W) [0,1] (report panels)."""
        b, _, h, w = images.shape
        if mask is not None:
            mask = _as_mask(mask, b, h, w).to(images.device, images.dtype)
        return self.networks(images, mask)[0].float().clamp(0, 1)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> AnomalyOutput:
        b, _, h, w = images.shape
        if mask is not None:
            mask = _as_mask(mask, b, h, w).to(images.device, images.dtype)
        x = images
        if not self.training and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        use_bf16 = self.infer_bf16 and not self.training
        ctx = torch.autocast(images.device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        with ctx:
            _, logits = self.networks(x, mask)
        amap = torch.softmax(logits.float(), dim=1)[:, 1]
        if mask is not None:
            amap = amap * mask[:, 0]
        amap = amap.contiguous()
        return AnomalyOutput(anomaly_map=amap, score=self.image_score(amap))


def _as_mask(mask: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """Accept (H,W), (1|B,H,W) or (1|B,1,H,W); return (B,1,H,W) float {0,1}."""
    m = torch.as_tensor(mask)
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    if m.dim() != 4 or m.shape[1] != 1 or tuple(m.shape[-2:]) != (h, w) or m.shape[0] not in (1, b):
        raise UsageError(f"draem: mask of shape {tuple(mask.shape)} does not fit images of size {h}x{w} (batch {b})")
    return (m > 0.5).float().expand(b, 1, h, w)
