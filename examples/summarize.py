"""Summaries of the reproduction grid: summary.json, index.html, comparison figures, README table.

Called by examples/Makefile; reads OUT/eval/<model>/<view>/<config>/metrics.json.

    python summarize.py --out-dir out --models "draem ddad" --views "A B" --configs "po-m-r ..." \
        [--summary out/summary.json] [--index out/index.html] [--print] [--readme docs/readme/95-results.md]
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

from lineclear.formats._io import atomic_write_bytes, dumps
from lineclear.formats.metrics import read_metrics
from lineclear.selection import line_pick, spread, thesis_pick

KEYS = [("auroc_image", "image AUROC"), ("auroc_pixel", "pixel AUROC"), ("aupro", "AUPRO"),
        ("ap", "pixel AP"), ("iou", "IoU"), ("accuracy", "accuracy")]
CPU_MODELS = ("patchcore", "template")


def label(config: str) -> str:
    return config.upper().replace("-", "+").replace("PO+", "PO+")


def collect(out: Path, models: list[str], views: list[str], configs: list[str]) -> dict:
    grid: dict = {}
    for m in models:
        for v in views:
            cells = {}
            for c in configs:
                p = out / "eval" / m / v / c / "metrics.json"
                if p.is_file():
                    doc = read_metrics(p)
                    cells[c] = {"summary": doc["summary"], "best_method": doc["best"].get("method"),
                                "best_level": doc["best"].get("level", "image"),
                                "report": str((p.parent / "report.html").relative_to(out))}
                    ckpts = checkpoint_cells(out, m, v, c, doc)
                    if ckpts:
                        cells[c]["checkpoints"] = ckpts
            if not cells:
                continue
            best = max(cells, key=lambda c: (_num(cells[c]["summary"]["accuracy"]), _num(cells[c]["summary"]["auroc_image"]),
                                             _num(cells[c]["summary"]["auroc_pixel"])))
            grid.setdefault(m, {})[v] = {"configs": cells, "best_config": best}
    return grid


def checkpoint_cells(out: Path, model: str, view: str, config: str, final: dict) -> dict | None:
    """The configuration's intermediate checkpoints (``eval/<m>/<v>/<config>@e<E>/``) beside model.pt, and the
    two selections among them: the thesis's (test labels) and the line's (validation data only)."""
    found = []
    for p in (out / "eval" / model / view).glob(f"{config}@e*/metrics.json"):
        tail = p.parent.name.rsplit("@e", 1)[1]
        if tail.isdigit():
            found.append((int(tail), read_metrics(p)))
    if not found:
        return None
    found.sort(key=lambda x: x[0])
    names = [f"epoch {e}" for e, _ in found] + ["final"]
    docs = [d for _, d in found] + [final]
    line = line_pick(docs)
    return {"columns": [{"checkpoint": n, "summary": d["summary"], "val_spread": spread(d)} for n, d in zip(names, docs)],
            "thesis_pick": names[thesis_pick(docs)], "line_pick": names[line] if line is not None else None}


def _num(x) -> float:
    return -1.0 if x is None else float(x)


def _fmt(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def write_figures(out: Path, grid: dict, views: list[str]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figs = {}
    (out / "compare").mkdir(parents=True, exist_ok=True)
    for v in views:
        models = [m for m in grid if v in grid[m]]
        if not models:
            continue
        fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
        width = 0.8 / len(models)
        x = np.arange(len(KEYS))
        for i, m in enumerate(models):
            cell = grid[m][v]
            s = cell["configs"][cell["best_config"]]["summary"]
            vals = [0 if s[k] is None else 100 * s[k] for k, _ in KEYS]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, label=f"{m} ({label(cell['best_config'])})")
        ax.set_xticks(x, [n for _, n in KEYS])
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title(f"View {v}: models at their best configuration (best threshold chosen on test labels)")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = out / "compare" / f"{v}.png"
        fig.savefig(path)
        plt.close(fig)
        figs[v] = str(path.relative_to(out))
    return figs


def write_index(out: Path, grid: dict, views: list[str], configs: list[str], path: Path) -> None:
    figs = write_figures(out, grid, views)
    rows = []
    for v in views:
        rows.append(f"<h2>View {html.escape(v)}</h2>")
        if v in figs:
            rows.append(f'<img src="{figs[v]}" alt="comparison of models on view {v}" style="max-width:100%">')
        rows.append("<table><tr><th>model</th><th>best configuration</th>" + "".join(f"<th>{n}</th>" for _, n in KEYS)
                    + "<th>table</th><th>reports</th></tr>")
        for m in grid:
            if v not in grid[m]:
                continue
            cell = grid[m][v]
            s = cell["configs"][cell["best_config"]]["summary"]
            links = " ".join(f'<a href="{c["report"]}">{label(k)}</a>' for k, c in cell["configs"].items())
            table = f"tables/{m}-{v}.html"
            rows.append(f"<tr><td>{m}</td><td>{label(cell['best_config'])}</td>" + "".join(f"<td>{_fmt(s[k])}</td>" for k, _ in KEYS)
                        + f'<td><a href="{table}">table</a></td><td>{links}</td></tr>')
        rows.append("</table>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>lineclear reproduction</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style></head>
<body><h1>lineclear: thesis experiment grid</h1>
<p>Models: {', '.join(grid)}. Configurations: {', '.join(label(c) for c in configs)}.
Figures are percentages at each model's best configuration and best threshold (chosen on test labels, as the thesis's section 5.6 does).</p>
{''.join(rows)}</body></html>"""
    atomic_write_bytes(path, page.encode("utf-8"), overwrite=True)


