"""DDAD training: checkpoint round trip, resume, intermediate checkpoints, CLI, real lite0 weights."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lineclear.formats import load_checkpoint
from lineclear.models import MODELS
from lineclear.models.base import config_from_dict, resolve_config
from lineclear.models.ddad.train import checkpoint_epochs
from lineclear.training import TrainSession
from tests.conftest import run_cli
from tests.test_ddad import tiny_cfg

ENTRY = MODELS["ddad"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cfg(**kw):
    return tiny_cfg(**{"epochs": 3, **kw})


def images(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(24), torch.arange(32), indexing="ij")
    base = 0.4 + 0.15 * torch.sin(xx / 3.0) * torch.cos(yy / 4.0)
    return (base.expand(n, 3, 24, 32) + 0.02 * torch.randn(n, 3, 24, 32, generator=g)).clamp(0, 1).float()


def fit(c, run_dir=None, resume=False, n=5):
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = ENTRY.build(c, True)
    s = TrainSession(images=images(n), config=c, device=torch.device("cpu"), run_dir=run_dir,
                     model_name="ddad", resume=resume)
    ENTRY.train(model, s)
    return model, s


def test_train_checkpoint_round_trip_with_fewer_images_than_batch(tmp_path):
    c = cfg(batch_size=8)  # 5 images < batch size: the reference would train on nothing
    model, s = fit(c, tmp_path)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    fresh = ENTRY.build(c, True).unet.state_dict()
    assert any(not torch.equal(before[k], fresh[k]) for k in before)  # the U-Net did learn
    path = s.save_checkpoint(model, "model.pt")
    sd, meta = load_checkpoint(path)
    c2 = config_from_dict(ENTRY, meta["config"])
    assert c2 == c
    loaded = ENTRY.build(c2, False)
    loaded.load_state_dict(sd)
    loaded.eval()
    model.eval()
    x = images(3, seed=5)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.score, b.score) and torch.equal(a.anomaly_map, b.anomaly_map)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert any(r.get("phase") == "unet" for r in log) and any(r.get("phase") == "domain_adaptation" for r in log)


def test_domain_adaptation_changes_the_extractor_and_can_be_switched_off():
    on, _ = fit(cfg(epochs=1))
    off, _ = fit(cfg(epochs=1, domain_adaptation=False))
    torch.manual_seed(0)
    pre = ENTRY.build(cfg(epochs=1), True).feature_extractor.state_dict()
    diff_on = sum(float((on.feature_extractor.state_dict()[k].float() - v.float()).abs().sum()) for k, v in pre.items())
    diff_off = sum(float((off.feature_extractor.state_dict()[k].float() - v.float()).abs().sum()) for k, v in pre.items())
    assert diff_on > 0 and diff_off == 0


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    full, _ = fit(cfg(epochs=4, domain_adaptation=False), tmp_path / "a")
    fit(cfg(epochs=2, domain_adaptation=False), tmp_path / "b")  # "interrupted" after 2 epochs
    resumed, _ = fit(cfg(epochs=4, domain_adaptation=False), tmp_path / "b", resume=True)
    for k, v in full.unet.state_dict().items():
        assert torch.allclose(v, resumed.unet.state_dict()[k], atol=1e-6), k


def test_intermediate_checkpoints(tmp_path):
    c = cfg(epochs=5, checkpoint_every=2, checkpoint_from=2)
    assert checkpoint_epochs(c) == [2, 4]
    assert checkpoint_epochs(resolve_config(ENTRY, "paper")) == [2000, 2250, 2500, 2750]
    model, _ = fit(c, tmp_path)
    for e in (2, 4):
        sd, meta = load_checkpoint(tmp_path / "checkpoints" / f"epoch_{e}.pt")
        assert meta["epoch"] == e and meta["domain_adapted"] is True
        assert any(k.startswith("feature_extractor.") for k in sd)


def test_lite0_real_weights_give_meaningful_distances():
    c = cfg(backbone_weights="auto", image_size=(64, 96))
    model = ENTRY.build(c, True).eval()
    assert model.feature_extractor.source != "random"
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(96), indexing="ij")
    img = (0.5 + 0.3 * torch.sin(xx / 4.0) * torch.cos(yy / 5.0)).expand(1, 3, 64, 96).clone()
    bad = img.clone()
    bad[:, :, 20:36, 30:50] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)  # a red object
    from lineclear.models.ddad.anomaly import anomaly_map

    with torch.no_grad():
        same = anomaly_map(img, img, model.features, c.v, c.blur_sigma)
        diff = anomaly_map(img, bad, model.features, c.v, c.blur_sigma)
    assert same.abs().max() < 1e-4
    peak = torch.nonzero(diff[0] == diff[0].max())[0]
    assert 14 <= peak[0] <= 42 and 24 <= peak[1] <= 56
    inside, outside = diff[0, 20:36, 30:50].mean(), diff[0, :, 70:].mean()
    assert inside > 3 * outside


def test_cli_t_prime_out_of_range_is_a_usage_error(tiny_view, tmp_path):
    out = tmp_path / "run"
    code = run_cli(["train", str(tiny_view), "--model", "ddad", "--preset", "demo", "--t-prime", "1001",
                    "--out", str(out)])
    assert code == 2
    assert not out.exists() or not any(out.iterdir())


def test_cli_train_then_score(tiny_view, tmp_path):
    run = tmp_path / "run"
    code = run_cli(["-q", "train", str(tiny_view), "--model", "ddad", "--preset", "demo", "--epochs", "2",
                    "--image-size", "32x48", "--backbone-weights", "none", "--t-prime", "100", "--skip", "50",
                    "--out", str(run)])
    assert code == 0
    cfgj = json.loads((run / "config.json").read_text())
    assert cfgj["config"]["t_prime"] == 100 and cfgj["config"]["skip"] == 50
    maps = tmp_path / "maps.h5"
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--out", str(maps)]) == 0
    with h5py.File(maps, "r") as f:
        m = f["maps"][...]
        s = f["scores"][...]
    assert m.shape == (4, 32, 48) and np.isfinite(m).all()
    assert np.allclose(s, m.reshape(4, -1).max(1), rtol=1e-5)
    # pre-masking through the CLI: zero outside the roi
    maps2 = tmp_path / "maps_pre.h5"
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--out", str(maps2), "--mask",
                    str(tiny_view / "roi.png"), "--mask-stage", "pre"]) == 0
    with h5py.File(maps2, "r") as f:
        mp = f["maps"][...]
    assert np.abs(mp[:, :, 40:]).max() == 0
    assert not np.allclose(mp[:, :, :40], m[:, :, :40])
