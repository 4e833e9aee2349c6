"""DDAD: anomaly detection with conditioned denoising diffusion models (Mousakhan et al. 2023).

See README.md in this folder for the method, the presets and every deviation from the
reference code.
"""

from __future__ import annotations

from lineclear.models.base import ModelEntry
from lineclear.models.ddad.config import PRESETS, DdadConfig, validate
from lineclear.models.ddad.model import DdadModel
from lineclear.models.ddad.train import train


def build(cfg: DdadConfig, pretrained: bool = True) -> DdadModel:
    """The untrained model. ``pretrained=False`` (a checkpoint follows) looks for no weights."""
    from lineclear.models.backbones import create_feature_extractor

    validate(cfg)
    fe = create_feature_extractor(cfg.backbone, cfg.backbone_weights, tuple(cfg.feature_layers), for_checkpoint=not pretrained)
    return DdadModel(cfg, fe)


ENTRY = ModelEntry(
    name="ddad",
    summary="conditioned diffusion reconstruction + feature distance (Mousakhan et al. 2023)",
    config_cls=DdadConfig,
    presets=PRESETS,
    build=build,
    train=train,
    distributed=True,
    notes={
        "pre-masking": "input and reconstruction are masked before both distances and the normalisation",
    },
)

__all__ = ["ENTRY", "DdadConfig", "DdadModel", "build", "train"]
