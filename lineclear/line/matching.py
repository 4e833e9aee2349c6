"""Which view an image file belongs to: the file name against each view's pattern.

A pattern with glob characters (``*?[``) is matched against the whole file name (``cam1_*.png``); a
plain word must be one of the name's tokens, the stem split at ``_ - . space`` (pattern ``A`` matches
``A.png``, ``A_0012.png``, ``line2-A.tif``, but not ``CAM_B.png``). Case-insensitive.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

from lineclear.errors import UsageError
from lineclear.formats.deploy import Bundle


def name_matches(pattern: str, filename: str) -> bool:
    """Does an image file name belong to a view with this pattern? (see the module docstring)"""
    pat, name = pattern.lower(), filename.lower()
    if any(c in pat for c in "*?["):
        return fnmatch.fnmatchcase(name, pat)
    return pat in re.split(r"[_\-. ]+", Path(name).stem)


def views_for(bundle: Bundle, path: str | os.PathLike) -> list[str]:
    """Views of the bundle whose pattern matches the file name (see :func:`name_matches`)."""
    return [n for n, spec in bundle.views.items() if name_matches(spec.pattern, Path(path).name)]


def match_images(bundle: Bundle, images: Iterable[str | os.PathLike],
                 explicit: Mapping[str, str | os.PathLike] | None = None) -> dict[str, Path]:
    """Assign images to views by pattern; ``explicit`` {view: image} bypasses the patterns.

    An image that matches no view or several, a view given two images, or an unknown view is a
    :class:`~lineclear.errors.UsageError` (the command line is wrong; nothing is checked).
    """
    out: dict[str, Path] = {}
    for view, img in (explicit or {}).items():
        if view not in bundle.views:
            raise UsageError(f"--view {view}=...: no view {view!r} in the bundle (views: {', '.join(bundle.views)})")
        out[view] = Path(img)
    for img in images:
        p = Path(img)
        found = views_for(bundle, p)
        if not found:
            pats = ", ".join(f"{n}: {spec.pattern}" for n, spec in bundle.views.items())
            raise UsageError(f"{p}: the file name matches no view's pattern ({pats}); use --view VIEW={p}")
        if len(found) > 1:
            raise UsageError(f"{p}: the file name matches several views ({', '.join(found)}); use --view VIEW={p}")
        if found[0] in out:
            raise UsageError(f"view {found[0]} given two images ({out[found[0]]} and {p})")
        out[found[0]] = p
    return out
