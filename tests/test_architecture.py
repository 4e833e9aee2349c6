"""The layering of ``lineclear/`` is a test: every import, read with ``ast``, points down.

    cli  →  station  →  line  →  stages  →  models / formats        (base: imported by all)

A layer may import any layer below it; models and formats never import each other; nothing imports
upwards. Imports inside functions and under ``TYPE_CHECKING`` count like any other: a lazy import
hides an arrow from the reader, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lineclear"

# a module's layer: the first prefix that matches; everything else in lineclear/ is a stage
LAYERS = {
    "lineclear.cli": "cli",
    "lineclear.__main__": "cli",
    "lineclear.station": "station",
    "lineclear.line": "line",
    "lineclear.check": "line",  # compatibility re-exports of lineclear.line
    "lineclear.deploy": "line",
    "lineclear.watch": "line",
    "lineclear.models": "models",
    "lineclear.formats": "formats",
    "lineclear.errors": "base",
    "lineclear.progress": "base",
    "lineclear.device": "base",
    "lineclear.shapes": "base",
}

# layer → the layers it must not import
FORBIDDEN = {
    "base": {"cli", "station", "line", "stages", "models", "formats"},
    "models": {"cli", "station", "line", "formats"},
    "formats": {"cli", "station", "line", "stages", "models"},
    "stages": {"cli", "station", "line"},
    "line": {"cli", "station"},
    "station": {"cli"},
    "cli": set(),
}


def layer_of(module: str) -> str:
    if module == "lineclear":
        return "base"  # the package itself holds only __version__
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return "stages"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import of a lineclear module anywhere in ``source``.

    ``from lineclear import x`` counts as importing ``lineclear.x`` (``x`` may be a module); relative
    imports are resolved against ``module``.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            if target == "lineclear":
                found += [(node.lineno, f"lineclear.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m == "lineclear" or m.startswith("lineclear.")]


def forbidden_arrows(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Every import that points the wrong way: ``{module: (source, is_package)}`` → messages."""
    bad = []
    for module, (source, is_package) in sorted(sources.items()):
        src_layer = layer_of(module)
        for line, target in imports_of(source, module, is_package):
            if target == "lineclear.__version__" or target == "lineclear":
                continue
            dst_layer = layer_of(target)
            if dst_layer in FORBIDDEN[src_layer]:
                bad.append(f"{module}:{line} imports {target} ({src_layer} → {dst_layer})")
    return bad


def _package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
            for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_in_the_package_points_down_the_layers() -> None:
    sources = _package_sources()
    assert len(sources) > 50 and "lineclear.line.checker" in sources
    bad = forbidden_arrows(sources)
    assert not bad, "imports against the layering (cli → line → stages → models / formats):\n" + "\n".join(bad)


@pytest.mark.parametrize("module, source, arrow", [
    ("lineclear.models.draem.train", "def f():\n    from lineclear.cli import console\n", "models → cli"),
    ("lineclear.models.base", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import lineclear.formats.maps\n",
     "models → formats"),
    ("lineclear.formats.maps", "from lineclear import scoring\n", "formats → stages"),
    ("lineclear.formats.via", "from lineclear.models import MODELS\n", "formats → models"),
    ("lineclear.scoring", "def f():\n    import lineclear.cli.main\n", "stages → cli"),
    ("lineclear.register", "from lineclear.line.checker import Checker\n", "stages → line"),
    ("lineclear.line.overlay", "from ..cli import console\n", "line → cli"),
    ("lineclear.line.watch", "from lineclear.station.service import Station\n", "line → station"),
])
def test_a_forbidden_arrow_is_found_wherever_it_hides(module: str, source: str, arrow: str) -> None:
    bad = forbidden_arrows({module: (source, False)})
    assert len(bad) == 1 and arrow in bad[0], bad


def test_allowed_arrows_pass() -> None:
    ok = {
        "lineclear.cli.train": ("from lineclear.models import MODELS\nfrom lineclear.line import checker\n", False),
        "lineclear.line.views": ("from lineclear.scoring import load_model\nfrom lineclear.formats import read_mask\n", False),
        "lineclear.scoring": ("from lineclear.models import get_model\nfrom lineclear.formats import load_checkpoint\n", False),
        "lineclear.formats.via": ("from lineclear.shapes import Region\nfrom lineclear import __version__\n", False),
        "lineclear.models.base": ("from lineclear.errors import UsageError\n", False),
    }
    assert forbidden_arrows(ok) == []
