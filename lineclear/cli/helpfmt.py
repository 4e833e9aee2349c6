"""Help that reads at 80 columns: click's plain layout and the conventional metavars.

Typer's rich panels squeeze option names and defaults into fixed columns at 80 characters
(``--backbone-weigh…``), and recent Typer versions label every flag ``<bool>`` and write a
required argument as ``{view_dir}``. lineclear's app uses the plain layout
(``rich_markup_mode=None``) and this command class, which gives every value option the
metavar click has always shown (``TEXT``, ``INTEGER``, ``FLOAT``, ``PATH``), flags none,
arguments their name in capitals, and a usage line such as
``lineclear train [OPTIONS] VIEW_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

from typer.core import TyperCommand


_NAMES = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN", Path: "PATH"}


def type_metavar(param: Any) -> str:
    """click's name of a parameter's type in capitals (``TEXT``, ``INTEGER``, ``PATH``), no " range" suffix.

    Older Typer builds click parameters with a click ``type``; newer ones keep the annotation in a
    ``type_descriptor``: both are read.
    """
    t = getattr(param, "type", None)
    if t is not None and getattr(t, "name", None):
        return str(t.name).upper().removesuffix(" RANGE")
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    while get_origin(ann) in (list, tuple) and get_args(ann):
        ann = get_args(ann)[0]
    if isinstance(ann, type):
        for base, name in _NAMES.items():
            if issubclass(ann, base):
                return name
    return "VALUE"


class Command(TyperCommand):
    """A Typer command whose help uses conventional metavars (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for p in self.params:
            if p.param_type_name == "argument":
                # newer Typer lists an argument as "VIEW_DIR <path>"; the name says it, the help says what
                p.display_type_rich = lambda ctx=None: None
            if p.metavar is not None:
                continue
            if p.param_type_name == "argument":
                p.metavar = str(p.name).upper()
            elif p.param_type_name == "option" and not getattr(p, "is_flag", False) and not getattr(p, "count", False):
                p.metavar = type_metavar(p)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name != "argument":
                continue
            name = str(p.metavar)
            if p.nargs != 1 and not name.endswith("..."):
                name += "..."
            pieces.append(name if p.required else f"[{name}]")
        return pieces
