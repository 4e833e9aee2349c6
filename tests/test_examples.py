"""The reproduction Makefile, end to end on a tiny synthetic dataset (runs in CI).

One view, tiny images, the demo budget, two configurations that between them cover
pre/post masking, mask/no mask and registration/none; then a second `make` must do nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODELS = "template patchcore draem"
CONFIGS = "po-m-r pre-nm-nr"


def _make(out: Path, *extra: str, question: bool = False) -> subprocess.CompletedProcess:
    args = [
        "make", "-C", str(ROOT / "examples"), *(["-q"] if question else []),
        f"OUT={out}", "VIEWS=A", f"MODELS={MODELS}", "PRESET=demo", f"CONFIGS={CONFIGS}",
        "SYNTH_ARGS=--size 192x128 --n-train 6 --n-good 2 --n-shifted 2 --n-anomalous 4 --workers 1",
        "TRAIN_ARGS=--image-size 64x96", "EVAL_ARGS=--max-overlays 2",
        f"LINECLEAR={BIN / 'lineclear'}", f"PYTHON={sys.executable}", *extra,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_reproduction_makefile_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _make(out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # every stage left its file
    assert (out / "data" / "A" / "annotations_via.csv").is_file()
    assert list((out / "labels" / "A" / "ground_truth").rglob("*_mask.png"))
    assert (out / "reg" / "A" / "valid").is_dir() and (out / "reg" / "A-report.json").is_file()
    assert (out / "masks" / "A.png").is_file() and (out / "masks" / "A-preview.png").is_file()
    for model in MODELS.split():
        assert (out / "runs" / model / "A" / "model.pt").is_file()
        for cfg in CONFIGS.split():
            for split in ("val", "test"):
                assert (out / "maps" / model / "A" / f"{cfg}-{split}.h5").is_file()
            for method in ("max", "quantile", "ksigma"):
                t = json.loads((out / "maps" / model / "A" / f"{cfg}-thresholds-{method}.json").read_text())
                assert t["schema"] == "lineclear.thresholds/1" and t["method"] == method
            m = json.loads((out / "eval" / model / "A" / cfg / "metrics.json").read_text())
            assert m["schema"] == "lineclear.metrics/1"
            assert m["config_name"] == cfg.upper().replace("-", "+")
            assert (out / "eval" / model / "A" / cfg / "report.html").is_file()
        # the thesis-style table parses: metrics as rows, configurations as columns
        table = (out / "tables" / f"{model}-A.md").read_text()
        rows = [line for line in table.splitlines() if line.startswith("|")]
        header = [c.strip() for c in rows[0].strip("|").split("|")]
        assert header[1:] == ["PO+M+R", "PRE+NM+NR"]
        names = [r.strip("|").split("|")[0].strip() for r in rows[2:]]
        assert names == ["AUROC", "PRO", "IoU", "AP", "ACC"]
        assert (out / "tables" / f"{model}-A.html").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["grid"]) == set(MODELS.split())
    index = (out / "index.html").read_text()
    assert "eval/template/A/po-m-r/report.html" in index and (out / "compare" / "A.png").is_file()
    # a second make has nothing to do
    q = _make(out, question=True)
    assert q.returncode == 0, "a second make would rebuild something:\n" + _make(out, "-n").stdout[-2000:]
    # ... and a configuration added to CONFIGS, or a deleted result, is rebuilt without retraining
    (out / "eval" / "template" / "A" / "po-m-r" / "metrics.json").unlink()
    plan = _make(out, "-n", f"CONFIGS={CONFIGS} po-nm-r").stdout
    assert " train " not in plan, plan[-2000:]
    for model in MODELS.split():
        assert f"maps/{model}/A/po-nm-r-test.h5" in plan and f"--out {out}/eval/{model}/A/po-nm-r" in plan, plan[-2000:]
    assert f"--out {out}/eval/template/A/po-m-r" in plan, plan[-2000:]
