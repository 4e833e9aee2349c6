"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022),
with position-aware nearest-neighbour search for fixed cameras. See README.md in this folder.
"""

from __future__ import annotations

from lineclear.models.base import ModelEntry
from lineclear.models.patchcore.config import PRESETS, PatchCoreConfig, radius_of, validate
from lineclear.models.patchcore.fit import fit, greedy_coreset, train
from lineclear.models.patchcore.model import PatchCoreModel


def build(cfg: PatchCoreConfig, pretrained: bool = True) -> PatchCoreModel:
    """The unfitted model. ``pretrained=False`` (a checkpoint follows, holding the backbone's weights
    and the bank) looks for no weights."""
    from lineclear.models.backbones import create_feature_extractor

    validate(cfg)
    fe = create_feature_extractor(cfg.backbone, cfg.backbone_weights, tuple(cfg.layers), for_checkpoint=not pretrained)
    return PatchCoreModel(cfg, fe)


ENTRY = ModelEntry(
    name="patchcore",
    summary="pretrained-feature memory bank with position-aware nearest-neighbour search (Roth et al. 2022); CPU, fits in seconds",
    config_cls=PatchCoreConfig,
    presets=PRESETS,
    build=build,
    train=train,
    notes={
        "pre-masking": "masked-out pixels are replaced by the mean training image before the backbone, "
        "patches with no visible pixel score 0, and the map is zeroed outside the mask",
    },
)

__all__ = ["ENTRY", "PatchCoreConfig", "PatchCoreModel", "build", "fit", "greedy_coreset", "radius_of", "train"]
