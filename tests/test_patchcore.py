"""PatchCore: search oracles, bank round trip, masking, coreset, errors, train → score."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from lineclear.errors import LineclearError, UsageError
from lineclear.formats import MapsFile, load_checkpoint, save_checkpoint
from lineclear.models import get_model
from lineclear.models.base import resolve_config
from lineclear.models.patchcore import build, fit, greedy_coreset
from lineclear.models.patchcore.fit import valid_cells
from lineclear.models.patchcore.search import dense_bank, global_nn, positional_nn
from tests.conftest import run_cli

SIZE = (64, 96)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scenes(n: int, seed: int = 0, size=SIZE) -> torch.Tensor:
    """A fixed 'machine' (stripes and blobs) with small noise and brightness changes: (n,3,H,W)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    base = 0.45 + 0.2 * torch.sin(xx / 4.0) * torch.cos(yy / 6.0)
    base = torch.stack([base, base * 0.9, 0.3 + 0.2 * torch.cos(xx / 9.0)])
    out = []
    for _ in range(n):
        gain = 1 + 0.03 * torch.randn(1, generator=g)
        out.append((base * gain + 0.01 * torch.randn(3, h, w, generator=g)).clamp(0, 1))
    return torch.stack(out)


def _model(**overrides):
    cfg = resolve_config(get_model("patchcore"), "fast", {"image_size": SIZE, **overrides})
    return build(cfg, True).eval(), cfg


@pytest.fixture(scope="module")
def fitted():
    model, cfg = _model()
    info = fit(model, _scenes(4))
    return model, cfg, info


# ---------------------------------------------------------------- search oracles
def _brute(test: torch.Tensor, bank: torch.Tensor, pos: torch.Tensor, radius: int | None) -> torch.Tensor:
    """Independent oracle: explicit loops over test cells, torch.cdist, masks by position."""
    b, hg, wg, c = test.shape
    out = torch.empty(b, hg, wg)
    for i in range(hg):
        for j in range(wg):
            sel = torch.ones(len(bank), dtype=torch.bool)
            if radius is not None:
                sel = ((pos[:, 0] - i).abs() <= radius) & ((pos[:, 1] - j).abs() <= radius)
            d = torch.cdist(test[:, i, j].double(), bank[sel].double())
            out[:, i, j] = d.min(1).values.float() if sel.any() else float("inf")
    return out


def _random_bank(seed=0, hg=5, wg=7, n=3, c=6, drop=0.3):
    g = torch.Generator().manual_seed(seed)
    pos = torch.stack(torch.meshgrid(torch.arange(hg), torch.arange(wg), indexing="ij"), -1).reshape(-1, 2).repeat(n, 1)
    bank = torch.randn(len(pos), c, generator=g)
    keep = torch.rand(len(pos), generator=g) > drop  # uneven cells, as after a coreset
    return bank[keep], pos[keep], torch.randn(2, hg, wg, c, generator=g)


def test_position_radius_covering_the_grid_equals_global_search():
    bank, pos, test = _random_bank()
    dense = dense_bank(bank, pos, (5, 7))
    full = positional_nn(test, *dense, radius=7).sqrt()
    glob = global_nn(test.reshape(-1, 6), bank).sqrt().view(2, 5, 7)
    assert torch.allclose(full, glob, atol=1e-4)
    assert torch.allclose(glob, _brute(test, bank, pos, None), atol=1e-4)


@pytest.mark.parametrize("radius", [0, 1, 2, 6])
def test_positional_search_matches_brute_force(radius):
    bank, pos, test = _random_bank(seed=radius + 1)
    got = positional_nn(test, *dense_bank(bank, pos, (5, 7)), radius=radius).sqrt()
    want = _brute(test, bank, pos, radius)
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite)
    assert torch.allclose(got[finite], want[finite], atol=1e-4)


def test_global_search_in_small_blocks_equals_one_block():
    bank, _, test = _random_bank(c=16)
    t = test.reshape(-1, 16)
    assert torch.allclose(global_nn(t, bank, block_mb=1e-4), global_nn(t, bank), atol=1e-5)


def test_model_radius_none_and_whole_grid_agree(fitted):
    model, cfg, _ = fitted
    x = _scenes(2, seed=5)
    x[1, :, 20:34, 30:50] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    feats = model.embed(x)
    old = model.radius
    try:
        model.radius = None
        a = model.patch_distances(feats)
        model.radius = 100
        model.block_mb = 64.0
        b = model.patch_distances(feats)
        model._dense = None
        d2 = positional_nn(feats.permute(0, 2, 3, 1), *dense_bank(model.bank, model.bank_pos, tuple(model.grid.tolist())), 100)
        assert torch.allclose(a, b) and torch.allclose(a, d2.sqrt(), atol=1e-3)
    finally:
        model.radius = old


