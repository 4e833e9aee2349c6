"""Registering files and folders: where each output goes, the run, and the report (``lineclear register``).

:mod:`lineclear.register` aligns arrays; this module is the stage over files. :func:`plan_jobs` works out
every output path from the inputs (image files, plain folders searched recursively, view folders with
``train/`` and ``test/``), and :func:`check_plan` refuses bad input or existing outputs, both before
anything is written. :func:`register_jobs` then registers the images in parallel threads, grouped by
reference, writes each output atomically, the registration markers and the view files copied beside
them, and returns the report (``lineclear.registration/1`` without its provenance header).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lineclear.dataset import SPLITS, View, gt_path_for, list_images
from lineclear.errors import LineclearError, OutputExistsError, UsageError
from lineclear.formats import check_writable, read_mask, sha256_file, write_mask
from lineclear.formats._io import atomic_write_bytes
from lineclear.formats.registration import MARKER_NAME, read_marker, write_marker
from lineclear.images import image_size, is_image_path, read_raw, write_image
from lineclear.progress import Progress, ensure
from lineclear.register import RegistrationConfig, RegistrationResult, Registrar, register_many, warp_mask

SUFFIX = "_registered"


@dataclass
class Job:
    """One image to register and everything written for it."""

    src: Path
    dst: Path
    valid: Path
    ref: Path
    mask_src: Path | None = None
    mask_dst: Path | None = None
    root: Path | None = None  # the output folder this job's image goes under (gets the registration marker)
    valid_root: Path | None = None  # where that folder's validity masks go


def _is_view(path: Path) -> bool:
    return path.is_dir() and ((path / "train").is_dir() or (path / "test").is_dir())


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def _named(path: Path) -> Path:
    """``path`` itself, or its absolute form when it has no name of its own (``.``, ``..``)."""
    return path if path.name not in ("", ".", "..") else path.resolve()


def _find_mask(gt_dir: Path, rel: Path) -> Path | None:
    """Ground truth for an image at ``rel`` (relative to its input folder): MVTec ``<dir>/<stem>_mask.png`` first."""
    stem, parent = rel.stem, rel.parent
    for cand in (gt_dir / parent / f"{stem}_mask.png", gt_dir / parent / f"{stem}.png",
                 gt_dir / f"{stem}_mask.png", gt_dir / f"{stem}.png"):
        if cand.is_file():
            return cand
    return None


def _need_ref(ref: Path | None) -> Path:
    if ref is None:
        raise UsageError("--ref is required unless every INPUT is a view folder (with train/ and test/)")
    return ref


def _with_mask(job: Job, masks: Path | None, masks_out: Path | None, rel: Path) -> Job:
    """The job with its ground-truth mask from ``masks`` (mirroring the input's folders), if there is one."""
    if masks is not None:
        job.mask_src = _find_mask(masks, rel)
        if job.mask_src is not None:
            job.mask_dst = masks_out / job.mask_src.relative_to(masks)  # type: ignore[operator]
    return job


def _file_jobs(inp: Path, ref: Path | None, out: Path | None, valid_out: Path | None, masks: Path | None,
               masks_out: Path | None) -> list[Job]:
    """An image file: registered into ``<folder>_registered`` beside its folder (or ``out``)."""
    if not is_image_path(inp):
        raise LineclearError(f"{inp}: not an image file (expected one of .png .jpg .jpeg .bmp .tif .tiff)")
    ref = _need_ref(ref)
    folder = _named(inp.parent)
    base = out if out is not None else folder.parent / f"{folder.name}{SUFFIX}"
    vbase = valid_out if valid_out is not None else base.parent / f"{base.name}_valid"
    job = Job(inp, base / inp.name, vbase / f"{inp.stem}_valid.png", ref, root=base, valid_root=vbase)
    return [_with_mask(job, masks, masks_out, Path(inp.name))]


def _view_jobs(inp: Path, ref: Path | None, base: Path, masks: Path | None, copies: list[tuple[Path, Path]],
               notes: list[str]) -> list[Job]:
    """A view folder: its splits with their ground truth, validity masks under ``base/valid``, and its
    reference (and roi) copied beside them."""
    vref = ref if ref is not None else View(inp).reference
    if masks is not None:
        notes.append(f"{inp}: a view's ground_truth/ is warped automatically; --masks is not used for it")
    images = [p for p in list_images(inp) if p.relative_to(inp).parts[0] in SPLITS]
    if not images:
        raise LineclearError(f"{inp}: view without images in train/, val/ or test/")
    jobs = []
    for img in images:
        rel = img.relative_to(inp)
        job = Job(img, base / rel, base / "valid" / rel.parent / f"{img.stem}_valid.png", vref, root=base,
                  valid_root=base / "valid")
        gt = gt_path_for(img, inp)
        if gt is not None:
            job.mask_src, job.mask_dst = gt, base / gt.relative_to(inp)
        jobs.append(job)
    copies.append((vref, base / "reference.png"))
    if (inp / "roi.png").is_file():
        copies.append((inp / "roi.png", base / "roi.png"))
    skipped = sorted({p.name for p in inp.iterdir() if p.is_file() and p.name not in ("reference.png", "roi.png")}
                     | {p.name for p in inp.iterdir() if p.is_dir() and p.name not in (*SPLITS, "ground_truth", "valid")})
    if skipped:
        notes.append(f"{inp}: not copied to the registered view (coordinates of the unregistered images): "
                     + ", ".join(skipped))
    return jobs


def _folder_jobs(inp: Path, ref: Path, base: Path, vbase: Path, masks: Path | None,
                 masks_out: Path | None) -> list[Job]:
    """A plain folder, searched recursively: its tree mirrored under ``base``, validity masks under ``vbase``."""
    images = list_images(inp)
    if not images:
        raise LineclearError(f"{inp}: no images in this folder (looked for .png .jpg .jpeg .bmp .tif .tiff)")
    jobs = []
    for img in images:
        rel = img.relative_to(inp)
        job = Job(img, base / rel, vbase / rel.parent / f"{img.stem}_valid.png", ref, root=base, valid_root=vbase)
        jobs.append(_with_mask(job, masks, masks_out, rel))
    return jobs


def plan_jobs(
    ref: Path | None,
    inputs: list[Path],
    out: Path | None,
    valid_out: Path | None,
    masks: Path | None,
    masks_out: Path | None,
) -> tuple[list[Job], list[tuple[Path, Path]], list[str]]:
    """Every job, the files to copy (view reference / roi) and notes, without writing anything.

    With several inputs, each gets a subfolder of ``out`` named after it.
    """
    jobs: list[Job] = []
    copies: list[tuple[Path, Path]] = []
    notes: list[str] = []
    multi = len(inputs) > 1
    for inp in inputs:
        if not inp.exists():
            raise LineclearError(f"{inp}: no such file or folder")
        if inp.is_file():
            jobs += _file_jobs(inp, ref, out, valid_out, masks, masks_out)
            continue
        named = _named(inp)
        base = (out / named.name if multi else out) if out is not None else named.parent / f"{named.name}{SUFFIX}"
        if _is_view(inp):
            jobs += _view_jobs(inp, ref, base, masks, copies, notes)
            continue
        if valid_out is not None:
            vbase = valid_out / named.name if multi else valid_out
        else:
            vbase = base.parent / f"{base.name}_valid"
        jobs += _folder_jobs(inp, _need_ref(ref), base, vbase, masks, masks_out)
    return jobs, copies, notes


def markers_of(jobs: list[Job]) -> dict[Path, tuple[Path, Path]]:
    """Each output folder's registration marker: {folder: (reference, validity folder)}."""
    return {j.root: (j.ref, j.valid_root) for j in jobs if j.root is not None and j.valid_root is not None}


def check_plan(jobs: list[Job], copies: list[tuple[Path, Path]], inputs: list[Path], overwrite: bool) -> None:
    """Refuse the plan before anything is written: two inputs onto one output, an output inside an input,
    an existing output (without ``overwrite``), another reference's images in an output folder, or an input
    (or its ground truth) whose header cannot be read."""
    outputs: dict[Path, Path] = {}
    for job in jobs:
        for dst in (job.dst, job.valid, job.mask_dst):
            if dst is None:
                continue
            key = dst.resolve()
            if key in outputs:
                raise UsageError(f"{dst}: two inputs would write the same output ({outputs[key]} and {job.src}); "
                                 "give --out per input")
            outputs[key] = job.src
    for _, dst in copies:
        outputs.setdefault(dst.resolve(), dst)
    for inp in inputs:
        for key in outputs:
            if inp.is_dir() and _inside(key, inp):
                raise UsageError(f"{key}: output would be inside the input folder {inp}; choose --out elsewhere")
            if inp.is_file() and key == inp.resolve():
                raise UsageError(f"{inp}: output would overwrite the input; choose --out")
    for key in outputs:
        check_writable(key, overwrite)
    for root, (ref, valid_root) in markers_of(jobs).items():
        marker = root / MARKER_NAME
        if marker.is_file() and not overwrite:
            try:
                old = read_marker(marker)
            except LineclearError:
                old = None
            if old is None or old["reference"]["path"] != str(ref.resolve()) or old["valid_root"] != valid_root.resolve():
                raise OutputExistsError(f"{marker}: images registered to another reference (or with validity masks "
                                        "elsewhere) are already in this folder (use --overwrite to replace it)")
    for job in jobs:  # every input readable (header) before anything is written
        src_size = image_size(job.src)
        if job.mask_src is not None:
            mask_size = image_size(job.mask_src)
            # a mask of another shape belongs to other images: stretching it would misplace the
            # ground truth silently (evaluate refuses such masks too); another scale is resized
            if tuple(mask_size) != tuple(src_size) and abs(mask_size[0] * src_size[1] - mask_size[1] * src_size[0]) > 0.02 * mask_size[1] * src_size[1]:
                raise LineclearError(f"{job.mask_src}: mask is {mask_size[1]}x{mask_size[0]} but its image "
                                     f"{job.src} is {src_size[1]}x{src_size[0]}")


def register_jobs(
    jobs: list[Job],
    copies: list[tuple[Path, Path]],
    config: RegistrationConfig,
    *,
    overwrite: bool = False,
    threads: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Register and write every job (see the module docstring); returns the report:
    ``{"reference", "config", "summary", "images": [one entry per job, in order]}``.

    ``threads`` ≤ 0: one per CPU core. A reference with too few features to register against is a
    :class:`LineclearError` before any image is read.
    """
    registrars: dict[Path, Registrar] = {}
    ref_info: dict[Path, dict] = {}
    for r in sorted({j.ref for j in jobs}):
        ref_img = read_raw(r)
        registrars[r] = Registrar(ref_img, config)
        ref_info[r] = {"path": str(r), "sha256": sha256_file(r), "size": [int(ref_img.shape[1]), int(ref_img.shape[0])]}
        if len(registrars[r].ref_points) < config.limits.min_inliers:
            raise LineclearError(f"{r}: the reference has too few features to register against "
                                 f"({len(registrars[r].ref_points)}); is it flat or blurred?")

    def write_outputs(job: Job, res: RegistrationResult) -> None:
        write_image(job.dst, res.image, overwrite=overwrite)
        write_mask(job.valid, res.valid, overwrite=overwrite)
        if job.mask_src is not None:
            write_mask(job.mask_dst, warp_mask(read_mask(job.mask_src), res), overwrite=overwrite)

    failed_n = 0
    # Group by reference so each registrar's features are computed once and its images run in parallel.
    order = {id(j): i for i, j in enumerate(jobs)}
    collected: dict[int, tuple[Job, RegistrationResult]] = {}
    with ensure(progress).task("registering", len(jobs)) as task:
        for r, registrar in registrars.items():
            group = [j for j in jobs if j.ref == r]
            for job, res, _ in register_many(registrar, group, lambda j: read_raw(j.src), jobs=threads,
                                             on_result=write_outputs):
                if isinstance(res, BaseException):
                    if isinstance(res, LineclearError):
                        raise res
                    raise LineclearError(f"{job.src}: {res.__class__.__name__}: {res}") from res
                failed_n += not res.ok
                collected[order[id(job)]] = (job, res)
                task.advance(1, failed=failed_n)
    for root, (r, valid_root) in markers_of(jobs).items():
        write_marker(root, r, ref_info[r]["sha256"], valid_root, config.to_dict(), overwrite=overwrite)
    for src, dst in copies:
        if src.suffix.lower() == ".png":
            atomic_write_bytes(dst, src.read_bytes(), overwrite=overwrite)
        else:
            write_image(dst, read_raw(src), overwrite=overwrite)
    entries = [report_entry(*collected[i]) for i in sorted(collected)]
    refs = list(ref_info.values())
    return {"reference": refs[0] if len(refs) == 1 else {**refs[0], "all": refs}, "config": config.to_dict(),
            "summary": summarise(entries), "images": entries}


def report_entry(job: Job, res: RegistrationResult) -> dict[str, Any]:
    """One image of the report."""
    return {
        "input": str(job.src),
        "output": str(job.dst),
        "valid": str(job.valid),
        "mask_in": str(job.mask_src) if job.mask_src else None,
        "mask_out": str(job.mask_dst) if job.mask_dst else None,
        "reference": str(job.ref),
        "status": "registered" if res.ok else "failed",
        "reason": res.reason,
        "size": [res.input_size[1], res.input_size[0]],
        "resized": res.resized,
        "transform": np.round(res.transform, 10).tolist(),
        "estimate": None if res.estimate is None else np.round(res.estimate, 10).tolist(),
        "qc": clean_qc(res.qc),
    }


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's summary: counts and the time per image (ms, per thread)."""
    ms = [e["qc"]["ms"] for e in entries]
    return {
        "images": len(entries),
        "registered": sum(e["status"] == "registered" for e in entries),
        "failed": sum(e["status"] == "failed" for e in entries),
        "resized": sum(bool(e["resized"]) for e in entries),
        "masks_warped": sum(e["mask_out"] is not None for e in entries),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
        "median_ms": round(statistics.median(ms), 1) if ms else None,
    }


def clean_qc(qc: dict) -> dict:
    """QC figures as JSON values: numpy scalars to Python, non-finite floats to None."""
    out = {}
    for k, v in qc.items():
        if isinstance(v, (np.floating, float)):
            v = float(v)
            out[k] = round(v, 6) if np.isfinite(v) else None
        elif isinstance(v, np.integer):
            out[k] = int(v)
        elif isinstance(v, np.bool_):
            out[k] = bool(v)
        else:
            out[k] = v
    return out


def output_roots(inputs: list[Path], jobs: list[Job]) -> list[str]:
    """The output folder of each input: the common parent of its registered images."""
    roots = []
    for inp in inputs:
        mine = [j.dst for j in jobs if j.src == inp or (inp.is_dir() and _inside(j.src, inp))]
        if not mine:
            continue
        if inp.is_file():
            roots.append(str(mine[0].parent))
        else:
            src0 = next(j.src for j in jobs if j.dst == mine[0])
            depth = len(src0.resolve().relative_to(inp.resolve()).parts)  # out/<a>/<b>/x.png → out
            roots.append(str(mine[0].parents[depth - 1]))
    return list(dict.fromkeys(roots))
