"""Anomaly maps file: HDF5, schema ``lineclear.maps/1``.

Layout (see the README's "File formats" section):

========== ======================= ==========================================================
path       type / shape            meaning
========== ======================= ==========================================================
/maps      float32 (N,H,W)         anomaly map per image at the model's resolution; chunked
                                   one image per chunk, gzip-compressed
/scores    float32 (N,)            image anomaly score
/image_ids UTF-8 str (N,)          image path relative to the dataset root (fixed-length, as long as the
                                   longest id: variable-length strings live in HDF5's unchecksummed
                                   global heap; files with those are read too)
/labels    int8 (N,)               0 normal, 1 anomalous, -1 unknown
/valid     uint8 (N,H,W), optional 1 where the pixel counts (inspection mask and
                                   registration validity), 0 where it is ignored
attrs      root attributes         schema, lineclear_version, model, view, checkpoint,
                                   checkpoint_sha256, image_size, map_size, mask_stage,
                                   mask, registered, argv, created_utc, ...
========== ======================= ==========================================================
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from lineclear import __version__
from lineclear.errors import FormatError, LineclearError
from lineclear.formats._io import atomic_path, check_schema

MAPS_SCHEMA = "lineclear.maps/1"


def provenance(**extra: Any) -> dict[str, Any]:
    """Root attributes every maps file carries, plus ``extra`` (model, view, ...)."""
    base = {
        "lineclear_version": __version__,
        "argv": " ".join(sys.argv),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    base.update({k: v for k, v in extra.items() if v is not None})
    return base


def _attr_value(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)) and not (
        isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v)
    ):
        v = json.dumps(v)
    if isinstance(v, Path):
        v = str(v)
    if isinstance(v, str):
        # UTF-8 bytes of exactly their length (nothing truncated), stored in the checksummed object header;
        # h5py's default, a variable-length string, lives in HDF5's global heap, which has no checksum and
        # on which HDF5 can loop forever when the file is damaged (found by tests/test_formats_fuzz.py)
        return np.bytes_(v.encode("utf-8"))
    if isinstance(v, bool):
        return int(v)
    return v


class MapsWriter:
    """Streamed writer: append images one batch at a time, renamed into place on close.

    >>> with MapsWriter("maps.h5", (256, 256), attrs=provenance(model="draem")) as w:
    ...     w.append(maps, scores, image_ids, labels, valid=None)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        map_size: tuple[int, int],
        attrs: dict[str, Any] | None = None,
        with_valid: bool = False,
        overwrite: bool = False,
        compression: int = 1,
    ) -> None:
        self.path = Path(path)
        self.map_size = (int(map_size[0]), int(map_size[1]))
        self.attrs = dict(attrs or {})
        self.with_valid = with_valid
        self.overwrite = overwrite
        self.compression = compression
        self._ctx = None
        self._f: h5py.File | None = None
        self._ids: list[bytes] = []  # written on close, as wide as the longest
        self.n = 0

    def __enter__(self) -> "MapsWriter":
        self._ctx = atomic_path(self.path, self.overwrite)
        tmp = self._ctx.__enter__()
        h, w = self.map_size
        # HDF5 1.10's format checksums the metadata, and fletcher32 every chunk: a damaged file is refused on
        # read instead of being parsed (HDF5 can loop forever on a damaged header) or read as wrong scores
        f = h5py.File(tmp, "w", libver=("v110", "v110"))
        self._f = f
        kw = dict(compression="gzip", compression_opts=self.compression, shuffle=True, fletcher32=True)
        f.create_dataset("maps", shape=(0, h, w), maxshape=(None, h, w), dtype="float32", chunks=(1, h, w), **kw)
        f.create_dataset("scores", shape=(0,), maxshape=(None,), dtype="float32", chunks=(1024,), fletcher32=True)
        f.create_dataset("labels", shape=(0,), maxshape=(None,), dtype="int8", chunks=(1024,), fletcher32=True)
        if self.with_valid:
            f.create_dataset("valid", shape=(0, h, w), maxshape=(None, h, w), dtype="uint8", chunks=(1, h, w), **kw)
        f.attrs["schema"] = _attr_value(MAPS_SCHEMA)
        f.attrs["map_size"] = list(self.map_size)
        for k, v in self.attrs.items():
            f.attrs[k] = _attr_value(v)
        return self

    def append(
        self,
        maps: np.ndarray,
        scores: np.ndarray,
        image_ids: list[str],
        labels: np.ndarray | list[int],
        valid: np.ndarray | None = None,
    ) -> None:
        """Append a batch: maps (B,H,W) float, scores (B,), ids, labels (B,), valid (B,H,W) bool."""
        assert self._f is not None, "use MapsWriter as a context manager"
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim == 2:
            maps = maps[None]
        b = maps.shape[0]
        if maps.shape[1:] != self.map_size:
            raise LineclearError(f"{self.path}: map of size {maps.shape[1:]} does not match the file's {self.map_size}")
        if not np.all(np.isfinite(maps)):
            raise LineclearError(f"{self.path}: refusing to write NaN or infinite anomaly maps ({image_ids[:3]} ...)")
        scores = np.asarray(scores, dtype=np.float32).reshape(b)
        labels = np.asarray(labels, dtype=np.int8).reshape(b)
        if len(image_ids) != b:
            raise ValueError("one image id per map")
        f = self._f
        n0, n1 = self.n, self.n + b
        for name in ("maps", "scores", "labels"):
            f[name].resize(n1, axis=0)
        f["maps"][n0:n1] = maps
        f["scores"][n0:n1] = scores
        self._ids += [str(i).encode("utf-8") for i in image_ids]
        f["labels"][n0:n1] = labels
        if self.with_valid:
            if valid is None:
                valid = np.ones((b, *self.map_size), dtype=bool)
            valid = np.asarray(valid).reshape(b, *self.map_size)
            f["valid"].resize(n1, axis=0)
            f["valid"][n0:n1] = valid.astype(np.uint8)
        elif valid is not None:
            raise ValueError("valid masks given to a writer created without with_valid=True")
        self.n = n1

    def set_attrs(self, **attrs: Any) -> None:
        """Add provenance known only after the maps were computed (e.g. how many shifted copies failed)."""
        assert self._f is not None, "use MapsWriter as a context manager"
        for k, v in attrs.items():
            self._f.attrs[k] = _attr_value(v)

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._f is not None and self._ctx is not None
        if exc_type is None:
            width = max([len(i) for i in self._ids] + [1])
            self._f.create_dataset("image_ids", data=np.array(self._ids, dtype=h5py.string_dtype("utf-8", width)),
                                   chunks=(max(1, min(self.n, 1024)),), fletcher32=True)
        self._f.attrs["count"] = self.n
        self._f.close()
        return bool(self._ctx.__exit__(exc_type, exc, tb))


