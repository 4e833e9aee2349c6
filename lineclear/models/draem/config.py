"""DRAEM configuration and presets. Every field can be overridden from the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from lineclear.errors import UsageError
from lineclear.models.base import BaseConfig, option


@dataclass
class DraemConfig(BaseConfig):
    """Defaults follow the original DRAEM code (MVTec: 256², batch 8, 700 epochs).

    Epoch = ``steps_per_epoch`` optimiser steps, or ``ceil(N / batch_size)`` when 0 — one
    pass over the N training images, batches always full (an epoch's index stream is a
    concatenation of random permutations, so with N < batch_size images repeat with
    different synthetic anomalies).
    """

    image_size: tuple[int, int] = (256, 256)
    batch_size: int = 8
    epochs: int = 700
    lr: float = 1e-4
    seed: int = 0
    # networks
    recon_width: int = 128  # reconstructive base width (paper: 128)
    disc_width: int = 64  # discriminative base width (paper: 64)
    # schedule
    steps_per_epoch: int = 0  # 0 = ceil(N / batch_size)
    lr_milestones: str = "0.8,0.9"  # comma list: fractions of `epochs` (all ≤ 1) or epoch numbers
    lr_gamma: float = 0.2  # original code: ×0.2 at 80 % and 90 %
    # loss
    ssim_window: int = 11
    ssim_weight: float = 1.0  # λ in thesis eq. 3
    focal_gamma: float = 2.0
    # anomaly synthesis (probabilities are normalised)
    p_none: float = 0.5
    p_perlin: float = 0.5
    p_cutout: float = 0.0
    beta_min: float = 0.1  # texture opacity β ~ U(beta_min, beta_max), thesis eq. 6
    beta_max: float = 1.0
    perlin_threshold_min: float = 0.4  # Perlin threshold ~ U(min, max) ("random threshold")
    perlin_threshold_max: float = 0.6
    texture_augs: int = 3  # augmentations applied to each texture
    cutout_min: float = 0.08  # cutout side as a fraction of the image side
    cutout_max: float = 0.35
    cutout_angle: float = 20.0  # max rotation of the rectangle, degrees
    p_cutout_print: float = 0.5  # chance the rectangle carries printed lines / glyphs
    # "" = offline procedural textures
    textures: str = option("", "DTD-style folder of anomaly source textures (any depth).", metavar="PATH")
    rotate: bool = False  # random ±90° rotation of training images (original code); off: fixed cameras
    # scoring
    score_filter: int = 21  # s_f of thesis eq. 7 at `score_filter_ref` pixels
    score_filter_ref: int = 256  # s_f scales with min(H, W) / ref; 0 = use score_filter as is
    # checkpoints and state
    checkpoint_every: int = 0  # keep checkpoints/epoch_E.pt every K epochs (0 = none)
    keep_from: int = 0  # ... from epoch keep_from on
    state_every: int = 1  # save the resumable state every K epochs (and at the end)
    # speed
    bf16: bool = False  # train under bfloat16 autocast
    infer_bf16: bool = False  # score under bfloat16 autocast
    channels_last: bool = True  # channels-last memory format for inference
    threads: int = 0  # torch.set_num_threads during training (0 = leave as is)

    def milestones(self) -> list[int]:
        """The epochs after which the learning rate is multiplied by ``lr_gamma``."""
        try:
            vals = [float(v) for v in str(self.lr_milestones).replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"lr_milestones: expected comma-separated numbers, got {self.lr_milestones!r}") from None
        if vals and all(v <= 1.0 for v in vals):
            return sorted(int(round(v * self.epochs)) for v in vals)
        return sorted(int(v) for v in vals)

    def lr_at(self, epoch: int) -> float:
        """Learning rate during 0-based ``epoch`` (a step schedule like MultiStepLR)."""
        return self.lr * self.lr_gamma ** sum(1 for m in self.milestones() if epoch >= m)


PRESETS: dict[str, dict] = {
    # thesis §5.3: 512², 3000 epochs, Adam 1e-4 ×0.1 after 1200 and 2100, batch 1, cutout,
    # checkpoints from epoch 2000 every 250
    "paper": {
        "image_size": (512, 512),
        "epochs": 3000,
        "batch_size": 1,
        "lr": 1e-4,
        "lr_milestones": "1200,2100",
        "lr_gamma": 0.1,
        "recon_width": 128,
        "disc_width": 64,
        "p_none": 0.4,
        "p_perlin": 0.35,
        "p_cutout": 0.25,
        "checkpoint_every": 250,
        "keep_from": 2000,
    },
    # CPU, one view in ~10 minutes on 2 cores (measured: see README). Measured on synthetic
    # view A (registered, masked): widths 32/16 and 800 steps gave image/pixel AUROC 1.000/0.920
    # in 2193 s; 16/16 and 400 steps 0.995/0.915 in 848 s (one thread, another job running)
    "fast": {
        "image_size": (128, 192),
        "epochs": 20,
        "steps_per_epoch": 20,
        "batch_size": 8,
        "lr": 1e-3,
        "lr_milestones": "0.8,0.9",
        "lr_gamma": 0.2,
        "recon_width": 16,
        "disc_width": 16,
        "p_none": 0.4,
        "p_perlin": 0.35,
        "p_cutout": 0.25,
        "score_filter": 21,
    },
    # smoke run: well under a minute for a whole view
    "demo": {
        "image_size": (64, 96),
        "epochs": 4,
        "steps_per_epoch": 5,
        "batch_size": 4,
        "lr": 1e-3,
        "recon_width": 8,
        "disc_width": 8,
        "p_none": 0.4,
        "p_perlin": 0.35,
        "p_cutout": 0.25,
        # tiny tensors gain nothing from a second thread, and on a busy 2-core PC OpenMP's
        # spinning threads made this run 4-9x slower (10 s with one thread vs 44-95 s)
        "threads": 1,
    },
}
