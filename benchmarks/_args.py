"""Option parsing shared by the benchmarks: ``--name value`` or ``--name=value``."""

from __future__ import annotations


def option(argv: list[str], name: str, default: str | None = None) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default
