"""Threshold rules from anomaly-free validation maps (thesis section 3.5), pure numpy.

Three rules, each applied at two levels:

* ``max``       t = the highest validation value;
* ``quantile``  t = the p-quantile (numpy's default linear interpolation), p = 0.99 by default;
* ``ksigma``    t = μ + kσ (population standard deviation, ddof = 0), k = 3 by default.

The **pixel** threshold (segmentation) comes from every valid pixel of every normal
validation map; the **image** threshold (classification) from the normal images'
scores. A pixel or image is anomalous when its value is *strictly greater* than the
threshold, so ``max`` flags nothing on its own validation set.

Which threshold makes the *image* decision (leftover or clear) is the thresholds file's ``level``:

* ``pixel``: anomalous when any counted pixel of the map is above the pixel threshold — the thesis's
  rule (section 3.5), fitted on every valid pixel of the normal validation maps;
* ``image``: anomalous when the image score is above the image threshold, fitted on the normal
  images' scores. With n scores and the population σ every score is at most μ + √(n−1)·σ
  (Samuelson's inequality), so with few validation images ``ksigma`` with k ≥ √(n−1) lies above
  ``max`` and the three rules barely differ: :func:`few_scores_warning`.

Pixel statistics are streamed: count, mean and variance with Chan's parallel update in
float64, min and max exactly, and the quantile exactly with a two-pass radix select on the
float32 bit patterns (65,536 counters per pass), so memory does not grow with the number
of maps and the result equals ``np.quantile`` over all valid pixels.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from lineclear.errors import LineclearError

METHODS = ("max", "quantile", "ksigma")
LEVELS = ("pixel", "image")
DEFAULT_P = 0.99
DEFAULT_K = 3.0
# below this many image scores the image-level rules are squeezed together (Samuelson's bound)
MIN_IMAGE_SCORES = 10


def samuelson_k(n: int) -> float:
    """√(n−1): no value of n numbers lies more than this many population σ above their mean."""
    return math.sqrt(max(n - 1, 0))


def few_scores_warning(n: int, methods: Iterable[str], k: float = DEFAULT_K) -> str | None:
    """Why image-level thresholds from ``n`` < :data:`MIN_IMAGE_SCORES` scores are weak, or None."""
    if n >= MIN_IMAGE_SCORES:
        return None
    b = samuelson_k(n)
    text = (f"the image-level rule rests on {n} image score(s): with n scores and the population σ every "
            f"score is at most μ + √(n−1)·σ = μ + {b:.2f}σ (Samuelson's inequality)")
    if "ksigma" in methods and k >= b:
        text += f", so ksigma with k={k:g} ≥ {b:.2f} lies above max"
    return text + ("; the thresholds barely differ between rules. Score more validation images, or decide "
                   "at --level pixel (over every counted validation pixel)")


def _keys(values: np.ndarray) -> np.ndarray:
    """float32 → uint32 keys whose unsigned order is the float order (IEEE-754 trick)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    neg = (bits >> 31).astype(bool)
    return np.where(neg, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


def _from_key(key: int) -> float:
    key = np.uint32(key)
    bits = (key & np.uint32(0x7FFFFFFF)) if key & np.uint32(0x80000000) else ~key
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


class StreamStats:
    """Streaming count / mean / std / min / max of float32 values, plus a radix histogram."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.high = np.zeros(1 << 16, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float32).ravel()
        if v.size == 0:
            return
        if not np.all(np.isfinite(v)):
            raise ValueError("NaN or infinite values")
        n_b = v.size
        v64 = v.astype(np.float64)
        mean_b = float(v64.mean())
        m2_b = float(np.sum((v64 - mean_b) ** 2))
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.count * n_b / n
        self.count = n
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        self.high += np.bincount(_keys(v) >> 16, minlength=1 << 16)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else math.nan

    def quantile_ranks(self, p: float) -> tuple[int, int, float]:
        """numpy 'linear': (lower rank, upper rank, fraction) into the sorted values."""
        h = (self.count - 1) * p
        lo = int(math.floor(h))
        return lo, min(lo + 1, self.count - 1), h - lo

    def select(self, ranks: list[int], batches: Callable[[], Iterable[np.ndarray]]) -> list[float]:
        """Exact order statistics (0-based ranks) with one more pass over ``batches()``."""
        cum = np.cumsum(self.high)
        targets = {}
        for r in ranks:
            hb = int(np.searchsorted(cum, r, side="right"))
            before = int(cum[hb - 1]) if hb else 0
            targets.setdefault(hb, []).append((r, r - before))
        low = {hb: np.zeros(1 << 16, dtype=np.int64) for hb in targets}
        for values in batches():
            k = _keys(np.asarray(values, dtype=np.float32).ravel())
            hi = k >> 16
            for hb in targets:
                sel = k[hi == hb]
                if sel.size:
                    low[hb] += np.bincount(sel & 0xFFFF, minlength=1 << 16)
        out = {}
        for hb, items in targets.items():
            c = np.cumsum(low[hb])
            for r, within in items:
                lb = int(np.searchsorted(c, within, side="right"))
                out[r] = _from_key((hb << 16) | lb)
        return [out[r] for r in ranks]


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's formulation (stable at both ends), so the value equals np.quantile's
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


def describe(values: np.ndarray, p: float = DEFAULT_P) -> dict:
    """Statistics of a small in-memory array (image scores)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "p": float(p),
        "quantile": float(np.quantile(v, p)),
    }


