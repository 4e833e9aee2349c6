"""``report.html``: one self-contained page (PNG images embedded as base64, inline CSS)."""

from __future__ import annotations

import base64
import html
from typing import Any, Sequence

from lineclear.report.tables import pct, threshold_labels

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#1b1f23;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#57606a;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}
th{background:#f6f8fa}td.l,th.l{text-align:left}
tr.best td{background:#fff8c5}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.unk{color:#57606a}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:120px;background:#f6f8fa}
.card .v{font-size:22px;font-weight:600}.card .k{font-size:12px;color:#57606a}
.curves{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:10px}
.curves img,.ov img{width:100%;height:auto;border:1px solid #eee}
.ov{margin:12px 0}.note{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;border-radius:6px;font-size:13px;margin:4px 0}
"""


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def render_report(doc: dict, curves: dict[str, bytes], overlays: Sequence[tuple[dict, bytes]]) -> str:
    """The whole page for a metrics document, its curve PNGs and its overlays (worst first)."""
    e = html.escape
    src = doc.get("source", {})
    s = doc.get("summary", {})
    best = doc.get("best", {})
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>lineclear report — {e(str(src.get('model') or ''))} {e(str(src.get('view') or ''))} {e(doc.get('config_name', ''))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Evaluation: {e(str(src.get('model') or 'model'))} · view {e(str(src.get('view') or '?'))} · {e(doc.get('config_name', ''))}</h1>",
        f"<div class='meta'>maps {e(str(src.get('path', '')))} · map size {e(str(src.get('map_size')))} · mask stage "
        f"{e(str(src.get('mask_stage')))} · registered {e(str(bool(src.get('registered'))))} · "
        f"{doc['counts']['images']} images ({doc['counts']['normal']} normal, {doc['counts']['anomalous']} anomalous)"
        f" · lineclear {e(str(doc.get('lineclear_version', '')))} · {e(str(doc.get('created_utc', '')))}</div>",
    ]
    for n in doc.get("notes", []):
        parts.append(f"<div class='note'>{e(n)}</div>")
    cards = [
        ("image AUROC", s.get("auroc_image")), ("pixel AUROC", s.get("auroc_pixel")), ("AUPRO@0.3", s.get("aupro")),
        ("pixel AP", s.get("ap")), ("IoU", s.get("iou")), ("accuracy", s.get("accuracy")),
    ]
    parts.append("<h2>Summary</h2><div class='cards'>")
    for k, v in cards:
        parts.append(f"<div class='card'><div class='v'>{pct(v)}{'%' if v is not None else ''}</div><div class='k'>{e(k)}</div></div>")
    parts.append("</div>")
    parts.append(
        f"<p class='meta'>IoU and accuracy at the <b>best threshold: {e(str(best.get('method')))}"
        f"{' at pixel level' if best.get('level') == 'pixel' else ''}</b> — "
        f"{e(best.get('rule', ''))}; <b>chosen on the {e(best.get('chosen_on', 'test labels'))}</b>, so it is an "
        "optimistic figure. Threshold-free metrics (AUROC, AUPRO, AP) do not depend on it.</p>"
    )
    parts.append("<h2>Thresholds</h2><table><tr><th class='l'>method</th><th>params</th><th class='l'>decides by</th><th>decision t</th>"
                 "<th>accuracy</th><th>precision</th><th>recall</th><th>F1</th><th>TP</th><th>FP</th><th>TN</th><th>FN</th>"
                 "<th>pixel t</th><th>IoU</th><th>pixel FPR</th><th>pixel TPR</th></tr>")
    labels = threshold_labels(doc.get("thresholds", []))
    for i, t in enumerate(doc.get("thresholds", [])):
        im, px = t["image"], t["pixel"]
        params = ", ".join(f"{k}={v:g}" for k, v in (t.get("params") or {}).items())
        parts.append(
            f"<tr class='{'best' if i == best.get('index') else ''}'><td class='l'>{e(labels[i])}"
            f"{' (best)' if i == best.get('index') else ''}</td><td>{e(params)}</td>"
            f"<td class='l'>{'any pixel > pixel t' if t.get('level') == 'pixel' else 'image score > image t'}</td>"
            f"<td>{_num(im.get('threshold'))}</td>"
            f"<td>{pct(im.get('accuracy'))}</td><td>{pct(im.get('precision'))}</td><td>{pct(im.get('recall'))}</td>"
            f"<td>{pct(im.get('f1'))}</td><td>{_num(im.get('tp'))}</td><td>{_num(im.get('fp'))}</td>"
            f"<td>{_num(im.get('tn'))}</td><td>{_num(im.get('fn'))}</td><td>{_num(px.get('threshold'))}</td>"
            f"<td>{pct(px.get('iou'))}</td><td>{pct(px.get('fpr'), 2)}</td><td>{pct(px.get('tpr'))}</td></tr>"
        )
    parts.append("</table><p class='meta'>Rates in %. Decision t: what decides leftover or clear (the image threshold, or the pixel threshold "
                 "when any counted pixel above it decides); pixel t: the threshold on anomaly-map values; IoU pooled over the anomalous images' valid pixels.</p>")
    if curves:
        parts.append("<h2>Curves</h2><div class='curves'>")
        parts += [_img(data, name) for name, data in curves.items()]
        parts.append("</div>")
    if overlays:
        parts.append(f"<h2>Images, worst first ({len(overlays)} shown)</h2>")
        for rec, data in overlays:
            parts.append(f"<div class='ov' id='img{rec['index']}'>{_img(data, rec['id'])}</div>")
    parts.append("<h2>Every image</h2><table><tr><th>#</th><th class='l'>image</th><th class='l'>label</th>"
                 "<th>score</th><th class='l'>verdict</th><th class='l'>outcome</th><th>map max</th>"
                 "<th>GT px</th><th>predicted px</th><th>IoU</th></tr>")
    shown = {rec["index"] for rec, _ in overlays}
    for r in doc.get("images", []):
        cls = "ok" if r.get("correct") else "bad" if r.get("correct") is False else "unk"
        name = e(r["id"])
        if r["index"] in shown:
            name = f"<a href='#img{r['index']}'>{name}</a>"
        label = {0: "normal", 1: "anomalous"}.get(r.get("label"), "unknown")
        parts.append(
            f"<tr><td>{r['index']}</td><td class='l'>{name}</td><td class='l'>{label}</td><td>{_num(r.get('score'))}</td>"
            f"<td class='l'>{_num(r.get('verdict'))}</td><td class='l {cls}'>{e(str(r.get('outcome')))}</td>"
            f"<td>{_num(r.get('max'))}</td><td>{_num(r.get('gt_pixels'))}</td><td>{_num(r.get('predicted_pixels'))}</td>"
            f"<td>{pct(r.get('iou'))}</td></tr>"
        )
    parts.append("</table>")
    parts.append("<p class='meta'>Pixels outside the inspection mask / registration validity are left out of every "
                 "pixel metric. Ground truth is resized to the map resolution with nearest neighbour. A pixel or image "
                 "is anomalous when its value is strictly greater than the threshold.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
