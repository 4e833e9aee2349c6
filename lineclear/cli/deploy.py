"""``lineclear deploy RUN_DIR... --out line/``: one folder with everything a line PC needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from lineclear.cli import console
from lineclear.cli.options import Overwrite
from lineclear.errors import UsageError
from lineclear.formats import read_json
from lineclear.formats.deploy import DEFAULT_MAX_RAISED_FRACTION
from lineclear.line.deploy import build_bundle, view_from_run
from lineclear.register import RegistrationConfig


def parse_view_map(values: list[str] | None, option: str) -> dict[str, str]:
    """``VIEW=VALUE`` items → dict; a malformed item or a repeated view is a usage error."""
    out: dict[str, str] = {}
    for item in values or []:
        view, sep, value = item.partition("=")
        if not sep or not view.strip() or not value.strip():
            raise UsageError(f"{option} {item!r}: expected VIEW=VALUE")
        if view.strip() in out:
            raise UsageError(f"{option}: view {view.strip()} given twice")
        out[view.strip()] = value.strip()
    return out


def deploy_command(
    runs: Annotated[List[Path], typer.Argument(help="Run directories (one per view) with model.pt and thresholds.json.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write.")] = Path("line"),
    thresholds: Annotated[Optional[List[str]], typer.Option("--thresholds", help="VIEW=PATH: thresholds file of a view (default RUN_DIR/thresholds.json).")] = None,
    mask: Annotated[Optional[List[str]], typer.Option("--mask", help="VIEW=PATH: inspection mask of a view when the calibration's recorded mask has moved (must be the same file: its hash is checked).")] = None,
    reference: Annotated[Optional[List[str]], typer.Option("--reference", help="VIEW=PATH: registration reference (default: the view directory's reference image).")] = None,
    pattern: Annotated[Optional[List[str]], typer.Option("--pattern", help="VIEW=PATTERN: file names of that view's images: a glob (cam1_*.png) or a word that must be a token of the name (default: the view name, so A matches A.png, A_0012.png, line-A.tif).")] = None,
    registration_model: Annotated[str, typer.Option("--registration-model", help="homography, affine or similarity.")] = "homography",
    register_: Annotated[bool, typer.Option("--register/--no-register", help="Register each image to the view's reference with quality control (off only for cameras that cannot move).")] = True,
    border_margin: Annotated[Optional[int], typer.Option("--border-margin", min=0, help="Map pixels along a registration seam that are ignored (default: as calibrated, else lineclear score's default).")] = None,
    max_raised_fraction: Annotated[float, typer.Option("--max-raised-fraction", min=0.0, max=1.0, help="Share of the inspected area above the pixel threshold beyond which check says undecided (scene changed: lighting, dirty lens, camera) instead of leftover.")] = DEFAULT_MAX_RAISED_FRACTION,
    runtime: Annotated[str, typer.Option("--runtime", help="torch (the checkpoint), onnx or openvino (the run's export, RUN_DIR/export-RUNTIME, made and checked when missing): check then runs without PyTorch.")] = "torch",
    overwrite: Overwrite = False,
) -> None:
    """Bundle each view's checkpoint, thresholds, reference, inspection mask and registration settings.

    Mask, mask stage and border margin are those the thresholds were calibrated with: the line scores as calibrated.

    Writes OUT/manifest.json (lineclear.deploy/2) with the SHA-256 of every file; built beside OUT, then renamed.
    """
    maps = {opt: parse_view_map(vals, f"--{opt}") for opt, vals in
            (("thresholds", thresholds), ("mask", mask), ("reference", reference), ("pattern", pattern))}
    reg = RegistrationConfig(model=registration_model).to_dict() if register_ else None
    names: dict[Path, str] = {}
    for run in runs:
        cfg = run / "config.json"
        names[run] = read_json(cfg, "lineclear.run/1").get("view", "") if cfg.is_file() else ""
    known = set(names.values())
    for opt, m in maps.items():
        for view in m:
            if view not in known:
                raise UsageError(f"--{opt} {view}=...: no run of view {view!r} given (views: {', '.join(sorted(known))})")
    sources = []
    for run in runs:
        v = names[run]
        src = view_from_run(
            run, thresholds=maps["thresholds"].get(v), mask=maps["mask"].get(v), reference=maps["reference"].get(v),
            pattern=maps["pattern"].get(v), registration=reg, border_margin=border_margin,
            max_raised_fraction=max_raised_fraction, runtime=runtime.lower(),
        )
        for n in src.notes:
            console.note(n)
        sources.append(src)
    bundle = build_bundle(out, sources, overwrite=overwrite)
    console.note(f"deployed {len(bundle.views)} view(s) to {out}")
    console.print_json({
        "bundle": str(out), "manifest": str(out / "manifest.json"),
        "views": {n: {"model": s.model, "runtime": s.runtime, "pattern": s.pattern, "mask_stage": s.mask_stage,
                      "border_margin": s.border_margin, "registration": (s.registration or {}).get("model"),
                      "map_size": list(s.map_size), "image_size": list(s.image_size),
                      "max_raised_fraction": s.max_raised_fraction}
                  for n, s in bundle.views.items()},
        "files": len(bundle.files),
    })


def register(app: typer.Typer) -> None:
    app.command("deploy", no_args_is_help=True)(deploy_command)
