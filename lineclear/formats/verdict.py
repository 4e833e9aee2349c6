"""Verdict document: JSON, schema ``lineclear.verdict/1`` (``lineclear check`` on stdout and ``--out``).

=========================== ===================================================================
key                         meaning
=========================== ===================================================================
schema                      ``lineclear.verdict/1``
verdict                     ``clear`` | ``leftover`` | ``undecided`` for the whole image set
exit_code                   0 clear, 3 leftover, 4 undecided (what the command exits with)
bundle                      the deployment bundle used
views[]                     one object per expected view (below)
timings_ms                  ``load`` (bundle, models, warm-up) and ``check`` (this set), ms
device, checked_utc         where and when; ``lineclear_version``
=========================== ===================================================================

Per view: ``view``, ``verdict``, ``reason``, ``image``, ``model``, ``score``, ``threshold`` (image
level), ``pixel_threshold``, ``level`` (what decided: ``image`` = score above ``threshold``, ``pixel`` =
some counted pixel above ``pixel_threshold``), ``regions[]`` (``bbox`` [x, y, w, h] and ``area_px`` in original-image
pixels, ``peak_score``, ``peak_xy``, ``bbox_map``, ``area_map_px``), ``regions_total``, ``peak_xy``,
``registration`` (``ok``, ``reason``, ``transform`` image→reference and the QC figures, or null),
``image_qc`` (gray-level statistics), ``timings_ms``, ``overlay`` (PNG path or null), and when they apply
``raised_fraction`` (share of the inspected area above the pixel threshold; beyond the manifest's
``max_raised_fraction`` the view is undecided, "scene changed"), ``notes[]`` (e.g. the image was resized)
and ``overlay_error``.

The watch log (``--log``) holds one JSON object per line and per view: the per-view object above plus
``set`` (sequence number), ``set_verdict``, ``set_exit_code`` and ``checked_utc``. Each set's lines are
appended with one ``write`` and fsynced before the set is reported, so a crash loses no reported set; a
power cut may leave an unfinished last line, which :func:`read_verdict_log` sets apart (``torn``) and the
next ``--watch`` run on the same log removes before it appends (:func:`open_verdict_log`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lineclear.errors import FormatError, LineclearError
from lineclear.formats._io import _json_default, _umask, finite_number, loads, read_json, write_json

VERDICT_SCHEMA = "lineclear.verdict/1"
_VERDICTS = ("clear", "leftover", "undecided")
_EXIT = {"clear": 0, "leftover": 3, "undecided": 4}


def validate_view(path: Any, v: Any) -> None:
    if not isinstance(v, dict):
        raise FormatError(f"{path}: a view verdict must be an object")
    for key in ("view", "verdict", "reason", "regions"):
        if key not in v:
            raise FormatError(f"{path}: view verdict without {key!r}")
    if v["verdict"] not in _VERDICTS:
        raise FormatError(f"{path}: verdict {v['verdict']!r} is not one of {_VERDICTS}")
    score = v.get("score")
    if score is not None and not finite_number(score):
        raise FormatError(f"{path}: score of view {v['view']!r} must be a finite number or null, found {score!r}")
    if v["verdict"] == "leftover" and score is None:
        raise FormatError(f"{path}: a leftover verdict for view {v['view']} without a score")
    if not isinstance(v["regions"], list):
        raise FormatError(f"{path}: regions of view {v['view']!r} must be a list")
    for r in v["regions"]:
        bbox = r.get("bbox") if isinstance(r, dict) else None
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(x, int) for x in bbox)):
            raise FormatError(f"{path}: region of view {v['view']} needs bbox [x, y, w, h] integers")


def validate_verdict(path: Any, doc: dict[str, Any]) -> None:
    if doc.get("verdict") not in _VERDICTS:
        raise FormatError(f"{path}: verdict {doc.get('verdict')!r} is not one of {_VERDICTS}")
    views = doc.get("views")
    if not isinstance(views, list):
        raise FormatError(f"{path}: 'views' must be a list")
    for v in views:
        validate_view(path, v)
    worst = "undecided" if not views else max((v["verdict"] for v in views), key=("clear", "leftover", "undecided").index)
    if doc["verdict"] != worst or doc.get("exit_code") != _EXIT[worst]:
        raise FormatError(f"{path}: set verdict {doc['verdict']!r} / exit code {doc.get('exit_code')} disagree "
                          f"with the views' verdicts (expected {worst!r} / {_EXIT[worst]})")


def write_verdict(path: str | os.PathLike, doc: dict[str, Any], overwrite: bool = False) -> Path:
    validate_verdict(path, {"schema": VERDICT_SCHEMA, **doc})
    return write_json(path, doc, VERDICT_SCHEMA, overwrite=overwrite)


def read_verdict(path: str | os.PathLike) -> dict[str, Any]:
    doc = read_json(path, VERDICT_SCHEMA)
    validate_verdict(path, doc)
    return doc


# -- the watch log --------------------------------------------------------------------------------------------

# Every record starts so (json.dumps keeps log_records' key order): how an unfinished last line is known
# to be lineclear's own before it is removed.
_RECORD_START = b'{"set": '


@dataclass
class VerdictLog:
    """A watch log: ``records`` in file order; ``torn`` is an unfinished last line (no newline, not
    valid JSON: a write cut short), left out of ``records``; ``complete_bytes`` is where it starts."""

    records: list[dict[str, Any]] = field(default_factory=list)
    complete_bytes: int = 0
    torn: bytes = b""


def validate_log_record(where: Any, rec: Any) -> None:
    if not isinstance(rec, dict):
        raise FormatError(f"{where}: a verdict log line must be a JSON object")
    s = rec.get("set")
    if type(s) is not int or s < 1:
        raise FormatError(f"{where}: 'set' must be a positive integer, found {s!r}")
    sv = rec.get("set_verdict")
    if sv not in _VERDICTS:
        raise FormatError(f"{where}: set_verdict {sv!r} is not one of {_VERDICTS}")
    code = rec.get("set_exit_code")
    if type(code) is not int or code != _EXIT[sv]:
        raise FormatError(f"{where}: set_exit_code {code!r} disagrees with set_verdict {sv!r}")
    validate_view(where, rec)


def _log_line(line: bytes, where: str) -> dict[str, Any]:
    rec = loads(line, where)
    validate_log_record(where, rec)
    return rec


def _unfinished(line: bytes) -> bool:
    """Not even JSON (cut short, perhaps mid-character): a line whose write never finished."""
    try:
        json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return True
    return False


def parse_verdict_log(data: bytes, name: str = "<log>") -> VerdictLog:
    """Parse watch-log bytes; every complete line must be a verdict record (blank lines are skipped)."""
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]
    log = VerdictLog(complete_bytes=end)
    for no, line in enumerate(lines, 1):
        if line.strip():
            log.records.append(_log_line(line, f"{name}:{no}"))
    tail = data[end:]
    if tail.strip():
        if _unfinished(tail):
            log.torn = tail
            return log
        # complete JSON that only lacks its newline: a record like any other
        log.records.append(_log_line(tail, f"{name}:{len(lines) + 1}"))
        log.complete_bytes = len(data)
    return log


def read_verdict_log(path: str | os.PathLike) -> VerdictLog:
    """Read a ``check --watch --log`` file (see :class:`VerdictLog`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such verdict log") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_verdict_log(data, str(path))


def open_verdict_log(path: str | os.PathLike) -> tuple[int, str | None]:
    """Open the watch log for appending: ``(fd, note)``.

    An unfinished last line of lineclear's own (a write cut short) is removed, and a last line without
    its newline is ended, so the first new record starts a line of its own; ``note`` says which.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666 & ~_umask())
    except OSError as exc:
        raise LineclearError(f"{path}: cannot open the log ({exc.strerror or exc})") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return fd, None
        start, chunk = size, 1 << 16
        while start > 0:  # find where the last line starts
            lo = max(0, start - chunk)
            nl = os.pread(fd, start - lo, lo).rfind(b"\n")
            if nl >= 0:
                start = lo + nl + 1
                break
            start = lo
        tail = os.pread(fd, size - start, start)
        if tail.startswith(_RECORD_START) and _unfinished(tail):
            os.ftruncate(fd, start)
            os.fsync(fd)
            return fd, f"{path}: removed an unfinished last line ({size - start} bytes, a write cut short)"
        os.write(fd, b"\n")
        return fd, None
    except BaseException:
        os.close(fd)
        raise


def append_verdict_log(fd: int, records: Iterable[dict[str, Any]]) -> None:
    """Append one set's records with a single write, then fsync: the set is in the log, or none of it."""
    data = "".join(json.dumps(r, default=_json_default, allow_nan=False) + "\n" for r in records).encode("utf-8")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)
