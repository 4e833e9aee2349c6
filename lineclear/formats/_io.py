"""Atomic writes, overwrite protection, hashing and schema-tagged JSON.

Every output goes to a temporary file beside its target and is renamed into place at the end. Without
``overwrite`` the final step is a **no-replace** link (:func:`publish`): if another process wrote the
target meanwhile (two ``lineclear score --out same.h5`` started together), the second one is refused
there, instead of silently replacing the first one's file as a plain rename would.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from lineclear.errors import FormatError, LineclearError, OutputExistsError


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``, and a folder where a file goes; return the path."""
    path = Path(path)
    if path.is_dir():
        # --overwrite would not help: say what is wrong the first time
        raise LineclearError(f"{path}: is a directory, expected a file path")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)")
    return path


def _exists_error(path: Path) -> OutputExistsError:
    return OutputExistsError(f"{path}: was written by another process meanwhile; not replaced "
                             "(use --overwrite to replace it)")


def publish(tmp: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Move the finished file ``tmp`` to ``path``: a rename with ``overwrite``, else a no-replace link.

    Without ``overwrite`` an existing ``path`` (created after the up-front check, e.g. by a second
    lineclear run) raises :class:`OutputExistsError` and ``tmp`` stays for the caller to remove.
    ``os.link`` fails when the name exists, atomically; on a file system without hard links the
    fallback is a check right before the rename (a window of microseconds instead of the whole run).
    """
    tmp, path = Path(tmp), Path(path)
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV,
                             errno.ENOSYS, errno.EACCES):
            raise
        if os.path.lexists(path):
            raise _exists_error(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def publish_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename the finished folder ``tmp`` to ``path`` without replacing a folder that holds anything.

    rename(2) refuses a non-empty target folder (and a file); an empty folder is replaced, which loses nothing.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        os.rename(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise _exists_error(path) from None
        raise


def replace_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Put the finished folder ``tmp`` in place of the existing folder ``path``, whose contents the caller
    has checked are lineclear's own (:func:`check_replaceable`).

    In one step where the system can exchange two paths: a crash leaves the old folder or the new one, never
    none. Elsewhere the old folder is moved aside, the new one renamed in, and the old one put back if that
    fails. The old folder is removed afterwards.
    """
    tmp, path = Path(tmp), Path(path)
    if exchange_paths(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.replace(path, old)
    try:
        publish_dir(tmp, path)  # refuses a folder another process put there meanwhile
    except BaseException:
        if not path.exists():
            os.replace(old, path)  # the earlier folder goes back where it was
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_replaceable(out: str | os.PathLike, overwrite: bool, problem: Callable[[Path], str | None]) -> None:
    """Refuse an existing folder ``out`` unless ``overwrite`` and ``problem(out)`` finds nothing against replacing it."""
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{out}: exists (use --overwrite to replace it)")
        why = problem(out)
        if why:
            raise LineclearError(f"{out}: {why}")


def make_temp_dir(parent: str | os.PathLike, name: str) -> Path:
    """A new hidden folder in ``parent`` for building ``name``, with the usual permissions.

    ``tempfile.mkdtemp`` makes it 0700; a bundle or report built in it is renamed into place and
    must stay readable by other accounts (a line service account): 0777 less the umask, i.e. 0755.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place on success (see :func:`publish`).

    On any exception (including KeyboardInterrupt) the temporary file is removed,
    so a crash never leaves a half-written target. Without ``overwrite`` an existing target is
    refused both now and at the final step, so a concurrent writer is never silently replaced.
    """
    path = check_writable(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        blocker = next((a for a in path.parents if a.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise LineclearError(f"{path}: cannot write here ({blocker} is a file, not a folder)") from None
        raise LineclearError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    # mkstemp makes 0600 files; outputs get the usual permissions (a line service account reads them)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        publish(tmp_path, path, overwrite)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the system or file system cannot (then nothing was changed): the caller falls back
    to two renames, between which a crash would leave ``b`` missing.
    """
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """JSON text; NaN/inf are refused (they are not JSON) -- use None for undefined."""
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: dict, schema: str, overwrite: bool = False) -> Path:
    """Write ``obj`` with ``"schema": schema`` as its first key, atomically."""
    doc = {"schema": schema, **{k: v for k, v in obj.items() if k != "schema"}}
    return atomic_write_bytes(path, dumps(doc).encode("utf-8"), overwrite)


def read_json(path: str | os.PathLike, schema: str) -> dict:
    """Read a JSON file and check that it carries ``schema`` (name and major version)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not a JSON file (binary content; expected {schema})") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    doc = loads(text, path)
    if not isinstance(doc, dict) or "schema" not in doc:
        raise FormatError(f"{path}: not a lineclear file (no 'schema' key; expected {schema})")
    check_schema(path, doc["schema"], schema)
    return doc


def loads(text: str | bytes, where: Any) -> Any:
    """``json.loads`` whose every refusal is a :class:`FormatError` naming ``where``.

    Besides a JSONDecodeError, json raises a plain ValueError for an integer of more than 4300 digits and
    a RecursionError for deep nesting; both are corrupt input, not a crash.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise FormatError(f"{where}: not valid JSON (not UTF-8 text)") from None
    except ValueError as exc:
        raise FormatError(f"{where}: not valid JSON ({str(exc).split(':')[0]})") from None
    except RecursionError:
        raise FormatError(f"{where}: not valid JSON (nested too deeply)") from None


def write_checked_json(path: str | os.PathLike, doc: dict[str, Any], schema: str,
                       validate: Callable[[Path, dict[str, Any]], None], overwrite: bool = False) -> Path:
    """Stamp ``doc`` with the lineclear version and UTC time, ``validate`` it, write it atomically."""
    import datetime as _dt

    from lineclear import __version__

    doc = dict(doc)
    doc.setdefault("lineclear_version", __version__)
    doc.setdefault("created_utc", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    validate(Path(path), {"schema": schema, **doc})
    return write_json(path, doc, schema, overwrite)


def read_checked_json(path: str | os.PathLike, schema: str, validate: Callable[[Path, dict[str, Any]], None]) -> dict:
    """Read a JSON file of ``schema`` and ``validate`` it (one clear line on any problem)."""
    doc = read_json(path, schema)
    validate(Path(path), doc)
    return doc


def finite_number(v: Any) -> bool:
    """A JSON number a float can hold: not a bool, not NaN/inf, not an integer beyond float range."""
    if type(v) not in (int, float):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # math.isfinite(10**400)
        return False


def check_schema(path: str | os.PathLike, found: Any, expected: str) -> None:
    """``expected`` is ``name/major``; a file of the same name and major version is accepted."""
    name, _, major = expected.partition("/")
    if not isinstance(found, str) or found.partition("/")[0] != name:
        raise FormatError(f"{path}: schema is {found!r}, expected {expected}")
    if found.partition("/")[2] != major:
        raise FormatError(f"{path}: {found} is not supported by this lineclear (expects {expected})")
