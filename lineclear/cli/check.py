"""``lineclear check BUNDLE IMAGE...`` (and ``--watch DIR``): the line-side verdict per camera view.

Exit codes, the interface to a PLC: 0 every view clear; 3 leftover product found (and every view was
checked); 4 at least one view undecided (takes precedence over 3); 1 the command could not run (bad or
foreign manifest, output exists); 2 usage error. Only 0 means "clear".
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lineclear.cli import console
from lineclear.cli.deploy import parse_view_map
from lineclear.cli.options import Device, Overwrite
from lineclear.errors import LineclearError, UsageError
from lineclear.formats import check_writable
from lineclear.formats._io import _json_default
from lineclear.formats.deploy import read_manifest
from lineclear.formats.verdict import write_verdict
from lineclear.line.checker import Checker
from lineclear.line.matching import match_images
from lineclear.line.overlay import overlay_name
from lineclear.line.watch import WatchOptions, watch as watch_folder

_STYLE = {"clear": "green", "leftover": "bold red", "undecided": "bold yellow"}


def _fmt(x: object) -> str:
    return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))


def verdict_table(result, title: str = "") -> Table:
    """A rich table: one row per view with its verdict, score against threshold, regions and time."""
    t = Table(title=title or None, title_justify="left")
    for col in ("view", "verdict", "score / threshold", "regions", "image", "ms", "reason"):
        t.add_column(col, overflow="fold")
    for v in result.views:
        t.add_row(
            v.view, f"[{_STYLE[v.verdict]}]{v.verdict}[/]", f"{_fmt(v.score)} / {_fmt(v.threshold)}",
            str(v.regions_total), Path(v.image).name if v.image else "-", _fmt(v.timings_ms.get("total")),
            v.reason,
        )
    return t


def note_once(result, seen: set[tuple[str, str]]) -> None:
    """Each view's notes on stderr, each at most once per command (a watch run checks many sets)."""
    for v in result.views:
        for n in v.notes:
            if (v.view, n) not in seen:
                seen.add((v.view, n))
                console.note(f"view {v.view}: {n}")


def device_for(manifest, device: str, bf16: bool):
    """The device a bundle's models run on: PyTorch's choice (``--device``) when a view runs on torch, else the
    CPU, without importing PyTorch (ONNX Runtime / OpenVINO); ``--device``/``--bf16`` are then noted as ignored."""
    if manifest.needs_torch:
        from lineclear.device import resolve_device  # imports PyTorch: only for a bundle that runs on it

        return resolve_device(device)
    if device.lower() not in ("auto", "cpu") or bf16:
        console.note(f"{'--bf16' if bf16 else '--device ' + device}: ignored, the bundle's views run exported "
                     f"models (float32, on the CPU)")
    return "cpu"


