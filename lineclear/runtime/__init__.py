"""Exported models run without PyTorch: ONNX Runtime or OpenVINO for the network, numpy/OpenCV beside it.

:mod:`.graph` runs one exported network; :mod:`.ops` holds the numpy twins of the PyTorch functions the
models use outside their networks; :mod:`.models` the runtime twin of each exportable model;
:mod:`.score` the twin of :func:`lineclear.scoring.score_arrays` (masks, registration seam, fill).
:func:`load_export` reads an export folder (``lineclear.export/1``, :mod:`lineclear.formats.export`).
Nothing here imports PyTorch: a bundle of exported views is checked without it.
"""

from __future__ import annotations

import os

from lineclear.errors import FormatError
from lineclear.formats.export import export_problems, read_export
from lineclear.runtime.models import RUNTIMES, ExportedModel, build


def load_export(path: str | os.PathLike, threads: int = 1, verify: bool = True) -> ExportedModel:
    """The runtime model of an export folder (or its ``export.json``); ``verify`` checks every file's hash."""
    info = read_export(path)
    if verify:
        problems = export_problems(info)
        if problems:
            raise FormatError("; ".join(problems))
    return build(info, threads)


__all__ = ["RUNTIMES", "ExportedModel", "load_export"]
