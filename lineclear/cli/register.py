"""``lineclear register --ref REF INPUT...``: align camera-shifted images to a reference (thesis 3.4).

Thin edge over :mod:`lineclear.register`: works out every output path first (and refuses bad input or
existing outputs before anything is written), then registers the images in parallel threads, writing each
output atomically, and finally writes the report and prints the summary.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich import box
from rich.table import Table

from lineclear.cli import console
from lineclear.cli.options import JsonOut, Overwrite
from lineclear.dataset import SPLITS, View, gt_path_for, list_images
from lineclear.errors import LineclearError, OutputExistsError, UsageError
from lineclear.formats import check_writable, read_mask, sha256_file, write_mask
from lineclear.formats._io import atomic_write_bytes
from lineclear.formats.registration import MARKER_NAME, read_marker, write_marker, write_report
from lineclear.images import image_size, is_image_path, read_raw, write_image
from lineclear.register import (
    MODELS,
    REFINES,
    QCLimits,
    RegistrationConfig,
    RegistrationResult,
    Registrar,
    register_many,
    warp_mask,
)

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


def plan_jobs(
    ref: Path | None,
    inputs: list[Path],
    out: Path | None,
    valid_out: Path | None,
    masks: Path | None,
    masks_out: Path | None,
) -> tuple[list[Job], list[tuple[Path, Path]], list[str]]:
    """Every job, the files to copy (view reference / roi) and notes, without touching the disk."""
    jobs: list[Job] = []
    copies: list[tuple[Path, Path]] = []
    notes: list[str] = []
    multi = len(inputs) > 1
    for inp in inputs:
        if not inp.exists():
            raise LineclearError(f"{inp}: no such file or folder")
        if inp.is_file():
            if not is_image_path(inp):
                raise LineclearError(f"{inp}: not an image file (expected one of .png .jpg .jpeg .bmp .tif .tiff)")
            if ref is None:
                raise UsageError("--ref is required unless every INPUT is a view folder (with train/ and test/)")
            folder = _named(inp.parent)
            base = out if out is not None else folder.parent / f"{folder.name}{SUFFIX}"
            vbase = valid_out if valid_out is not None else base.parent / f"{base.name}_valid"
            job = Job(inp, base / inp.name, vbase / f"{inp.stem}_valid.png", ref, root=base, valid_root=vbase)
            if masks is not None:
                job.mask_src = _find_mask(masks, Path(inp.name))
                if job.mask_src is not None:
                    job.mask_dst = masks_out / job.mask_src.relative_to(masks)
            jobs.append(job)
            continue
        images = list_images(inp)
        if _is_view(inp):
            vref = ref if ref is not None else View(inp).reference
            named = _named(inp)
            base = (out / named.name if multi else out) if out is not None else named.parent / f"{named.name}{SUFFIX}"
            if masks is not None:
                notes.append(f"{inp}: a view's ground_truth/ is warped automatically; --masks is not used for it")
            images = [p for p in images if p.relative_to(inp).parts[0] in SPLITS]
            if not images:
                raise LineclearError(f"{inp}: view without images in train/, val/ or test/")
            for img in images:
                rel = img.relative_to(inp)
                job = Job(img, base / rel, base / "valid" / rel.parent / f"{img.stem}_valid.png", vref, root=base,
                          valid_root=base / "valid")
                gt = gt_path_for(img, inp)
                if gt is not None:
                    job.mask_src, job.mask_dst = gt, base / gt.relative_to(inp)
                jobs.append(job)
            ref_dst = base / "reference.png"
            copies.append((vref, ref_dst))
            if (inp / "roi.png").is_file():
                copies.append((inp / "roi.png", base / "roi.png"))
            skipped = sorted({p.name for p in inp.iterdir() if p.is_file() and p.name not in ("reference.png", "roi.png")}
                             | {p.name for p in inp.iterdir() if p.is_dir() and p.name not in (*SPLITS, "ground_truth", "valid")})
            if skipped:
                notes.append(f"{inp}: not copied to the registered view (coordinates of the unregistered images): "
                             + ", ".join(skipped))
            continue
        if ref is None:
            raise UsageError("--ref is required unless every INPUT is a view folder (with train/ and test/)")
        if not images:
            raise LineclearError(f"{inp}: no images in this folder (looked for .png .jpg .jpeg .bmp .tif .tiff)")
        named = _named(inp)
        base = (out / named.name if multi else out) if out is not None else named.parent / f"{named.name}{SUFFIX}"
        if valid_out is not None:
            vbase = valid_out / named.name if multi else valid_out
        else:
            vbase = base.parent / f"{base.name}_valid"
        for img in images:
            rel = img.relative_to(inp)
            job = Job(img, base / rel, vbase / rel.parent / f"{img.stem}_valid.png", ref, root=base, valid_root=vbase)
            if masks is not None:
                job.mask_src = _find_mask(masks, rel)
                if job.mask_src is not None:
                    job.mask_dst = masks_out / job.mask_src.relative_to(masks)
            jobs.append(job)
    return jobs, copies, notes


def _check_plan(jobs: list[Job], copies: list[tuple[Path, Path]], inputs: list[Path], overwrite: bool) -> None:
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


def markers_of(jobs: list[Job]) -> dict[Path, tuple[Path, Path]]:
    """Each output folder's registration marker: {folder: (reference, validity folder)}."""
    return {j.root: (j.ref, j.valid_root) for j in jobs if j.root is not None and j.valid_root is not None}


