"""DDP training: 2 processes on the CPU (gloo, loopback) against 1 process with the same global batch.

What "the same" can mean, measured on the development machine (the tolerances leave a margin of 10-100x):

* DRAEM in float64: the 2-process run is the 1-process run. Losses agree to 6e-9 over 4 steps, the
  weights to 2e-6 of the distance they moved, the outputs to 6e-9: the sharded synthesis, the
  synchronised BatchNorm and the loss scaling compute what one process computes.
* DRAEM in float32 cannot agree beyond the first step. Its gradient changes by 10-15 % under any
  change in the order of floating-point sums -- one process with 2 threads instead of 1, or with
  channels-last input, differs from itself as much as 2 processes differ from 1; in float64 it does
  not. The likely cause: max pooling and ReLU route gradients by comparisons that rounding flips
  (with average pooling in place of max pooling the change falls to 3 %), and Adam, dividing by
  √v, moves near-zero-gradient weights by up to the learning rate either way. Measured: first-step losses agree to 3e-6 (the
  focal term to 1.4e-5: same images, same anomalies, same BatchNorm statistics); after 4 steps the
  loss differs by 0.6 % and the L2 term by 5 %.
* DDAD (GroupNorm, no BatchNorm), float32: every step's loss agrees to 2e-7, the trained U-Net's
  output to 1.1e-4. Its weights differ more: a bias feeding a one-channel GroupNorm group has a true
  gradient of 0, so Adam steps it by rounding noise; it changes nothing the network computes, hence
  the comparison of outputs. Through the CLI (demo preset, learning rate 2e-3, 4 epochs): loss < 1e-5,
  U-Net output 1e-3, domain-adapted features 5e-4; resumed with 1 process to epoch 8: loss 3.3e-5,
  U-Net output 3.3e-3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lineclear import distributed as ddp
from lineclear.formats import load_checkpoint
from lineclear.models import MODELS
from lineclear.models.base import config_from_dict
from tests import ddp_worker
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), 1e-30)


def rel_t(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / a.double().norm())


# -- the parts -----------------------------------------------------------------------------------

def test_shards_cover_each_batch_in_order():
    for total in (1, 2, 5, 8):
        for size in (1, 2, 3):
            parts = [ddp.World(r, size).shard(total) for r in range(size)]
            assert [i for p in parts for i in range(p.start, p.stop)] == list(range(total))
            lengths = [p.stop - p.start for p in parts]
            assert max(lengths) - min(lengths) <= 1
            # DDP averages the ranks' gradients: the scaled means of the shares average to the batch's mean
            values = torch.arange(total, dtype=torch.float64) ** 2
            scaled = [ddp.World(r, size).loss_scale(len(values[p]), total) * values[p].mean()
                      for r, p in enumerate(parts) if p.stop > p.start]
            assert float(sum(scaled)) / size == pytest.approx(float(values.mean()))
    assert ddp.SINGLE.loss_scale(3, 4) == 1.0


def test_a_shard_of_a_draem_batch_is_that_part_of_the_whole_batch():
    from lineclear.models.draem import DraemConfig
    from lineclear.models.draem.train import AnomalySynthesizer, make_batch, make_texture_source, sample_rng

    cfg = DraemConfig(image_size=(32, 64), p_none=0.2, p_perlin=0.4, p_cutout=0.4, rotate=True)
    synth = AnomalySynthesizer(cfg, make_texture_source(None))
    imgs = ddp_worker.images(5, 32, 64).permute(0, 2, 3, 1).contiguous().numpy()
    idx = [3, 1, 4, 0]
    whole = make_batch(synth, imgs, None, idx, [sample_rng(0, 2, 1, j) for j in range(4)], True)
    part = make_batch(synth, imgs, None, idx[2:], [sample_rng(0, 2, 1, j) for j in range(2, 4)], True)
    for w, p in zip(whole, part):
        assert torch.equal(w[2:], p)


def test_without_option():
    argv = ["-q", "train", "v", "--distributed", "2", "--out", "r", "--distributed=3"]
    assert ddp.without_option(argv, "--distributed") == ["-q", "train", "v", "--out", "r"]


def test_train_distributed_checks_then_runs_torchrun(tiny_view, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ddp.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "run"
    assert run_cli(["-q", "train", str(tiny_view), "--model", "draem", "--preset", "demo", "--device", "cpu",
                    "--distributed", "2", "--out", str(out)]) == 0
    (cmd,) = calls
    assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert cmd[6:] == ["lineclear", "-q", "train", str(tiny_view), "--model", "draem", "--preset", "demo",
                       "--device", "cpu", "--out", str(out)]
    assert not out.exists()  # the workers' rank 0 makes it
    # what the launcher can refuse, it refuses before starting anything
    (out / "x").mkdir(parents=True)
    assert run_cli(["-q", "train", str(tiny_view), "--model", "draem", "--distributed", "2", "--out", str(out)]) == 1
    assert run_cli(["-q", "train", str(tiny_view), "--model", "template", "--distributed", "2",
                    "--out", str(tmp_path / "t")]) == 2
    assert len(calls) == 1


# -- 2 processes against 1 -----------------------------------------------------------------------

def _trained_ddad(run_dir: Path):
    sd, meta = load_checkpoint(run_dir / "model.pt")
    entry = MODELS["ddad"]
    model = entry.build(config_from_dict(entry, meta["config"]), False)
    model.load_state_dict(sd)
    return model.eval(), torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))


def _unet_output(run_dir: Path) -> torch.Tensor:
    model, x = _trained_ddad(run_dir)
    with torch.no_grad():
        return model.unet(x * 2 - 1, torch.tensor([10, 500]))


def _features(run_dir: Path) -> torch.Tensor:
    model, x = _trained_ddad(run_dir)
    with torch.no_grad():
        return torch.cat([f.flatten() for f in model.features(x)])


def _final_loss(run_dir: Path) -> float:
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [r for r in log if r.get("phase") == "unet"][-1]["loss"]


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_processes_train_as_one_process(tiny_view, tmp_path):
    two_pt, work = tmp_path / "two.pt", tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(ROOT / "tests" / "ddp_worker.py"), str(two_pt), str(tiny_view), str(work)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the one-process side while the two processes start
        one = ddp_worker.run_all()
        cli = [str(tiny_view), *ddp_worker.CLI_DDAD]
        assert run_cli(["-q", "train", *cli, "--epochs", "4", "--out", str(tmp_path / "one4")]) == 0
        assert run_cli(["-q", "train", *cli, "--epochs", "8", "--out", str(tmp_path / "one8")]) == 0
    finally:
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
    two = torch.load(two_pt, weights_only=True)

    # DDAD, float32: the same losses at every step; the same network
    for a, b in zip(one["ddad"]["steps"], two["ddad"]["steps"], strict=True):
        assert rel(a["loss"], b["loss"]) < 1e-5
    assert rel_t(one["ddad"]["output"], two["ddad"]["output"]) < 1e-3

    # DRAEM, float64: the same run
    d1, d2 = one["draem64"], two["draem64"]
    for a, b in zip(d1["steps"], d2["steps"], strict=True):
        assert all(rel(a[k], b[k]) < 1e-6 for k in ("loss", "l2", "ssim", "focal")), (a, b)
    keys = [k for k, v in d1["state"].items() if v.dtype.is_floating_point and "running" not in k]
    start = ddp_worker.train("draem", ddp.SINGLE, torch.float64, epochs=0)["state"]
    moved = torch.cat([(d1["state"][k] - start[k]).ravel() for k in keys]).norm()
    apart = torch.cat([(d1["state"][k] - d2["state"][k]).ravel() for k in keys]).norm()
    assert float(apart / moved) < 1e-4
    assert rel_t(d1["output"], d2["output"]) < 1e-6

    # DRAEM, float32: the first step is the same step; later ones drift with rounding (module docstring)
    f1, f2 = one["draem"]["steps"], two["draem"]["steps"]
    assert all(rel(f1[0][k], f2[0][k]) < 1e-4 for k in ("loss", "l2", "ssim", "focal"))
    assert all(rel(a["loss"], b["loss"]) < 0.05 for a, b in zip(f1, f2, strict=True))

    # the CLI under torchrun: a refused --out is reported once and ends both ranks with exit 1
    assert [(work / f"codes-{r}.txt").read_text().split() for r in (0, 1)] == [["1", "0"], ["1", "0"]]
    assert stderr.count("not a lineclear run directory") == 1, stderr[-3000:]
    assert sorted(p.name for p in (work / "foreign").iterdir()) == ["notes.txt"]
    run = work / "run"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["backend"] == "gloo" and cfg["config"]["batch_size"] == 8
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.pt", "train_log.jsonl", "train_state.pt"]
    assert rel(_final_loss(tmp_path / "one4"), _final_loss(run)) < 1e-5
    assert rel_t(_unet_output(tmp_path / "one4"), _unet_output(run)) < 1e-2
    assert rel_t(_features(tmp_path / "one4"), _features(run)) < 1e-2  # domain adaptation, on rank 0 alone

    # --resume with 1 process continues the 2-process run to where a 1-process run ends
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    assert run_cli(["-q", "train", *cli, "--epochs", "8", "--resume", "--out", str(resumed)]) == 0
    log = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert {"event": "world_size_changed", "saved_with": 2, "resumed_with": 1} in log
    assert json.loads((resumed / "config.json").read_text())["world_size"] == 1
    assert rel(_final_loss(tmp_path / "one8"), _final_loss(resumed)) < 1e-3
    assert rel_t(_unet_output(tmp_path / "one8"), _unet_output(resumed)) < 3e-2


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_train_distributed_2_end_to_end(tiny_view, tmp_path):
    """``lineclear train --distributed 2`` for real: it starts torchrun, rank 0 writes one result."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("WORLD_SIZE", None)
    r = subprocess.run([sys.executable, "-m", "lineclear", "-q", "train", str(tiny_view), "--model", "draem",
                        "--preset", "demo", "--image-size", "32x64", "--epochs", "2", "--device", "cpu",
                        "--distributed", "2", "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["checkpoint"] == str(out / "model.pt")  # one result: rank 0's
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["world_size"], cfg["backend"]) == (2, "gloo")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in log] == [1, 2]
    sd, meta = load_checkpoint(out / "model.pt")
    assert meta["model"] == "draem" and not any("sync" in k for k in sd)
