"""The reproduction Makefile, end to end on a tiny synthetic dataset (runs in CI).

One view, tiny images, the demo budget, two configurations that between them cover
pre/post masking, mask/no mask and registration/none; then a second `make` must do nothing.
Every job goes through a recording launcher (LAUNCH, TRAIN_LAUNCH, CPU_LAUNCH), DRAEM's training
through torchrun as well, and a check in LINECLEAR itself tells any job that bypassed them.
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


def _launchers(tmp: Path) -> tuple[list[str], Path]:
    """Make variables that send every job through a launcher logging ``TAG argv`` to the returned file."""
    log = tmp / "launched.log"
    rec = tmp / "record"
    rec.write_text(f'#!/bin/sh\ntag=$1; shift\nprintf "%s %s\\n" "$tag" "$*" >> "{log}"\n'
                   'LINECLEAR_LAUNCHED=$tag exec "$@"\n')
    # LINECLEAR: lineclear, noting any run that no launcher started (a Python file, so torchrun can run it)
    lc = tmp / "lineclear"
    lc.write_text(f"#!{sys.executable}\nimport os, sys\n"
                  f"if not os.environ.get('LINECLEAR_LAUNCHED'):\n"
                  f"    open({str(log)!r}, 'a').write('UNLAUNCHED ' + ' '.join(sys.argv[1:]) + '\\n')\n"
                  "from lineclear.cli.main import run\nrun()\n")
    for p in (rec, lc):
        p.chmod(0o755)
    torchrun = f"{sys.executable} -m torch.distributed.run --standalone --nproc-per-node 1"
    return [f"LINECLEAR={lc}", f"LAUNCH={rec} gpu", f"TRAIN_LAUNCH={rec} ddp {torchrun}", f"CPU_LAUNCH={rec} cpu"], log


def _jobs(text: str) -> list[tuple[str, str, list[str]]]:
    """(launcher tag, lineclear command, argv) of each logged job."""
    jobs = []
    for line in text.splitlines():
        tag, *argv = line.split()
        i = next(i for i, a in enumerate(argv) if a.endswith("/lineclear"))
        jobs.append((tag, argv[i + 2], argv))  # LINECLEAR -q COMMAND …
    return jobs


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
    launchers, log = _launchers(tmp_path)
    r = _make(out, *launchers)
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
                for level in ("image", "pixel"):
                    t = json.loads((out / "maps" / model / "A" / f"{cfg}-thresholds_{method}_{level}.json").read_text())
                    assert t["schema"] == "lineclear.thresholds/2" and (t["method"], t["level"]) == (method, level)
            m = json.loads((out / "eval" / model / "A" / cfg / "metrics.json").read_text())
            assert m["schema"] == "lineclear.metrics/1"
            assert m["config_name"] == cfg.upper().replace("-", "+")
            assert (out / "eval" / model / "A" / cfg / "report.html").is_file()
        # the thesis-style table parses: metrics as rows, configurations as columns
        table = (out / "tables" / f"{model}-A.md").read_text()
        rows = [line for line in table.splitlines() if line.startswith("|")]
        header = [c.strip() for c in rows[0].strip("|").split("|")]
        names = [r.strip("|").split("|")[0].strip() for r in rows[2:]]
        if model == "draem":  # the demo keeps DRAEM's epoch-2 checkpoint: scored under every configuration too
            assert header[1:] == ["PO+M+R", "PO+M+R@e2", "PRE+NM+NR", "PRE+NM+NR@e2"]
            assert names == ["AUROC", "PRO", "IoU", "AP", "ACC", "threshold", "checkpoint", "selected"]
            ck = rows[2 + names.index("checkpoint")]
            assert [c.strip() for c in ck.strip("|").split("|")][1:] == ["final", "epoch 2"] * 2
            picks = [c.strip() for c in rows[2 + names.index("selected")].strip("|").split("|")][1:]
            assert sorted(picks[:2]) in (["both", "–"], ["test labels", "validation"])
        else:
            assert header[1:] == ["PO+M+R", "PRE+NM+NR"]
            assert names == ["AUROC", "PRO", "IoU", "AP", "ACC", "threshold", "checkpoint"]
        assert (out / "tables" / f"{model}-A.html").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["grid"]) == set(MODELS.split())
    index = (out / "index.html").read_text()
    assert "eval/template/A/po-m-r/report.html" in index and (out / "compare" / "A.png").is_file()
    # every job went through its launcher: training and scoring through the GPU ones, DRAEM's via torchrun
    text = log.read_text()
    assert "UNLAUNCHED" not in text, text
    jobs = _jobs(text)
    trains = sorted((tag, argv[argv.index("--model") + 1]) for tag, cmd, argv in jobs if cmd == "train")
    assert trains == [("ddp", "draem"), ("gpu", "patchcore"), ("gpu", "template")]
    # 3 models x 2 configurations x 2 splits, and DRAEM's checkpoint under both configurations
    assert [tag for tag, cmd, _ in jobs if cmd == "score"] == ["gpu"] * 16
    assert {cmd for tag, cmd, _ in jobs if tag == "cpu"} == {"synth", "labels", "register", "mask", "calibrate",
                                                               "evaluate", "table"}
    # a second make has nothing to do
    q = _make(out, *launchers, question=True)
    assert q.returncode == 0, "a second make would rebuild something:\n" + _make(out, "-n").stdout[-2000:]
    before = log.read_text()
    again = _make(out, *launchers)
    assert again.returncode == 0 and log.read_text() == before, again.stdout[-2000:]
    # ... and a configuration added to CONFIGS, or a deleted result, is rebuilt without retraining
    (out / "eval" / "template" / "A" / "po-m-r" / "metrics.json").unlink()
    plan = _make(out, "-n", f"CONFIGS={CONFIGS} po-nm-r").stdout
    assert " train " not in plan, plan[-2000:]
    for model in MODELS.split():
        assert f"maps/{model}/A/po-nm-r-test.h5" in plan and f"--out {out}/eval/{model}/A/po-nm-r" in plan, plan[-2000:]
    assert f"--out {out}/eval/template/A/po-m-r" in plan, plan[-2000:]
    assert f"maps/draem/A/po-nm-r@e2-test.h5" in plan and "--checkpoint-epoch 2" in plan, plan[-2000:]
    # an interrupted training (a state, no model.pt) is resumed, not started again
    (out / "runs" / "draem" / "A" / "model.pt").unlink()
    train = [line for line in _make(out, "-n").stdout.replace("\\\n", " ").splitlines() if " train " in line]
    assert len(train) == 1 and "--model draem" in train[0] and "--resume" in train[0], train


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_full_demo_grid_eight_configurations_by_checkpoints(tmp_path: Path) -> None:
    """`make -C examples PRESET=demo` with every configuration (the default CONFIGS) on tiny data."""
    out = tmp_path / "out"
    r = _make(out, "MODELS=template draem", "CONFIGS=po-m-r po-nm-r po-m-nr po-nm-nr pre-m-r pre-nm-r pre-m-nr pre-nm-nr")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    labels = [c.upper().replace("-", "+") for c in "po-m-r po-nm-r po-m-nr po-nm-nr pre-m-r pre-nm-r pre-m-nr pre-nm-nr".split()]
    for model, cols in (("template", labels), ("draem", [x for c in labels for x in (c, f"{c}@e2")])):
        table = (out / "tables" / f"{model}-A.md").read_text()
        header = [c.strip() for c in next(x for x in table.splitlines() if x.startswith("| |")).strip("|").split("|")]
        assert header[1:] == cols
        for c in cols:
            m = json.loads((out / "eval" / model / "A" / c.lower().replace("+", "-").replace("@E", "@e")
                            / "metrics.json").read_text())
            assert m["config_name"] == c and m["summary"]["level"] in ("image", "pixel")
