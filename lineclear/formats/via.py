"""VGG Image Annotator (VIA) files: the CSV export and the project/annotation JSON, VIA 1 and VIA 2.

The layout is detected from the content (not the file name):

* **CSV** (VIA 2 "Export annotations (as csv)"; VIA 1 writes the same columns with
  the header starting ``#filename``)::

      filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes
      a.png,1234,"{}",2,0,"{""name"":""rect"",""x"":10,""y"":20,""width"":30,""height"":40}","{""type"":""leaflet""}"
      a.png,1234,"{}",2,1,"{""name"":""circle"",""cx"":5,""cy"":6,""r"":3}","{}"
      b.png,999,"{}",0,0,"{}","{}"

  One row per region; an image without regions has one row with ``region_count`` 0
  and empty shape ``{}``. JSON cells are CSV-quoted with doubled quotes. A UTF-8 BOM,
  CRLF line ends, empty rows and extra columns are accepted.
* **JSON**: a VIA 2 project (``{"_via_img_metadata": {key: entry}, ...}``), a VIA 2
  JSON export (``{key: entry}`` with ``entry.regions`` a list) or a VIA 1 project
  (``entry.regions`` a dict keyed by region index). ``entry`` holds ``filename``,
  ``size``, ``file_attributes`` and ``regions`` of ``{shape_attributes, region_attributes}``.

Shapes are validated here (:func:`lineclear.shapes.validate_shape`), so a bad file is
refused before anything is written, with the line (CSV) or entry (JSON) named.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lineclear.errors import FormatError, LineclearError
from lineclear.formats._io import atomic_write_bytes, loads
from lineclear.shapes import Region, validate_shape

CSV_COLUMNS = (
    "filename",
    "file_size",
    "file_attributes",
    "region_count",
    "region_id",
    "region_shape_attributes",
    "region_attributes",
)


@dataclass
class ImageAnnotation:
    """All regions of one image, in file order. ``filename`` as written in the file."""

    filename: str
    size: int | None = None
    file_attributes: dict[str, Any] = field(default_factory=dict)
    regions: list[Region] = field(default_factory=list)

    @property
    def basename(self) -> str:
        # VIA keeps whatever the user loaded (a name, a relative path or a URL).
        return self.filename.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def read_via(path: str | os.PathLike) -> list[ImageAnnotation]:
    """Read a VIA CSV or JSON file (any supported layout) → one entry per image, in file order."""
    path = Path(path)
    if not path.is_file():
        raise LineclearError(f"{path}: no such annotation file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise LineclearError(f"{path}: cannot read ({exc.strerror})") from None
    stripped = text.lstrip()
    if not stripped:
        raise FormatError(f"{path}: empty annotation file")
    if stripped[0] in "{[":
        return parse_via_json(text, str(path))
    return parse_via_csv(text, str(path))


def _json_cell(cell: str, where: str, column: str) -> Any:
    cell = cell.strip()
    if cell == "":
        return {}
    try:
        return json.loads(cell)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where}: {column} is not valid JSON ({exc.msg}): {cell[:60]!r}") from None
    except (ValueError, RecursionError):  # a number of over 4300 digits; nesting deeper than Python's stack
        raise FormatError(f"{where}: {column} is not valid JSON (too long a number or too deep): {cell[:60]!r}") from None


def _whole(value: Any) -> int | None:
    """``value`` as an int when it is a finite number or a numeric string (``1234``, ``1234.0``), else None.

    VIA writes -1 for an image loaded from a URL. ``int(float(...))`` alone overflows on ``1e999``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(f) if math.isfinite(f) else None


def _count(cell: str, where: str, what: str) -> int:
    n = _whole(cell)
    if n is None:
        raise FormatError(f"{where}: {what} is not a number: {cell[:60]!r}")
    return n


