"""Deployment bundles: everything a line PC needs to check its cameras, in one folder.

:func:`view_from_run` gathers one view's pieces from a training run and the thresholds
calibrated for it, and checks that they belong together (the thresholds were computed on
maps of this very checkpoint, at its map size, with the recorded mask and mask stage);
:func:`build_bundle` copies them into ``<out>/<view>/`` and writes the manifest
(:mod:`lineclear.formats.deploy`) with the SHA-256 of every file. The bundle is built in
a temporary folder beside ``out`` and renamed into place (over an earlier bundle: swapped with it in
one step where Linux allows), so a crash never leaves half a
bundle.

The line must score exactly as the thresholds were calibrated, so the mask, the mask
stage and the border margin are taken from the thresholds' provenance (``source``, and
the calibration maps file's attributes when ``source`` does not carry them); an override
that would change the scoring (a mask with another hash) is refused.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineclear.dataset import View
from lineclear.errors import FormatError, LineclearError, UsageError
from lineclear.formats import MapsFile, decision_threshold, level_of, read_mask, read_thresholds, sha256_file
from lineclear.formats._io import check_replaceable, make_temp_dir, publish_dir, replace_dir
from lineclear.formats.checkpoint import read_checkpoint_meta
from lineclear.formats.deploy import (
    DEFAULT_MAX_RAISED_FRACTION, MANIFEST_NAME, RUNTIMES, Bundle, ViewSpec, read_manifest, write_manifest,
)
from lineclear.formats.export import EXPORT_NAME, export_problems, read_export
from lineclear.formats.run import read_run_config
from lineclear.images import image_size
from lineclear.line.image import ImageQC

# lineclear.scoring and lineclear.export import PyTorch: imported where a deploy needs them, so that
# `lineclear check` (which shares the option parsing of `deploy`) starts without it.

DEFAULT_PATTERN = "{view}"  # a token of the file name, see lineclear.line.matching.name_matches


@dataclass
class ViewSource(ViewSpec):
    """One view's pieces before they are copied into a bundle: a :class:`ViewSpec` whose paths are
    absolute source paths (``run`` = the training run's config), plus notes for the user."""

    notes: list[str] = field(default_factory=list)


def _maps_attrs(path: Any) -> dict[str, Any]:
    """Attributes of the calibration maps file, or {} when it is gone or unreadable."""
    if not path:
        return {}
    try:
        with MapsFile(path) as f:
            return dict(f.attrs)
    except (LineclearError, OSError):
        return {}


def view_from_run(
    run_dir: str | os.PathLike,
    *,
    thresholds: str | os.PathLike | None = None,
    mask: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    pattern: str | None = None,
    registration: dict[str, Any] | None = None,
    border_margin: int | None = None,
    image_qc: dict[str, Any] | None = None,
    max_raised_fraction: float = DEFAULT_MAX_RAISED_FRACTION,
    load_check: bool = True,
    runtime: str = "torch",
) -> ViewSource:
    """Collect and cross-check one view of a run directory.

    ``registration`` is the registration settings dict (``RegistrationConfig.to_dict()``) or None for
    no registration. ``load_check`` builds the model from the checkpoint once, so a checkpoint
    that cannot load is refused here rather than on the line. ``runtime`` ``onnx``/``openvino``: the view
    runs its export (:func:`find_export`), made when the run has none.
    """
    from lineclear.scoring import DEFAULT_BORDER_MARGIN, load_model, resolve_checkpoint

    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    run = Path(run_dir)
    if not run.exists():
        raise LineclearError(f"{run}: no such run directory")
    ckpt = resolve_checkpoint(run)
    ckpt_sha = sha256_file(ckpt)
    if load_check:
        _, meta, cfg = load_model(ckpt, "cpu")
        map_size = (int(cfg.image_size[0]), int(cfg.image_size[1]))
    else:
        meta = read_checkpoint_meta(ckpt)
        map_size = tuple(int(x) for x in meta["config"]["image_size"])  # type: ignore[assignment]
    run_cfg_path = run / "config.json" if run.is_dir() and (run / "config.json").is_file() else None
    run_cfg = read_run_config(run) if run_cfg_path else {}
    name = str(run_cfg.get("view") or meta.get("view") or "")
    if not name:
        raise LineclearError(f"{run}: the run does not record its view name (no 'view' in config.json)")
    notes: list[str] = []
    export = None if runtime == "torch" else find_export(run, ckpt, ckpt_sha, runtime, map_size, notes)

    # thresholds and their provenance --------------------------------------------------------------------
    thr_path = Path(thresholds) if thresholds else (run / "thresholds.json" if run.is_dir() else None)
    if thr_path is None or not thr_path.is_file():
        raise LineclearError(
            f"{thr_path or run}: no thresholds for view {name} (run `lineclear calibrate` in the run directory, "
            f"or give --thresholds {name}=PATH)")
    thr = read_thresholds(thr_path)
    if decision_threshold(thr) is None:
        raise LineclearError(f"{thr_path}: no {level_of(thr)} threshold; a line check cannot decide without one")
    if thr["pixel"]["threshold"] is None:
        notes.append(f"{name}: {thr_path} has no pixel threshold; leftover regions will not be located")
    src = dict(thr.get("source") or {})
    attrs = _maps_attrs(src.get("path"))

    def provenance(key: str) -> Any:
        return src.get(key, attrs.get(key))

    rec_sha = provenance("checkpoint_sha256")
    if rec_sha and rec_sha != ckpt_sha:
        raise LineclearError(
            f"{thr_path}: the thresholds were calibrated on maps of another checkpoint than {ckpt} "
            f"(SHA-256 {str(rec_sha)[:12]}… vs {ckpt_sha[:12]}…); calibrate again on this model's maps")
    if not rec_sha:
        notes.append(f"{name}: {thr_path} does not record the checkpoint it was calibrated for; cannot cross-check")
    rec_model = provenance("model")
    if rec_model and rec_model != meta.get("model"):
        raise LineclearError(f"{thr_path}: thresholds of model {rec_model!r}, but {ckpt} is a {meta.get('model')} model")
    rec_size = provenance("map_size")
    if rec_size is not None and tuple(int(x) for x in rec_size) != map_size:
        raise LineclearError(
            f"{thr_path}: thresholds come from maps of size {list(rec_size)}, but the model makes {list(map_size)} maps")
    rec_view = provenance("view")
    if rec_view and rec_view != name:
        notes.append(f"{name}: {thr_path} was calibrated on maps of view {rec_view!r}")

    # inspection mask: exactly as calibrated ---------------------------------------------------------------
    stage = provenance("mask_stage") or "none"
    if stage not in ("none", "pre", "post"):
        raise FormatError(f"{thr_path}: unknown mask stage {stage!r} in its provenance")
    rec_mask = provenance("mask") or None
    rec_mask_sha = provenance("mask_sha256") or None
    mask_path: Path | None = None
    if stage == "none":
        if mask is not None:
            raise UsageError(
                f"--mask {name}=...: the thresholds were calibrated without an inspection mask; a mask would change "
                f"the scores they apply to (calibrate on masked maps instead)")
    else:
        mask_path = Path(mask) if mask is not None else (Path(rec_mask) if rec_mask else None)
        if mask_path is None or not mask_path.is_file():
            where = f" (recorded: {rec_mask})" if rec_mask else ""
            raise LineclearError(
                f"{thr_path}: calibrated with mask stage {stage} but the mask file is not available{where}; "
                f"give --mask {name}=PATH")
        if rec_mask_sha and sha256_file(mask_path) != rec_mask_sha:
            raise LineclearError(
                f"{mask_path}: not the mask the thresholds were calibrated with (SHA-256 differs); "
                f"the line must score exactly as calibrated")
        if not rec_mask_sha:
            notes.append(f"{name}: the calibration does not record the mask's hash; using {mask_path} as given")

    # border margin: what the calibration maps used when they were registered ------------------------------
    if border_margin is None:
        rec_margin = provenance("border_margin")
        registered = bool(provenance("registered"))
        if registered and rec_margin is not None:
            border_margin = int(rec_margin)
        else:  # the calibration maps had no seam: use what `lineclear score` uses on registered images
            border_margin = DEFAULT_BORDER_MARGIN
    if border_margin < 0:
        raise UsageError(f"--border-margin must be >= 0, got {border_margin}")

    # reference image ----------------------------------------------------------------------------------------
    view_dir = run_cfg.get("view_dir") or meta.get("view_dir")
    if reference is not None:
        ref_path = Path(reference)
    else:
        if not view_dir or not Path(view_dir).is_dir():
            raise LineclearError(
                f"{run}: the view directory the run was trained on ({view_dir}) is not available for its reference "
                f"image; give --reference {name}=PATH")
        ref_path = View(view_dir).reference
    ref_size = image_size(ref_path)
    if mask_path is not None:
        m = read_mask(mask_path)
        if m.shape != ref_size:
            raise LineclearError(
                f"{mask_path}: mask is {m.shape[1]}x{m.shape[0]} but the reference {ref_path} is "
                f"{ref_size[1]}x{ref_size[0]}")

    qc = ImageQC.from_dict(image_qc or {}).to_dict()
    if not 0 < max_raised_fraction <= 1:
        raise UsageError(f"--max-raised-fraction must be in (0, 1], got {max_raised_fraction}")
    return ViewSource(
        name=name, model=str(meta.get("model")), checkpoint=ckpt.resolve(), thresholds=thr_path.resolve(),
        reference=Path(ref_path).resolve(), mask=mask_path.resolve() if mask_path else None, mask_stage=stage,
        border_margin=int(border_margin), image_size=ref_size, map_size=map_size,
        pattern=(pattern or DEFAULT_PATTERN).replace("{view}", name), registration=registration, image_qc=qc,
        run=run_cfg_path.resolve() if run_cfg_path else None, max_raised_fraction=float(max_raised_fraction),
        runtime=runtime, export=export,
        provenance={
            "run_dir": str(run.resolve()), "view_dir": view_dir, "checkpoint": str(ckpt.resolve()),
            "checkpoint_sha256": ckpt_sha, "thresholds": str(thr_path.resolve()),
            "thresholds_method": thr.get("method"), "thresholds_level": level_of(thr), "calibration_maps": src.get("path"),
            "mask": str(mask_path.resolve()) if mask_path else None, "reference": str(Path(ref_path).resolve()),
        },
        notes=notes,
    )


def find_export(run: Path, ckpt: Path, ckpt_sha: str, runtime: str, map_size: tuple[int, int],
                notes: list[str]) -> Path:
    """The ``export.json`` of the run's export for ``runtime`` (``RUN/export-<runtime>``), made (with its
    fidelity check) when the run has none; an export of another checkpoint, or damaged, is refused."""
    from lineclear.export import exportable, export_run

    model = str(read_checkpoint_meta(ckpt).get("model"))
    why = exportable(model)
    if why:
        raise LineclearError(f"{run}: {why}")
    where = (run if run.is_dir() else run.parent) / f"export-{runtime}"
    if not (where / EXPORT_NAME).is_file():
        try:
            export_run(run, runtime, where)
        except LineclearError as exc:
            raise LineclearError(f"{exc} (deploy exports a run that has no {runtime} export; to choose the "
                                 f"images: lineclear export {run} --format {runtime} --images DIR)") from None
        notes.append(f"{run}: no {runtime} export yet; exported to {where} (fidelity checked)")
    info = read_export(where)
    if info.doc["checkpoint_sha256"] != ckpt_sha:
        raise LineclearError(f"{where}: exported from another checkpoint than {ckpt} (export again with "
                             f"`lineclear export {run} --format {runtime} --overwrite`)")
    if info.format != runtime or info.model != model or info.map_size != tuple(map_size):
        raise LineclearError(f"{where}: a {info.format} export of a {info.model} model at {list(info.map_size)}, "
                             f"the run is a {model} model at {list(map_size)}")
    problems = export_problems(info)
    if problems:
        raise LineclearError(problems[0])
    return (where / EXPORT_NAME).resolve()


def _replace_problem(out: Path) -> str | None:
    """Why --overwrite may not replace ``out``, or None: only an earlier bundle holding nothing but its own
    files, or an empty folder, is replaced (never someone's data, never a file lineclear did not write)."""
    if not out.is_dir():
        return "exists and is not a folder"
    if not any(out.iterdir()):
        return None
    if not (out / MANIFEST_NAME).is_file():
        return "exists and is not a lineclear bundle (no manifest.json); refusing to replace it"
    try:
        listed = set(read_manifest(out).files) | {MANIFEST_NAME}
    except FormatError as exc:
        return f"holds an unreadable manifest ({exc}); refusing to replace it"
    foreign = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                     if not p.is_dir() and p.relative_to(out).as_posix() not in listed)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return f"holds files that are not part of the bundle ({shown}); refusing to replace it"
    return None


