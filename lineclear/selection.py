"""Choosing among a run's checkpoints (thesis figures 20–21), two ways, from metrics documents (pure).

* :func:`thesis_pick` — what the thesis reports: the checkpoint with the highest accuracy at its best
  threshold (ties: higher image AUROC, then the later checkpoint). It is chosen **on the test labels**,
  so its figures are optimistic and it is no way to choose the model a line runs.
* :func:`line_pick` — a choice a user can make before any anomaly is seen: the checkpoint whose normal
  validation images score most alike, the lowest :func:`spread` (coefficient of variation σ/μ of their
  image scores; scale-free, so checkpoints whose scores differ in scale compare). A tight normal score
  distribution leaves the threshold close to the normal scores, so less of a leftover's signal is
  needed to cross it. Ties: the later checkpoint.
"""

from __future__ import annotations

import math
from typing import Sequence

LINE_RULE = "lowest spread (σ/μ) of the normal validation images' scores; chosen on validation data only"
THESIS_RULE = "highest accuracy at the best threshold; chosen on the test labels (thesis figures 20–21)"


def spread(doc: dict) -> float | None:
    """σ/μ of the normal validation image scores a metrics document's thresholds came from, or None."""
    st = (doc.get("validation") or {}).get("image") or {}
    mean, std = st.get("mean"), st.get("std")
    if mean is None or std is None or not math.isfinite(mean) or mean == 0:
        return None
    return float(std) / abs(float(mean))


def _num(x) -> float:
    return -1.0 if x is None else float(x)


def thesis_pick(docs: Sequence[dict]) -> int:
    return max(range(len(docs)), key=lambda i: (_num(docs[i]["summary"].get("accuracy")),
                                                _num(docs[i]["summary"].get("auroc_image")), i))


def line_pick(docs: Sequence[dict]) -> int | None:
    """Index of the lowest :func:`spread`, or None when no document records its validation statistics."""
    ok = [i for i in range(len(docs)) if spread(docs[i]) is not None]
    if not ok:
        return None
    return min(ok, key=lambda i: (spread(docs[i]), -i))


def group_key(doc: dict) -> tuple[str, str, str]:
    """Checkpoints of one run under one configuration share this key: (model, view, config)."""
    src = doc.get("source") or {}
    name = str(doc.get("config_name") or "")
    return (str(src.get("model") or ""), str(src.get("view") or ""), name.split("@", 1)[0])


def selections(docs: Sequence[dict]) -> list[str]:
    """Per document: ``test labels`` / ``validation`` / ``both`` / ``""`` — which selection picked it among the
    documents of its :func:`group_key` (only for groups of two or more checkpoints)."""
    out = [""] * len(docs)
    groups: dict[tuple, list[int]] = {}
    for i, d in enumerate(docs):
        groups.setdefault(group_key(d), []).append(i)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        sub = [docs[i] for i in idx]
        t, ln = idx[thesis_pick(sub)], line_pick(sub)
        ln = idx[ln] if ln is not None else None
        out[t] = "test labels"
        if ln is not None:
            out[ln] = "both" if ln == t else "validation"
    return out
