"""Model registry: a plain dict from name to :class:`~lineclear.models.base.ModelEntry`.

Each model folder (``draem/``, ``ddad/``, ``patchcore/``, ``template/``) exposes ``ENTRY``;
the CLI offers exactly the keys of :data:`MODELS`.
"""

from __future__ import annotations

import importlib

from lineclear.models.base import AnomalyModel, AnomalyOutput, BaseConfig, ModelEntry

_MODEL_PACKAGES = ["patchcore", "template", "draem", "ddad"]

MODELS: dict[str, ModelEntry] = {}

for _name in _MODEL_PACKAGES:
    try:
        _mod = importlib.import_module(f"lineclear.models.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name == f"lineclear.models.{_name}":
            continue
        raise
    MODELS[_mod.ENTRY.name] = _mod.ENTRY


def get_model(name: str) -> ModelEntry:
    from lineclear.errors import UsageError

    if name not in MODELS:
        raise UsageError(f"unknown model {name!r} (choose from {', '.join(MODELS) or 'none installed'})")
    return MODELS[name]


__all__ = ["MODELS", "AnomalyModel", "AnomalyOutput", "BaseConfig", "ModelEntry", "get_model"]