def parse_via_csv(text: str, name: str = "<csv>") -> list[ImageAnnotation]:
    """Parse VIA CSV text (BOM already removed or not). Errors name ``name:line``."""
    text = text.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    images: dict[str, ImageAnnotation] = {}
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip().lstrip("#").strip().lower() for c in row]
            for col in ("filename", "region_shape_attributes"):
                if col not in header:
                    raise FormatError(
                        f"{name}:{line}: not a VIA CSV (header lacks {col!r}; expected {','.join(CSV_COLUMNS)})"
                    )
            idx = {c: header.index(c) for c in CSV_COLUMNS if c in header}
            continue
        where = f"{name}:{line}"
        if len(row) != len(header):
            raise FormatError(
                f"{where}: malformed row: {len(row)} fields, expected {len(header)} "
                "(JSON cells must be quoted, with inner quotes doubled)"
            )
        fname = row[idx["filename"]].strip()
        if not fname:
            raise FormatError(f"{where}: empty filename")
        ann = images.get(fname)
        if ann is None:
            size = None
            if "file_size" in idx and row[idx["file_size"]].strip():
                size = _count(row[idx["file_size"]].strip(), where, "file_size")
            fattr = _json_cell(row[idx["file_attributes"]], where, "file_attributes") if "file_attributes" in idx else {}
            ann = images[fname] = ImageAnnotation(fname, size, fattr if isinstance(fattr, dict) else {})
        if "region_count" in idx and row[idx["region_count"]].strip():
            _count(row[idx["region_count"]].strip(), where, "region_count")
        shape = _json_cell(row[idx["region_shape_attributes"]], where, "region_shape_attributes")
        if shape == {}:
            continue  # VIA's row for an image without regions
        attrs = _json_cell(row[idx["region_attributes"]], where, "region_attributes") if "region_attributes" in idx else {}
        if not isinstance(attrs, dict):
            raise FormatError(f"{where}: region_attributes must be a JSON object")
        ann.regions.append(Region(validate_shape(shape, where), attrs, where))
    if header is None:
        raise FormatError(f"{name}: no header row (expected {','.join(CSV_COLUMNS)})")
    return list(images.values())


def parse_via_json(text: str, name: str = "<json>") -> list[ImageAnnotation]:
    """Parse a VIA 1/VIA 2 project or VIA 2 JSON export."""
    doc = loads(text.lstrip("\ufeff"), name)
    if not isinstance(doc, dict):
        raise FormatError(f"{name}: not a VIA project (top level is not an object)")
    if "_via_img_metadata" in doc:
        entries = doc["_via_img_metadata"]
    elif "project" in doc and "metadata" in doc and "file" in doc:
        raise FormatError(f"{name}: a VIA 3 project; export it from VIA as CSV, or save a VIA 2 project")
    else:
        entries = doc
    if not isinstance(entries, dict):
        raise FormatError(f"{name}: _via_img_metadata is not an object")
    out: list[ImageAnnotation] = []
    for key, entry in entries.items():
        if str(key).startswith("_via_"):
            continue  # settings, attributes, data format version of a project file
        where = f"{name}: entry {key!r}"
        if not isinstance(entry, dict) or "filename" not in entry:
            raise FormatError(f"{where}: not a VIA image entry (no 'filename')")
        regions = entry.get("regions", [])
        if isinstance(regions, dict):  # VIA 1: {"0": {...}, "1": {...}}
            try:
                regions = [regions[k] for k in sorted(regions, key=lambda k: int(k))]
            except ValueError:
                regions = list(regions.values())
        if not isinstance(regions, list):
            raise FormatError(f"{where}: 'regions' must be a list (VIA 2) or an object (VIA 1)")
        size = entry.get("size")
        ann = ImageAnnotation(
            str(entry["filename"]),
            _whole(size),  # only informative: VIA's own files may hold anything here
            entry.get("file_attributes") if isinstance(entry.get("file_attributes"), dict) else {},
        )
        for i, reg in enumerate(regions):
            rwhere = f"{where} region {i}"
            if not isinstance(reg, dict):
                raise FormatError(f"{rwhere}: not an object")
            shape = reg.get("shape_attributes", {})
            if shape == {}:
                continue
            attrs = reg.get("region_attributes", {})
            ann.regions.append(Region(validate_shape(shape, rwhere), attrs if isinstance(attrs, dict) else {}, rwhere))
        out.append(ann)
    return out


def _plain(obj: Any) -> Any:
    """Integral floats as ints (VIA writes ``10``, not ``10.0``); the parsed value is the same."""
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _cell(obj: Any) -> str:
    # VIA 2 writes compact JSON (JSON.stringify) in quotes, inner quotes doubled.
    return '"' + json.dumps(_plain(obj), separators=(",", ":"), ensure_ascii=False).replace('"', '""') + '"'


def _name_cell(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\n\r') else name


def format_via_csv(images: Iterable[ImageAnnotation]) -> str:
    """VIA 2 CSV text, exactly as VIA 2 exports it (LF line ends, ``region_count`` 0 rows)."""
    lines = [",".join(CSV_COLUMNS)]
    for ann in images:
        prefix = f"{_name_cell(ann.filename)},{ann.size if ann.size is not None else ''},{_cell(ann.file_attributes)}"
        if not ann.regions:
            lines.append(prefix + ',0,0,"{}","{}"')
        for i, reg in enumerate(ann.regions):
            lines.append(f"{prefix},{len(ann.regions)},{i},{_cell(reg.shape)},{_cell(reg.attributes)}")
    return "\n".join(lines) + "\n"


def write_via_csv(path: str | os.PathLike, images: Iterable[ImageAnnotation], overwrite: bool = False) -> Path:
    """Write a VIA 2 CSV atomically (refuses an existing file unless ``overwrite``)."""
    return atomic_write_bytes(path, format_via_csv(images).encode("utf-8"), overwrite)
