"""``lineclear synth OUT``: write the synthetic multi-view dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lineclear.cli import console
from lineclear.cli.options import JsonOut, Overwrite, Seed


def synth(
    out: Annotated[Path, typer.Argument(help="Dataset root to write (one folder per view).", file_okay=False)],
    views: Annotated[
        Optional[str], typer.Option("--views", help="Comma-separated views to write, from A,A2,B,B2,C.")
    ] = None,
    size: Annotated[str, typer.Option("--size", help="Image size WIDTHxHEIGHT.")] = "768x512",
    seed: Seed = 0,
    n_train: Annotated[int, typer.Option("--n-train", min=1, help="Anomaly-free training images per view.")] = 15,
    n_good: Annotated[int, typer.Option("--n-good", min=0, help="Unshifted anomaly-free test images per view.")] = 4,
    n_shifted: Annotated[int, typer.Option("--n-shifted", min=0, help="Camera-shifted anomaly-free test images per view.")] = 8,
    n_anomalous: Annotated[
        int, typer.Option("--n-anomalous", min=0, help="Test images with leftover product per view (half shifted).")
    ] = 16,
    workers: Annotated[
        Optional[int], typer.Option("--workers", min=1, help="Processes (default: one per view, up to 4 and the CPUs).")
    ] = None,
    photos: Annotated[Optional[str], typer.Option("--photos", help="Build views from real photographs instead: 'builtin' (five that ship in scikit-image) or a folder of your own (one view per photo); camera nudges, parallax, lighting, shadows, focus drift, noise and leftover product with exact ground truth.", show_default=False)] = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write a deterministic synthetic line-clearance dataset: five machine views (A, A2, B, B2, C).

    Per view: train/good, test/good (with camera-shifted images), test/<product> with
    ground_truth masks, reference.png, roi.png, shifts.json (true homographies),
    annotations_via.csv (VIA 2 CSV of the products) and ignore_regions_via.csv.
    The same --seed gives byte-identical files.
    """
    from lineclear.synth import VIEWS, generate, parse_size
    from lineclear.errors import UsageError

    if quiet:
        console.state.quiet = True
    if photos is not None:
        from lineclear.synth.photos import generate_photos

        summary = generate_photos(out, photos, seed=seed, overwrite=overwrite)
        if json_out:
            console.print_json(summary)
            return
        for name, v in summary["views"].items():
            anomalous = ", ".join(f"{k} {n}" for k, n in v["anomalous"].items())
            console.out.print(f"  {name:<16} train {v['train']}  val {v['val']}  test/good {v['test_good']} shifted  "
                              f"anomalous {sum(v['anomalous'].values())} ({anomalous})")
        return
    view_list = [v.strip() for v in views.split(",") if v.strip()] if views else list(VIEWS)
    if not view_list:
        raise UsageError("--views: no view given")
    summary = generate(
        out,
        views=view_list,
        size=parse_size(size),
        seed=seed,
        n_train=n_train,
        n_good=n_good,
        n_shifted=n_shifted,
        n_anomalous=n_anomalous,
        overwrite=overwrite,
        workers=workers,
        progress=console.rich_progress(),
    )
    if json_out:
        console.print_json(summary)
        return
    w, h = summary["size"]
    console.out.print(f"wrote {summary['images']} images of {w}x{h} in {len(summary['views'])} views to {out} "
                      f"(seed {seed}, {summary['seconds']} s)")
    for name, v in summary["views"].items():
        anomalous = ", ".join(f"{k} {n}" for k, n in v["anomalous"].items())
        console.out.print(
            f"  {name:<3} train {v['train']:>3}  test/good {v['test_good']} + {v['test_shifted']} shifted  "
            f"anomalous {sum(v['anomalous'].values())} ({anomalous}; {v['anomalous_shifted']} shifted)  "
            f"regions {v['regions']}  roi {100 * v['roi_inspected_fraction']:.0f}%"
        )


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
