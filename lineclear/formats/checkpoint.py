"""Model checkpoints: one ``.pt`` file holding a state dict and JSON metadata.

The file is ``torch.save({"lineclear": <JSON text>, "state_dict": {...}})`` and is
always loaded with ``torch.load(weights_only=True)``: a checkpoint from a stranger
cannot run code. The JSON carries schema ``lineclear.checkpoint/1``, the model name,
its resolved configuration and training provenance.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from lineclear import __version__
from lineclear.errors import FormatError
from lineclear.formats._io import atomic_write_bytes, check_schema

if TYPE_CHECKING:  # torch is imported when a checkpoint is read or written, not with lineclear.formats
    import torch

CHECKPOINT_SCHEMA = "lineclear.checkpoint/1"
TRAIN_STATE_SCHEMA = "lineclear.train_state/1"


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    meta: dict[str, Any],
    overwrite: bool = False,
    schema: str = CHECKPOINT_SCHEMA,
) -> Path:
    """Atomically write ``state_dict`` (tensors, on any device) with ``meta`` (JSON-able).

    ``meta`` should hold at least ``model`` and ``config``.
    """
    import torch

    meta = {
        "schema": schema,
        "lineclear_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **meta,
    }
    cpu_sd = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state_dict.items()}
    buf = io.BytesIO()
    torch.save({"lineclear": json.dumps(meta, default=str), "state_dict": cpu_sd}, buf)
    return atomic_write_bytes(path, buf.getvalue(), overwrite)


def load_checkpoint(
    path: str | os.PathLike, schema: str = CHECKPOINT_SCHEMA, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(state_dict, meta)``; refuse foreign, corrupt or unsafe files with a clear message."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise FormatError(f"{path}: refused: not a plain state-dict checkpoint ({first[:160]})") from None
    except Exception as exc:  # torch raises many types on a damaged file (KeyError, RuntimeError, ...)
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise FormatError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(obj, dict) or "lineclear" not in obj or "state_dict" not in obj:
        raise FormatError(f"{path}: not a lineclear checkpoint (a bare state dict or another tool's file)")
    try:
        meta = json.loads(obj["lineclear"])
    except (TypeError, ValueError, RecursionError):  # ValueError covers JSONDecodeError
        raise FormatError(f"{path}: corrupt checkpoint metadata") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{path}: corrupt checkpoint metadata (not a JSON object)")
    check_schema(path, meta.get("schema"), schema)
    sd = obj["state_dict"]
    if not isinstance(sd, dict):
        raise FormatError(f"{path}: corrupt checkpoint (state_dict is not a mapping)")
    return sd, meta


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    return load_checkpoint(path)[1]
