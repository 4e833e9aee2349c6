"""``lineclear train VIEW_DIR --model M --out RUN_DIR``: fit a model on a view's normal images.

The model settings offered as options (``--epochs``, ``--backbone``, ``--t-prime`` …) are those the
models' config dataclasses declare with :func:`lineclear.models.base.option`: adding a setting to a model
touches only the model's folder.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, List, Mapping, Optional

import typer

from lineclear import distributed as ddp
from lineclear.cli import console
from lineclear.cli.options import Device, Overwrite
from lineclear.dataset import RegisteredLookup, View
from lineclear.device import resolve_device
from lineclear.errors import LineclearError, UsageError
from lineclear.formats.run import remove_run_files, run_dir_problem, write_run_config
from lineclear.models import MODELS, get_model
from lineclear.models.base import ModelEntry, OptionSpec, declared_options, resolve_config
from lineclear.training import TrainSession, add_training_shifts, load_view_images, seed_everything

# models whose fit is one pass over the images: registered shifts cost them seconds and fix their blind spot
SHIFT_MODELS = ("patchcore", "template", "ensemble")
DEFAULT_TRAIN_SHIFTS = 2


def train_command(
    view_dir: Annotated[Path, typer.Argument(help="View directory (with train/good/).", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="Model: " + ", ".join(MODELS) + ".")] = "patchcore",
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")] = Path("run"),
    preset: Annotated[str, typer.Option("--preset", help="Settings preset: fast (CPU), paper (thesis), demo (tiny).")] = "fast",
    device: Device = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")] = False,
    overwrite: Overwrite = False,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9, help="Share of train/good held out for validation when there is no val/ folder.")] = 0.2,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed of the train/validation split.")] = 0,
    shifts: Annotated[Optional[int], typer.Option("--shifts", min=0, help=f"Registered synthetic camera shifts of each training image fitted as well, so the model has seen what registration leaves behind [default: {DEFAULT_TRAIN_SHIFTS} for patchcore and template when the view has a reference image, else 0].", show_default=False)] = None,
    shift_seed: Annotated[int, typer.Option("--shift-seed", help="Seed of the training shifts.")] = 0,
    set_: Annotated[Optional[List[str]], typer.Option("--set", help="Any other setting: KEY=VALUE (repeatable).")] = None,
    distributed: Annotated[Optional[int], typer.Option("--distributed", min=1, help="DRAEM, DDAD: train in N processes on this machine with DistributedDataParallel (torchrun; one GPU each on CUDA, gloo on the CPU). --batch-size stays the global batch. Under torchrun, the processes are torchrun's.", show_default=False)] = None,
    **settings: Any,
) -> None:
    """Train a model on a view's anomaly-free images and write RUN_DIR/model.pt.

    The resolved configuration goes to RUN_DIR/config.json, a log to RUN_DIR/train_log.jsonl.
    """
    entry = get_model(model)
    overrides: dict = {}
    fields = {f.name for f in dataclasses.fields(entry.config_cls)}
    for name, value in settings.items():
        if value is None:
            continue
        if name not in fields:
            raise UsageError(f"--{name.replace('_', '-')} does not apply to model {model}")
        overrides[name] = value
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip().replace("-", "_")] = value.strip()
    cfg = resolve_config(entry, preset, overrides)

    view = View(view_dir, val_fraction=val_fraction, seed=split_seed)
    train_samples, val_samples = view.train(), view.val()
    if not train_samples:
        raise LineclearError(f"{view.dir / 'train' / 'good'}: no training images")

    out = Path(out)
    if ddp.requested_world_size(distributed) > 1 and not entry.distributed:
        raise UsageError(f"model {entry.name} trains in one process: run it without --distributed or torchrun")
    launch = (distributed or 1) > 1 and not ddp.under_torchrun()  # this process starts the workers
    world, dev = (ddp.SINGLE, resolve_device(device)) if launch else ddp.start(device, distributed)
    if not world.is_main:
        console.mute()  # rank 0 reports for every process
    try:
        # rank 0 alone prepares --out, the others wait for it
        created, fresh = world.run_on_main(_prepare_out, out, resume, overwrite, not launch) or (False, False)
        if launch:
            raise typer.Exit(ddp.launch(distributed, device, ddp.without_option(sys.argv[1:], "--distributed")))
        try:
            _train(entry, cfg, view, train_samples, val_samples, out, dev, resume, preset, val_fraction, split_seed,
                   shifts, shift_seed, world)
        except BaseException:
            # a run that never got going leaves nothing behind (a resumable state is kept for --resume)
            if fresh and not (out / "train_state.pt").exists() and not (out / "model.pt").exists():
                remove_run_files(out)
                if created and not any(out.iterdir()):
                    out.rmdir()
            raise
    finally:
        world.close()


def _prepare_out(out: Path, resume: bool, overwrite: bool, act: bool = True) -> tuple[bool, bool]:
    """Refuse an --out that may not be trained into; with ``act`` empty it (--overwrite) and create it.

    Returns (created, fresh): whether the folder is new, and whether no earlier run's files are left to keep.
    """
    problem = run_dir_problem(out)
    if problem:
        # never train into (or, with --overwrite, empty) a folder lineclear did not make: a dataset, a work folder
        raise LineclearError(problem)
    if out.exists() and any(out.iterdir()) and not resume:
        if overwrite:
            if act:
                remove_run_files(out)  # only the run's own files; thresholds, maps and anything else stay
        elif (out / "model.pt").is_file():
            raise LineclearError(f"{out}: already holds a trained model (use --overwrite to train again)")
        else:
            raise LineclearError(f"{out}: holds an unfinished run (use --resume to continue it or --overwrite)")
    created = not out.exists()
    fresh = created or overwrite or not any(out.iterdir())
    if act:
        out.mkdir(parents=True, exist_ok=True)
    return created, fresh


def _train(entry, cfg, view, train_samples, val_samples, out, dev, resume, preset, val_fraction, split_seed,
           shifts=None, shift_seed=0, world=ddp.SINGLE) -> None:
    seed_everything(cfg.seed)
    images, valid, notes = load_view_images(train_samples, tuple(cfg.image_size))
    for n in notes:
        console.note(n)
    # an ensemble gets the shifts by default when every member would
    members = getattr(cfg, "member_names", None)
    n_shifts, shift_info = _shift_count(entry.name, view, shifts, members), {}
    if n_shifts:
        ref_path = view.reference_file()
        if ref_path is None:
            raise UsageError(f"--shifts needs the view's registration reference ({view.dir}/reference.png)")
        marker = RegisteredLookup().marker(train_samples[0].path)
        with console.rich_progress().task("registering training shifts", None):
            images, valid, shift_info = add_training_shifts(
                [s.path for s in train_samples], images, valid, ref_path, n_shifts, shift_seed,
                marker.get("config") if marker else None)
        if shift_info["train_shift_failed"]:
            console.warn(f"{shift_info['train_shift_failed']} of {n_shifts * len(train_samples)} training shift(s) "
                         "failed registration quality control and were left out")
    meta = {
        "preset": preset,
        "view": view.name,
        "view_dir": str(view.dir.resolve()),
        "dataset_root": str(view.root),
        "train_image_ids": [s.image_id for s in train_samples],
        "val_image_ids": [s.image_id for s in val_samples],
        "val_fraction": val_fraction,
        "split_seed": split_seed,
        **shift_info,
    }
    if world.is_main:
        # world size: provenance (batch_size is the global batch, so the results do not depend on it)
        write_run_config(out, {"model": entry.name, "config": cfg.to_dict(), "device": str(dev),
                               "world_size": world.size, "backend": world.backend, **meta})
    val_images = val_valid = None
    if entry.uses_validation and val_samples:
        val_images, val_valid, _ = load_view_images(val_samples, tuple(cfg.image_size))
    session = TrainSession(
        images=images, config=cfg, device=dev, run_dir=out, valid=valid,
        image_ids=meta["train_image_ids"], model_name=entry.name, resume=resume,
        progress=console.rich_progress(), extra_meta=meta, world=world, val_images=val_images, val_valid=val_valid,
    )
    console.note(
        f"training {entry.name} ({preset}) on {len(train_samples)} images of view {view.name}"
        + (f" + {shift_info['train_shifted_images']} registered camera shifts of them" if shift_info else "") + " "
        f"at {cfg.image_size[0]}x{cfg.image_size[1]} (HxW) on {dev}"
        + (f" and {world.size - 1} more process(es) ({world.backend})" if world.size > 1 else "")
        + f"; {len(val_samples)} held out for validation"
    )
    t0 = time.perf_counter()
    net = entry.build(cfg, True).to(dev)
    entry.train(net, session)
    seconds = time.perf_counter() - t0
    path = session.save_checkpoint(net.cpu(), "model.pt", train_seconds=round(seconds, 2))
    console.print_json({"run_dir": str(out), "model": entry.name, "checkpoint": str(path), "train_seconds": round(seconds, 2),
                        "train_images": len(train_samples), "val_images": len(val_samples)})


def _shift_count(model: str, view: View, shifts: int | None, members: list[str] | None = None) -> int:
    if shifts is not None:
        return shifts
    if model not in SHIFT_MODELS or (members and not set(members) <= set(SHIFT_MODELS)):
        return 0
    try:
        has_ref = view.reference_file() is not None
    except LineclearError:
        has_ref = False
    return DEFAULT_TRAIN_SHIFTS if has_ref else 0


def model_options(models: Mapping[str, ModelEntry]) -> dict[str, tuple[OptionSpec, list[str]]]:
    """Every option a registered model declares (:func:`lineclear.models.base.option`), with the models
    that have it, in the order of the models and their fields."""
    out: dict[str, tuple[OptionSpec, list[str]]] = {}
    for name, entry in models.items():
        for field_name, spec in declared_options(entry.config_cls).items():
            if field_name not in out:
                out[field_name] = (spec, [])
            elif (out[field_name][0].type, out[field_name][0].help) != (spec.type, spec.help):
                raise TypeError(f"model {name} declares option {field_name!r} unlike {out[field_name][1][0]} does")
            out[field_name][1].append(name)
    return out


def _option_parameter(spec: OptionSpec, owners: list[str], n_models: int) -> inspect.Parameter:
    flag = "--" + spec.name.replace("_", "-")
    text = spec.help if len(owners) == n_models else f"{', '.join(owners)}: {spec.help}"
    if spec.type is bool:
        opt = typer.Option(f"{flag}/--no-{flag[2:]}", help=text, show_default=False, **spec.settings)
    else:
        opt = typer.Option(flag, help=text, **spec.settings)
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[spec.type], opt])


def with_model_options(command: Callable[..., None], models: Mapping[str, ModelEntry]) -> Callable[..., None]:
    """Give ``command`` (whose ``**settings`` receive them) one option per model setting, after ``--preset``:
    Typer reads the options from the signature, so the models' config dataclasses are their one source."""
    params = [p for p in inspect.signature(command, eval_str=True).parameters.values()
              if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in params}
    options = model_options(models)
    clash = sorted(taken & set(options))
    if clash:
        raise TypeError(f"model setting(s) {clash} clash with options of lineclear train")
    extra = [_option_parameter(spec, owners, len(models)) for spec, owners in options.values()]
    at = [p.name for p in params].index("preset") + 1
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[at:]]
    command.__signature__ = inspect.Signature(params[:at] + extra + keyword)  # type: ignore[attr-defined]
    return command


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=True)(with_model_options(train_command, MODELS))
