"""``lineclear register --ref REF INPUT...``: align camera-shifted images to a reference (thesis 3.4).

Thin edge over :mod:`lineclear.register_files`: plans every output path and refuses bad input or existing
outputs before anything is written, registers and writes, then writes the report and prints the summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from lineclear.cli import console
from lineclear.cli.options import JsonOut, Overwrite
from lineclear.errors import LineclearError, UsageError
from lineclear.formats import check_writable
from lineclear.formats.registration import write_report
from lineclear.images import image_size
from lineclear.register import REFINES, TRANSFORM_MODELS, QCLimits, RegistrationConfig
from lineclear.register_files import check_plan, output_roots, plan_jobs, register_jobs


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
    model: Annotated[str, typer.Option("--model", help=f"Transform model: {', '.join(TRANSFORM_MODELS)}. Affine or similarity where a homography over-fits (flat scenes, few features).")] = "homography",
    refine: Annotated[str, typer.Option("--refine", help=f"Sub-pixel refinement at full resolution: {', '.join(REFINES)} (flow: track corners near the first estimate; ecc: intensity alignment; none: the thesis's plain estimate).")] = "flow",
    detect_size: Annotated[int, typer.Option("--detect-size", min=0, help="Longest side of the reduced copy ORB runs on (0 = full resolution, as in the thesis).")] = 1024,
    features: Annotated[int, typer.Option("--features", min=50, help="ORB keypoints per image.")] = 1000,
    clahe: Annotated[float, typer.Option("--clahe", min=0.0, help="When the plain copy gives no transform that passes QC, try again on contrast-equalised copies (CLAHE clip limit) for dim, hazy or defocused scenes (0 = no second try).")] = 2.0,
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
                                n_features=features, detect_clahe=clahe, limits=limits)
    jobs, copies, notes = plan_jobs(ref, inputs, out, valid_out, masks, masks_out)
    for n in notes:
        console.note(n)
    if masks is not None and not any(j.mask_src for j in jobs):
        console.warn(f"{masks}: no ground-truth mask matches any input image")
    if report is not None:
        check_writable(report, overwrite)
    check_plan(jobs, copies, inputs, overwrite)
    doc = register_jobs(jobs, copies, config, overwrite=overwrite, threads=jobs_n, progress=console.rich_progress())
    entries, summary = doc["images"], doc["summary"]
    if report is not None:
        write_report(report, doc, overwrite=overwrite)
    _print_summary(entries, summary)
    if summary["resized"]:
        console.note(f"{summary['resized']} image(s) had another size than the reference and were warped to its size")
    failed = [e for e in entries if e["status"] == "failed"]
    for e in failed:
        console.warn(f"{e['input']}: registration failed ({e['reason']}); passed through unchanged")
    roots = output_roots(inputs, jobs)
    if json_out:
        console.print_json({"summary": summary, "report": str(report) if report else None, "outputs": roots,
                            "failed": [{"input": e["input"], "reason": e["reason"]} for e in failed]})
    else:
        for root in roots:
            typer.echo(root)
    if strict and failed:
        raise LineclearError(f"{len(failed)} of {len(entries)} image(s) failed to register (--strict)")


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
