"""``lineclear export RUN_DIR --format onnx|openvino``: the model for a line PC that has no PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from lineclear.cli import console
from lineclear.cli.options import Overwrite
from lineclear.export import DEFAULT_CHECK_IMAGES, DEFAULT_TOLERANCE, export_run


def export_command(
    run: Annotated[Path, typer.Argument(help="Run directory (or its model.pt).", show_default=False)],
    format: Annotated[str, typer.Option("--format", "-f", help="onnx (ONNX Runtime) or openvino (OpenVINO IR).")] = "onnx",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Export folder to write [default: RUN_DIR/export-FORMAT].", show_default=False)] = None,
    images: Annotated[Optional[List[Path]], typer.Option("--images", help="Images or folders for the fidelity check (default: the run's validation and test images).")] = None,
    n_images: Annotated[int, typer.Option("--check-images", min=1, help="How many images the fidelity check scores.")] = DEFAULT_CHECK_IMAGES,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Largest map difference allowed, as a share of the PyTorch maps' range.")] = DEFAULT_TOLERANCE,
    overwrite: Overwrite = False,
) -> None:
    """Export the network as a graph and the rest (memory bank, statistics) as arrays; check, then write.

    The exported model scores a few images beside the PyTorch model; maps or scores that differ by more than
    the tolerance refuse the export (exit 1) and nothing is written.

    Writes OUT/export.json (lineclear.export/1) with the SHA-256 of every file; `lineclear deploy --runtime FORMAT` uses it.
    """
    info = export_run(run, format.lower(), out, images=images, n_images=n_images, tolerance=tolerance,
                      overwrite=overwrite)
    fid = info.doc["fidelity"]
    console.note(f"exported {info.model} to {info.root} ({info.format}); fidelity on {fid['images']} image(s): maps within "
                 f"{fid['max_map_diff_rel']:.1e} of their range, scores within {fid['max_score_diff_rel']:.1e}")
    console.print_json({"export": str(info.root), "model": info.model, "format": info.format,
                        "map_size": list(info.map_size), "files": info.files,
                        "fidelity": {k: v for k, v in fid.items() if k != "image_files"}})


def register(app: typer.Typer) -> None:
    app.command("export", no_args_is_help=True)(export_command)
