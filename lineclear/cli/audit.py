"""``lineclear audit verify DB`` and ``lineclear audit export DB --csv/--json``: the line-clearance record."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lineclear.cli import console
from lineclear.cli.helpfmt import Command
from lineclear.cli.options import Overwrite
from lineclear.errors import LineclearError, UsageError
from lineclear.formats import atomic_write_bytes, check_writable
from lineclear.formats._io import dumps
from lineclear.formats.record import CSV_COLUMNS, csv_rows, export_doc, read_record, verify_record

audit_app = typer.Typer(help="The tamper-evident line-clearance record of `lineclear serve`: verify, export.",
                        no_args_is_help=True, add_completion=False, rich_markup_mode=None)

Db = Annotated[Path, typer.Argument(help="The record (SQLite, from `lineclear serve --record`).", show_default=False,
                                    dir_okay=False)]
Head = Annotated[Optional[str], typer.Option(
    "--head", metavar="SEQ:HASH", help="A head printed by an earlier verify: that row must be unchanged.")]


def _report_problems(report: dict) -> None:
    for p in report["problems"]:
        console.err.print(f"[red]lineclear: record:[/] {report['record']}: {p['problem']}", markup=True,
                          highlight=False)


def verify_command(db: Db, head: Head = None) -> None:
    """Recompute the hash chain of the record and name every edited, deleted or inserted row.

    Prints the report (JSON: ok, rows, sets, acknowledgements, head, problems) on stdout; exit 0 intact,
    1 tampered or unreadable. Keep the printed head (SEQ:HASH) and give it back with --head later: that
    also catches a record rewritten with recomputed hashes up to that row.
    """
    report = verify_record(db, head)
    console.print_json(report)
    if not report["ok"]:
        _report_problems(report)
        raise LineclearError(f"{db}: the record fails verification ({len(report['problems'])} problem(s), above)")
    console.note(f"{db}: intact, {report['rows']} row(s), {report['sets']} set(s), "
                 f"{report['acknowledgements']} acknowledgement(s); head {report['head']}")


def export_command(
    db: Db,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", metavar="FILE", help="One row per view of every set, with its latest acknowledgement ('-': stdout).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE", help="Every row with its hashes and the verification ('-': stdout).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Export a record that fails verification (the JSON says so).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Export the record for the quality system, after verifying it.

    --csv: one row per camera view of every set (verdict, score, threshold, reason, image SHA-256, bundle
    hash, latest acknowledgement, row hash). --json: every row (lineclear.record_export/1) with the
    verification report. A record that fails verification is refused unless --force.
    """
    if (csv_out is None) == (json_out is None):
        raise UsageError("give one of --csv FILE or --json FILE")
    out = csv_out or json_out
    if str(out) != "-":
        check_writable(out, overwrite)
    report = verify_record(db)
    if not report["ok"]:
        _report_problems(report)
        if not force:
            raise LineclearError(f"{db}: the record fails verification; not exported (--force exports it anyway)")
    with read_record(db) as rec:
        if csv_out is not None:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
            w.writeheader()
            n = 0
            for row in csv_rows(rec):
                w.writerow(row)
                n += 1
            data = buf.getvalue()
        else:
            doc = export_doc(rec, report)
            n = len(doc["entries"])
            data = dumps(doc)
    if str(out) == "-":
        sys.stdout.write(data)
        sys.stdout.flush()
    else:
        atomic_write_bytes(out, data.encode("utf-8"), overwrite=overwrite)
        console.note(f"wrote {out} ({n} {'row(s)' if csv_out is not None else 'entries'})")


def register(app: typer.Typer) -> None:
    audit_app.command("verify", cls=Command, no_args_is_help=True)(verify_command)
    audit_app.command("export", cls=Command, no_args_is_help=True)(export_command)
    app.add_typer(audit_app, name="audit")
