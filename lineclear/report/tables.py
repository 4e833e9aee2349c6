"""Thesis-style comparison tables (thesis Tables 1–10): metrics as rows, configurations as columns.

Rows: ``AUROC`` as ``(image,pixel)``, ``PRO`` (AUPRO@0.3), ``IoU`` and ``ACC`` at each run's
best threshold, ``AP`` (pixel); values in percent with one decimal. The best value of each
row is marked (bold in Markdown, ``<b class="best">`` in HTML; for the AUROC pair each part
separately); ties are all marked; ``–`` is an undefined metric.
"""

from __future__ import annotations

import html
from typing import Sequence

from lineclear.selection import selections

ROWS = [("AUROC", ("auroc_image", "auroc_pixel")), ("PRO", ("aupro",)), ("IoU", ("iou",)), ("AP", ("ap",)),
        ("ACC", ("accuracy",))]


def threshold_text(doc: dict) -> str:
    """The best thresholds of a run as a cell: ``max · pixel`` (rule and the level that decided)."""
    s = doc.get("summary") or {}
    return f"{s.get('method') or '–'} · {s.get('level') or 'image'}"


def checkpoint_text(doc: dict) -> str:
    """The checkpoint a run's maps were scored with: ``epoch 2000``, or ``final`` for model.pt."""
    src = doc.get("source") or {}
    epoch = src.get("checkpoint_epoch")
    if epoch is not None:
        return f"epoch {epoch}"
    name = str(src.get("checkpoint") or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "final" if name in ("model.pt", "") else name


# rows of text under the figures: what each column's figures were measured with
TEXT_ROWS = [("threshold", threshold_text), ("checkpoint", checkpoint_text)]


def pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}"


def threshold_labels(entries: Sequence[dict]) -> list[str]:
    """A column label per thresholds entry: its method (and its level, ``max · pixel``, when the entries
    decide at more than one level), plus its file name when two entries still read the same
    (e.g. ``ksigma`` with k=3 and k=2), so no two columns read the same."""
    levels = {str(e.get("level") or "image") for e in entries}
    methods = [str(e.get("method")) + (f" · {e.get('level') or 'image'}" if len(levels) > 1 else "") for e in entries]
    out = []
    for m, e in zip(methods, entries):
        if methods.count(m) > 1:
            name = str(e.get("path") or "").replace("\\", "/").rsplit("/", 1)[-1]
            params = ", ".join(f"{k}={v:g}" for k, v in (e.get("params") or {}).items())
            m = f"{m} ({name or params})"
        out.append(m)
    return out


def _best(values: list[float | None], digits: int) -> set[int]:
    """Columns holding the row's best value as displayed (so equal-looking numbers tie)."""
    shown = [round(100 * v, digits) if v is not None else None for v in values]
    present = [v for v in shown if v is not None]
    if not present:
        return set()
    top = max(present)
    return {i for i, v in enumerate(shown) if v == top}


def column_names(docs: Sequence[dict]) -> list[str]:
    """Default column labels: each run's ``config_name`` (``PO+M+R`` …). When the runs differ
    in model or view, every label starts with the model (and the view): the title then names
    several models, and a column must say which one it is. Labels that still repeat get a number."""
    names = [str(d.get("config_name") or f"run {i + 1}") for i, d in enumerate(docs)]
    for key in ("view", "model"):
        vals = [str((d.get("source") or {}).get(key) or "") for d in docs]
        if len(set(vals)) > 1:
            names = [f"{v} {n}" if v else n for v, n in zip(vals, names)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n} ({seen[n]})")
    return out


