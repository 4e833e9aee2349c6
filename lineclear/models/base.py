"""The contract every lineclear model follows.

A model is a pure ``nn.Module``. In eval mode::

    out = model(images, mask=None)      # images (B,3,H,W) float32 RGB in [0,1]
    out.anomaly_map                     # (B,H,W) float32, higher = more anomalous
    out.score                           # (B,) image anomaly score

``mask`` (B,1,H,W) float in {0,1}, 1 = inspect, is *pre-masking*: the masked-out
region must not be able to change the map (each model documents how it achieves
that), and the returned map is zero there. *Post-masking* is done by the scoring
stage for every model alike: ``map *= mask`` then ``score = model.image_score(map)``.

A model with ``uses_validity = True`` also takes ``valid`` (B,1,H,W) float in {0,1}: which pixels of a
registered image came from inside the camera frame (the rest is the scene continued from the reference).
It keeps what it computed from outside the frame out of the map (patchcore: patches reaching over the
seam get no weight in its blur); the scoring stage passes it whenever the images are registered.

Each model folder registers a :class:`ModelEntry` in ``lineclear.models.MODELS``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import nn

from lineclear.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from lineclear.training import TrainSession


@dataclass
class AnomalyOutput:
    anomaly_map: torch.Tensor  # (B,H,W)
    score: torch.Tensor  # (B,)


class AnomalyModel(nn.Module):
    """Base class: subclasses implement ``forward(images, mask=None) -> AnomalyOutput`` (see the
    module docstring) and may override ``image_score``."""

    uses_validity = False  # True: forward(images, mask=None, valid=None), see the module docstring

    def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """(B,H,W) → (B,): default is the maximum of the map."""
        return anomaly_map.flatten(1).amax(dim=1)


_OPTION = "lineclear.option"  # dataclass field metadata key of :func:`option`


def option(default: Any, help: str, **settings: Any) -> Any:
    """A config field that ``lineclear train`` offers as an option ``--<field-name>`` (``_`` written ``-``).

    The field's type gives the option's (a bool is a ``--x/--no-x`` flag; a tuple such as ``image_size``
    is given as text, ``256x384``); ``help`` is its help text; ``settings`` are further option settings
    (``min=1``, ``metavar="PATH"``). Every other field is still reachable with ``--set KEY=VALUE``.
    """
    return field(default=default, metadata={_OPTION: {"help": help, **settings}})


@dataclass(frozen=True)
class OptionSpec:
    """A config field declared with :func:`option`."""

    name: str  # the field's name
    type: type  # bool, int, float or str
    help: str
    settings: Mapping[str, Any]


def declared_options(config_cls: type) -> dict[str, OptionSpec]:
    """The fields of ``config_cls`` declared with :func:`option`, in field order.

    A subclass that gives such a field another default (``image_size = (256, 384)``) keeps the option:
    its help comes from the class that declared it.
    """
    hints = typing.get_type_hints(config_cls)
    out: dict[str, OptionSpec] = {}
    for f in dataclasses.fields(config_cls):
        meta = next((k.__dataclass_fields__[f.name].metadata[_OPTION] for k in config_cls.__mro__
                     if f.name in getattr(k, "__dataclass_fields__", {})
                     and _OPTION in k.__dataclass_fields__[f.name].metadata), None)
        if meta is None:
            continue
        kind = typing.get_origin(hints[f.name]) or hints[f.name]
        typ = kind if kind in (bool, int, float) else str
        settings = {k: v for k, v in meta.items() if k != "help"}
        out[f.name] = OptionSpec(f.name, typ, meta["help"], settings)
    return out


def backbone_option(default: str) -> Any:
    """``--backbone`` of the models built on a timm feature extractor (:mod:`lineclear.models.backbones`)."""
    return option(default, "timm model name of the feature extractor.")


def backbone_weights_option(default: str = "auto") -> Any:
    """``--backbone-weights`` of the models built on a timm feature extractor."""
    return option(default, "Weights file (safetensors or state dict), 'auto' (local caches) or 'none' (random).")


@dataclass
class BaseConfig:
    """Fields every model's configuration has. Subclass with model-specific fields.

    ``image_size`` is (H, W): images are resized to it for training and scoring, and
    the maps are written at this resolution.
    """

    image_size: tuple[int, int] = option((256, 256), "HxW (or one number for square), e.g. 256x384.")
    batch_size: int = option(8, "Override the batch size.", min=1)
    epochs: int = option(1, "Override the preset's epochs.", min=1)
    lr: float = option(1e-4, "Override the learning rate.")
    seed: int = option(0, "Training seed (deterministic on CPU).")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass(frozen=True)
class ModelEntry:
    """How the CLI knows a model: name → config, presets, constructor, training function.

    ``build(config, pretrained)`` returns the untrained module (``pretrained=False``
    when a checkpoint's state dict will be loaded right after, so no weights are
    looked for). ``train(model, session)`` fits it in place (see
    :class:`lineclear.training.TrainSession`). ``distributed``: ``train`` shards its batches
    over ``session.world`` (torchrun; see :mod:`lineclear.distributed`). ``uses_validation``: ``train``
    is given the normal validation images too (``session.val_images``).
    """

    name: str
    summary: str
    config_cls: type
    presets: Mapping[str, Mapping[str, Any]]
    build: Callable[[Any, bool], AnomalyModel]
    train: Callable[[AnomalyModel, "TrainSession"], None]
    notes: Mapping[str, str] = field(default_factory=dict)
    distributed: bool = False
    uses_validation: bool = False  # train reads session.val_images (the view's normal validation images)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert a CLI/JSON value to the type of the field's default."""
    if value is None:
        return None
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise UsageError(f"{name}: expected true/false, got {value!r}")
        return bool(value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            parts = value.lower().replace("x", ",").split(",")
            value = [int(p) for p in parts if p.strip()]
        value = tuple(int(v) for v in value)
        if len(value) == 1:
            value = (value[0], value[0])
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise UsageError(f"{name}: expected an integer, got {value!r}") from None
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{name}: expected a number, got {value!r}") from None
    return value


def resolve_config(entry: ModelEntry, preset: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """Defaults ← preset ← overrides (None values in overrides are ignored)."""
    if preset not in entry.presets:
        raise UsageError(f"model {entry.name} has no preset {preset!r} (choose from {', '.join(entry.presets)})")
    cfg = entry.config_cls()
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    values = dict(entry.presets[preset])
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for k in values:
        if k not in fields:
            raise UsageError(f"model {entry.name} has no setting {k!r} (settings: {', '.join(sorted(fields))})")
    coerced = {k: _coerce(k, v, fields[k]) for k, v in values.items()}
    return dataclasses.replace(cfg, **coerced)


def config_from_dict(entry: ModelEntry, d: Mapping[str, Any]) -> Any:
    """Rebuild a config from a checkpoint's JSON (unknown keys are refused)."""
    cfg = entry.config_cls()
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    unknown = set(d) - set(fields)
    if unknown:
        raise UsageError(f"checkpoint config has settings unknown to model {entry.name}: {sorted(unknown)}")
    return dataclasses.replace(cfg, **{k: _coerce(k, v, fields[k]) for k, v in d.items()})
