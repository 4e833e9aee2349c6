"""The ensemble model: members trained, normalised on validation images, fused; a model like any other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lineclear.formats import MapsFile, load_checkpoint
from lineclear.models import MODELS
from lineclear.models.ensemble import CANDIDATES, choose_fusion, synthetic_anomalies
from lineclear.scoring import load_model
from tests.conftest import run_cli
from tests.toy import toy_entry


@pytest.fixture
def toy_member():
    MODELS["toyens"] = toy_entry("toyens")
    yield "toyens"
    MODELS.pop("toyens", None)


def _train(view: Path, out: Path, *extra: str) -> int:
    return run_cli(["-q", "train", str(view), "--model", "ensemble", "--members", "template,toyens", "--preset", "demo",
                    "--image-size", "32x48", "--out", str(out), "--device", "cpu", "--val-fraction", "0.34", *extra])


def test_trains_scores_and_loads_from_a_weights_only_checkpoint(tiny_view: Path, tmp_path: Path, toy_member) -> None:
    run = tmp_path / "run"
    assert _train(tiny_view, run) == 0
    sd, meta = load_checkpoint(run / "model.pt")  # torch.load(weights_only=True) inside
    assert meta["model"] == "ensemble" and set(meta["config"]["member_configs"]) == {"template", "toyens"}
    info = meta["ensemble"]
    assert info["fusion"] in CANDIDATES and info["chosen_on"].startswith("validation")
    assert info["val_images"] == 2 and set(info["candidates"]) == set(CANDIDATES)
    assert any(k.startswith("members.template.") for k in sd) and any(k.startswith("members.toyens.") for k in sd)
    model, _, cfg = load_model(run / "model.pt")
    assert tuple(cfg.image_size) == (32, 48) and model.fusion == info["fusion"]

    # the validation statistics are each member's max / mean over the validation images' maps
    from lineclear.dataset import View
    from lineclear.training import load_view_images

    val = View(tiny_view, val_fraction=0.34, seed=0).val()
    x, _, _ = load_view_images(val, (32, 48))
    # each member at its own demo preset's size (template 192x288, the toy 16x24), its map back at 32x48
    assert model.member_size("template") == (192, 288) and model.member_size("toyens") == (16, 24)
    with torch.inference_mode():
        parts = list(model.member_maps(x))
        small = torch.nn.functional.interpolate(x, size=(16, 24), mode="bilinear", align_corners=False, antialias=True)
        direct = model.members["toyens"](small).anomaly_map[:, None]
        back = torch.nn.functional.interpolate(direct, size=(32, 48), mode="bilinear", align_corners=False)[:, 0]
        assert parts[1].shape == (2, 32, 48) and torch.allclose(parts[1], back, atol=1e-6)
        for k, p in enumerate(parts):
            assert model.val_max[k].item() == pytest.approx(max(p.max().item(), 1e-12), rel=1e-5)
            assert model.val_mean[k].item() == pytest.approx(max(p.mean().item(), 1e-12), rel=1e-5)
        # the fused map by hand, for every candidate
        for cand in CANDIDATES:
            norm, how = cand.split("-")
            stat = model.val_max if norm == "max" else model.val_mean
            z = torch.stack([p / stat[k] for k, p in enumerate(parts)])
            want = z.mean(0) if how == "mean" else z.amax(0)
            got = model.fuse(model.member_maps(x), cand)
            assert torch.allclose(got, want, atol=1e-6)
        out = model(x)
        assert torch.allclose(out.anomaly_map, model.fuse(model.member_maps(x)))
        assert torch.allclose(out.score, out.anomaly_map.flatten(1).amax(1))

    # score and calibrate like any model
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--split", "test", "--out", str(tmp_path / "t.h5")]) == 0
    with MapsFile(tmp_path / "t.h5") as f:
        assert f.attrs["model"] == "ensemble" and len(f.scores) == 4
        assert np.all(np.isfinite(f.scores))


def test_fixed_fusion_and_bad_members(tiny_view: Path, tmp_path: Path, toy_member) -> None:
    assert _train(tiny_view, tmp_path / "r", "--fusion", "mean-max") == 0
    _, meta = load_checkpoint(tmp_path / "r" / "model.pt")
    assert meta["ensemble"]["fusion"] == "mean-max" and meta["ensemble"]["chosen_on"] == "--fusion"
    base = ["-q", "train", str(tiny_view), "--model", "ensemble", "--out", str(tmp_path / "x"), "--device", "cpu"]
    assert run_cli([*base, "--members", "template"]) == 2
    assert run_cli([*base, "--members", "template,nosuch"]) == 2
    assert run_cli([*base, "--members", "template,template"]) == 2
    assert run_cli([*base, "--members", "template,toyens", "--fusion", "median"]) == 2
    assert run_cli([*base, "--members", "template,toyens", "--val-fraction", "0"]) == 1  # nothing to normalise on


def test_synthetic_anomalies_paste_one_rectangle_each() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((3, 3, 40, 60)).astype(np.float32))
    a, g = synthetic_anomalies(x, 2, seed=5)
    b, g2 = synthetic_anomalies(x, 2, seed=5)
    assert a.shape == (6, 3, 40, 60) and g.shape == (6, 40, 60) and torch.equal(a, b) and torch.equal(g, g2)
    for k in range(6):
        src = x[k // 2]
        changed = (a[k] != src).any(0)
        assert changed.any() and not changed[~g[k]].any()  # only inside the rectangle
        ys, xs = torch.nonzero(g[k], as_tuple=True)
        assert g[k].sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # a rectangle


def test_choose_fusion_takes_the_best_separating_candidate() -> None:
    from lineclear.models.ensemble import EnsembleConfig, EnsembleModel

    rng = np.random.default_rng(0)
    model = EnsembleModel(EnsembleConfig(members="a,b"))
    model.val_max.copy_(torch.tensor([1.0, 100.0]))
    model.val_mean.copy_(torch.tensor([0.5, 1.0]))
    normal = torch.from_numpy(rng.random((2, 4, 8, 8)).astype(np.float32)) * torch.tensor([1.0, 100.0]).view(2, 1, 1, 1)
    gt = torch.zeros(4, 8, 8, dtype=torch.bool)
    gt[:, 2:4, 2:4] = True
    synth = normal.clone()
    synth[0][gt] += 3.0  # only member a sees the anomalies
    best, figs = choose_fusion(model, normal, torch.ones(4, 8, 8, dtype=torch.bool), synth, gt, seed=0)
    for cand, f in figs.items():
        fn, fs = model.fuse(normal, cand), model.fuse(synth, cand)
        s = np.r_[fn.flatten(1).amax(1).numpy(), fs.flatten(1).amax(1).numpy()]
        assert f["image_auroc"] == pytest.approx(roc_auc_score(np.r_[np.zeros(4), np.ones(4)], s))
    assert (figs[best]["image_auroc"], figs[best]["pixel_auroc"]) == max(
        (f["image_auroc"], f["pixel_auroc"]) for f in figs.values())
    # normalised by the validation means, member b's huge scale drowns a's signal in the average
    assert figs["max-mean"]["pixel_auroc"] > figs["mean-mean"]["pixel_auroc"]


def test_training_shifts_by_default_only_when_every_member_takes_them(tmp_path: Path) -> None:
    from lineclear.cli.train import _shift_count

    class _View:  # a view with a registration reference
        def reference_file(self):
            return tmp_path / "reference.png"

    assert _shift_count("ensemble", _View(), None, ["patchcore", "template"]) == 2
    assert _shift_count("ensemble", _View(), None, ["draem", "ddad"]) == 0
    assert _shift_count("ensemble", _View(), 3, ["draem", "ddad"]) == 3
