"""``lineclear calibrate [VAL_MAPS.h5] --method ksigma``: thresholds from normal validation maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from lineclear.calibrate import DEFAULT_K, DEFAULT_P, LEVELS, METHODS, calibrate, check_params, few_scores_warning
from lineclear.cli import console
from lineclear.cli.options import JsonOut, Overwrite
from lineclear.errors import LineclearError, UsageError
from lineclear.formats import MapsFile, check_writable, sha256_file, write_thresholds

DEFAULT_VAL_MAPS = Path("val_maps.h5")
# below this many normal images a max, quantile or k-sigma threshold rests on too few samples to be trusted
MIN_NORMAL_IMAGES = 10
DEFAULT_OUT_NAME = "thresholds.json"


def output_paths(maps_path: Path, out: Path | None, methods: list[str], all_methods: bool,
                 levels: tuple[str, ...] = ("image",)) -> dict[tuple[str, str], Path]:
    """``{(method, level): path}``. One method and level: ``--out`` or ``thresholds.json`` beside the maps;
    ``--method all`` adds ``_<method>`` to the name, ``--level both`` adds ``_<level>``."""
    base = out if out is not None else maps_path.parent / DEFAULT_OUT_NAME
    if not all_methods and len(levels) == 1:
        return {(methods[0], levels[0]): base}
    suffix = base.suffix or ".json"
    return {(m, lv): base.with_name(base.stem + (f"_{m}" if all_methods else "")
                                    + (f"_{lv}" if len(levels) > 1 else "") + suffix)
            for m in methods for lv in levels}


def source_of(maps: MapsFile) -> dict:
    a = maps.attrs
    return {
        "path": str(maps.path.resolve()),
        "sha256": sha256_file(maps.path),
        "model": a.get("model"),
        "view": a.get("view"),
        "map_size": list(maps.map_size),
        "mask_stage": a.get("mask_stage"),
        "registered": a.get("registered"),
        "checkpoint_sha256": a.get("checkpoint_sha256"),
        # more of the maps provenance, so the line can score exactly as calibrated
        "checkpoint": a.get("checkpoint"),
        "checkpoint_epoch": a.get("checkpoint_epoch"),
        "mask": a.get("mask"),
        "mask_sha256": a.get("mask_sha256"),
        "border_margin": a.get("border_margin"),
        "image_size": a.get("image_size"),
        "dataset_root": a.get("dataset_root"),
        "shifts": a.get("shifts"),
        "shift_seed": a.get("shift_seed"),
    }


def calibrate_command(
    maps_path: Annotated[Path, typer.Argument(metavar="VAL_MAPS", help="Maps of the normal validation images (lineclear score --split val).")] = DEFAULT_VAL_MAPS,
    method: Annotated[str, typer.Option("--method", "-m", help="max, quantile, ksigma, or all (writes one file per method).")] = "ksigma",
    p: Annotated[float, typer.Option("--p", help="Quantile for --method quantile.")] = DEFAULT_P,
    k: Annotated[float, typer.Option("--k", help="k for --method ksigma (threshold = mean + k * std).")] = DEFAULT_K,
    level: Annotated[str, typer.Option("--level", help="What makes the image decision: image (the image score above the image threshold), pixel (any counted pixel above the pixel threshold, the thesis's rule), or both (one file per level).")] = "image",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Thresholds file (default: thresholds.json beside VAL_MAPS; with --method all: thresholds_<method>.json).", show_default=False)] = None,
    json_out: JsonOut = False,
    overwrite: Overwrite = False,
) -> None:
    """Compute pixel and image thresholds from the normal images of a validation maps file.

    Pixel threshold: over every valid pixel of the normal validation maps (segmentation).
    Image threshold: over their image scores. max = highest value; quantile = p-quantile;
    ksigma = mean + k*std. Anomalous validation images are left out. --level says which of the
    two decides whether an image is anomalous: image (its score above the image threshold) or
    pixel (any counted pixel above the pixel threshold).
    """
    if method not in (*METHODS, "all"):
        raise UsageError(f"--method must be one of {', '.join(METHODS)} or all, got {method!r}")
    if level not in (*LEVELS, "both"):
        raise UsageError(f"--level must be pixel, image or both, got {level!r}")
    levels = LEVELS if level == "both" else (level,)
    # option values are usage errors (exit 2), checked before any file is opened
    try:
        check_params(p, k)
    except LineclearError as exc:
        raise UsageError(str(exc)) from None
    methods = list(METHODS) if method == "all" else [method]
    outs = output_paths(maps_path, out, methods, method == "all", levels)
    for path in outs.values():
        # --overwrite must never replace the maps file being read
        if path.resolve() == maps_path.resolve() or (path.exists() and maps_path.exists() and path.samefile(maps_path)):
            raise UsageError(f"{path}: is the input maps file; choose another --out")
        check_writable(path, overwrite)
    with MapsFile(maps_path) as maps:
        labels = maps.labels
        normal = labels != 1
        if (labels == 1).any():
            console.warn(f"{maps_path}: {int((labels == 1).sum())} anomalous image(s) among the validation maps; "
                         "using the normal ones only")
        if (labels == -1).any():
            console.note(f"{int((labels == -1).sum())} validation image(s) with unknown label assumed normal")
        if not normal.any():
            raise LineclearError(f"{maps_path}: no normal image among {len(labels)} validation maps; cannot calibrate")

        def pixels():
            for sl, m, valid in maps.iter_batches(16):
                if not np.all(np.isfinite(m)):
                    j = sl.start + int(np.flatnonzero(~np.isfinite(m).reshape(len(m), -1).all(1))[0])
                    raise LineclearError(f"{maps_path}: anomaly map of {maps.image_ids[j]} contains NaN or infinite values")
                sel = normal[sl]
                yield m[sel][valid[sel]]

        if not np.all(np.isfinite(maps.scores[normal])):
            raise LineclearError(f"{maps_path}: image scores contain NaN or infinite values")
        try:
            results = calibrate(pixels, maps.scores[normal], methods, p=p, k=k)
        except LineclearError as exc:
            if str(exc).startswith(str(maps_path)):
                raise
            raise LineclearError(f"{maps_path}: {exc}") from None
        source = source_of(maps)
        # synthetic camera shifts of the normal images (lineclear score --shifts) count as normal images
        shifted = sum(1 for i, ok in zip(maps.image_ids, normal) if ok and "#shift" in i)
    n_real = int(normal.sum()) - shifted
    if n_real < MIN_NORMAL_IMAGES:
        console.warn(f"{maps_path}: thresholds from only {n_real} normal image(s)"
                     + (f" (+ {shifted} synthetic camera shifts of them)" if shifted else "")
                     + f"; fewer than {MIN_NORMAL_IMAGES} give unreliable thresholds (score more validation images)")
    if "image" in levels:
        few = few_scores_warning(int(normal.sum()), methods, k)
        if few:
            console.warn(f"{maps_path}: {few}")
    docs = {}
    for (m, lv), path in outs.items():
        doc = {**results[m], "level": lv, "source": source}
        write_thresholds(path, doc, overwrite=overwrite)
        docs[(m, lv)] = doc
    table = Table(title=f"thresholds from {maps_path} ({int(normal.sum())} normal images"
                        + (f": {int(normal.sum()) - shifted} + {shifted} synthetic camera shifts)" if shifted else ")"))
    for col in ("method", "decides by", "pixel threshold", "image threshold", "file"):
        table.add_column(col)
    for (m, lv), doc in docs.items():
        table.add_row(m, "any pixel > pixel threshold" if lv == "pixel" else "image score > image threshold",
                      f"{doc['pixel']['threshold']:.6g}", f"{doc['image']['threshold']:.6g}", str(outs[(m, lv)]))
    console.err.print(table)
    if json_out:
        key = (lambda m, lv: f"{m}_{lv}") if len(levels) > 1 else (lambda m, lv: m)
        console.print_json({key(m, lv): {"path": str(outs[(m, lv)]), **d} for (m, lv), d in docs.items()})
    else:
        for ml in docs:
            typer.echo(str(outs[ml]))


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
