"""``lineclear score CHECKPOINT INPUT... --out maps.h5``: anomaly maps for images, into HDF5."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from lineclear.cli import console
from lineclear.cli.options import Device, MaskPath, Overwrite
from lineclear.dataset import View, find_view_dir, image_id, label_from_path, list_images, valid_path_for
from lineclear.device import resolve_device
from lineclear.errors import LineclearError, UsageError
from lineclear.formats import MapsWriter, check_writable, provenance, read_mask, sha256_file
from lineclear.images import image_size
from lineclear.scoring import MASK_STAGES, load_model, resolve_checkpoint, score_paths

DEFAULT_BORDER_MARGIN = 8  # measured on synth (docs/readme/40-models-cpu.md)


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


def score_command(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt, or a run directory holding one.", show_default=False)],
    inputs: Annotated[List[Path], typer.Argument(help="Images, folders, or view directories (see --split).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Maps file to write (HDF5, lineclear.maps/1) [default: <split>_maps.h5, the names calibrate and evaluate look for].", show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="For a view directory input: train, val, test or all.")] = "test",
    mask: MaskPath = None,
    mask_stage: Annotated[Optional[str], typer.Option("--mask-stage", help="pre (mask before the map) or post (zero the map after); default post when --mask is given, none otherwise. Registration validity masks join the mask at this stage.")] = None,
    border_margin: Annotated[int, typer.Option("--border-margin", min=0, help="Map pixels along a registration seam that are ignored too.")] = DEFAULT_BORDER_MARGIN,
    use_valid: Annotated[bool, typer.Option("--valid/--no-valid", help="Use registration validity masks (<view>/valid/...) when present.")] = True,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 8,
    bf16: Annotated[bool, typer.Option("--bf16/--fp32", help="Run the network under bfloat16 autocast.")] = False,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Score images with a trained model and write their anomaly maps and scores.

    Maps are written at the model's resolution (``evaluate`` resizes ground truth to it).
    Labels come from MVTec folder names: good → 0, test/<defect> → 1, otherwise −1.
    """
    if split not in ("train", "val", "test", "all"):
        raise UsageError(f"--split must be train, val, test or all, got {split!r}")
    out = Path(out) if out is not None else Path(f"{split}_maps.h5")
    stage = mask_stage or ("post" if mask is not None else "none")
    if stage not in MASK_STAGES:
        raise UsageError(f"--mask-stage must be pre or post, got {mask_stage!r}")
    check_writable(out, overwrite)
    ckpt = resolve_checkpoint(checkpoint)
    dev = resolve_device(device)
    model, meta, cfg = load_model(ckpt, dev)
    paths, root = collect_inputs(list(inputs), split, meta)
    size = tuple(int(x) for x in cfg.image_size)
    src_size = image_size(paths[0])
    roi = None
    if mask is not None:
        roi = read_mask(mask)
        if roi.shape != src_size:
            raise LineclearError(
                f"{mask}: mask is {roi.shape[1]}x{roi.shape[0]} but the images are {src_size[1]}x{src_size[0]}"
            )
    lookup = valid_path_for if use_valid else None
    registered = bool(use_valid and any(valid_path_for(p) is not None for p in paths))
    attrs = provenance(
        model=meta.get("model"), preset=meta.get("preset"), view=meta.get("view"), dataset_root=str(root),
        map_size=list(size), image_size=list(src_size), mask_stage=stage,
        mask=str(Path(mask).resolve()) if mask else "", mask_sha256=sha256_file(mask) if mask else "",
        registered=registered, checkpoint=str(ckpt.resolve()), checkpoint_sha256=sha256_file(ckpt),
        border_margin=border_margin if registered else 0, split=split,
    )
    console.note(f"scoring {len(paths)} images with {meta.get('model')} at {size[0]}x{size[1]} (HxW) on {dev} (mask stage: {stage})")
    n_anom = 0
    with MapsWriter(out, size, attrs=attrs, with_valid=(roi is not None or registered), overwrite=overwrite) as w:
        for batch in score_paths(
            model, paths, size, roi=roi, mask_stage=stage, valid_lookup=lookup, border_margin=border_margin,
            batch_size=batch_size, device=dev, bf16=bf16, progress=console.rich_progress(),
        ):
            labels = [label_from_path(p) for p in batch.paths]
            n_anom += sum(1 for x in labels if x == 1)
            w.append(batch.maps, batch.scores, [image_id(p, root) for p in batch.paths], labels, valid=batch.valid)
    console.print_json({"maps": str(out), "images": len(paths), "anomalous": n_anom, "map_size": list(size),
                        "mask_stage": stage, "registered": registered})


def register(app: typer.Typer) -> None:
    app.command("score", no_args_is_help=True)(score_command)
