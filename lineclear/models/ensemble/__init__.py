"""An ensemble of lineclear models: members' maps normalised by their own validation statistics, then fused
(thesis section 5.7: DRAEM's robustness across views with DDAD's localisation). See README.md in this folder.
"""

from __future__ import annotations

from lineclear.models.base import ModelEntry, config_from_dict
from lineclear.models.ensemble.config import CANDIDATES, PRESETS, EnsembleConfig, validate
from lineclear.models.ensemble.fit import choose_fusion, synthetic_anomalies, train
from lineclear.models.ensemble.model import EnsembleModel


def build(cfg: EnsembleConfig, pretrained: bool = True) -> EnsembleModel:
    """Untrained: no members yet (training fits them). From a checkpoint (``member_configs`` filled): every
    member built from its recorded config, ready for the state dict."""
    from lineclear.errors import UsageError
    from lineclear.models import get_model

    validate(cfg)
    for name in cfg.member_names:
        get_model(name)  # an unknown or broken member model is a usage error now, not after training
    members = {}
    if cfg.member_configs:
        missing = [n for n in cfg.member_names if n not in cfg.member_configs]
        if missing:
            raise UsageError(f"ensemble: no recorded config for member(s) {', '.join(missing)}")
        for name in cfg.member_names:
            entry = get_model(name)
            members[name] = entry.build(config_from_dict(entry, cfg.member_configs[name]), pretrained)
    return EnsembleModel(cfg, members)


ENTRY = ModelEntry(
    name="ensemble",
    summary="several models' maps, each normalised by its own validation statistics, fused (mean or max); "
            "the fusion chosen per view on validation images with synthetic anomalies",
    config_cls=EnsembleConfig,
    presets=PRESETS,
    build=build,
    train=train,
    notes={"pre-masking": "each member takes the mask as it documents; the fused map is zeroed outside it"},
    uses_validation=True,
)

__all__ = ["CANDIDATES", "ENTRY", "EnsembleConfig", "EnsembleModel", "build", "choose_fusion",
           "synthetic_anomalies", "train"]