def table_data(docs: Sequence[dict], names: Sequence[str] | None = None, digits: int = 1) -> dict:
    """Cells and marks: ``{"columns", "title", "rows": [(label, [[(text, is_best), ...] per column])]}``."""
    if names is not None and len(names) != len(docs):
        raise ValueError(f"{len(names)} names for {len(docs)} metrics files")
    columns = list(names) if names is not None else column_names(docs)
    rows = []
    for label, keys in ROWS:
        per_key = []
        for key in keys:
            vals = [d["summary"].get(key) for d in docs]
            marks = _best(vals, digits)
            per_key.append([(pct(v, digits), i in marks and v is not None) for i, v in enumerate(vals)])
        rows.append((label, [[pk[i] for pk in per_key] for i in range(len(docs))]))
    for label, text in TEXT_ROWS:
        rows.append((label, [[(text(d), False)] for d in docs]))
    picks = selections(docs)
    if any(picks):
        # several checkpoints of one configuration: which one each selection takes
        rows.append(("selected", [[(p or "–", False)] for p in picks]))
    models = sorted({str(d.get("source", {}).get("model")) for d in docs if d.get("source", {}).get("model")})
    views = sorted({str(d.get("source", {}).get("view")) for d in docs if d.get("source", {}).get("view")})
    title = " · ".join(x for x in (", ".join(models), (", ".join(views) + " view") if views else "") if x)
    return {"columns": columns, "title": title, "rows": rows}


def _cell_md(parts: list[tuple[str, bool]]) -> str:
    txt = [f"**{t}**" if b else t for t, b in parts]
    return f"({','.join(txt)})" if len(parts) > 1 else txt[0]


def markdown_table(docs: Sequence[dict], names: Sequence[str] | None = None, digits: int = 1) -> str:
    """GitHub Markdown; the best value of each row in bold."""
    d = table_data(docs, names, digits)
    lines = []
    if d["title"]:
        lines += [f"**{d['title']}**", ""]
    lines.append("| | " + " | ".join(c.replace("|", "\\|") for c in d["columns"]) + " |")
    lines.append("|---|" + "---:|" * len(d["columns"]))
    for label, cells in d["rows"]:
        lines.append(f"| {label} | " + " | ".join(_cell_md(c) for c in cells) + " |")
    lines += ["", "AUROC is (image, pixel); PRO is AUPRO at FPR 0.3; IoU and ACC at each run's best threshold "
              "(chosen on the test labels; the threshold row names its rule and the level that decided: image = "
              "the image score, pixel = any counted pixel); values in %; best of each row in bold."]
    if any(r[0] == "selected" for r in d["rows"]):
        lines += ["", "selected: among the checkpoints of one configuration, *test labels* = the thesis's choice "
                  "(highest ACC, chosen on the test labels: optimistic), *validation* = the one a line can trust "
                  "(lowest spread σ/μ of the normal validation images' scores, chosen without test labels); "
                  "*both* when they agree."]
    return "\n".join(lines) + "\n"


def _cell_html(parts: list[tuple[str, bool]]) -> str:
    txt = [f"<b class='best'>{html.escape(t)}</b>" if b else html.escape(t) for t, b in parts]
    return f"({','.join(txt)})" if len(parts) > 1 else txt[0]


def html_table(docs: Sequence[dict], names: Sequence[str] | None = None, digits: int = 1, page: bool = True) -> str:
    """An HTML table (a whole small page when ``page``); best values bold on a yellow ground."""
    d = table_data(docs, names, digits)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in d["columns"])
    body = "".join(
        f"<tr><th class='l'>{label}</th>" + "".join(f"<td>{_cell_html(c)}</td>" for c in cells) + "</tr>"
        for label, cells in d["rows"]
    )
    cap = f"<caption>{html.escape(d['title'])}</caption>" if d["title"] else ""
    table = f"<table class='lineclear-compare'>{cap}<tr><th></th>{head}</tr>{body}</table>"
    if not page:
        return table
    css = ("body{font-family:system-ui,sans-serif;margin:24px}table{border-collapse:collapse;font-size:14px}"
           "th,td{border:1px solid #d0d7de;padding:5px 10px;text-align:center}th{background:#f6f8fa}"
           "caption{font-weight:600;margin-bottom:6px}b.best{background:#fff3a3}.note{color:#57606a;font-size:12px}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>lineclear comparison</title>"
            f"<style>{css}</style></head><body>{table}<p class='note'>AUROC is (image, pixel); PRO is AUPRO at FPR 0.3; "
            "IoU and ACC at each run's best threshold (chosen on the test labels); values in %; best of each row "
            "highlighted.</p></body></html>\n")
