"""``lineclear table RUN_A/metrics.json RUN_B/metrics.json ... --out table.md``: thesis-style comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from lineclear.cli import console
from lineclear.cli.options import JsonOut, Overwrite
from lineclear.errors import LineclearError, UsageError
from lineclear.formats import atomic_write_bytes, check_writable
from lineclear.formats.metrics import read_metrics
from lineclear.report.tables import html_table, markdown_table, table_data


def resolve_metrics(p: Path) -> Path:
    """A metrics.json, a report directory holding one, or a run directory with report/metrics.json."""
    if p.is_dir():
        for cand in (p / "metrics.json", p / "report" / "metrics.json"):
            if cand.is_file():
                return cand
        raise LineclearError(f"{p}: no metrics.json (nor report/metrics.json) in this directory")
    return p


def table_command(
    inputs: Annotated[List[Path], typer.Argument(metavar="METRICS...", help="metrics.json files (or report/run directories holding one), one per column.", show_default=False)],
    out: Annotated[Optional[List[Path]], typer.Option("--out", "-o", help="Write the table; .md → Markdown, .html → HTML page. Repeatable.", show_default=False)] = None,
    names: Annotated[Optional[List[str]], typer.Option("--name", "-n", help="Column label per input, in order (default: each file's config_name, e.g. PO+M+R).", show_default=False)] = None,
    digits: Annotated[int, typer.Option("--digits", min=0, max=4, help="Decimals of the percentages.")] = 1,
    json_out: JsonOut = False,
    overwrite: Overwrite = False,
) -> None:
    """Compare runs like the thesis's Tables 1–10: metrics as rows, configurations as columns.

    Rows: AUROC (image, pixel), PRO (AUPRO@0.3), IoU, AP, ACC — in %, best of each row marked.
    The Markdown table also goes to stdout.
    """
    if names and len(names) != len(inputs):
        raise UsageError(f"{len(names)} --name values for {len(inputs)} metrics files")
    outs = list(out or [])
    for o in outs:
        if o.suffix.lower() not in (".md", ".markdown", ".html", ".htm"):
            raise UsageError(f"--out {o}: use a .md or .html file name")
        check_writable(o, overwrite)
    docs = [read_metrics(resolve_metrics(p)) for p in inputs]
    md = markdown_table(docs, names, digits)
    for o in outs:
        text = html_table(docs, names, digits) if o.suffix.lower() in (".html", ".htm") else md
        atomic_write_bytes(o, text.encode("utf-8"), overwrite)
        console.note(f"wrote {o}")
    if json_out:
        d = table_data(docs, names, digits)
        console.print_json({"title": d["title"], "columns": d["columns"],
                            "rows": [{"metric": lab, "cells": [[{"value": t, "best": b} for t, b in c] for c in cells]}
                                     for lab, cells in d["rows"]]})
    else:
        typer.echo(md, nl=False)


def register(app: typer.Typer) -> None:
    app.command("table", no_args_is_help=True)(table_command)
