"""Template model: zero on its own training images, high on a pasted object, misalignment, masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lineclear.errors import LineclearError
from lineclear.formats import MapsFile
from lineclear.models import get_model
from lineclear.models.base import resolve_config
from lineclear.training import TrainSession
from tests.conftest import run_cli

SIZE = (48, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scenes(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = SIZE
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    base = 0.5 + 0.25 * torch.sin(xx / 3.0) * torch.cos(yy / 5.0)
    base = torch.stack([base, 0.8 * base, 0.4 + 0.1 * torch.cos(yy / 4.0)])
    return torch.stack([(base + 0.01 * torch.randn(3, h, w, generator=g)).clamp(0, 1) for _ in range(n)])


def _fitted(images: torch.Tensor, valid=None, **overrides):
    entry = get_model("template")
    cfg = resolve_config(entry, "fast", {"image_size": SIZE, **overrides})
    model = entry.build(cfg, True)
    entry.train(model, TrainSession(images=images, config=cfg, device=torch.device("cpu"), valid=valid))
    return model.eval(), cfg


def test_zero_on_its_training_images_and_high_on_a_pasted_object():
    train = _scenes(8)
    model, _ = _fitted(train)
    with torch.no_grad():
        own = model(train)
        x = _scenes(2, seed=1)
        x[1, :, 10:20, 20:34] = torch.tensor([0.1, 0.9, 0.2]).view(3, 1, 1)
        out = model(x)
    assert own.score.abs().max() == 0  # every training pixel lies inside its own envelope
    assert out.score[1] > 10 * max(out.score[0].item(), 0.05)
    am = out.anomaly_map[1]
    assert am[10:20, 20:34].mean() > 10 * am[30:, :].mean() + 1e-6
    assert out.anomaly_map.shape == (2, *SIZE)


def test_tolerates_a_one_pixel_shift_thanks_to_the_neighbourhood():
    train = _scenes(6)
    strict, _ = _fitted(train, radius=0)
    tolerant, _ = _fitted(train, radius=1)
    with torch.no_grad():
        s0 = strict(torch.roll(_scenes(1, seed=3), 1, -1)).anomaly_map[:, :, 2:-2].amax()
        s1 = tolerant(torch.roll(_scenes(1, seed=3), 1, -1)).anomaly_map[:, :, 2:-2].amax()
    assert s1 < 0.25 * s0


def test_std_floor_keeps_flat_regions_finite():
    flat = torch.full((3, 3, *SIZE), 0.5)
    model, cfg = _fitted(flat)
    assert torch.allclose(model.scale, torch.full_like(model.scale, cfg.std_floor))
    x = torch.full((1, 3, *SIZE), 0.52)
    with torch.no_grad():
        s = model(x).score.item()
    assert s == pytest.approx(0.02 / cfg.std_floor, rel=0.05)  # one floor unit, not 1e6


def test_invalid_pixels_do_not_widen_the_envelope():
    train = _scenes(4)
    train[0, :, :, :16] = 0.0  # the black fill outside a registered frame
    valid = torch.ones(4, 1, *SIZE)
    valid[0, :, :, :16] = 0
    model, _ = _fitted(train, valid=valid)
    dark = _scenes(1, seed=5)
    dark[:, :, 10:20, 2:10] = 0.0
    with torch.no_grad():
        assert model(dark).anomaly_map[0, 10:20, 2:10].mean() > 1.0


def test_fewer_than_two_images_is_one_clear_error():
    with pytest.raises(LineclearError, match="at least 2 training images, got 1"):
        _fitted(_scenes(1))


def test_two_images_minus_validation_says_why(tmp_path: Path, capsys):
    """Regression: with 2 images in train/good the validation split left 1, and the error said
    'got 1: add images' to a user who had 2, without naming the split."""
    import numpy as np

    from lineclear.images import write_image

    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / "V" / "train" / "good" / f"t{i}.png", (rng.random((32, 48, 3)) * 255).astype(np.uint8))
    assert run_cli(["-q", "train", str(tmp_path / "V"), "--model", "template", "--preset", "demo",
                    "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "at least 2 training images, got 1 (train/good minus the images held out for validation)" in err
    assert "val/good" in err and "Traceback" not in err


def test_train_then_score_cli(tiny_view: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert run_cli(["-q", "train", str(tiny_view), "--model", "template", "--preset", "demo",
                    "--image-size", "32x48", "--out", str(run), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "template"
    out = tmp_path / "maps.h5"
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--out", str(out), "--device", "cpu"]) == 0
    with MapsFile(out) as f:
        assert len(f) == 4 and f.map_size == (32, 48) and f.attrs["model"] == "template"
        scores = dict(zip(f.image_ids, f.scores))
    assert min(scores["V/test/leaflet/000.png"], scores["V/test/leaflet/001.png"]) > 3 * max(
        scores["V/test/good/000.png"], scores["V/test/good/001.png"])