def _fmt(v: object, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def register_command(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT...", help="Image files, folders (searched recursively) or view folders (with train/ and test/).", show_default=False)],
    ref: Annotated[Optional[Path], typer.Option("--ref", help="Reference image everything is aligned to [default for view folders: the view's reference.png, else its first training image].", dir_okay=False, show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: <INPUT>_registered beside each folder; <folder>_registered beside an image file's folder). With several INPUTs, one subfolder per INPUT.", show_default=False)] = None,
    valid_out: Annotated[Optional[Path], typer.Option("--valid-out", help="Validity masks of plain folders and files (default: <OUT>_valid beside the output folder). A view's go to <OUT>/valid/<split>/<defect>/<stem>_valid.png.", show_default=False)] = None,
    masks: Annotated[Optional[Path], typer.Option("--masks", help="Ground-truth masks to warp with the same transform (<dir>/<stem>_mask.png or <stem>.png, mirroring INPUT's folders).", file_okay=False, show_default=False)] = None,
    masks_out: Annotated[Optional[Path], typer.Option("--masks-out", help="Where the warped ground-truth masks go (required with --masks).", file_okay=False, show_default=False)] = None,
    model: Annotated[str, typer.Option("--model", help=f"Transform model: {', '.join(MODELS)}. Affine or similarity where a homography over-fits (flat scenes, few features).")] = "homography",
    refine: Annotated[str, typer.Option("--refine", help=f"Sub-pixel refinement at full resolution: {', '.join(REFINES)} (flow: track corners near the first estimate; ecc: intensity alignment; none: the thesis's plain estimate).")] = "flow",
    detect_size: Annotated[int, typer.Option("--detect-size", min=0, help="Longest side of the reduced copy ORB runs on (0 = full resolution, as in the thesis).")] = 1024,
    features: Annotated[int, typer.Option("--features", min=50, help="ORB keypoints per image.")] = 1000,
    clahe: Annotated[float, typer.Option("--clahe", min=0.0, help="Contrast equalisation (CLAHE clip limit) of the copy ORB runs on, for dim, hazy or defocused scenes (0 = off, as in the thesis).")] = 2.0,
    min_inliers: Annotated[int, typer.Option("--min-inliers", min=4, help="Fail below this many RANSAC inliers.")] = QCLimits.min_inliers,
    min_inlier_ratio: Annotated[float, typer.Option("--min-inlier-ratio", min=0.0, max=1.0, help="Fail below this share of matches that are inliers.")] = QCLimits.min_inlier_ratio,
    max_rmse: Annotated[float, typer.Option("--max-rmse", min=0.0, help="Fail above this reprojection RMSE (reference pixels).")] = QCLimits.max_rmse_px,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the registration report (JSON, lineclear.registration/1) here.", dir_okay=False, show_default=False)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any image fails to register (outputs and report are still written).")] = False,
    jobs_n: Annotated[int, typer.Option("--jobs", "-j", min=0, help="Images registered in parallel (0 = one per CPU core).")] = 0,
    json_out: JsonOut = False,
    overwrite: Overwrite = False,
) -> None:
    """Register camera-shifted images to a reference image.

    ORB features on a reduced copy, k-NN Hamming matching with a ratio test and a RANSAC fit (the thesis's
    method), refined to sub-pixel accuracy at full resolution, then a warp to the reference's size. Every
    image gets a validity mask (255 = the pixel came from inside the camera frame). A registration that fails
    quality control is not warped: the image is passed through unchanged, flagged in the summary and the
    report (and exits 1 with --strict).
    """
    if (masks is None) != (masks_out is None):
        raise UsageError("--masks and --masks-out go together")
    if masks is not None and not masks.is_dir():
        raise LineclearError(f"{masks}: no such mask folder")
    if ref is not None:
        if not ref.is_file():
            raise LineclearError(f"{ref}: reference image not found")
        image_size(ref)  # readable header, or one clear line
    limits = QCLimits(min_inliers=min_inliers, min_inlier_ratio=min_inlier_ratio, max_rmse_px=max_rmse)
    config = RegistrationConfig(model=model, refine=refine, detect_max_side=detect_size or None,
                                n_features=features, limits=limits)
    jobs, copies, notes = plan_jobs(ref, inputs, out, valid_out, masks, masks_out)
    for n in notes:
        console.note(n)
    if masks is not None and not any(j.mask_src for j in jobs):
        console.warn(f"{masks}: no ground-truth mask matches any input image")
    if report is not None:
        check_writable(report, overwrite)
    _check_plan(jobs, copies, inputs, overwrite)
    for job in jobs:  # every input readable (header) before anything is written
        src_size = image_size(job.src)
        if job.mask_src is not None:
            mask_size = image_size(job.mask_src)
            # a mask of another shape belongs to other images: stretching it would misplace the
            # ground truth silently (evaluate refuses such masks too); another scale is resized
            if tuple(mask_size) != tuple(src_size) and abs(mask_size[0] * src_size[1] - mask_size[1] * src_size[0]) > 0.02 * mask_size[1] * src_size[1]:
                raise LineclearError(f"{job.mask_src}: mask is {mask_size[1]}x{mask_size[0]} but its image "
                                     f"{job.src} is {src_size[1]}x{src_size[0]}")

    registrars: dict[Path, Registrar] = {}
    ref_info: dict[Path, dict] = {}
    for r in sorted({j.ref for j in jobs}):
        ref_img = read_raw(r)
        registrars[r] = Registrar(ref_img, config)
        ref_info[r] = {"path": str(r), "sha256": sha256_file(r), "size": [int(ref_img.shape[1]), int(ref_img.shape[0])]}
        if len(registrars[r].ref_points) < limits.min_inliers:
            raise LineclearError(f"{r}: the reference has too few features to register against "
                                 f"({len(registrars[r].ref_points)}); is it flat or blurred?")

    def write_outputs(job: Job, res: RegistrationResult) -> None:
        write_image(job.dst, res.image, overwrite=overwrite)
        write_mask(job.valid, res.valid, overwrite=overwrite)
        if job.mask_src is not None:
            gt = read_mask(job.mask_src)
            write_mask(job.mask_dst, warp_mask(gt, res), overwrite=overwrite)

    progress = console.rich_progress()
    failed_n = 0
    # Group by reference so each registrar's features are computed once and its images run in parallel.
    order = {id(j): i for i, j in enumerate(jobs)}
    collected: dict[int, tuple[Job, RegistrationResult]] = {}
    with progress.task("registering", total=len(jobs)) as task:
        for r, registrar in registrars.items():
            group = [j for j in jobs if j.ref == r]
            for job, res, _ in register_many(registrar, group, lambda j: read_raw(j.src), jobs=jobs_n,
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
    entries = []
    for i in sorted(collected):
        job, res = collected[i]
        entries.append({
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
            "qc": _clean_qc(res.qc),
        })
    ms = [e["qc"]["ms"] for e in entries]
    summary = {
        "images": len(entries),
        "registered": sum(e["status"] == "registered" for e in entries),
        "failed": sum(e["status"] == "failed" for e in entries),
        "resized": sum(bool(e["resized"]) for e in entries),
        "masks_warped": sum(e["mask_out"] is not None for e in entries),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
        "median_ms": round(statistics.median(ms), 1) if ms else None,
    }
    refs = list(ref_info.values())
    doc = {"reference": refs[0] if len(refs) == 1 else {**refs[0], "all": refs}, "config": config.to_dict(),
           "summary": summary, "images": entries}
    if report is not None:
        write_report(report, doc, overwrite=overwrite)
    _print_summary(entries, summary)
    if summary["resized"]:
        console.note(f"{summary['resized']} image(s) had another size than the reference and were warped to its size")
    failed = [e for e in entries if e["status"] == "failed"]
    for e in failed:
        console.warn(f"{e['input']}: registration failed ({e['reason']}); passed through unchanged")
    roots = _output_roots(inputs, jobs)
    if json_out:
        console.print_json({"summary": summary, "report": str(report) if report else None, "outputs": roots,
                            "failed": [{"input": e["input"], "reason": e["reason"]} for e in failed]})
    else:
        for root in roots:
            typer.echo(root)
    if strict and failed:
        raise LineclearError(f"{len(failed)} of {len(entries)} image(s) failed to register (--strict)")


def _output_roots(inputs: list[Path], jobs: list[Job]) -> list[str]:
    """The output folder of each input (for stdout): the common parent of its registered images."""
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


def _clean_qc(qc: dict) -> dict:
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


def _print_summary(entries: list[dict], summary: dict) -> None:
    if console.state.quiet:
        return
    rows = entries if len(entries) <= 25 else [e for e in entries if e["status"] == "failed"]
    if rows:
        table = Table(title="registration" if len(entries) <= 25 else "failed registrations", box=box.SIMPLE_HEAD,
                      pad_edge=False)
        table.add_column("image", overflow="fold", min_width=14)
        table.add_column("status", no_wrap=True)
        for col in ("inliers", "ratio", "rmse px", "shift px", "rot °", "ms"):
            table.add_column(col, justify="right", no_wrap=True)
        for e in rows:
            q = e["qc"]
            status = "[green]ok[/]" if e["status"] == "registered" else "[red]FAILED[/]"
            table.add_row(Path(e["input"]).name, status, _fmt(q.get("inliers")), _fmt(q.get("inlier_ratio")),
                          _fmt(q.get("reprojection_rmse"), 3), _fmt(q.get("max_corner_shift_px"), 1),
                          _fmt(q.get("rotation_deg")), _fmt(q.get("ms"), 0))
        console.err.print(table)
    console.err.print(
        f"registered {summary['registered']}/{summary['images']}, failed {summary['failed']}, "
        f"resized {summary['resized']}, masks warped {summary['masks_warped']}; "
        f"{summary['mean_ms']} ms/image (mean, per thread)"
    )


def register(app: typer.Typer) -> None:
    app.command("register")(register_command)
