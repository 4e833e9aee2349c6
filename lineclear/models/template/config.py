"""Template model settings and presets."""

from __future__ import annotations

from dataclasses import dataclass

from lineclear.errors import UsageError
from lineclear.models.base import BaseConfig


@dataclass
class TemplateConfig(BaseConfig):
    image_size: tuple[int, int] = (256, 384)  # (H, W), as patchcore's fast preset
    batch_size: int = 16
    epochs: int = 1  # fitted in one pass; kept for the shared contract
    lr: float = 0.0
    seed: int = 0
    radius: int = 1  # pixels: the envelope is taken over (2r+1)² neighbourhoods (sub-pixel tolerance)
    std_floor: float = 0.02  # added to the per-pixel std (intensity units, 0.02 ≈ 5 of 255 grey levels)
    blur_sigma: float = 2.0  # pixels at image_size

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: TemplateConfig) -> None:
    def bad(msg: str) -> None:
        raise UsageError(f"template: {msg}")

    if len(cfg.image_size) != 2 or min(cfg.image_size) < 8:
        bad(f"image_size must be H,W ≥ 8, got {cfg.image_size}")
    if cfg.radius < 0:
        bad(f"radius must be ≥ 0, got {cfg.radius}")
    if cfg.std_floor <= 0:
        bad(f"std_floor must be > 0, got {cfg.std_floor}")
    if cfg.blur_sigma < 0:
        bad(f"blur_sigma must be ≥ 0, got {cfg.blur_sigma}")


PRESETS = {
    "fast": {},
    "paper": {},  # no paper defines it for this task: the same as fast
    "demo": {"image_size": (192, 288)},
}
