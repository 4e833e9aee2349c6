"""A toy model the machinery tests register in ``lineclear.models.MODELS``.

Anomaly map = |image − mean training image| averaged over channels; it honours pre-masks
exactly, so tests of scoring, deploy and check can reason about its maps by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lineclear.models.base import AnomalyModel, AnomalyOutput, BaseConfig, ModelEntry


@dataclass
class ToyConfig(BaseConfig):
    image_size: tuple[int, int] = (16, 24)
    epochs: int = 1


class ToyModel(AnomalyModel):
    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(3, *cfg.image_size))

    def forward(self, images, mask=None):
        x, ref = images, self.mean.expand_as(images)
        if mask is not None:
            x, ref = x * mask, ref * mask
        amap = (x - ref).abs().mean(1)
        if mask is not None:
            amap = amap * mask[:, 0]
        return AnomalyOutput(amap, self.image_score(amap))


def train_toy(model: ToyModel, session) -> None:
    model.mean.copy_(session.images.mean(0))
    session.log(epoch=1, loss=0.0)


def toy_entry(name: str = "toy", image_size: tuple[int, int] = (16, 24)) -> ModelEntry:
    preset = {"image_size": image_size}
    return ModelEntry(name, "test model", ToyConfig, {"fast": preset, "paper": preset, "demo": preset},
                      lambda cfg, pretrained: ToyModel(cfg), train_toy)
