"""Shifts: windows of local time that start at given clock times (default 06:00, 14:00, 22:00), and counts.

Pure functions: the clock and the recorded sets come in as arguments.
"""

from __future__ import annotations

import datetime as _dt
from typing import Iterable

from lineclear.errors import UsageError

DEFAULT_SHIFTS = "06:00,14:00,22:00"


def parse_shifts(text: str) -> list[_dt.time]:
    """``"06:00,14:00,22:00"`` → sorted start times; a usage error names a malformed one."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        try:
            out.append(_dt.time.fromisoformat(part))
        except ValueError:
            raise UsageError(f"--shifts: {part!r} is not a clock time HH:MM") from None
    if not out or len(set(out)) != len(out):
        raise UsageError(f"--shifts {text!r}: give distinct start times, e.g. {DEFAULT_SHIFTS}")
    return sorted(out)


def shift_windows(now: _dt.datetime, starts: list[_dt.time], n: int = 3) -> list[tuple[_dt.datetime, _dt.datetime]]:
    """The current shift and the ``n - 1`` before it, newest first: ``(start, end)`` aware local datetimes.

    ``now`` must be timezone-aware (``datetime.now().astimezone()``).
    """
    tz = now.tzinfo
    bounds = sorted(_dt.datetime.combine(now.date() + _dt.timedelta(days=d), t, tzinfo=tz)
                    for d in range(-(n // len(starts)) - 2, 2) for t in starts)
    cur = max(i for i, b in enumerate(bounds) if b <= now)
    return [(bounds[i], bounds[i + 1]) for i in range(cur, cur - n, -1)]


def count_per_shift(windows: list[tuple[_dt.datetime, _dt.datetime]], sets: Iterable[tuple[int, str, str]]
                    ) -> list[dict]:
    """Counts of clear / leftover / undecided sets per window from ``(set_no, verdict, utc_iso)`` rows."""
    out = [{"start": a.isoformat(timespec="minutes"), "end": b.isoformat(timespec="minutes"),
            "counts": {"clear": 0, "leftover": 0, "undecided": 0}} for a, b in windows]
    for _, verdict, when in sets:
        t = _dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
        for (a, b), o in zip(windows, out):
            if a <= t < b:
                o["counts"][verdict] = o["counts"].get(verdict, 0) + 1
                break
    return out
