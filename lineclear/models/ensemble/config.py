"""Ensemble settings and presets."""

from __future__ import annotations

from dataclasses import dataclass, field

from lineclear.errors import UsageError
from lineclear.models.base import BaseConfig, option

NORMS = ("max", "mean")  # divide a member's map by its validation maximum / mean
FUSES = ("mean", "max")  # then average the members' maps / take their pixel-wise maximum
CANDIDATES = tuple(f"{n}-{f}" for n in NORMS for f in FUSES)  # in tie order


@dataclass
class EnsembleConfig(BaseConfig):
    image_size: tuple[int, int] = (256, 384)  # (H, W) of the fused maps; each member runs at its preset's size
    batch_size: int = 8
    epochs: int = 1  # each member trains with its own preset's epochs
    lr: float = 0.0
    seed: int = 0
    members: str = option("patchcore,template", "Comma-separated member models (two or more), each trained with "
                                                "the ensemble's preset (and that preset's image size).")
    fusion: str = option("auto", "How the members' maps are fused: NORM-FUSE with NORM max|mean (each map divided by "
                                 "its own validation maximum / mean) and FUSE mean|max (average / pixel-wise "
                                 "maximum of the normalised maps), e.g. max-mean; auto: the one that best tells "
                                 "synthetic anomalies pasted into the validation images from the images themselves.")
    synthetic_per_image: int = 2  # synthetic anomalies per validation image for fusion=auto
    member_configs: dict = field(default_factory=dict)  # each member's resolved config (written by training)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def member_names(self) -> list[str]:
        return [m.strip() for m in str(self.members).split(",") if m.strip()]


def validate(cfg: EnsembleConfig) -> None:
    def bad(msg: str) -> None:
        raise UsageError(f"ensemble: {msg}")

    names = cfg.member_names
    if len(names) < 2:
        bad(f"--members needs two or more models, got {cfg.members!r}")
    if len(set(names)) != len(names):
        bad(f"--members names a model twice: {cfg.members!r}")
    if "ensemble" in names:
        bad("an ensemble cannot be a member of itself")
    if cfg.fusion != "auto" and cfg.fusion not in CANDIDATES:
        bad(f"--fusion must be auto or one of {', '.join(CANDIDATES)}, got {cfg.fusion!r}")
    if cfg.synthetic_per_image < 1:
        bad(f"synthetic_per_image must be ≥ 1, got {cfg.synthetic_per_image}")
    if not isinstance(cfg.member_configs, dict):
        bad("member_configs must be an object")


PRESETS = {
    "fast": {},
    "paper": {},  # the members' paper presets; the fusion has no paper settings
    "demo": {"image_size": (192, 288)},
}
