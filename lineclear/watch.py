"""Compatibility: watch mode now lives in :mod:`lineclear.line.watch`.

Kept for one release for code that imports ``lineclear.watch``.
"""

from __future__ import annotations

from lineclear.line.watch import FileTracker, SetAssembler, WatchOptions, WatchSummary, log_records, watch

__all__ = ["FileTracker", "SetAssembler", "WatchOptions", "WatchSummary", "log_records", "watch"]