def wall_minutes(out: Path) -> float | None:
    """Wall time of the grid from file times: first dataset file to the last metrics.json."""
    stamps = [p.stat().st_mtime for p in (out / "runs").rglob("config.json")]
    ends = [p.stat().st_mtime for p in (out / "eval").rglob("metrics.json")]
    if not stamps or not ends:
        return None
    return (max(ends) - min(stamps)) / 60


def readme_table(grid: dict, views: list[str], note: str) -> str:
    lines = ["## Results on the synthetic dataset", "", note, "",
             "| view | model | best configuration | image AUROC | pixel AUROC | AUPRO | accuracy |",
             "|---|---|---|---|---|---|---|"]
    for v in views:
        for m in grid:
            if v in grid[m]:
                cell = grid[m][v]
                s = cell["configs"][cell["best_config"]]["summary"]
                lines.append(f"| {v} | {m} | {label(cell['best_config'])} | {_fmt(s['auroc_image'])} | {_fmt(s['auroc_pixel'])} "
                             f"| {_fmt(s['aupro'])} | {_fmt(s['accuracy'])} |")
    configs = sorted({c for m in grid for v in grid[m] for c in grid[m][v]["configs"]})
    if len(configs) > 1:
        lines += ["", "Every configuration (image AUROC / pixel AUROC / accuracy, %):", "",
                  "| view | model | " + " | ".join(label(c) for c in configs) + " |",
                  "|---|---|" + "---|" * len(configs)]
        for v in views:
            for m in grid:
                if v not in grid[m]:
                    continue
                cells = grid[m][v]["configs"]
                row = []
                for c in configs:
                    s = cells.get(c, {}).get("summary")
                    row.append("–" if s is None else f"{_fmt(s['auroc_image'])} / {_fmt(s['auroc_pixel'])} / {_fmt(s['accuracy'])}")
                lines.append(f"| {v} | {m} | " + " | ".join(row) + " |")
    picks = [(v, m, c, cell["checkpoints"]) for v in views for m in grid if v in grid[m]
             for c, cell in grid[m][v]["configs"].items() if "checkpoints" in cell]
    if picks:
        lines += ["", "Checkpoint selection per configuration: the thesis's (highest accuracy, **chosen on the test "
                  "labels**) against one a line can trust (lowest spread σ/μ of the normal validation scores, chosen "
                  "without test labels); accuracy % of each:", "",
                  "| view | model | configuration | thesis pick (test labels) | line pick (validation) |", "|---|---|---|---|---|"]
        for v, m, c, ck in picks:
            acc = {col["checkpoint"]: col["summary"]["accuracy"] for col in ck["columns"]}
            line = ck["line_pick"]
            lines.append(f"| {v} | {m} | {label(c)} | {ck['thesis_pick']} ({_fmt(acc[ck['thesis_pick']])}) | "
                         + (f"{line} ({_fmt(acc[line])})" if line else "–") + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--views", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--summary", type=Path)
    ap.add_argument("--index", type=Path)
    ap.add_argument("--print", action="store_true")
    ap.add_argument("--readme", type=Path)
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv)
    models, views, configs = a.models.split(), a.views.split(), a.configs.split()
    grid = collect(a.out_dir, models, views, configs)
    if a.summary:
        atomic_write_bytes(a.summary, dumps({"schema": "lineclear.grid_summary/1", "grid": grid}).encode(), overwrite=True)
    if a.index:
        write_index(a.out_dir, grid, views, configs, a.index)
    if a.readme:
        minutes = wall_minutes(a.out_dir)
        note = a.note.replace("{minutes}", f"{minutes:.0f}" if minutes is not None else "?")
        atomic_write_bytes(a.readme, readme_table(grid, views, note).encode(), overwrite=True)
    if a.print:
        order = sorted(grid, key=lambda m: (m not in CPU_MODELS, -max(_num(grid[m][v]["configs"][grid[m][v]["best_config"]]["summary"]["accuracy"]) for v in grid[m])))
        for m in order:
            for v, cell in grid[m].items():
                for c, d in cell["configs"].items():
                    s = d["summary"]
                    print(f"{m:10s} view {v:3s} {label(c):9s} " + "  ".join(f"{n} {_fmt(s[k])}" for k, n in KEYS))
        if order:
            best = order[0]
            v = next(iter(grid[best]))
            report = a.out_dir / grid[best][v]["configs"][grid[best][v]["best_config"]]["report"]
            print(f"\nbest CPU model's report: {report.resolve()}")
            print(f"all reports: {(a.out_dir / 'index.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
