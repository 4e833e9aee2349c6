"""``lineclear labels ANNOTATIONS --images DIR --out DIR``: VIA annotations → ground-truth mask PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from lineclear.cli import console
from lineclear.cli.options import JsonOut, Overwrite


def labels(
    annotations: Annotated[
        Path, typer.Argument(help="VIA CSV export or VIA 1/2 project JSON (detected from the content).", dir_okay=False)
    ],
    images: Annotated[Path, typer.Option("--images", help="Folder searched (recursively) for the annotated images.",
                                         file_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="Output folder; a view's ground_truth/ (or the view) gives "
                                      "ground_truth/<defect>/<stem>_mask.png.", file_okay=False)],
    where: Annotated[
        Optional[List[str]], typer.Option("--where", help="Keep regions whose attribute KEY has VALUE (repeatable).")
    ] = None,
    line_width: Annotated[float, typer.Option("--line-width", help="Width of polylines, pixels.")] = 1.0,
    point_radius: Annotated[float, typer.Option("--point-radius", help="Radius of the disk drawn for a point, pixels.")] = 3.0,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
) -> None:
    """Turn VIA annotations into one uint8 0/255 mask PNG per annotated image (<stem>_mask.png).

    Shapes: rect, polygon, circle, ellipse (theta in radians), polyline (--line-width),
    point (--point-radius); several regions of an image are merged; an image listed
    without regions gets an empty mask. Images are found by base name anywhere under
    --images; sizes come from the image headers.
    """
    from lineclear.errors import UsageError

    if line_width <= 0:
        raise UsageError(f"--line-width must be positive, got {line_width}")
    if point_radius <= 0:
        raise UsageError(f"--point-radius must be positive, got {point_radius}")
    result = run_labels(annotations, images, out, where or [], line_width=line_width, point_radius=point_radius,
                        overwrite=overwrite)
    if json_out:
        console.print_json(result)
        return
    console.out.print(
        f"wrote {result['masks']} masks to {result['out']} ({result['layout']} layout): "
        f"{result['with_regions']} with regions ({result['regions']} regions), {result['empty']} empty"
        + (f", {result['clipped']} regions clipped at the image border" if result["clipped"] else "")
    )


def _names(items: list, limit: int = 8) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _mvtec_root(out: Path) -> Path | None:
    """``out`` itself when it is a ground_truth/ folder, ``out/ground_truth`` when ``out`` is a view."""
    if out.name == "ground_truth":
        return out
    if (out / "train").is_dir() or (out / "test").is_dir():
        return out / "ground_truth"
    return None


def run_labels(annotations: Path, images: Path, out: Path, where: list[str], *, line_width: float = 1.0,
               point_radius: float = 3.0, overwrite: bool = False) -> dict:
    """Validate everything (annotations, image names and sizes, outputs), then write the masks.

    Nothing is written when any check fails. Returns the summary printed by the command.
    """
    from lineclear.dataset import list_images
    from lineclear.errors import LineclearError, OutputExistsError
    from lineclear.formats.masks import write_mask
    from lineclear.formats.via import read_via
    from lineclear.images import image_size
    from lineclear.labels import match_names, outside_fraction, parse_where, rasterise, select_regions

    keep = parse_where(where)
    anns = read_via(annotations)
    if not anns:
        # a header-only export (e.g. VIA with no image loaded) would "succeed" writing nothing
        raise LineclearError(f"{annotations}: lists no image (only a header?); nothing to do")
    if not images.is_dir():
        raise LineclearError(f"{images}: no such folder (--images)")
    # One entry per base name; the same name under two paths in the file is ambiguous too.
    by_base: dict[str, list] = {}
    for a in anns:
        by_base.setdefault(a.basename, []).append(a)
    dup = sorted(n for n, v in by_base.items() if len({a.filename for a in v}) > 1)
    found, missing, ambiguous = match_names(sorted(by_base), list_images(images))
    problems = []
    if missing:
        problems.append(f"{len(missing)} image(s) not found under {images}: {_names(missing)}")
    if ambiguous:
        problems.append(f"{len(ambiguous)} name(s) match several files: " + _names(
            [f"{n} ({' | '.join(str(p) for p in ps[:3])})" for n, ps in ambiguous.items()], 4))
    if dup:
        problems.append(f"{len(dup)} base name(s) listed under different paths: {_names(dup)}")
    if problems:
        raise LineclearError(f"{annotations}: " + "; ".join(problems))
    gt_root = _mvtec_root(out)
    jobs = []
    targets: dict[Path, str] = {}
    for name in sorted(by_base):
        path = found[name]
        regions = select_regions([r for a in by_base[name] for r in a.regions], keep)
        target = (gt_root / path.parent.name if gt_root is not None else out) / f"{path.stem}_mask.png"
        if target in targets:
            raise LineclearError(f"{annotations}: {name} and {targets[target]} would both write {target}")
        targets[target] = name
        jobs.append((name, path, image_size(path), regions, target))
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{len(existing)} output(s) exist, e.g. {existing[0]} (use --overwrite to replace them)")
    clipped = 0
    for name, path, size, regions, _ in jobs:
        for r in regions:
            if outside_fraction(r.shape, size, line_width, point_radius):
                clipped += 1
                if not rasterise([r], size, line_width=line_width, point_radius=point_radius).any():
                    # a region wholly off the frame usually means the wrong image or scaled coordinates
                    console.warn(f"{r.where or annotations}: {r.shape['name']} lies entirely outside {name} "
                                 f"({size[1]}x{size[0]}); it marks no pixel")
                    continue
                console.warn(f"{r.where or annotations}: {r.shape['name']} reaches outside {name} "
                             f"({size[1]}x{size[0]}); clipped at the image border")
    written = []
    n_regions = 0
    for name, path, size, regions, target in jobs:
        write_mask(target, rasterise(regions, size, line_width=line_width, point_radius=point_radius), overwrite)
        written.append({"image": str(path), "mask": str(target), "regions": len(regions)})
        n_regions += len(regions)
    return {
        "annotations": str(annotations),
        "out": str(gt_root if gt_root is not None else out),
        "layout": "mvtec" if gt_root is not None else "flat",
        "masks": len(written),
        "with_regions": sum(1 for w in written if w["regions"]),
        "empty": sum(1 for w in written if not w["regions"]),
        "regions": n_regions,
        "clipped": clipped,
        "files": written,
    }


def register(app: typer.Typer) -> None:
    app.command("labels", no_args_is_help=True)(labels)
