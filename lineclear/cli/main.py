"""The Typer app: global options, command discovery and the error boundary.

Each command lives in its own module ``lineclear/cli/<name>.py`` exposing
``register(app)``; a command appears when its module exists (no placeholders).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Optional

import typer
from typer.core import TyperCommand

from lineclear import __version__
from lineclear.cli import console
from lineclear.cli.helpfmt import Command
from lineclear.errors import LineclearError

# Pipeline order, which is also the order of ``lineclear --help``.
COMMANDS = ["synth", "labels", "register", "mask", "train", "score", "calibrate", "evaluate", "table", "export", "deploy", "check", "serve", "audit"]

_app = typer.Typer(
    name="lineclear",
    help="Anomaly detection for line clearance: is anything left behind in the machine?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: readable at 80 columns (lineclear.cli.helpfmt)
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lineclear {__version__}")
        raise typer.Exit()


@_app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More notes, and tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """lineclear: composable stages that read files and write files.

    labels → register → mask → train → score → calibrate → evaluate, and check on the line.
    """
    console.setup_logging(verbose, quiet)


_loaded: set[str] = set()


def _load_commands(only: str | None = None) -> None:
    """Import command modules: all of them, or just ``only`` (a run of one command then does not
    pay for importing PyTorch when that command does not need it)."""
    for name in COMMANDS:
        if (only is not None and name != only) or name in _loaded:
            continue
        modname = f"lineclear.cli.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue
            raise
        mod.register(_app)
        _loaded.add(name)
    for info in _app.registered_commands:
        if info.cls is None or info.cls is TyperCommand:  # Typer's default (None in older versions)
            info.cls = Command


def __getattr__(name: str):
    # ``from lineclear.cli.main import app`` gives the app with every command registered
    if name == "app":
        _load_commands()
        return _app
    raise AttributeError(name)


GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def _hoist_global_options(args: list[str]) -> list[str]:
    """Accept ``lineclear register ... -q`` as well as ``lineclear -q register ...``."""
    cmd = _command_of(args)
    if cmd is None:
        return args
    i = args.index(cmd)
    moved = [a for a in args[i + 1 :] if a in GLOBAL_FLAGS]
    if not moved:
        return args
    rest = [a for a in args[i + 1 :] if a not in GLOBAL_FLAGS]
    return moved + args[:i] + [cmd] + rest


def _command_of(args: list[str]) -> str | None:
    first = next((a for a in args if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point with the error boundary (exit 1 domain, 2 usage, 130 Ctrl-C)."""
    args = _hoist_global_options(sys.argv[1:] if argv is None else list(argv))
    _load_commands(_command_of(args))
    try:
        with console.interruptible():
            rc = _app(args=args, prog_name="lineclear", standalone_mode=False)
        # outside standalone mode click returns the code of a typer.Exit instead of raising it
        if rc == 130:
            raise KeyboardInterrupt  # newer Typer turns Ctrl-C into a silent Exit(130): say what happened
        if isinstance(rc, int) and rc != 0:
            sys.exit(rc)
    except LineclearError as exc:
        if console.state.verbose:
            traceback.print_exc()
        console.err.print(f"[red]lineclear: error:[/] {exc}", markup=True, highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.err.print("lineclear: aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        console.err.print("lineclear: interrupted")
        sys.exit(130)
    except OSError as exc:
        # a file system error nobody turned into a domain error: still one line naming the file
        if console.state.verbose:
            traceback.print_exc()
        where = exc.filename or ""
        console.err.print(f"[red]lineclear: error:[/] {where}{': ' if where else ''}{exc.strerror or exc}")
        sys.exit(1)
    except Exception as exc:
        # click's (or Typer's vendored click's) usage errors: duck-typed, as Typer may vendor click
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Exit" and hasattr(exc, "exit_code"):
            sys.exit(exc.exit_code)
        if console.state.verbose:
            raise
        console.err.print(f"lineclear: internal error: {exc.__class__.__name__}: {exc} (run with -v for the traceback)")
        sys.exit(1)
    sys.exit(0)
