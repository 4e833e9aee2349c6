"""Deployment bundle manifest: ``<bundle>/manifest.json``, schema ``lineclear.deploy/2`` (``/1`` still read).

A bundle is a folder a line PC needs and nothing else::

    line/manifest.json            this file
    line/<view>/model.pt          the checkpoint (state dict + JSON), for the torch runtime
    line/<view>/onnx/...          an export (lineclear.export/1), for the onnx or openvino runtime
    line/<view>/thresholds.json   lineclear.thresholds/1 (pixel and image thresholds)
    line/<view>/reference.<ext>   the registration reference image
    line/<view>/mask.png          the inspection mask (only when the view is masked)
    line/<view>/run.json          the training run's config.json (provenance only)

=================================== =============================================================
key                                 meaning
=================================== =============================================================
schema                              ``lineclear.deploy/2`` (``/1``: written before runtimes; read as torch)
lineclear_version, created_utc      who wrote it and when; ``argv`` the command line
views.<name>.model                  model name (e.g. ``patchcore``)
views.<name>.runtime                ``torch`` (default) | ``onnx`` | ``openvino``: what runs the model
views.<name>.checkpoint             bundle-relative path of ``model.pt`` (torch runtime; else null)
views.<name>.export                 bundle-relative path of the export's ``export.json`` (onnx/openvino)
views.<name>.export_files           the export's other files (graph, arrays), each hashed in ``files``
views.<name>.thresholds             bundle-relative path of ``thresholds.json``
views.<name>.reference              bundle-relative path of the reference image
views.<name>.mask                   bundle-relative path of the inspection mask, or null
views.<name>.mask_stage             ``none`` | ``pre`` | ``post`` (as the thresholds were calibrated)
views.<name>.border_margin          map pixels along a registration seam that are ignored
views.<name>.image_size             [H, W] of the reference image (the camera's frame)
views.<name>.map_size               [H, W] of the model's anomaly map
views.<name>.pattern                file-name glob that assigns an image to this view
views.<name>.registration           registration settings incl. QC limits, or null (no registration)
views.<name>.image_qc               limits of the image sanity check (black, saturated, uniform)
views.<name>.max_raised_fraction    share of the inspected area above the pixel threshold beyond which the
                                    scene has changed (lighting, dirty lens, camera): ``undecided``; default 0.5
views.<name>.provenance             where the pieces came from (run dir, view dir, calibration maps)
files.<relpath>.sha256 / .bytes     SHA-256 and size of every file of the bundle
=================================== =============================================================

:func:`read_manifest` validates the structure (a foreign or malformed manifest is a
:class:`~lineclear.errors.FormatError`); :func:`verify_files` checks every file's hash and
reports problems per file without raising, so a checker can refuse only the views
whose files are damaged.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lineclear import __version__
from lineclear.errors import FormatError
from lineclear.formats._io import read_json, sha256_file, write_json

DEPLOY_SCHEMA = "lineclear.deploy/2"
DEPLOY_SCHEMA_V1 = "lineclear.deploy/1"  # no runtimes yet: every view runs on torch
MANIFEST_NAME = "manifest.json"
MASK_STAGES = ("none", "pre", "post")
RUNTIMES = ("torch", "onnx", "openvino")
VIEW_FILE_KEYS = ("checkpoint", "thresholds", "reference", "mask", "run", "export")
OPTIONAL_FILE_KEYS = ("mask", "run", "checkpoint", "export")
# A map raised over more than this share of the inspected area is not a leftover but a changed scene
# (a leftover covers a small part of the frame). Also the value for manifests written before the key existed.
DEFAULT_MAX_RAISED_FRACTION = 0.5


@dataclass
class ViewSpec:
    """One view of a bundle, paths resolved against the bundle directory."""

    name: str
    model: str
    checkpoint: Path | None
    thresholds: Path
    reference: Path
    mask: Path | None
    mask_stage: str
    border_margin: int
    image_size: tuple[int, int]
    map_size: tuple[int, int]
    pattern: str
    registration: dict[str, Any] | None
    image_qc: dict[str, Any]
    run: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # bundle-relative paths this view depends on
    max_raised_fraction: float = DEFAULT_MAX_RAISED_FRACTION
    runtime: str = "torch"
    export: Path | None = None  # the export's export.json (onnx/openvino runtime)


@dataclass
class Bundle:
    root: Path
    manifest: dict[str, Any]
    views: dict[str, ViewSpec]

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.manifest["files"]

    @property
    def needs_torch(self) -> bool:
        """Whether a view runs on PyTorch (a check of a bundle that needs none does not import it)."""
        return any(v.runtime == "torch" for v in self.views.values())


def manifest_path(bundle: str | os.PathLike) -> Path:
    return Path(bundle) / MANIFEST_NAME


def write_manifest(bundle_dir: str | os.PathLike, views: dict[str, dict[str, Any]], overwrite: bool = False,
                   extra: dict[str, Any] | None = None) -> Path:
    """Hash every file the views reference and write the manifest (validated before it is written).

    ``views`` maps a view name to its manifest entry with bundle-relative POSIX paths.
    """
    root = Path(bundle_dir)
    files: dict[str, dict[str, Any]] = {}
    for entry in views.values():
        for rel in [entry.get(k) for k in VIEW_FILE_KEYS] + list(entry.get("export_files") or []):
            if rel is None:
                continue
            p = root / rel
            files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    doc = {
        "lineclear_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": " ".join(sys.argv),
        **(extra or {}),
        "views": views,
        "files": dict(sorted(files.items())),
    }
    path = manifest_path(root)
    _parse(path, root, {"schema": DEPLOY_SCHEMA, **doc})
    return write_json(path, doc, DEPLOY_SCHEMA, overwrite=overwrite)


def read_manifest(bundle_dir: str | os.PathLike) -> Bundle:
    """Read and validate ``<bundle_dir>/manifest.json`` (structure only; see :func:`verify_files`)."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise FormatError(f"{root}: no such bundle directory (make one with `lineclear deploy`)")
    path = manifest_path(root)
    if not path.is_file():
        raise FormatError(f"{root}: not a lineclear bundle (no {MANIFEST_NAME})")
    try:
        doc = read_json(path, DEPLOY_SCHEMA)
    except FormatError as exc:
        try:
            doc = read_json(path, DEPLOY_SCHEMA_V1)
        except FormatError:
            raise exc from None
    return _parse(path, root, doc)


