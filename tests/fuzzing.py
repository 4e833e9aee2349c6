"""Hypothesis set-up shared by the reader fuzz tests: run lengths, mutation strategies and input counts.

``LINECLEAR_FUZZ`` picks the run length: ``ci`` (the default, ``make test``: a few hundred inputs per
reader, the same ones every run) or ``long`` (``make fuzz``: 25 times as many, fresh random inputs).
Every input a reader is given is counted; ``tests/conftest.py`` prints the counts after the run.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections import Counter, defaultdict
from typing import Any, Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from lineclear.errors import LineclearError

PROFILE = os.environ.get("LINECLEAR_FUZZ", "ci")
if PROFILE not in ("ci", "long"):
    raise SystemExit(f"LINECLEAR_FUZZ={PROFILE!r}: expected ci or long")
SCALE = 25 if PROFILE == "long" else 1

# reader -> {"read": n, "refused": n}
COUNTS: dict[str, Counter] = defaultdict(Counter)
# command -> (runs killed mid-way, runs that finished first, log lines of killed runs), tests/test_crash_safety.py
KILLS: dict[str, tuple[int, int, int]] = {}


def fuzz_settings(examples: int) -> settings:
    """``examples`` inputs in CI (derandomised: the same every run), 25 times as many under ``make fuzz``."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,  # a shared 2-core machine: timing says nothing
        derandomize=PROFILE == "ci",
        database=None if PROFILE == "ci" else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
        print_blob=True,
    )


def attempt(reader: str, read: Callable[[], Any]) -> tuple[bool, Any]:
    """Run ``read``: ``(True, result)`` when it reads, ``(False, error)`` when it refuses with a
    LineclearError. Any other exception propagates: that is the bug the fuzzing looks for."""
    try:
        result = read()
    except LineclearError as exc:
        COUNTS[reader]["refused"] += 1
        msg = str(exc)
        assert msg and "\n" not in msg.strip(), f"not one clear line: {msg!r}"
        return False, exc
    COUNTS[reader]["read"] += 1
    return True, result


def summary_lines() -> list[str]:
    lines = [f"{name}: {c['read'] + c['refused']} inputs ({c['read']} read, {c['refused']} refused)"
             for name, c in sorted(COUNTS.items())]
    return lines + [f"SIGKILL {name}: {k + f} runs ({k} killed mid-way, {f} finished first"
                    + (f"; {kept} sets logged by killed runs, all kept)" if kept else ")")
                    for name, (k, f, kept) in KILLS.items()]


# -- byte mutations -------------------------------------------------------------------------------------------

# Bytes that text formats and parsers trip over.
TOKENS = [
    b'"', b"'", b",", b"\n", b"\r\n", b"\r", b"{", b"}", b"[", b"]", b":", b"\\", b"\x00", b"\xff", b"\xc3",
    b"\xef\xbb\xbf", b"NaN", b"-Infinity", b"1e999", b"-0", b"null", b"true", b"9" * 5000, b"[" * 3000,
    b'{"a":' * 2000, b"\\ud800", b'""', b"\xe2\x80\xa8", b"0x10", b"1" * 30,
]


@st.composite
def mutated_bytes(draw: Callable, seed: bytes, max_ops: int = 6, tokens: list[bytes] | None = None) -> bytes:
    """``seed`` with 1..max_ops edits: bit flips, byte sets, inserts, deletes, truncation, duplicated
    slices and parser-hostile tokens."""
    data = bytearray(seed)
    toks = TOKENS if tokens is None else tokens
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate", "token"]))
        pos = draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate":
            k = draw(st.integers(1, 256))
            data[pos:pos] = data[pos:pos + k]
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(toks))
    return bytes(data)


# -- JSON field mutations -------------------------------------------------------------------------------------

_HUGE = "\u0001HUGE\u0001"  # replaced by a 5000-digit integer after json.dumps (which refuses to write one)

SPECIAL_STRINGS = ["", " ", "../x", "/etc/passwd", "a/../../b", "C:\\x", "a\\b", ".hidden", "\x00", "é",
                   "\ud800", "rect", "polygon", "max", "clear", "leftover", "undecided", "none", "pre", "post",
                   "lineclear.maps/1", "lineclear.thresholds/2", "lineclear.deploy/1", "lineclear.deploy/2", "lineclear.verdict/1",
                   "x" * 300, "0" * 64, _HUGE]

EXTREMES = [1e308, -1e308, 1e300, 1e200, 5e-324, -0.0, 2**63, 10**400, math.nan, math.inf, -math.inf, True, 0, -1]

json_leaf = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 1e300]),
    st.text(max_size=12), st.sampled_from(SPECIAL_STRINGS),
)
json_values = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6) | st.sampled_from(SPECIAL_STRINGS),
                                                              kids, max_size=4),
    max_leaves=10,
)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


@st.composite
def mutated_json_doc(draw: Callable, doc: Any, max_ops: int = 3) -> Any:
    """``doc`` with 1..max_ops field edits: a value replaced (any JSON type, NaN, huge numbers, hostile
    strings), a key or item deleted, or a value added."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_ops))):
        path = draw(st.sampled_from(_paths(doc)))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "extreme"]))
        if not path:
            if op == "replace" and draw(st.integers(0, 9)) == 0:
                doc = draw(json_values)
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        target = parent[key]
        if op == "extreme":  # a number pushed to the ends of what JSON and floats can hold
            parent[key] = draw(st.sampled_from(EXTREMES))
        elif op == "replace":
            parent[key] = draw(json_values)
        elif op == "delete":
            del parent[key]
        elif isinstance(target, dict):
            target[draw(st.text(max_size=6) | st.sampled_from(SPECIAL_STRINGS))] = draw(json_values)
        elif isinstance(target, list):
            target.insert(draw(st.integers(0, len(target))), draw(json_values))
        else:
            parent[key] = [target, draw(json_values)]
    return doc


def dump_json(doc: Any) -> bytes:
    """JSON bytes as Python writes them with ``allow_nan`` (NaN/Infinity appear as bare tokens)."""
    text = json.dumps(doc, allow_nan=True, indent=1)
    return text.replace(json.dumps(_HUGE), "9" * 5000).replace(_HUGE, "9" * 5000).encode("utf-8", "surrogatepass")


def mutated_json(doc: Any) -> st.SearchStrategy[bytes]:
    """Field edits, byte edits, or both, of the JSON document ``doc``."""
    fields = mutated_json_doc(doc).map(dump_json)
    return st.one_of(fields, mutated_bytes(dump_json(doc)), fields.flatmap(lambda b: mutated_bytes(b, max_ops=2)))
