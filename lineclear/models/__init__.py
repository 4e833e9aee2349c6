"""Model registry: a plain dict from name to :class:`~lineclear.models.base.ModelEntry`.

Each model folder (``draem/``, ``ddad/``, ``patchcore/``, ``template/``) exposes ``ENTRY``;
the CLI offers exactly the keys of :data:`MODELS`.
"""

from __future__ import annotations

import importlib

from lineclear.models.base import AnomalyModel, AnomalyOutput, BaseConfig, ModelEntry

_MODEL_PACKAGES = ["patchcore", "template", "draem", "ddad", "ensemble"]

MODELS: dict[str, ModelEntry] = {}

MODEL_ERRORS: dict[str, str] = {}

for _name in _MODEL_PACKAGES:
    try:
        _mod = importlib.import_module(f"lineclear.models.{_name}")
        _entry = _mod.ENTRY
    except ModuleNotFoundError as _exc:
        if _exc.name == f"lineclear.models.{_name}":
            continue
        MODEL_ERRORS[_name] = f"{type(_exc).__name__}: {_exc}"
        continue
    except Exception as _exc:  # one broken model must not take the whole CLI down
        MODEL_ERRORS[_name] = f"{type(_exc).__name__}: {_exc}"
        continue
    MODELS[_entry.name] = _entry


def get_model(name: str) -> ModelEntry:
    from lineclear.errors import UsageError

    if name not in MODELS:
        if name in MODEL_ERRORS:
            raise UsageError(f"model {name!r} failed to load: {MODEL_ERRORS[name]}")
        raise UsageError(f"unknown model {name!r} (choose from {', '.join(MODELS) or 'none installed'})")
    return MODELS[name]


__all__ = ["MODELS", "AnomalyModel", "AnomalyOutput", "BaseConfig", "ModelEntry", "get_model"]
