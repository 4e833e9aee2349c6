"""The only place that knows file layouts. Every file carries a schema name and version.

=============================== ============================== ===========================
schema                          file                           module
=============================== ============================== ===========================
``lineclear.maps/1``            anomaly maps, HDF5             :mod:`.maps`
``lineclear.thresholds/2``      thresholds, JSON               :mod:`.thresholds`
``lineclear.checkpoint/1``      model checkpoint, ``.pt``      :mod:`.checkpoint`
``lineclear.registration/1``    registration report, JSON      :mod:`.registration`
``lineclear.metrics/1``         evaluation results, JSON       :mod:`.metrics`
``lineclear.run/1``             run directory config.json      :mod:`.run`
``lineclear.train_state/1``     resumable training state       :mod:`.checkpoint`
``lineclear.shifts/1``          synth's true homographies      :mod:`.synth`
``lineclear.deploy/2``          line bundle manifest, JSON     :mod:`.deploy` (``/1`` still read)
``lineclear.export/1``          exported model (ONNX/OpenVINO) :mod:`.export`
``lineclear.verdict/1``         line-side verdicts, JSON       :mod:`.verdict`
(JSON lines, records validated) the watch log (``--log``)      :mod:`.verdict`
``lineclear.record/1``          line-clearance record, SQLite  :mod:`.record`
(VIA 1/2 CSV and JSON)          annotations from VIA          :mod:`.via`
(PNG, no schema)                masks, uint8 0/255             :mod:`.masks`
=============================== ============================== ===========================

A new file format gets its own submodule here. All writes are atomic and refuse to overwrite without ``overwrite=True``.
"""

from lineclear.formats._io import (
    atomic_path,
    atomic_write_bytes,
    check_schema,
    check_writable,
    read_json,
    sha256_file,
    write_json,
)
from lineclear.formats.checkpoint import CHECKPOINT_SCHEMA, load_checkpoint, save_checkpoint
from lineclear.formats.maps import MAPS_SCHEMA, MapsFile, MapsWriter, provenance
from lineclear.formats.masks import read_mask, resize_mask, write_mask
from lineclear.formats.metrics import METRICS_SCHEMA, read_metrics, write_metrics
from lineclear.formats.thresholds import THRESHOLDS_SCHEMA, decision_threshold, level_of, read_thresholds, write_thresholds

__all__ = [
    "CHECKPOINT_SCHEMA",
    "MAPS_SCHEMA",
    "METRICS_SCHEMA",
    "read_metrics",
    "write_metrics",
    "THRESHOLDS_SCHEMA",
    "MapsFile",
    "MapsWriter",
    "atomic_path",
    "atomic_write_bytes",
    "check_schema",
    "check_writable",
    "load_checkpoint",
    "provenance",
    "read_json",
    "read_mask",
    "read_thresholds",
    "decision_threshold",
    "level_of",
    "resize_mask",
    "save_checkpoint",
    "sha256_file",
    "write_json",
    "write_mask",
    "write_thresholds",
]
