"""Pictures and pages from evaluation results: curves, per-image overlays, report.html, tables.

Everything here renders in memory (PNG bytes, HTML/Markdown text) with matplotlib's Agg
canvas; the CLI decides where files go.
"""
