"""Threshold rules (thesis 3.5) against numpy over all pixels at once."""

from __future__ import annotations

import numpy as np
import pytest

from lineclear.calibrate import _from_key, _keys, calibrate, describe, pixel_stats, rule
from lineclear.errors import LineclearError


def _chunks(values, n=4):
    parts = np.array_split(np.asarray(values, np.float32), n)
    return lambda: iter(parts)


@pytest.mark.parametrize("kind", ["normal", "ties", "constant", "signed-zero", "single"])
def test_pixel_stats_exact(kind):
    rng = np.random.default_rng(5)
    v = {
        "normal": rng.normal(size=5000),
        "ties": rng.integers(-3, 4, 3001),
        "constant": np.full(777, 0.25),
        "signed-zero": np.r_[np.zeros(50), -np.zeros(50), rng.random(10) * 1e-30, -rng.random(5)],
        "single": np.array([3.5]),
    }[kind].astype(np.float32)
    ref = v.astype(np.float64)
    for p in (0.0, 0.5, 0.95, 0.99, 0.999, 1.0 - 1e-9):
        s = pixel_stats(_chunks(v), p)
        assert s["quantile"] == pytest.approx(np.quantile(ref, p), abs=1e-12, rel=1e-12)
    assert s["count"] == v.size
    assert s["mean"] == pytest.approx(ref.mean(), abs=1e-9)
    assert s["std"] == pytest.approx(ref.std(), abs=1e-9)
    assert (s["min"], s["max"]) == (ref.min(), ref.max())


def test_key_order_roundtrip():
    v = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf], np.float32)
    k = _keys(v)
    assert np.all(np.diff(k.astype(np.int64)) >= 0)
    for x, kk in zip(v, k):
        assert _from_key(int(kk)) == x


def test_rules_and_calibrate():
    rng = np.random.default_rng(1)
    pix = rng.random(1000).astype(np.float32)
    scores = rng.random(7)
    out = calibrate(_chunks(pix), scores, ["max", "quantile", "ksigma"], p=0.95, k=2.0)
    p64 = pix.astype(np.float64)
    assert out["max"]["pixel"]["threshold"] == pytest.approx(p64.max())
    assert out["quantile"]["pixel"]["threshold"] == pytest.approx(np.quantile(p64, 0.95))
    assert out["ksigma"]["pixel"]["threshold"] == pytest.approx(p64.mean() + 2 * p64.std())
    assert out["max"]["image"]["threshold"] == pytest.approx(scores.max())
    assert out["quantile"]["image"]["threshold"] == pytest.approx(np.quantile(scores, 0.95))
    assert out["ksigma"]["image"]["threshold"] == pytest.approx(scores.mean() + 2 * scores.std())
    assert out["quantile"]["params"] == {"p": 0.95} and out["ksigma"]["params"] == {"k": 2.0}
    assert out["ksigma"]["pixel"]["stats"]["count"] == 1000
    # max flags nothing on its own validation data (strict >)
    assert not np.any(p64 > out["max"]["pixel"]["threshold"])
    st = describe(scores, 0.95)
    assert rule(st, "ksigma", k=0) == pytest.approx(scores.mean())
    with pytest.raises(ValueError):
        rule(st, "quantile", p=0.5)


def test_refusals():
    with pytest.raises(LineclearError, match="no valid pixel"):
        calibrate(lambda: iter([np.empty(0, np.float32)]), [0.1], ["max"])
    with pytest.raises(LineclearError, match="no normal validation image"):
        calibrate(_chunks([0.1, 0.2]), [], ["max"])
    with pytest.raises(LineclearError, match="--p"):
        calibrate(_chunks([0.1, 0.2]), [0.1], ["quantile"], p=1.0)
    with pytest.raises(LineclearError, match="unknown threshold method"):
        calibrate(_chunks([0.1, 0.2]), [0.1], ["median"])
    with pytest.raises(ValueError):
        pixel_stats(lambda: iter([np.array([np.nan], np.float32)]))
