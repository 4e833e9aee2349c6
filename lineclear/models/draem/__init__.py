"""DRAEM (Zavrtanik, Kristan, Skočaj, ICCV 2021) for lineclear; see README.md in this folder."""

from __future__ import annotations

from lineclear.models.base import ModelEntry
from lineclear.models.draem.config import PRESETS, DraemConfig
from lineclear.models.draem.model import DraemModel
from lineclear.models.draem.train import train_draem

ENTRY = ModelEntry(
    name="draem",
    summary="DRAEM: reconstructive + discriminative networks trained on synthetic anomalies (thesis §3.2)",
    config_cls=DraemConfig,
    presets=PRESETS,
    build=lambda cfg, pretrained=False: DraemModel(cfg),
    train=train_draem,
    distributed=True,
    notes={
        "paper": "thesis §5.3: 512x512, 3000 epochs, batch 1, Adam 1e-4 x0.1 after 1200/2100, cutout, checkpoints 2000..3000/250",
        "fast": "CPU: narrow networks at low resolution, a few thousand synthetic anomalies",
        "demo": "smoke run in under a minute",
    },
)

__all__ = ["ENTRY", "DraemConfig", "DraemModel", "train_draem"]
