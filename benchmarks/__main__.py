"""Run the benchmarks: ``python -m benchmarks [NAME ...] [--quick] [--views A,B ...]``.

Each ``benchmarks/bench_<name>.py`` defines ``main(argv: list[str]) -> dict`` that prints its
figures (ratios against an in-process baseline where one exists) and returns them; the
results are also written to ``bench-out/<name>.json``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import benchmarks


def main(argv: list[str]) -> int:
    # names first, then options for the benchmarks (``--views A``, ``--views=A``, ``--quick``)
    first_flag = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, flags = argv[:first_flag], argv[first_flag:]
    available = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    out_dir = Path("bench-out")
    out_dir.mkdir(exist_ok=True)
    for name in names or available:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"\n=== benchmark: {name} ===", flush=True)
        t0 = time.perf_counter()
        result = mod.main(flags) or {}
        result["_seconds"] = round(time.perf_counter() - t0, 1)
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
