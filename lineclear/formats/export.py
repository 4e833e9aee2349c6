"""Exported models: ``<dir>/export.json``, schema ``lineclear.export/1``, beside the files it lists.

``lineclear export RUN --format onnx|openvino`` writes a folder a line PC can run without PyTorch::

    export-onnx/export.json       this file
    export-onnx/network.onnx      the network part as a graph (fixed input size, preprocessing inside);
                                  OpenVINO: network.xml + network.bin (its IR)
    export-onnx/arrays.npz        what is not a network, as plain arrays (patchcore's memory bank, template's
                                  statistics); read with ``allow_pickle=False``

=================================== =============================================================
key                                 meaning
=================================== =============================================================
schema                              ``lineclear.export/1``
lineclear_version, created_utc      who wrote it and when; ``argv`` the command line
model                               model name (``patchcore``, ``template``, ``draem``)
format                              ``onnx`` | ``openvino``
map_size                            [H, W] of the input images and the anomaly map
config                              the checkpoint's model configuration (as in its JSON)
params                              what the runtime needs beside the arrays (radius, blur, filter size)
graph                               export-relative path of the network file, or null (no network)
graph_inputs / graph_outputs        names of the graph's inputs and outputs
arrays                              export-relative path of the arrays file, or null
files.<relpath>.sha256 / .bytes     SHA-256 and size of every file of the export
checkpoint_sha256                   SHA-256 of the checkpoint it was exported from
fidelity                            the check ``export`` made before writing: images, tolerance, worst
                                    map difference relative to the map range, worst score difference
=================================== =============================================================
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lineclear import __version__
from lineclear.errors import FormatError
from lineclear.formats._io import read_json, sha256_file, write_json

EXPORT_SCHEMA = "lineclear.export/1"
EXPORT_NAME = "export.json"
EXPORT_FORMATS = ("onnx", "openvino")


@dataclass
class ExportInfo:
    root: Path
    doc: dict[str, Any]

    @property
    def model(self) -> str:
        return self.doc["model"]

    @property
    def format(self) -> str:
        return self.doc["format"]

    @property
    def map_size(self) -> tuple[int, int]:
        return int(self.doc["map_size"][0]), int(self.doc["map_size"][1])

    @property
    def params(self) -> dict[str, Any]:
        return self.doc["params"]

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.doc["files"]

    def path(self, key: str) -> Path | None:
        """Absolute path of ``graph`` or ``arrays`` (None when the export has none)."""
        rel = self.doc.get(key)
        return self.root / rel if rel else None


def write_export(out_dir: str | os.PathLike, doc: dict[str, Any], files: list[str], overwrite: bool = False) -> Path:
    """Hash ``files`` (export-relative) and write ``export.json`` (validated before it is written)."""
    root = Path(out_dir)
    hashed = {rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size} for rel in sorted(files)}
    full = {
        "lineclear_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": " ".join(sys.argv),
        **doc,
        "files": hashed,
    }
    path = root / EXPORT_NAME
    _parse(path, {"schema": EXPORT_SCHEMA, **full})
    return write_json(path, full, EXPORT_SCHEMA, overwrite=overwrite)


def read_export(path: str | os.PathLike) -> ExportInfo:
    """Read and validate an export: its folder or its ``export.json`` (structure only; see :func:`export_problems`)."""
    p = Path(path)
    if p.is_dir():
        p = p / EXPORT_NAME
    if not p.is_file():
        raise FormatError(f"{p}: no such export (make one with `lineclear export RUN --format onnx`)")
    return ExportInfo(p.parent, _parse(p, read_json(p, EXPORT_SCHEMA)))


def export_problems(info: ExportInfo) -> list[str]:
    """Every listed file whose size or SHA-256 differs from ``export.json`` (empty when intact)."""
    out = []
    for rel, meta in info.files.items():
        p = info.root / rel
        if not p.is_file():
            out.append(f"{p}: missing from the export")
        elif p.stat().st_size != meta["bytes"] or sha256_file(p) != meta["sha256"]:
            out.append(f"{p}: does not match {info.root / EXPORT_NAME} (tampered or corrupt)")
    return out


def _parse(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    def bad(msg: str) -> FormatError:
        return FormatError(f"{path}: {msg}")

    for key in ("model", "format", "map_size", "params", "files", "checkpoint_sha256"):
        if key not in doc:
            raise bad(f"no {key!r}")
    if not isinstance(doc["model"], str) or not doc["model"]:
        raise bad(f"model must be a name, found {doc['model']!r}")
    if doc["format"] not in EXPORT_FORMATS:
        raise bad(f"format must be one of {EXPORT_FORMATS}, found {doc['format']!r}")
    size = doc["map_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) and x > 0 for x in size)):
        raise bad(f"map_size must be [H, W] positive integers, found {size!r}")
    if not isinstance(doc["params"], dict):
        raise bad("params must be an object")
    files = doc["files"]
    if not isinstance(files, dict):
        raise bad("files must be an object")
    for rel, meta in files.items():
        pp = PurePosixPath(rel)
        if not rel or pp.is_absolute() or ".." in pp.parts or "\\" in rel:
            raise bad(f"file {rel!r} points outside the export")
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str) and len(meta["sha256"]) == 64
                and isinstance(meta.get("bytes"), int)):
            raise bad(f"files[{rel!r}] needs 'sha256' (64 hex digits) and 'bytes'")
    for key in ("graph", "arrays"):
        rel = doc.get(key)
        if rel is not None and not isinstance(rel, str):
            raise bad(f"{key} must be an export-relative path or null, found {rel!r}")
        if rel is not None and rel not in files:
            raise bad(f"{key} {rel!r} is not listed in 'files' (no hash to check)")
    if doc.get("graph") is None and doc.get("arrays") is None:
        raise bad("neither a graph nor arrays: nothing to run")
    return doc
