"""What the station writes to the record: one ``start`` row per run, one ``set`` row per image set.

Image and overlay files are hashed right after the check, so the record says which bytes were judged
(a camera that saves every set as ``A.png`` replaces the file later; the hash stays).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from lineclear import __version__
from lineclear.formats import sha256_file
from lineclear.formats.deploy import manifest_path
from lineclear.formats.verdict import VERDICT_SCHEMA


def file_digest(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """``{"path", "sha256", "bytes"}`` of a file, ``{"path", "error"}`` when it cannot be read, None for no path."""
    if not path:
        return None
    try:
        return {"path": str(path), "sha256": sha256_file(path), "bytes": Path(path).stat().st_size}
    except OSError as exc:
        return {"path": str(path), "error": exc.strerror or str(exc)}


def bundle_info(bundle_root: str | os.PathLike) -> dict[str, Any]:
    """The bundle's path and the SHA-256 of its manifest (which holds the SHA-256 of every bundle file)."""
    m = manifest_path(bundle_root)
    return {"path": str(Path(bundle_root).resolve()), "manifest_sha256": sha256_file(m)}


def start_body(bundle: dict[str, Any], watch_dir: str | os.PathLike, views: list[str]) -> dict[str, Any]:
    return {"bundle": bundle, "views": views, "watch": str(Path(watch_dir).resolve()), "lineclear_version": __version__,
            "host": platform.node(), "argv": sys.argv, "pid": os.getpid()}


def set_body(set_no: int, doc: dict[str, Any], bundle: dict[str, Any]) -> dict[str, Any]:
    """The ``set`` row: the verdict document (``lineclear.verdict/1``) and the hashes of what it judged."""
    views = doc.get("views", [])
    return {
        "set": set_no,
        "verdict": doc,
        "images": {v["view"]: file_digest(v.get("image")) for v in views if v.get("image")},
        "overlays": {v["view"]: file_digest(v.get("overlay")) for v in views if v.get("overlay")},
        "bundle": bundle,
        "lineclear_version": __version__,
    }


def ack_body(set_no: int, name: str, comment: str, when_utc: str, client: str | None) -> dict[str, Any]:
    return {"set": set_no, "name": name, "comment": comment, "acknowledged_utc": when_utc, "client": client}


_SET_KEYS = ("set", "set_verdict", "set_exit_code", "checked_utc")


def sets_missing_from_record(log_records: list[dict[str, Any]], last_set: int, last_checked_utc: str | None
                             ) -> list[tuple[int, dict[str, Any]]]:
    """Sets that the watch log holds after the record's last set: ``[(set_no, verdict document)]``.

    The log is written (fsynced) before the record, so a station killed between the two has one set more
    in the log. The record's last set is found in the log by its number *and* time (a log that other
    runs also wrote to numbers sets its own way); only the sets after it, numbered on from it, are
    returned. Nothing is returned when the record's last set is not in the log.
    """
    groups: list[tuple[int, list[dict[str, Any]]]] = []
    for r in log_records:
        if groups and groups[-1][0] == r["set"] and groups[-1][1][0].get("checked_utc") == r.get("checked_utc"):
            groups[-1][1].append(r)
        else:
            groups.append((r["set"], [r]))
    anchor = next((i for i, (n, views) in enumerate(groups)
                   if n == last_set and views[0].get("checked_utc") == last_checked_utc), None)
    if anchor is None:
        return []
    out = []
    expect = last_set + 1
    for n, views in groups[anchor + 1:]:
        if n != expect:
            break
        first = views[0]
        out.append((n, {
            "schema": VERDICT_SCHEMA, "verdict": first["set_verdict"], "exit_code": first["set_exit_code"],
            "views": [{k: v for k, v in r.items() if k not in _SET_KEYS} for r in views],
            "checked_utc": first.get("checked_utc"), "lineclear_version": __version__,
        }))
        expect += 1
    return out
