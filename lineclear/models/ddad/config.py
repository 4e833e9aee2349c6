"""DDAD settings and presets.

Defaults follow the reference ``config.yaml`` of arimousa/DDAD (MVTec settings:
w = 2, v = 1, λ_DL = 0.1, w_DA = 3, 4 domain-adaptation epochs, η = 1, lr 3e-4 with
weight decay 0.05, T = 1000, β 1e-4 → 0.02, T′ = 250, skip 25).
"""

from __future__ import annotations

from dataclasses import dataclass

from lineclear.errors import UsageError
from lineclear.models.base import BaseConfig, backbone_option, backbone_weights_option, option


@dataclass
class DdadConfig(BaseConfig):
    image_size: tuple[int, int] = (256, 256)  # (H, W)
    batch_size: int = 32
    epochs: int = 3000
    lr: float = 3e-4
    seed: int = 0
    weight_decay: float = 0.05  # Adam (coupled) weight decay, as the reference
    # U-Net
    unet_channels: tuple[int, ...] = (64, 64, 128, 128, 256, 256)  # width per resolution level
    unet_res_blocks: int = 2
    unet_attention_res: int = 32  # self-attention at levels whose smaller side ≤ this (pixels)
    unet_heads: int = 4
    dropout: float = 0.0
    # diffusion
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    t_prime: int = option(250, "Noising step T' for reconstruction, in (0, T].")
    skip: int = option(25, "Denoising step skip.")  # DDIM stride: ceil(T'/skip) network passes per image
    w: float = option(2.0, "Conditioning weight w.")  # eq. 13 of the paper
    eta: float = 1.0  # DDIM stochasticity (reference: 1); the noise is fixed per image
    # anomaly map
    v: float = option(1.0, "Weight v of the pixel distance.")  # eq. 16 of the paper
    blur_sigma: float = 4.0
    backbone: str = backbone_option("wide_resnet101_2")
    backbone_weights: str = backbone_weights_option()
    feature_layers: tuple[int, ...] = (2, 3)
    # input and reconstruction are resized by this factor (bilinear) before the feature extractor,
    # so a low-resolution diffusion still gets feature maps fine enough to localise (1 = as DDAD)
    feature_scale: float = 1.0
    # domain adaptation (L_DA)
    domain_adaptation: bool = option(True, "Fine-tune the feature extractor (default on).")
    da_epochs: int = 4
    da_lr: float = 1e-4
    da_batch_size: int = 8  # (input, target) pairs per step
    w_da: float = 3.0
    lambda_dl: float = option(0.1, "Distillation weight of domain adaptation.")
    # intermediate checkpoints: every `checkpoint_every` epochs from `checkpoint_from` (0 = none)
    checkpoint_every: int = 0
    checkpoint_from: int = 0
    # bfloat16 autocast for the U-Net and the feature extractor (CPUs with AVX-512 BF16, GPUs)
    bf16: bool = False

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: DdadConfig) -> None:
    """Raise :class:`UsageError` with one line for an impossible setting."""
    def bad(msg: str) -> None:
        raise UsageError(f"ddad: {msg}")

    if cfg.T < 1:
        bad(f"T must be ≥ 1, got {cfg.T}")
    if not 0 < cfg.t_prime <= cfg.T:
        bad(f"--t-prime must be in (0, T] = (0, {cfg.T}], got {cfg.t_prime}")
    if cfg.skip < 1:
        bad(f"--skip must be ≥ 1, got {cfg.skip}")
    if not 0 < cfg.beta_start <= cfg.beta_end < 1:
        bad(f"need 0 < beta_start ≤ beta_end < 1, got {cfg.beta_start}, {cfg.beta_end}")
    if len(cfg.image_size) != 2 or min(cfg.image_size) < 8:
        bad(f"image_size must be H,W ≥ 8, got {cfg.image_size}")
    if not cfg.unet_channels or min(cfg.unet_channels) < 1:
        bad(f"unet_channels must be positive widths, got {cfg.unet_channels}")
    if cfg.unet_res_blocks < 1 or cfg.unet_heads < 1:
        bad("unet_res_blocks and unet_heads must be ≥ 1")
    if not cfg.feature_layers:
        bad("feature_layers must name at least one layer")
    if cfg.batch_size < 1 or cfg.da_batch_size < 1:
        bad("batch sizes must be ≥ 1")
    if cfg.epochs < 0 or cfg.da_epochs < 0:
        bad("epochs must be ≥ 0")
    if not 0 < cfg.feature_scale <= 16:
        bad(f"feature_scale must be in (0, 16], got {cfg.feature_scale}")
    if cfg.v < 0 or cfg.blur_sigma < 0 or cfg.lambda_dl < 0 or cfg.eta < 0:
        bad("v, blur_sigma, lambda_dl and eta must be ≥ 0")
    if cfg.checkpoint_every < 0:
        bad("checkpoint_every must be ≥ 0")


# what the CPU presets share: a small U-Net and lite0, whose ImageNet weights ship with the package;
# features of a ×4 upsampling (at 64x96 lite0's layers 2/3 would be 8x12 / 4x6 cells, at ×4 32x48 / 16x24)
_CPU: dict = dict(
    batch_size=8,
    weight_decay=0.0,
    unet_res_blocks=1,
    unet_attention_res=8,
    backbone="tf_efficientnet_lite0",
    feature_scale=4.0,
    da_batch_size=8,
)

PRESETS: dict[str, dict] = {
    # The thesis: 512×512, 3000 epochs, batch 1, checkpoints every 250 epochs from 2000;
    # DDAD's diffusion settings; the U-Net widths the reference picks for 512 px
    # (multipliers 0.5,1,1,2,2,4,4 of 64).
    "paper": dict(
        image_size=(512, 512),
        epochs=3000,
        batch_size=1,
        lr=3e-4,
        unet_channels=(32, 64, 64, 128, 128, 256, 256),
        unet_attention_res=32,
        unet_heads=4,
        backbone="wide_resnet101_2",
        blur_sigma=4.0,
        da_batch_size=4,
        checkpoint_every=250,
        checkpoint_from=2000,
    ),
    # CPU: see README.md for the measurements behind these values.
    "fast": dict(
        **_CPU,
        image_size=(64, 96),
        epochs=400,
        lr=1e-3,
        unet_channels=(16, 32, 64, 96),
        unet_heads=4,
        blur_sigma=2.0,
        da_epochs=4,
    ),
    # about a minute for a whole view: a toy network, for demos and smoke tests
    "demo": dict(
        **_CPU,
        image_size=(32, 48),
        epochs=40,
        lr=2e-3,
        unet_channels=(16, 32),
        unet_heads=2,
        blur_sigma=1.0,
        da_epochs=1,
    ),
}