class MapsFile:
    """Read a ``lineclear.maps/1`` file; validates the schema and the shapes on open.

    Small arrays (scores, ids, labels) are read eagerly; maps are read lazily, so a
    file of any size can be processed with bounded memory via :meth:`iter_batches`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FormatError(f"{self.path}: no such maps file")
        try:
            self._f = h5py.File(self.path, "r")
        except Exception:  # OSError mostly; h5py raises others on some damaged superblocks
            raise FormatError(f"{self.path}: not an HDF5 file (or it is corrupt)") from None
        try:
            self._validate()
        except LineclearError:
            self._f.close()
            raise
        except Exception as exc:  # a damaged file: h5py raises KeyError, RuntimeError, OSError, ValueError, ...
            self._f.close()
            raise self._corrupt(exc) from None

    def _corrupt(self, exc: BaseException, what: str = "") -> FormatError:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        return FormatError(f"{self.path}: corrupt maps file{what} ({type(exc).__name__}: {first})")

    def _dataset(self, name: str, ndim: int, kinds: str, what: str) -> h5py.Dataset:
        d = self._f.get(name)
        if not isinstance(d, h5py.Dataset):
            raise FormatError(f"{self.path}: corrupt maps file (no /{name} dataset)")
        if d.ndim != ndim:
            raise FormatError(f"{self.path}: /{name} must be {what}, found shape {d.shape}")
        if d.dtype.kind not in kinds and not (kinds == "S" and h5py.check_string_dtype(d.dtype)):
            raise FormatError(f"{self.path}: /{name} has type {d.dtype}, expected {what}")
        return d

    def _attr(self, name: str) -> Any:
        """A root attribute, read only when its type is a string or number: HDF5 can loop forever reading
        a damaged attribute of another type (a reference, a vlen of garbage) from an unchecksummed file."""
        aid = self._f.attrs.get_id(name)
        if aid.get_type().get_class() not in (h5py.h5t.STRING, h5py.h5t.INTEGER, h5py.h5t.FLOAT, h5py.h5t.ENUM):
            raise FormatError(f"{self.path}: corrupt maps file (attribute {name!r} is of an unexpected type)")
        if aid.get_space().get_simple_extent_npoints() > 4096:
            raise FormatError(f"{self.path}: corrupt maps file (attribute {name!r} holds too many values)")
        return _decode(self._f.attrs[name])

    def _validate(self) -> None:
        f = self._f
        if "schema" not in f.attrs:
            raise FormatError(f"{self.path}: not a lineclear maps file (no schema attribute; expected {MAPS_SCHEMA})")
        check_schema(self.path, self._attr("schema"), MAPS_SCHEMA)
        maps = self._dataset("maps", 3, "f", "(N,H,W) float")
        n = maps.shape[0]
        kinds = {"scores": ("fiu", "(N,) numbers"), "image_ids": ("S", "(N,) strings"), "labels": ("iu", "(N,) integers")}
        for name, (kind, what) in kinds.items():
            if self._dataset(name, 1, kind, what).shape != (n,):
                raise FormatError(f"{self.path}: /{name} has shape {f[name].shape}, expected ({n},)")
        if "valid" in f and self._dataset("valid", 3, "biu", "(N,H,W) 0/1").shape != maps.shape:
            raise FormatError(f"{self.path}: /valid shape {f['valid'].shape} does not match /maps {maps.shape}")
        self.scores = f["scores"][:].astype(np.float64)
        if not np.all(np.isfinite(self.scores)):
            raise FormatError(f"{self.path}: corrupt maps file (NaN or infinite image scores)")
        try:
            self.image_ids = [_decode(s) for s in f["image_ids"][:]]
        except UnicodeDecodeError:
            raise FormatError(f"{self.path}: corrupt maps file (an image id is not UTF-8)") from None
        self.labels = f["labels"][:].astype(np.int64)
        self.attrs = {k: self._attr(k) for k in f.attrs}

    def __enter__(self) -> "MapsFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._f:
            self._f.close()

    def __len__(self) -> int:
        return int(self._f["maps"].shape[0])

    @property
    def map_size(self) -> tuple[int, int]:
        _, h, w = self._f["maps"].shape
        return int(h), int(w)

    @property
    def has_valid(self) -> bool:
        return "valid" in self._f

    def _read(self, name: str, sel: int | slice) -> np.ndarray:
        """``/name[sel]``; a damaged chunk or a non-finite map value is a FormatError naming the images."""
        try:
            out = self._f[name][sel]
        except Exception as exc:  # h5py: OSError for a chunk that fails to decompress, and others
            raise self._corrupt(exc, f" (cannot read /{name}[{_sel(sel)}])") from None
        if name == "maps" and not np.all(np.isfinite(out)):
            raise FormatError(f"{self.path}: corrupt maps file (NaN or infinite values in /maps[{_sel(sel)}])")
        return out

    def map(self, i: int) -> np.ndarray:
        return self._read("maps", i)

    def valid(self, i: int) -> np.ndarray:
        """bool (H,W): the pixels that count (all True when the file has no /valid)."""
        if self.has_valid:
            return self._read("valid", i).astype(bool)
        return np.ones(self.map_size, dtype=bool)

    def iter_batches(self, batch: int = 16) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """Yield ``(slice, maps (b,H,W) float32, valid (b,H,W) bool)`` in file order."""
        n = len(self)
        for i in range(0, n, batch):
            sl = slice(i, min(n, i + batch))
            maps = self._read("maps", sl)
            valid = self._read("valid", sl).astype(bool) if self.has_valid else np.ones(maps.shape, dtype=bool)
            yield sl, maps, valid


def _sel(sel: int | slice) -> str:
    return f"{sel.start}:{sel.stop}" if isinstance(sel, slice) else str(sel)


def _decode(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v
