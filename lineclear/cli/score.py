"""``lineclear score CHECKPOINT INPUT... --out maps.h5``: anomaly maps for images, into HDF5."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from lineclear.cli import console
from lineclear.cli.options import Device, MaskPath, Overwrite
from lineclear.dataset import RegisteredLookup, View, find_view_dir, image_id, label_from_path, list_images
from lineclear.device import resolve_device
from lineclear.errors import LineclearError, UsageError
from lineclear.formats import MapsWriter, check_writable, provenance, read_mask, sha256_file
from lineclear.images import image_size, read_raw, read_rgb
from lineclear.scoring import (
    DEFAULT_BORDER_MARGIN,
    DEFAULT_VAL_SHIFTS,
    MASK_STAGES,
    checkpoint_at,
    load_model,
    looks_registered,
    resolve_checkpoint,
    saved_checkpoints,
    score_paths,
    score_shifted,
)
from lineclear.shifts import ShiftRange


def collect_inputs(inputs: list[Path], split: str, meta: dict) -> tuple[list[Path], Path]:
    """Image paths to score and the dataset root their ids are relative to."""
    paths: list[Path] = []
    roots: set[Path] = set()
    for inp in inputs:
        if not inp.exists():
            raise LineclearError(f"{inp}: no such file or directory")
        if inp.is_dir() and ((inp / "train").is_dir() or (inp / "test").is_dir()):
            view = View(inp, val_fraction=meta.get("val_fraction", 0.2), seed=meta.get("split_seed", 0))
            chosen = {"train": view.train, "val": view.val, "test": view.test}
            splits = ["train", "val", "test"] if split == "all" else [split]
            for s in splits:
                paths += [x.path for x in chosen[s]()]
            roots.add(view.root)
        elif inp.is_dir():
            found = list_images(inp)
            if not found:
                raise LineclearError(f"{inp}: no images (PNG, JPEG, BMP, TIFF) in this folder")
            paths += found
        else:
            paths.append(inp)
    if not paths:
        raise LineclearError(f"no images to score in {', '.join(map(str, inputs))} (split {split})")
    for p in paths:
        v = find_view_dir(p)
        roots.add(v.parent if v is not None else Path(os.path.commonpath([str(q.resolve().parent) for q in paths])))
    root = next(iter(roots)) if len(roots) == 1 else Path(os.path.commonpath([str(r) for r in roots]))
    return paths, root.resolve()


def other_sizes(paths: list[Path], expected: tuple[int, int]) -> str | None:
    """A note naming the images whose size (H, W) is not ``expected``, or None when all have it."""
    odd: dict[tuple[int, int], list[Path]] = {}
    for p in paths:
        hw = image_size(p)
        if hw != expected:
            odd.setdefault(hw, []).append(p)
    if not odd:
        return None
    n = sum(len(v) for v in odd.values())
    shown = ", ".join(f"{w}x{h} ({v[0].name}{f' and {len(v) - 1} more' if len(v) > 1 else ''})"
                      for (h, w), v in sorted(odd.items()))
    return (f"{n} image(s) of another size than {expected[1]}x{expected[0]} (the first image's): {shown}; "
            "each is resized to the model's resolution like the rest, but the scene may not line up with the "
            "others (another camera?)")


def score_command(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt, or a run directory holding one.", show_default=False)],
    inputs: Annotated[List[Path], typer.Argument(help="Images, folders, or view directories (see --split).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Maps file to write (HDF5, lineclear.maps/1) [default: <split>_maps.h5, the names calibrate and evaluate look for].", show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="For a view directory input: train, val, test or all.")] = "test",
    mask: MaskPath = None,
    mask_stage: Annotated[Optional[str], typer.Option("--mask-stage", help="pre (mask before the map) or post (zero the map after); default post when --mask is given, none otherwise. Registration validity masks join the mask at this stage.")] = None,
    border_margin: Annotated[int, typer.Option("--border-margin", min=0, help="Map pixels along a registration seam that are ignored too.")] = DEFAULT_BORDER_MARGIN,
    use_valid: Annotated[bool, typer.Option("--valid/--no-valid", help="Use the registration validity masks that lineclear register wrote (found through the marker it leaves in its output folder, or <view>/valid/).")] = True,
    valid_dir: Annotated[Optional[Path], typer.Option("--valid-dir", help="Validity masks elsewhere: <DIR>/<path below the input folder>/<stem>_valid.png.", file_okay=False, show_default=False)] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Registration reference [default: the one lineclear register recorded, or the view's reference.png]. It continues the scene outside the camera frame and is what --shifts registers to.", dir_okay=False, show_default=False)] = None,
    shifts: Annotated[Optional[int], typer.Option("--shifts", min=0, help=f"Synthetic camera shifts per normal image, registered back and scored too, so that thresholds see what registration leaves behind [default: {DEFAULT_VAL_SHIFTS} with --split val when a reference is known, else 0].", show_default=False)] = None,
    shift_seed: Annotated[int, typer.Option("--shift-seed", help="Seed of the synthetic camera shifts.")] = 0,
    shift_parallax: Annotated[float, typer.Option("--shift-parallax", min=0.0, max=8.0, help="Parallax of the synthetic camera shifts: a smooth displacement of up to this many pixels that no homography explains (a scene that is not flat).")] = ShiftRange().parallax_px,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 8,
    bf16: Annotated[bool, typer.Option("--bf16/--fp32", help="Run the network under bfloat16 autocast.")] = False,
    device: Device = "auto",
    checkpoint_epoch: Annotated[Optional[int], typer.Option("--checkpoint-epoch", min=0, help="Score the run's intermediate checkpoint of this epoch (RUN/checkpoints/epoch_<E>.pt) instead of model.pt.", show_default=False)] = None,
    all_checkpoints: Annotated[bool, typer.Option("--all-checkpoints", help="Score model.pt into --out and every saved intermediate checkpoint into <out stem>@e<E>.h5 beside it.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Score images with a trained model and write their anomaly maps and scores.

    Maps are written at the model's resolution (``evaluate`` resizes ground truth to it).
    Labels come from MVTec folder names: good → 0, test/<defect> → 1, otherwise −1.
    """
    if all_checkpoints:
        if checkpoint_epoch is not None:
            raise UsageError("--all-checkpoints scores every checkpoint: leave out --checkpoint-epoch")
        args = dict(locals())
        args.pop("all_checkpoints")
        base = Path(out) if out is not None else Path(f"{split}_maps.h5")
        run = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
        jobs = [(None, base)] + [(e, base.with_name(f"{base.stem}@e{e}{base.suffix or '.h5'}"))
                                 for e in saved_checkpoints(run)]
        if len(jobs) == 1:
            console.note(f"{run}: no intermediate checkpoints (checkpoints/epoch_*.pt); scoring model.pt only")
        for _, path in jobs:
            check_writable(path, overwrite)  # refuse before minutes of scoring
        for epoch, path in jobs:
            score_command(**{**args, "checkpoint_epoch": epoch, "out": path})
        return
    if split not in ("train", "val", "test", "all"):
        raise UsageError(f"--split must be train, val, test or all, got {split!r}")
    out = Path(out) if out is not None else Path(f"{split}_maps.h5")
    stage = mask_stage or ("post" if mask is not None else "none")
    if stage not in MASK_STAGES:
        raise UsageError(f"--mask-stage must be pre or post, got {mask_stage!r}")
    check_writable(out, overwrite)
    ckpt = checkpoint_at(checkpoint, checkpoint_epoch) if checkpoint_epoch is not None else resolve_checkpoint(checkpoint)
    dev = resolve_device(device)
    model, meta, cfg = load_model(ckpt, dev)
    paths, root = collect_inputs(list(inputs), split, meta)
    size = tuple(int(x) for x in cfg.image_size)
    src_size = image_size(paths[0])
    odd = other_sizes(paths, src_size)
    if odd:
        console.note(odd)
    roi = None
    if mask is not None:
        roi = read_mask(mask)
        if roi.shape != src_size:
            raise LineclearError(
                f"{mask}: mask is {roi.shape[1]}x{roi.shape[0]} but the images are {src_size[1]}x{src_size[0]}"
            )
    if valid_dir is not None and not valid_dir.is_dir():
        raise LineclearError(f"{valid_dir}: no such folder of validity masks")
    if reference is not None and not reference.is_file():
        raise LineclearError(f"{reference}: reference image not found")
    base = next((i for i in inputs if i.is_dir()), None)
    finder = RegisteredLookup(valid_dir, base) if use_valid else None
    lookup = finder.valid_path if finder is not None else None
    registered = bool(lookup is not None and any(lookup(p) is not None for p in paths))
    if use_valid and not registered:
        odd = looks_registered(paths)
        if odd is not None:
            console.warn(f"{odd}: looks like a registered image (black border) but no validity mask was found: "
                         "the seam will be scored as anomaly (give --valid-dir, or score the folder lineclear "
                         "register wrote)")
    ref_path = reference
    if ref_path is None and finder is not None:
        refs = {finder.reference(p) for p in paths} - {None}
        if len(refs) > 1:
            raise UsageError(f"the images were registered to {len(refs)} different references; score one view at a "
                             "time or give --reference")
        ref_path = next(iter(refs), None)
    if ref_path is not None and not Path(ref_path).is_file():
        console.warn(f"{ref_path}: registration reference not found; the area outside the camera frame is inpainted")
        ref_path = None
    n_shifts = shifts if shifts is not None else (DEFAULT_VAL_SHIFTS if split == "val" and ref_path else 0)
    if n_shifts and ref_path is None:
        raise UsageError("--shifts needs the registration reference: give --reference (or score a registered view)")
    fill = read_rgb(ref_path, size) if ref_path is not None and (registered or n_shifts) else None
    attrs = provenance(
        model=meta.get("model"), preset=meta.get("preset"), view=meta.get("view"), dataset_root=str(root),
        map_size=list(size), image_size=list(src_size), mask_stage=stage,
        mask=str(Path(mask).resolve()) if mask else "", mask_sha256=sha256_file(mask) if mask else "",
        registered=registered, checkpoint=str(ckpt.resolve()), checkpoint_sha256=sha256_file(ckpt),
        checkpoint_epoch=checkpoint_epoch,
        border_margin=border_margin if (registered or n_shifts) else 0, split=split,
        reference=str(Path(ref_path).resolve()) if ref_path else "", shifts=n_shifts, shift_seed=shift_seed,
        shift_parallax_px=shift_parallax if n_shifts else 0.0,
    )
    console.note(f"scoring {len(paths)} images with {meta.get('model')} at {size[0]}x{size[1]} (HxW) on {dev} (mask stage: {stage})")
    n_anom = 0
    n_shifted = n_failed = 0
    with MapsWriter(out, size, attrs=attrs, with_valid=(roi is not None or registered or bool(n_shifts)),
                    overwrite=overwrite) as w:
        for batch in score_paths(
            model, paths, size, roi=roi, mask_stage=stage, valid_lookup=lookup, border_margin=border_margin,
            fill=fill, batch_size=batch_size, device=dev, bf16=bf16, progress=console.rich_progress(),
        ):
            labels = [label_from_path(p) for p in batch.paths]
            n_anom += sum(1 for x in labels if x == 1)
            w.append(batch.maps, batch.scores, [image_id(p, root) for p in batch.paths], labels, valid=batch.valid)
        if n_shifts:
            normal = [p for p in paths if label_from_path(p) != 1]
            marker = finder.marker(normal[0]) if finder is not None and normal else None
            reg_config = marker.get("config") if marker else None
            for batch, ids, failed in score_shifted(
                model, normal, size, read_raw(ref_path), n_shifts, shift_seed, roi=roi, mask_stage=stage,
                valid_lookup=lookup, border_margin=border_margin, fill=fill, registration=reg_config,
                device=dev, bf16=bf16, progress=console.rich_progress(),
                limits=ShiftRange(parallax_px=shift_parallax),
            ):
                n_failed += failed
                n_shifted += len(ids)
                if ids:
                        w.append(batch.maps, batch.scores, [f"{image_id(p, root)}#{s}" for p, s in ids],
                             [label_from_path(p) for p, _ in ids], valid=batch.valid)
            w.set_attrs(shifted_images=n_shifted, shift_failed=n_failed)
    if n_failed:
        console.warn(f"{n_failed} of {n_failed + n_shifted} synthetic camera shifts failed registration quality "
                     "control and were left out (the reference or the images may have too little texture)")
    console.print_json({"maps": str(out), "images": len(paths), "anomalous": n_anom, "map_size": list(size),
                        "mask_stage": stage, "registered": registered, "shifted": n_shifted,
                        "reference": str(ref_path) if ref_path else None})


def register(app: typer.Typer) -> None:
    app.command("score", no_args_is_help=True)(score_command)
