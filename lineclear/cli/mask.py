"""``lineclear mask``: build and check a view's inspection mask (PNG, 255 = inspect, 0 = ignore)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lineclear.cli import console
from lineclear.cli.options import JsonOut, Overwrite
from lineclear.errors import LineclearError, UsageError
from lineclear.formats import check_writable, read_mask, write_mask
from lineclear.formats.via import read_via
from lineclear.images import image_size, read_raw, write_image
from lineclear.masking import build_mask, mask_fraction, regions_mask, render_preview


def _parse_size(text: str) -> tuple[int, int]:
    """``WxH`` → (H, W)."""
    w, sep, h = text.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        wi, hi = int(w), int(h)
    except ValueError:
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 768x512") from None
    if wi < 1 or hi < 1:
        raise UsageError(f"--size {text!r}: width and height must be positive")
    return hi, wi


def _regions(paths: list[Path], image: str | None, what: str) -> list:
    regions = []
    for path in paths:
        entries = read_via(path)
        if image is not None:
            entries = [e for e in entries if e.basename == image or e.filename == image]
            if not entries:
                raise LineclearError(f"{path}: no entry for image {image!r}")
        found = [r for e in entries for r in e.regions]
        if not found:
            raise LineclearError(f"{path}: no regions (polygons or other shapes) to {what}")
        with_regions = {e.filename for e in entries if e.regions}
        if len(with_regions) > 1:
            console.note(f"{path}: regions of {len(with_regions)} images combined (use --image NAME to pick one)")
        regions.extend(found)
    return regions


def mask_command(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Mask PNG to write (255 = inspect, 0 = ignore).", dir_okay=False, show_default=False)] = None,
    ignore: Annotated[Optional[list[Path]], typer.Option("--ignore", help="VIA file (CSV or JSON) with regions drawn over the areas NOT to inspect. Repeatable.", dir_okay=False, show_default=False)] = None,
    keep: Annotated[Optional[list[Path]], typer.Option("--keep", help="VIA file with regions drawn over the ONLY areas to inspect. Repeatable.", dir_okay=False, show_default=False)] = None,
    from_png: Annotated[Optional[Path], typer.Option("--from", help="Existing mask PNG (255 = inspect) to start from.", dir_okay=False, show_default=False)] = None,
    ref: Annotated[Optional[Path], typer.Option("--ref", help="The view's reference image: sets the mask size and is the background of --preview.", dir_okay=False, show_default=False)] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="Mask size WIDTHxHEIGHT when there is neither --ref nor --from.", show_default=False)] = None,
    image: Annotated[Optional[str], typer.Option("--image", help="Use only the regions drawn on this image name of the VIA file(s) (default: all).", show_default=False)] = None,
    dilate: Annotated[float, typer.Option("--dilate", min=0, help="Grow the IGNORED area by this many pixels (inspect less; applied first).")] = 0,
    erode: Annotated[float, typer.Option("--erode", min=0, help="Shrink the IGNORED area by this many pixels (inspect more; applied after --dilate).")] = 0,
    preview: Annotated[Optional[Path], typer.Option("--preview", help="PNG of the mask drawn over --ref: ignored areas tinted red, the boundary outlined.", dir_okay=False, show_default=False)] = None,
    json_out: JsonOut = False,
    overwrite: Overwrite = False,
) -> None:
    """Build an inspection mask from VIA regions and/or a PNG, grow or shrink it, and preview it.

    The mask is base ∧ keep ∧ ¬ignore (each part only when given), then the ignored area is dilated by
    --dilate and eroded by --erode (Euclidean pixels). Use it with `score --mask` (pre or post stage) and
    `evaluate`. `--from roi.png --ref ref.png --preview p.png` only checks an existing mask.
    """
    ignore, keep = list(ignore or []), list(keep or [])
    if not (ignore or keep or from_png):
        raise UsageError("give at least one of --ignore, --keep or --from")
    if out is None and preview is None:
        raise UsageError("give --out (the mask) and/or --preview (the overlay)")
    if preview is not None and ref is None:
        raise UsageError("--preview draws over the reference image: give --ref")
    for path in (out, preview):
        if path is not None:
            check_writable(path, overwrite)
    if out is not None and preview is not None and out.resolve() == preview.resolve():
        raise UsageError("--out and --preview must be different files")
    if out is not None and from_png is not None and out.resolve() == from_png.resolve() and not overwrite:
        raise UsageError(f"{out}: --out is the --from mask (add --overwrite to replace it)")

    ref_img = None
    if ref is not None:
        hw = image_size(ref)
        ref_img = read_raw(ref) if preview is not None else None
    elif from_png is not None:
        hw = image_size(from_png)
    elif size is not None:
        hw = _parse_size(size)
    else:
        raise UsageError("VIA regions need a frame size: give --ref (the reference image) or --size WxH")
    if size is not None and (ref is not None or from_png is not None) and _parse_size(size) != tuple(hw):
        raise UsageError(f"--size {size} differs from the size of {ref or from_png} ({hw[1]}x{hw[0]})")

    base = None
    if from_png is not None:
        base = read_mask(from_png)
        if base.shape != tuple(hw):
            console.note(f"{from_png}: {base.shape[1]}x{base.shape[0]} resized (nearest) to {hw[1]}x{hw[0]}")
    ign = regions_mask(_regions(ignore, image, "ignore"), hw) if ignore else None
    kp = regions_mask(_regions(keep, image, "keep"), hw) if keep else None
    if ign is not None and not ign.any():
        console.warn("the --ignore regions cover no pixel of the frame (drawn on an image of another size?)")
    if kp is not None and not kp.any():
        raise LineclearError("the --keep regions cover no pixel of the frame: nothing would be inspected")
    mask = build_mask(hw, ignore=ign, keep=kp, base=base, dilate=dilate, erode=erode)
    frac = mask_fraction(mask)
    if not mask.any():
        console.warn("the mask ignores the whole frame: nothing would be inspected")
    if out is not None:
        write_mask(out, mask, overwrite=overwrite)
    if preview is not None:
        write_image(preview, render_preview(ref_img, mask), overwrite=overwrite)
    result = {"out": str(out) if out else None, "preview": str(preview) if preview else None,
              "size": [int(hw[1]), int(hw[0])], "inspect_fraction": round(frac, 6),
              "dilate_px": dilate, "erode_px": erode}
    console.err.print(f"mask {hw[1]}x{hw[0]}: inspect {frac:.1%}, ignore {1 - frac:.1%}")
    if json_out:
        console.print_json(result)
    else:
        for p in (out, preview):
            if p is not None:
                typer.echo(str(p))


def register(app: typer.Typer) -> None:
    app.command("mask")(mask_command)
