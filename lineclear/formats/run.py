"""Run directory description: ``RUN_DIR/config.json``, schema ``lineclear.run/1``.

Keys: model, preset, config (resolved: every value the model used), view (name),
view_dir, dataset_root, train_image_ids, val_image_ids, val_fraction, split_seed,
device, argv, lineclear_version, created_utc.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Any

from lineclear import __version__
from lineclear.formats._io import read_json, write_json

RUN_SCHEMA = "lineclear.run/1"


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
