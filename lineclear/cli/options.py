"""Options spelled the same in every command (rasterio ``rio/options.py`` style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.")]
Device = Annotated[
    str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu or cuda.", show_default=True)
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (runs are deterministic for a seed on the CPU).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per batch.")]
MaskPath = Annotated[
    Optional[Path], typer.Option("--mask", help="Inspection mask PNG (255 = inspect, 0 = ignore).", dir_okay=False)
]