def build_bundle(out: str | os.PathLike, sources: list[ViewSource], overwrite: bool = False) -> Bundle:
    """Copy the views' files into ``out`` and write the manifest; atomic (temp folder, then rename)."""
    out = Path(out)
    if not sources:
        raise UsageError("no views to deploy")
    names = [s.name for s in sources]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise UsageError(f"view {', '.join(dups)} given by more than one run; deploy one run per view")
    check_replaceable(out, overwrite, _replace_problem)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, out.name)
    try:
        entries: dict[str, dict[str, Any]] = {}
        for s in sources:
            d = tmp / s.name
            d.mkdir()
            torch_rt = s.runtime == "torch"
            rel = {
                "checkpoint": f"{s.name}/model.pt" if torch_rt else None,
                "thresholds": f"{s.name}/thresholds.json",
                "reference": f"{s.name}/reference{s.reference.suffix.lower() or '.png'}",
                "mask": f"{s.name}/mask.png" if s.mask else None,
                "run": f"{s.name}/run.json" if s.run else None,
            }
            export_files: list[str] = []
            if torch_rt:
                shutil.copyfile(s.checkpoint, tmp / rel["checkpoint"])
            else:
                info = read_export(s.export)
                (d / s.runtime).mkdir()
                rel["export"] = f"{s.name}/{s.runtime}/{EXPORT_NAME}"
                for f in [EXPORT_NAME, *info.files]:
                    shutil.copyfile(info.root / f, tmp / s.name / s.runtime / f)
                export_files = [f"{s.name}/{s.runtime}/{f}" for f in info.files]
            shutil.copyfile(s.thresholds, tmp / rel["thresholds"])
            shutil.copyfile(s.reference, tmp / rel["reference"])
            if s.mask:
                shutil.copyfile(s.mask, tmp / rel["mask"])
            if s.run:
                shutil.copyfile(s.run, tmp / rel["run"])
            entries[s.name] = {
                "model": s.model, "runtime": s.runtime, **rel, "export_files": export_files, "mask_stage": s.mask_stage, "border_margin": s.border_margin,
                "image_size": list(s.image_size), "map_size": list(s.map_size), "pattern": s.pattern,
                "registration": s.registration, "image_qc": s.image_qc,
                "max_raised_fraction": s.max_raised_fraction, "provenance": s.provenance,
            }
        write_manifest(tmp, entries)
        read_manifest(tmp)  # what the line will read: validate it before it goes into place
        if overwrite and out.exists():
            replace_dir(tmp, out)  # checked above: nothing but the old bundle's own files
        else:
            publish_dir(tmp, out)  # refuses a bundle another deploy put there meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_manifest(out)
