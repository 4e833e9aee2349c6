"""PatchCore settings and presets (see README.md for where each value comes from)."""

from __future__ import annotations

from dataclasses import dataclass

from lineclear.errors import UsageError
from lineclear.models.base import BaseConfig, backbone_option, backbone_weights_option, option

# Measured on the synthetic dataset (benchmarks/bench_models.py, README.md): the radius in
# grid cells (8 px at the fast preset's 256x384) that detects best on registered images.
DEFAULT_RADIUS = "2"


@dataclass
class PatchCoreConfig(BaseConfig):
    image_size: tuple[int, int] = (256, 384)  # (H, W): 768x512 line images keep their 3:2 aspect
    batch_size: int = 8
    epochs: int = 1  # PatchCore is fitted in one pass over the images; kept for the shared contract
    lr: float = 0.0  # nothing is trained by gradient descent
    seed: int = 0  # coreset start point and projection
    backbone: str = backbone_option("tf_efficientnet_lite0")
    backbone_weights: str = backbone_weights_option()
    layers: tuple[int, ...] = (2, 3)  # timm feature indices: strides 8 and 16 (the paper's layer2+layer3)
    neighbourhood: int = 3  # p: local p x p average of each layer's features
    feature_dim: int = 0  # 0 = keep all channels; else adaptive-average each layer to feature_dim/L channels
    # greedy k-center selection, on a random projection of coreset_dim dimensions
    coreset_ratio: float = option(1.0, "Share of patches kept by greedy coreset subsampling (1 = all).")
    coreset_dim: int = 128  # random projection used only to pick the coreset (paper: 128)
    position_radius: str = option(DEFAULT_RADIUS, "Position-aware search radius in grid cells, or 'none' for global search.")
    blur_sigma: float = 4.0  # pixels at image_size
    # px of the image mirrored past each frame edge before the backbone (a multiple of the coarsest
    # layer's stride, 16; at most the largest such multiple below the image's shorter side): 0 = the
    # network's zero padding at the frame edge. 0 here so that checkpoints written before it load as
    # they were fitted; the presets set 32 (README.md, "Detection on real cameras").
    frame_pad: int = 0
    max_bank_mb: float = 2048.0  # refuse banks above this size (float32), suggest --coreset-ratio
    bf16: bool = False  # bfloat16 autocast for the backbone (distances stay float32)

    def __post_init__(self) -> None:
        validate(self)


def radius_of(cfg: PatchCoreConfig) -> int | None:
    """``position_radius`` as cells (≥ 0) or None for global search."""
    r = str(cfg.position_radius).strip().lower()
    if r in ("none", "global", "inf", ""):
        return None
    try:
        v = int(r)
    except ValueError:
        raise UsageError(f"patchcore: --position-radius must be a number of grid cells or 'none', got {cfg.position_radius!r}") from None
    if v < 0:
        raise UsageError(f"patchcore: --position-radius must be ≥ 0, got {v}")
    return v


def validate(cfg: PatchCoreConfig) -> None:
    def bad(msg: str) -> None:
        raise UsageError(f"patchcore: {msg}")

    if len(cfg.image_size) != 2 or min(cfg.image_size) < 32:
        bad(f"image_size must be H,W ≥ 32, got {cfg.image_size}")
    if not cfg.layers or len(set(cfg.layers)) != len(cfg.layers) or min(cfg.layers) < 0:
        bad(f"layers must be distinct feature indices ≥ 0, got {cfg.layers}")
    if cfg.neighbourhood < 1 or cfg.neighbourhood % 2 == 0:
        bad(f"neighbourhood must be an odd size ≥ 1, got {cfg.neighbourhood}")
    if not 0 < cfg.coreset_ratio <= 1:
        bad(f"--coreset-ratio must be in (0, 1], got {cfg.coreset_ratio}")
    if cfg.feature_dim < 0 or cfg.coreset_dim < 1:
        bad("feature_dim must be ≥ 0 and coreset_dim ≥ 1")
    if cfg.blur_sigma < 0:
        bad(f"blur_sigma must be ≥ 0, got {cfg.blur_sigma}")
    if cfg.frame_pad < 0 or cfg.frame_pad % 16:
        bad(f"frame_pad must be a multiple of 16 px and ≥ 0, got {cfg.frame_pad}")
    if cfg.max_bank_mb <= 0:
        bad(f"max_bank_mb must be > 0, got {cfg.max_bank_mb}")
    if cfg.batch_size < 1:
        bad(f"batch_size must be ≥ 1, got {cfg.batch_size}")
    radius_of(cfg)


PRESETS = {
    # CPU default: offline lite0 weights, position-aware search, the whole bank, the scene mirrored
    # 32 px past the frame edge (camera-shifted clear images scored highest on the frame edge with the
    # network's zero padding: photo benchmark false alarms 4 -> 0 of 40, synthetic 2 -> 1 of 60).
    "fast": {"frame_pad": 32},
    # The paper's settings (Roth et al. 2022): WideResNet-50-2 layer2+layer3, 3x3 neighbourhood,
    # 1024-dim embedding, 10 % greedy coreset, global search; 224 px short side (no centre crop:
    # a fixed camera's whole frame matters, so the 3:2 aspect is kept).
    "paper": {
        "backbone": "wide_resnet50_2",
        "image_size": (224, 336),
        "feature_dim": 1024,
        "coreset_ratio": 0.1,
        "position_radius": "none",
        "frame_pad": 0,
    },
    # Tiny budget: smaller images, otherwise as fast.
    "demo": {"image_size": (192, 288), "batch_size": 4, "frame_pad": 32},
}
