"""Run directory description: ``RUN_DIR/config.json``, schema ``lineclear.run/1``.

Keys: model, preset, config (resolved: every value the model used), view (name),
view_dir, dataset_root, train_image_ids, val_image_ids, val_fraction, split_seed,
device, world_size and backend (training processes: 1 and null, or torchrun's; see
lineclear.distributed), argv, lineclear_version, created_utc.

A run directory is a folder whose ``config.json`` carries this schema. Its own files are
:data:`RUN_FILES` and ``checkpoints/*.pt``; ``train --overwrite`` removes those and nothing else
(:func:`remove_run_files`), and refuses a folder that is not a run (:func:`run_dir_problem`).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Any

from lineclear import __version__
from lineclear.errors import FormatError
from lineclear.formats._io import read_json, write_json

RUN_SCHEMA = "lineclear.run/1"
# what `lineclear train` writes into a run directory (besides checkpoints/*.pt)
RUN_FILES = ("config.json", "model.pt", "train_state.pt", "train_log.jsonl")


def write_run_config(run_dir: str | os.PathLike, doc: dict[str, Any]) -> Path:
    doc = {
        "lineclear_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": " ".join(sys.argv),
        **doc,
    }
    return write_json(Path(run_dir) / "config.json", doc, RUN_SCHEMA, overwrite=True)


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    return read_json(Path(run_dir) / "config.json", RUN_SCHEMA)


def is_run_dir(path: str | os.PathLike) -> bool:
    """A folder with a readable ``config.json`` of schema ``lineclear.run/1``."""
    try:
        read_run_config(path)
    except FormatError:
        return False
    return True


def run_dir_problem(path: str | os.PathLike) -> str | None:
    """Why ``train --out path`` may not write there, or None (absent, empty or a run directory)."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_dir():
        return f"{path}: exists and is not a folder"
    if not any(path.iterdir()) or is_run_dir(path):
        return None
    return f"{path}: not a lineclear run directory (no lineclear.run/1 config.json); choose another --out"


def remove_run_files(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the files a run consists of (:data:`RUN_FILES`, ``checkpoints/*.pt``); return them.

    Anything else in the folder (thresholds, maps, a user's notes) stays; ``checkpoints/`` goes only when empty.
    """
    run_dir = Path(run_dir)
    gone = [run_dir / n for n in RUN_FILES if (run_dir / n).is_file()]
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir():
        gone += sorted(p for p in ckpts.glob("*.pt") if p.is_file())
    for p in gone:
        p.unlink()
    if ckpts.is_dir() and not any(ckpts.iterdir()):
        ckpts.rmdir()
    return gone