def verify_files(bundle: Bundle, jobs: int = 1) -> dict[str, str]:
    """Check every listed file's size and SHA-256: ``{relpath: problem}`` (empty when all are intact).

    ``jobs`` files are hashed at a time (hashlib releases the GIL: a line PC's start-up hashes in parallel).
    """

    def problem(rel: str, info: dict[str, Any]) -> str | None:
        p = bundle.root / rel
        if not p.is_file():
            return f"{p}: missing from the bundle"
        if p.stat().st_size != info["bytes"]:
            return (f"{p}: size {p.stat().st_size} bytes differs from the manifest's {info['bytes']} "
                    f"(tampered or corrupt)")
        if sha256_file(p) != info["sha256"]:
            return f"{p}: SHA-256 does not match the manifest (tampered or corrupt)"
        return None

    items = list(bundle.files.items())
    if jobs > 1 and len(items) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            found = list(pool.map(lambda kv: problem(*kv), items))
    else:
        found = [problem(*kv) for kv in items]
    return {rel: why for (rel, _), why in zip(items, found) if why}


def view_problems(bundle: Bundle, problems: dict[str, str]) -> dict[str, list[str]]:
    """Group file problems by the views that depend on the files."""
    return {name: [problems[f] for f in spec.files if f in problems] for name, spec in bundle.views.items()}


# -- validation ---------------------------------------------------------------------------------------------


def _rel_inside(path: Path, rel: Any, what: str) -> str:
    if not isinstance(rel, str) or not rel:
        raise FormatError(f"{path}: {what} must be a bundle-relative path, found {rel!r}")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel:
        raise FormatError(f"{path}: {what} {rel!r} points outside the bundle")
    return rel


def _size(path: Path, v: Any, what: str) -> tuple[int, int]:
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)):
        raise FormatError(f"{path}: {what} must be [H, W] positive integers, found {v!r}")
    return int(v[0]), int(v[1])