# ---------------------------------------------------------------- the model
def test_fit_and_score_find_a_pasted_object(fitted):
    model, cfg, info = fitted
    assert info["grid"] == [8, 12] and info["patches"] == info["kept"] == 4 * 8 * 12
    assert info["dims"] == 40 + 112  # lite0 stages of stride 8 and 16
    x = _scenes(2, seed=7)
    x[1, :, 20:34, 30:50] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    with torch.no_grad():
        out = model(x)
    assert out.anomaly_map.shape == (2, *SIZE) and out.score.shape == (2,)
    assert torch.allclose(out.score, out.anomaly_map.flatten(1).amax(1))
    assert out.score[1] > 2 * out.score[0]
    peak = np.unravel_index(int(out.anomaly_map[1].argmax()), SIZE)
    assert 12 <= peak[0] <= 42 and 22 <= peak[1] <= 58


def test_bank_round_trip_through_a_checkpoint(fitted, tmp_path):
    model, cfg, _ = fitted
    path = save_checkpoint(tmp_path / "model.pt", model.state_dict(), {"model": "patchcore", "config": cfg.to_dict()})
    sd, meta = load_checkpoint(path)
    assert sd["bank"].shape == (4 * 8 * 12, 152) and sd["bank_pos"].dtype == torch.int32
    fresh = get_model("patchcore").build(resolve_config(get_model("patchcore"), "fast", meta["config"]), False)
    assert fresh.bank.shape[0] == 0  # a different size before loading: the checkpoint decides
    fresh.load_state_dict(sd, strict=True)
    fresh.eval()
    x = _scenes(2, seed=3)
    with torch.no_grad():
        assert torch.equal(fresh(x).anomaly_map, model(x).anomaly_map)
    assert torch.equal(fresh.bank, model.bank) and torch.equal(fresh.mean_image, model.mean_image)


def test_invalid_registration_pixels_stay_out_of_the_bank():
    valid = torch.ones(3, 1, *SIZE)
    valid[:, :, :, :40] = 0  # left of x=40 came from outside the frame
    cells = valid_cells(valid, (8, 12), 3)
    # cells cover 8 px columns: 0..4 touch x<40 (cell 4 = 32..39), the 3x3 neighbourhood also drops 5
    assert not cells[:, :, :6].any() and cells[:, 1:-1, 6:].all()
    model, _ = _model()
    info = fit(model, _scenes(3), valid)
    assert info["invalid_patches"] > 0 and int(model.bank_pos[:, 1].min()) >= 6
    x = _scenes(1, seed=4)
    with torch.no_grad():  # left cells have no bank patch within the radius: global fallback, finite map
        assert torch.isfinite(model(x).anomaly_map).all()


def test_seam_patches_do_not_reach_the_map(fitted):
    """With the validity given, patches reaching over the seam have no weight in the map: whatever they
    hold, the map is the same; without it their distances are blurred into the inspected area."""
    model, cfg, _ = fitted
    valid = torch.ones(1, 1, *SIZE)
    valid[:, :, :, :40] = 0  # cells 0..5 of 12 columns reach outside the frame (see the test above)
    feats = model.embed(_scenes(1, seed=9))
    garbage = feats.clone()
    garbage[..., :6] += 50.0  # the seam patches only
    with torch.no_grad():
        a = model.map_from_features(feats, valid=valid)
        b = model.map_from_features(garbage, valid=valid)
        plain = model.map_from_features(garbage)
        whole = model.map_from_features(feats, valid=torch.ones_like(valid))
    inside = slice(56, None)  # pixels beside the cells that count (x >= 48), past the seam margin
    assert torch.allclose(a[..., inside], b[..., inside], atol=1e-5)
    assert float(b[..., inside].max()) < 0.5 * float(plain[..., inside].max())
    assert torch.equal(whole, model.map_from_features(feats))  # a wholly valid frame: the plain blur


def test_frame_pad_is_the_mirrored_scene_cut_back_to_the_frame():
    """frame_pad: the features of the frame are those of the scene mirrored past its edges (the network
    sees context there, not its zero padding), on the same grid as without it."""
    plain, _ = _model(frame_pad=0)
    padded, _ = _model(frame_pad=16)
    x = _scenes(2, seed=12)
    with torch.no_grad():
        got = padded.embed(x)
        big = plain.embed(torch.nn.functional.pad(x, (16, 16, 16, 16), mode="reflect"))
        zero = plain.embed(x)
    assert got.shape == zero.shape == (2, 152, 8, 12)
    assert torch.allclose(got, big[..., 2:-2, 2:-2], atol=1e-5)  # 16 px = 2 cells of the stride-8 grid
    assert not torch.allclose(got[..., 0, :], zero[..., 0, :], atol=1e-2)  # the edge row did change


