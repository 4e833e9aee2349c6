"""The DDAD noise predictor: a DDPM-style U-Net ε_θ(x_t, t).

Layout (after Ho et al. / guided-diffusion, as DDAD uses it): a sinusoidal timestep
embedding fed through an MLP into every residual block; per resolution level
``res_blocks`` residual blocks, self-attention at the levels whose smaller side is at
most ``attention_res`` pixels; a middle block (res → attention → res); a mirrored
decoder with skip connections. Widths are given per level, so one tuple describes the
whole network (``(32, 64, 128)`` = three levels, two down-samplings).

Inputs of any size work: the image is padded (replicate) to a multiple of the total
down-sampling factor and the output cropped back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps → (B, dim) float32 (sin half, cos half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _norm(channels: int) -> nn.GroupNorm:
    # 32 groups as in DDPM when the width allows it; narrow CPU networks use fewer
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch so each block starts as identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + timestep projection, GroupNorm-SiLU-dropout-conv, residual."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.out_layers = nn.Sequential(
            _norm(cout), nn.SiLU(), nn.Dropout(dropout), _zero(nn.Conv2d(cout, cout, 3, padding=1))
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb(emb).to(h.dtype)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head self-attention over all spatial positions (B,C,H,W) → (B,C,H,W), residual."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        heads = max(1, min(heads, channels))
        while channels % heads:
            heads -= 1
        self.heads = heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, C/heads)
        a = F.scaled_dot_product_attention(q, k, v)
        a = a.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(a)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest up-sampling then a conv (avoids the checkerboard of transposed convs)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, scale_factor=None if size else 2.0, mode="nearest"))


class UNet(nn.Module):
    """ε_θ(x_t, t): (B,C,H,W) noisy image and (B,) timesteps → (B,C,H,W) predicted noise.

    Args:
        in_channels: image channels (3).
        channels: width of each resolution level, e.g. ``(64, 64, 128, 128, 256, 256)``.
        res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_res: self-attention at levels whose smaller side ≤ this many pixels
            (relative to the input size given at the first call; the middle block always attends).
        heads: attention heads.
        dropout: dropout inside residual blocks.
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: tuple[int, ...] = (64, 64, 128, 128, 256, 256),
        res_blocks: int = 2,
        attention_res: int = 32,
        heads: int = 4,
        dropout: float = 0.0,
        image_size: tuple[int, int] = (256, 256),
    ):
        super().__init__()
        if not channels:
            raise ValueError("UNet needs at least one level")
        self.levels = len(channels)
        self.base = channels[0]
        emb_dim = 4 * self.base
        self.time_mlp = nn.Sequential(nn.Linear(self.base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(in_channels, self.base, 3, padding=1)

        side = min(image_size)
        attn_at = [side / 2**i <= attention_res for i in range(self.levels)]

        self.down = nn.ModuleList()
        skips = [self.base]
        ch = self.base
        for i, cout in enumerate(channels):
            for _ in range(res_blocks):
                blocks = [ResBlock(ch, cout, emb_dim, dropout)]
                ch = cout
                if attn_at[i]:
                    blocks.append(Attention(ch, heads))
                self.down.append(nn.ModuleList(blocks))
                skips.append(ch)
            if i < self.levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)

        self.middle = nn.ModuleList(
            [ResBlock(ch, ch, emb_dim, dropout), Attention(ch, heads), ResBlock(ch, ch, emb_dim, dropout)]
        )

        self.up = nn.ModuleList()
        for i in reversed(range(self.levels)):
            cout = channels[i]
            for j in range(res_blocks + 1):
                blocks = [ResBlock(ch + skips.pop(), cout, emb_dim, dropout)]
                ch = cout
                if attn_at[i]:
                    blocks.append(Attention(ch, heads))
                if i > 0 and j == res_blocks:
                    blocks.append(Upsample(ch))
                self.up.append(nn.ModuleList(blocks))

        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, in_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B,C,H,W) float, t (B,) timesteps (int or float) → (B,C,H,W) predicted noise."""
        h0, w0 = x.shape[-2:]
        f = 2 ** (self.levels - 1)
        ph, pw = (-h0) % f, (-w0) % f
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        emb = self.time_mlp(timestep_embedding(t.reshape(-1).expand(x.shape[0]), self.base).to(x.dtype))

        h = self.stem(x)
        hs = [h]
        for blocks in self.down:
            for blk in blocks:
                h = blk(h, emb)
            hs.append(h)
        for blk in self.middle:
            h = blk(h, emb)
        for blocks in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for blk in blocks:
                if isinstance(blk, Upsample):
                    h = blk(h, size=tuple(hs[-1].shape[-2:]))
                else:
                    h = blk(h, emb)
        out = self.out(h)
        return out[..., :h0, :w0]