def _parse(path: Path, root: Path, doc: dict[str, Any]) -> Bundle:
    files = doc.get("files")
    if not isinstance(files, dict):
        raise FormatError(f"{path}: missing 'files' (the hash of every file)")
    for rel, info in files.items():
        _rel_inside(path, rel, "file")
        if not (isinstance(info, dict) and isinstance(info.get("sha256"), str) and len(info["sha256"]) == 64
                and isinstance(info.get("bytes"), int)):
            raise FormatError(f"{path}: files[{rel!r}] needs 'sha256' (64 hex digits) and 'bytes'")
    views = doc.get("views")
    if not isinstance(views, dict) or not views:
        raise FormatError(f"{path}: 'views' must be a non-empty object")
    specs: dict[str, ViewSpec] = {}
    for name, v in views.items():
        where = f"views[{name!r}]"
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
            raise FormatError(f"{path}: invalid view name {name!r}")
        if not isinstance(v, dict):
            raise FormatError(f"{path}: {where} must be an object")
        for key in ("model", "thresholds", "reference", "mask_stage", "pattern"):
            if key not in v:
                raise FormatError(f"{path}: {where} has no {key!r}")
        runtime = v.get("runtime", "torch")
        if runtime not in RUNTIMES:
            raise FormatError(f"{path}: {where}.runtime must be one of {RUNTIMES}, found {runtime!r}")
        needed = "checkpoint" if runtime == "torch" else "export"
        if v.get(needed) is None:
            raise FormatError(f"{path}: {where} runs on {runtime} but has no {needed!r}")
        extra = v.get("export_files") or []
        if not isinstance(extra, list):
            raise FormatError(f"{path}: {where}.export_files must be a list of bundle-relative paths")
        refs: list[str] = []
        for key, rel in [(k, v.get(k)) for k in VIEW_FILE_KEYS] + [("export_files", r) for r in extra]:
            if rel is None and key in OPTIONAL_FILE_KEYS:
                continue
            _rel_inside(path, rel, f"{where}.{key}")
            if rel not in files:
                raise FormatError(f"{path}: {where}.{key} {rel!r} is not listed in 'files' (no hash to check)")
            refs.append(rel)
        stage = v["mask_stage"]
        if stage not in MASK_STAGES:
            raise FormatError(f"{path}: {where}.mask_stage must be one of {MASK_STAGES}, found {stage!r}")
        if stage != "none" and v.get("mask") is None:
            raise FormatError(f"{path}: {where} has mask_stage {stage!r} but no mask")
        margin = v.get("border_margin", 0)
        if not isinstance(margin, int) or margin < 0:
            raise FormatError(f"{path}: {where}.border_margin must be a non-negative integer, found {margin!r}")
        reg = v.get("registration")
        if reg is not None and not isinstance(reg, dict):
            raise FormatError(f"{path}: {where}.registration must be an object or null")
        qc = v.get("image_qc", {})
        if not isinstance(qc, dict):
            raise FormatError(f"{path}: {where}.image_qc must be an object")
        raised = v.get("max_raised_fraction", DEFAULT_MAX_RAISED_FRACTION)
        if isinstance(raised, bool) or not isinstance(raised, (int, float)) or not 0 < raised <= 1:
            raise FormatError(f"{path}: {where}.max_raised_fraction must be a number in (0, 1], found {raised!r}")
        if not isinstance(v["pattern"], str) or not v["pattern"]:
            raise FormatError(f"{path}: {where}.pattern must be a non-empty glob")
        specs[name] = ViewSpec(
            name=name,
            model=str(v["model"]),
            checkpoint=root / v["checkpoint"] if v.get("checkpoint") else None,
            thresholds=root / v["thresholds"],
            reference=root / v["reference"],
            mask=root / v["mask"] if v.get("mask") else None,
            mask_stage=stage,
            border_margin=margin,
            image_size=_size(path, v.get("image_size"), f"{where}.image_size"),
            map_size=_size(path, v.get("map_size"), f"{where}.map_size"),
            pattern=v["pattern"],
            registration=reg,
            image_qc=qc,
            run=root / v["run"] if v.get("run") else None,
            provenance=v.get("provenance", {}) if isinstance(v.get("provenance"), dict) else {},
            files=tuple(refs),
            max_raised_fraction=float(raised),
            runtime=runtime,
            export=root / v["export"] if v.get("export") else None,
        )
    return Bundle(root=root, manifest=doc, views=specs)