@pytest.mark.parametrize("pad", [8, -16])
def test_frame_pad_must_fit_the_strides(pad):
    with pytest.raises(UsageError, match="frame_pad"):
        _model(frame_pad=pad)


def test_frame_pad_larger_than_the_image_is_cut_to_what_a_reflection_allows():
    big, _ = _model(frame_pad=96)
    fits, _ = _model(frame_pad=48)  # the largest multiple of 16 below the 64-px side
    x = _scenes(1, seed=13)
    with torch.no_grad():
        assert torch.equal(big.embed(x), fits.embed(x))


def test_greedy_coreset_covers_better_than_random():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 32, generator=g) * 10
    x = (centres[torch.randint(20, (2000,), generator=g)] + torch.randn(2000, 32, generator=g)).contiguous()
    idx = greedy_coreset(x, 20, proj_dim=16, seed=0)
    assert len(set(idx.tolist())) == 20
    assert torch.equal(idx, greedy_coreset(x, 20, proj_dim=16, seed=0))
    cover = torch.cdist(x, x[idx]).min(1).values.max()
    rand = torch.cdist(x, x[torch.randperm(2000, generator=g)[:20]]).min(1).values.max()
    assert cover < 0.5 * rand


def test_coreset_ratio_shrinks_the_bank():
    model, cfg = _model(coreset_ratio=0.25)
    info = fit(model, _scenes(3))
    assert info["kept"] == round(0.25 * info["patches"]) and model.bank.shape[0] == info["kept"]
    with torch.no_grad():
        assert torch.isfinite(model(_scenes(1, seed=2)).anomaly_map).all()


def test_fewer_than_two_images_is_one_clear_error():
    model, _ = _model()
    with pytest.raises(LineclearError, match="at least 2 training images, got 1"):
        fit(model, _scenes(1))


def test_bank_too_large_names_coreset_ratio():
    model, _ = _model(max_bank_mb=0.01)
    with pytest.raises(LineclearError, match=r"memory bank would need .* --coreset-ratio"):
        fit(model, _scenes(3))


def test_bad_settings_are_usage_errors():
    entry = get_model("patchcore")
    with pytest.raises(UsageError, match="position-radius"):
        resolve_config(entry, "fast", {"position_radius": "near"})
    with pytest.raises(UsageError, match="coreset-ratio"):
        resolve_config(entry, "fast", {"coreset_ratio": 0})
    assert resolve_config(entry, "paper").position_radius == "none"


def test_other_image_size_is_resized_with_a_note(fitted, caplog):
    model, _, _ = fitted
    model._warned_resize = False
    with caplog.at_level(logging.WARNING, logger="lineclear.patchcore"), torch.no_grad():
        out = model(_scenes(1, size=(48, 72)))
    assert out.anomaly_map.shape == (1, 48, 72) and "resized to the fitted 96x64" in caplog.text


def test_train_then_score_cli(tiny_view: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert run_cli(["-q", "train", str(tiny_view), "--model", "patchcore", "--preset", "demo",
                    "--image-size", "64x96", "--out", str(run), "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"] == "patchcore" and res["train_images"] == 5
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "fit" and log[0]["patches"] == 5 * 8 * 12
    out = tmp_path / "maps.h5"
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--out", str(out), "--device", "cpu"]) == 0
    with MapsFile(out) as f:
        assert len(f) == 4 and f.map_size == SIZE and f.attrs["model"] == "patchcore"
        scores = dict(zip(f.image_ids, f.scores))
    assert min(scores["V/test/leaflet/000.png"], scores["V/test/leaflet/001.png"]) > max(
        scores["V/test/good/000.png"], scores["V/test/good/001.png"])


def test_single_training_image_cli_fails_cleanly(tiny_view: Path, tmp_path: Path, capsys):
    for p in sorted((tiny_view / "train" / "good").glob("*.png"))[1:]:
        p.unlink()
    run = tmp_path / "run1"
    code = run_cli(["-q", "train", str(tiny_view), "--model", "patchcore", "--preset", "demo",
                    "--image-size", "64x96", "--val-fraction", "0", "--out", str(run), "--device", "cpu"])
    assert code == 1
    assert "at least 2 training images" in capsys.readouterr().err
    assert not (run / "model.pt").exists()
