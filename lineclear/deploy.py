"""Compatibility: deployment bundles are now built by :mod:`lineclear.line.deploy`.

Kept for one release for code that imports ``lineclear.deploy``.
"""

from __future__ import annotations

from lineclear.line.deploy import DEFAULT_PATTERN, ViewSource, build_bundle, view_from_run

__all__ = ["DEFAULT_PATTERN", "ViewSource", "build_bundle", "view_from_run"]
