"""Golden template / variation model for fixed cameras (see README.md in this folder)."""

from __future__ import annotations

from lineclear.errors import LineclearError
from lineclear.models.base import ModelEntry
from lineclear.models.template.config import PRESETS, TemplateConfig, validate
from lineclear.models.template.model import TemplateModel


def build(cfg: TemplateConfig, pretrained: bool = True) -> TemplateModel:
    validate(cfg)
    return TemplateModel(cfg)


def train(model: TemplateModel, session) -> None:
    """``ModelEntry.train``: per-pixel statistics of the session's images (one pass)."""
    n = session.images.shape[0]
    if n < 2:
        raise LineclearError(f"template needs at least 2 training images, got {n} (train/good minus the images "
                             "held out for validation): add anomaly-free images to train/good, or give the view a val/good")
    with session.progress.task("template: statistics", n) as task:
        info = model.fit(session.images, session.valid)
        task.advance(n)
    session.log(event="fit", **info)


ENTRY = ModelEntry(
    name="template",
    summary="per-pixel golden template with a misalignment-tolerant envelope; fits in under a second",
    config_cls=TemplateConfig,
    presets=PRESETS,
    build=build,
    train=train,
    notes={"pre-masking": "masked-out pixels score 0 before the blur and the map is zeroed outside the mask"},
)

__all__ = ["ENTRY", "TemplateConfig", "TemplateModel", "build", "train"]
