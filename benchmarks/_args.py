"""Option parsing and data shared by the benchmarks: ``--name value`` or ``--name=value``."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence


def option(argv: list[str], name: str, default: str | None = None) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def settings(argv: list[str]) -> dict[str, str]:
    """``--set "k=v;k=v"``: preset settings to override (e.g. ``--set "epochs=4;recon_width=16"``)."""
    return dict(kv.split("=", 1) for kv in (option(argv, "--set") or "").split(";") if kv)


@contextmanager
def dataset(argv: list[str], views: Sequence[str], quick: bool, cache: str | None = None) -> Iterator[Path]:
    """The dataset root to benchmark on: ``--data DIR`` as given; else ``lineclear synth`` data (seed 0).

    ``quick``: one tiny view A (384x256, 5 training images) in a temporary folder. Otherwise ``views``
    at 768x512 in a temporary folder, or — with ``cache`` — every synthetic view generated once into
    ``cache`` and reused by later runs.
    """
    data = option(argv, "--data")
    if data:
        yield Path(data)
        return
    from lineclear.synth import generate

    if cache and not quick:
        root = Path(cache)
        if not all((root / v / "train").is_dir() for v in views):
            generate(root, seed=0, overwrite=True)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="lineclear-bench-") as tmp:
        if quick:
            generate(tmp, views=("A",), size=(384, 256), n_train=5, n_good=2, n_shifted=2, n_anomalous=4)
        else:
            generate(tmp, views=tuple(views), size=(768, 512), seed=0)
        yield Path(tmp)