def pixel_stats(batches: Callable[[], Iterable[np.ndarray]], p: float = DEFAULT_P) -> dict:
    """Streamed statistics of every value yielded by ``batches()`` (1-D arrays of valid pixels).

    ``batches`` is called twice (the quantile's radix select needs a second pass).
    """
    st = StreamStats()
    for values in batches():
        st.add(values)
    if st.count == 0:
        return {"count": 0}
    lo, hi, frac = st.quantile_ranks(p)
    a, b = st.select(sorted({lo, hi}), batches) if hi != lo else st.select([lo], batches) * 2
    return {
        "count": st.count,
        "mean": st.mean,
        "std": st.std,
        "min": st.min,
        "max": st.max,
        "p": float(p),
        "quantile": _lerp(a, b, frac),
    }


def rule(stats: dict, method: str, p: float = DEFAULT_P, k: float = DEFAULT_K) -> float:
    """The threshold of ``method`` from statistics made by :func:`describe` / :func:`pixel_stats`."""
    if method == "max":
        return float(stats["max"])
    if method == "quantile":
        if stats.get("p") != p:
            raise ValueError(f"statistics were computed for p={stats.get('p')}, not {p}")
        return float(stats["quantile"])
    if method == "ksigma":
        return float(stats["mean"] + k * stats["std"])
    raise ValueError(f"unknown threshold method {method!r} (expected one of {', '.join(METHODS)})")


def check_params(p: float, k: float) -> None:
    if not (0.0 < p < 1.0):
        raise LineclearError(f"--p must lie strictly between 0 and 1, got {p}")
    if not math.isfinite(k):
        raise LineclearError(f"--k must be a finite number, got {k}")


def calibrate(
    pixel_batches: Callable[[], Iterable[np.ndarray]],
    image_scores: np.ndarray,
    methods: Iterable[str] = ("ksigma",),
    p: float = DEFAULT_P,
    k: float = DEFAULT_K,
) -> dict[str, dict]:
    """Thresholds for each method: ``{method: {"method", "params", "pixel", "image"}}``.

    ``pixel_batches()`` yields 1-D float arrays of the valid pixels of the *normal*
    validation maps (it is called twice); ``image_scores`` are those images' scores.
    ``pixel``/``image`` = ``{"threshold": float, "stats": {...}}`` — the parts of a
    ``lineclear.thresholds/1`` document other than ``source``.
    """
    check_params(p, k)
    methods = list(methods)
    for m in methods:
        if m not in METHODS:
            raise LineclearError(f"unknown threshold method {m!r} (expected one of {', '.join(METHODS)} or all)")
    scores = np.asarray(image_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise LineclearError("no normal validation image to calibrate on")
    if not np.all(np.isfinite(scores)):
        raise LineclearError("validation image scores contain NaN or infinite values")
    pix = pixel_stats(pixel_batches, p)
    if pix["count"] == 0:
        raise LineclearError("the normal validation maps have no valid pixel (everything is masked)")
    img = describe(scores, p)
    out = {}
    for m in methods:
        params = {"p": float(p)} if m == "quantile" else {"k": float(k)} if m == "ksigma" else {}
        out[m] = {
            "method": m,
            "params": params,
            "pixel": {"threshold": rule(pix, m, p, k), "stats": dict(pix)},
            "image": {"threshold": rule(img, m, p, k), "stats": dict(img)},
        }
    return out