def check_command(
    bundle: Annotated[Path, typer.Argument(help="Deployment bundle folder (from `lineclear deploy`).", show_default=False)],
    images: Annotated[Optional[List[Path]], typer.Argument(help="Images, assigned to views by the manifest's name patterns.", show_default=False)] = None,
    view: Annotated[Optional[List[str]], typer.Option("--view", help="VIEW=IMAGE: check IMAGE as VIEW, whatever its name (repeatable).")] = None,
    only: Annotated[Optional[List[str]], typer.Option("--only", help="Expect images for these views only (repeatable; default: every view of the bundle).")] = None,
    overlay_dir: Annotated[Optional[Path], typer.Option("--overlay-dir", help="Write an overlay PNG per image (regions and verdict drawn) into this folder.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the verdict JSON to this file.")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Only verify the bundle (manifest, hashes, models load) and exit 0, or 1 if damaged.")] = False,
    watch: Annotated[Optional[Path], typer.Option("--watch", help="Watch this folder and check each new image set as it appears.", file_okay=False)] = None,
    log: Annotated[Optional[Path], typer.Option("--log", help="(watch mode) Append one JSON line per view verdict to this file.")] = None,
    set_timeout: Annotated[float, typer.Option("--set-timeout", min=0.0, help="(watch mode) Check an incomplete image set this many seconds after its first image.")] = 10.0,
    settle: Annotated[float, typer.Option("--settle", min=0.0, help="(watch mode) A file is complete when its size has not changed for this many seconds.")] = 1.0,
    poll: Annotated[float, typer.Option("--poll", min=0.01, help="(watch mode) Seconds between folder scans.")] = 0.2,
    existing: Annotated[bool, typer.Option("--existing", help="(watch mode) Also check the images already in the folder.")] = False,
    max_sets: Annotated[Optional[int], typer.Option("--max-sets", min=1, help="(watch mode) Stop after this many image sets.")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=0.0, help="(watch mode) Stop after this many seconds.")] = None,
    bf16: Annotated[bool, typer.Option("--bf16/--fp32", help="Run the networks under bfloat16 autocast.")] = False,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Check one image per camera view: clear, leftover (where) or undecided (why).

    Exit 0: every view clear. Exit 3: leftover found. Exit 4: some view undecided (takes precedence over 3).

    Undecided: failed registration, unreadable/black/missing image, damaged bundle, model that cannot load.

    Exit 1/2: the command itself failed. The verdict JSON (lineclear.verdict/1) goes to stdout.
    """
    explicit = parse_view_map(view, "--view")
    if watch is not None and (images or explicit or out):
        raise UsageError("--watch checks the images that appear in the folder; give no IMAGE, --view or --out with it")
    if watch is None and (log is not None or max_sets is not None or timeout is not None or existing):
        raise UsageError("--log, --max-sets, --timeout and --existing apply to --watch only")
    if watch is None and not verify and not images and not explicit:
        raise UsageError("give the images to check (IMAGE... or --view VIEW=IMAGE), --watch DIR or --verify")
    if watch is not None and only:
        raise UsageError("--only does not apply to --watch (an image set is one image per view of the bundle)")
    if watch is not None and not watch.is_dir():
        raise LineclearError(f"{watch}: no such folder to watch")
    if out is not None:
        check_writable(out, overwrite)
    manifest = read_manifest(bundle)
    dev = device_for(manifest, device, bf16)
    # the command line is checked against the manifest before the models load: a usage error is immediate
    expected = list(only) if only else None
    for n in expected or []:
        if n not in manifest.views:
            raise UsageError(f"--only {n}: no view {n!r} in the bundle (views: {', '.join(manifest.views)})")
    matched = match_images(manifest, images or [], explicit) if watch is None else {}
    if expected is not None:
        extra = sorted(set(matched) - set(expected))
        if extra:
            raise UsageError(f"images given for view(s) {', '.join(extra)} that --only leaves out")
    if overlay_dir is not None:
        for n, p in matched.items():
            check_writable(overlay_dir / overlay_name(n, p), overwrite)
    t0 = time.perf_counter()
    checker = Checker(manifest, dev, bf16=bf16)
    for name, reason in checker.errors.items():
        console.warn(f"view {name}: {reason}")
    console.note(f"loaded {len(checker.views)} view(s) from {bundle} in {time.perf_counter() - t0:.2f} s on {dev}")

    if verify:
        console.print_json({"bundle": str(bundle), "ok": not checker.errors, "views": list(checker.views),
                            "errors": checker.errors, "load_ms": checker.load_ms})
        if checker.errors:
            raise LineclearError(f"{bundle}: {len(checker.errors)} view(s) cannot be checked (see above)")
        return

    if watch is not None:
        _watch(checker, watch, log, overlay_dir, overwrite, set_timeout, settle, poll, existing, max_sets, timeout)
        return

    result = checker.check(matched, views=expected, overlay_dir=overlay_dir, overwrite=overwrite)
    note_once(result, set())
    doc = result.to_dict()
    if out is not None:
        write_verdict(out, doc, overwrite=overwrite)
    console.print_json(doc)
    if not console.state.quiet:
        console.err.print(verdict_table(result, f"{result.verdict.upper()} (exit {result.exit_code}) "
                                                f"in {result.timings_ms['check']:.0f} ms"))
    if result.exit_code:
        # SystemExit, not typer.Exit: the CLI boundary runs click in non-standalone mode, which would
        # swallow a typer.Exit's code.
        sys.exit(result.exit_code)


def _watch(checker, folder: Path, log: Path | None, overlay_dir: Path | None, overwrite: bool, set_timeout: float,
           settle: float, poll: float, existing: bool, max_sets: int | None, timeout: float | None) -> None:
    opts = WatchOptions(poll=poll, settle=settle, set_timeout=set_timeout, existing=existing,
                        max_sets=max_sets, timeout=timeout)
    state = {"last": None, "events": [], "counts": {"clear": 0, "leftover": 0, "undecided": 0}, "sets": 0}

    def render():
        head = Text(f"watching {folder}  sets: {state['sets']}  clear {state['counts']['clear']}  "
                    f"leftover {state['counts']['leftover']}  undecided {state['counts']['undecided']}  (Ctrl-C stops)")
        parts = [head]
        if state["last"] is not None:
            r = state["last"]
            parts.append(verdict_table(r, f"set {state['sets']}: {r.verdict.upper()} (exit {r.exit_code}) "
                                          f"in {r.timings_ms.get('check', 0):.0f} ms"))
        parts += [Text(e, style="dim") for e in state["events"][-5:]]
        return Group(*parts)

    # redirect_stdout=False: the per-set JSON lines must stay on stdout (rich would route them through stderr)
    live = (Live(render(), console=console.err, auto_refresh=False, transient=False, redirect_stdout=False,
                 redirect_stderr=False) if not console.state.quiet else None)

    noted: set[tuple[str, str]] = set()

    def on_result(result, set_no: int) -> None:
        note_once(result, noted)
        state["last"], state["sets"] = result, set_no
        state["counts"][result.verdict] += 1
        line = {"set": set_no, **result.to_dict()}
        sys.stdout.write(json.dumps(line, default=_json_default, allow_nan=False) + "\n")
        sys.stdout.flush()
        if live is not None:
            live.update(render(), refresh=True)

    def on_event(msg: str) -> None:
        state["events"].append(f"{time.strftime('%H:%M:%S')} {msg}")
        if live is not None:
            live.update(render(), refresh=True)

    console.note(f"watching {folder} for image sets of views {', '.join(checker.views)} "
                 f"(set timeout {set_timeout:g} s, files complete after {settle:g} s unchanged)")
    if live is not None:
        live.start()
    try:
        summary = watch_folder(checker, folder, opts, log_path=log, overlay_dir=overlay_dir, overwrite=overwrite,
                        on_result=on_result, on_event=on_event)
    finally:
        if live is not None:
            live.stop()
            if not console.err.is_terminal:
                console.err.print()  # the final table of a non-terminal Live ends without a newline
    console.note(f"stopped ({summary.stopped_by}) after {summary.sets} set(s): " +
                 ", ".join(f"{k} {v}" for k, v in summary.counts.items()))


def register(app: typer.Typer) -> None:
    app.command("check", no_args_is_help=True)(check_command)
