"""Assemble README.md from docs/readme/*.md (sorted by name). Run by ``make readme``.

``--check`` exits 1 when README.md is out of date (the test suite uses it).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build() -> str:
    parts = [p.read_text(encoding="utf-8").strip() + "\n" for p in sorted((ROOT / "docs" / "readme").glob("*.md"))]
    header = "<!-- Generated from docs/readme/*.md by `make readme`; edit the fragments, not this file. -->\n"
    return parts[0] + "\n" + header + "\n" + "\n".join(parts[1:]) if parts else header


def main(argv: list[str]) -> int:
    text = build()
    readme = ROOT / "README.md"
    if "--check" in argv:
        if not readme.is_file() or readme.read_text(encoding="utf-8") != text:
            print("README.md is out of date: run `make readme`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
