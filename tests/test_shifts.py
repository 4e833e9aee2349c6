"""Camera shifts: the scene continued outside the frame, synthetic shifts for calibration and the plain-folder
chain. That a clear image shifted by a known homography scores like the unshifted one is tested for every
model in test_models_registry.py."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineclear.errors import UsageError
from lineclear.formats import MapsFile
from lineclear.formats.registration import MARKER_NAME, read_marker
from lineclear.images import read_raw, write_image
from lineclear.masking import fill_outside
from lineclear.register import Registrar
from lineclear.shifts import ShiftRange, camera_view, sample_window, shifted_copies
from tests.conftest import run_cli
from tests.shiftview import H, W, noisy, registered_view, shift_view, train_run  # noqa: F401 - fixtures
from tests.test_register import scene


# --- fill_outside ---------------------------------------------------------------------------------------


def test_fill_continues_the_reference_under_the_current_lighting():
    ref = scene(H, W, 3).astype(np.float32) / 255
    img = np.clip(ref * 0.8, 0, 1)  # the same scene, 20 % darker today
    valid = np.ones((H, W), bool)
    valid[:, :30] = False
    out = fill_outside(img * valid[..., None], valid, ref)
    assert np.array_equal(out[valid], img[valid])  # valid pixels untouched
    # outside: the reference's texture at today's brightness, not black and not the bright reference
    err = np.abs(out[~valid] - img[~valid]).mean()
    assert err < 0.02, err
    assert np.abs(ref[~valid] - img[~valid]).mean() > 3 * err


def test_fill_without_reference_inpaints_and_rejects_bad_shapes():
    img = np.full((H, W, 3), 0.5, np.float32)
    valid = np.ones((H, W), bool)
    valid[:10] = False
    out = fill_outside(np.where(valid[..., None], img, 0), valid)
    assert np.abs(out - 0.5).max() < 0.02
    with pytest.raises(UsageError, match="does not fit"):
        fill_outside(img, valid[:, :5])
    with pytest.raises(UsageError, match="does not fit"):
        fill_outside(img, valid, img[:5])


# --- synthetic shifts -----------------------------------------------------------------------------------


def test_camera_windows_are_small_nudges_and_reproducible():
    frame = np.array([[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]], float)
    for seed in range(20):
        q = sample_window(np.random.default_rng(seed), (H, W))
        # translation 3 % + rotation 1.5 deg + zoom 2 % + corner jitter 1 %: a few percent of the frame
        assert np.abs(q - frame).max() < 0.1 * W
        assert np.array_equal(q, sample_window(np.random.default_rng(seed), (H, W)))
    assert not np.array_equal(sample_window(np.random.default_rng(0), (H, W)),
                              sample_window(np.random.default_rng(1), (H, W)))
    with pytest.raises(UsageError, match="too large"):
        ShiftRange(translation=0.5)


def test_camera_view_is_the_window_resampled():
    img = scene(H, W, 1)
    q = sample_window(np.random.default_rng(4), (H, W))
    cam, T = camera_view(img, q)
    assert cam.shape == img.shape and cam.dtype == img.dtype
    # the camera's corners are the window's corners
    c = np.array([[0, 0, 1], [W - 1, 0, 1], [W - 1, H - 1, 1], [0, H - 1, 1]], float) @ T.T
    assert np.allclose(c[:, :2] / c[:, 2:], q, atol=1e-6)


def test_shifted_copies_register_back_with_a_seam_and_repeat_from_their_seed():
    ref = scene(H, W, 0)
    reg = Registrar(ref)
    flat = ShiftRange(parallax_px=0.0)
    imgs, valids, failed = shifted_copies(noisy(ref, 1), reg, 3, np.random.default_rng([7, 0]), limits=flat)
    assert failed == 0 and len(imgs) == 3
    for im, v in zip(imgs, valids):
        assert im.shape == ref.shape and v.shape == (H, W)
        assert 0.7 < v.mean() < 1.0  # the camera lost some of the frame: an invalid border
        inner = cv2.erode(v.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        assert np.abs(im[inner].astype(float) - ref[inner]).mean() < 6  # registered back onto the scene
    # the default adds parallax (a smooth displacement of up to 1 px no homography explains): the copies
    # still register, and what registration leaves behind is larger than for a flat scene
    deep, dv, failed = shifted_copies(noisy(ref, 1), reg, 3, np.random.default_rng([7, 0]))
    assert failed == 0 and len(deep) == 3
    res_flat = np.mean([np.abs(a.astype(float) - ref)[cv2.erode(v.astype(np.uint8), np.ones((7, 7))) > 0].mean()
                        for a, v in zip(imgs, valids)])
    res_deep = np.mean([np.abs(a.astype(float) - ref)[cv2.erode(v.astype(np.uint8), np.ones((7, 7))) > 0].mean()
                        for a, v in zip(deep, dv)])
    assert res_flat < res_deep < 3 * res_flat + 6
    imgs, valids = deep, dv
    again, valids2, _ = shifted_copies(noisy(ref, 1), reg, 3, np.random.default_rng([7, 0]))
    assert all(np.array_equal(a, b) for a, b in zip(imgs, again))
    assert all(np.array_equal(a, b) for a, b in zip(valids, valids2))


# --- the plain-folder chain (the view and its registration: tests/shiftview.py) --------------------------- -----------------------------------------------------------------------------


def test_plain_folder_chain_uses_its_validity_masks_and_matches_the_view_path(
        shift_view, registered_view, tmp_path_factory, monkeypatch, capsys):
    run = train_run(shift_view, tmp_path_factory.mktemp("run-template") / "run", "template")
    work = tmp_path_factory.mktemp("plain")
    monkeypatch.chdir(work)
    write_image(work / "ref.png", read_raw(shift_view / "reference.png"))
    for p in (shift_view / "test").rglob("*.png"):
        write_image(work / "shifted" / p.parent.name / p.name, read_raw(p))
    # the design card's chain: register --ref ref.png shifted/, then score the registered folder
    assert run_cli(["-q", "register", "--ref", "ref.png", "shifted/"]) == 0
    marker = read_marker(work / "shifted_registered" / MARKER_NAME)
    assert Path(marker["reference"]["path"]).name == "ref.png"
    assert run_cli(["-q", "score", str(run), "shifted_registered", "--out", "plain.h5", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "validity" not in err  # found its masks: no warning
    view_maps = tmp_path_factory.mktemp("viewmaps") / "v.h5"
    assert run_cli(["-q", "score", str(run), str(registered_view), "--out", str(view_maps), "--device", "cpu"]) == 0
    with MapsFile("plain.h5") as a, MapsFile(view_maps) as b:
        assert a.has_valid
        sa = {i.split("/")[-2] + "/" + i.split("/")[-1]: v for i, v in zip(a.image_ids, a.scores)}
        sb = {i.split("/")[-2] + "/" + i.split("/")[-1]: v for i, v in zip(b.image_ids, b.scores)}
        assert sa.keys() == sb.keys() and len(sa) == 3
        for k in sa:
            assert sa[k] == pytest.approx(sb[k], rel=1e-4), k


def test_registered_images_without_validity_masks_are_a_warning(shift_view, registered_view, tmp_path_factory,
                                                               capsys):
    run = train_run(shift_view, tmp_path_factory.mktemp("run-template") / "run", "template")
    bare = tmp_path_factory.mktemp("bare")
    nudged = registered_view / "test" / "good" / "nudged.png"
    write_image(bare / "nudged.png", read_raw(nudged))
    assert run_cli(["-q", "score", str(run), str(bare), "--out", str(bare / "m.h5"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "nudged.png" in err and "validity" in err


# --- calibration with shifts ----------------------------------------------------------------------------


def test_score_val_with_shifts_is_reproducible_and_counted(shift_view, tmp_path_factory, capsys):
    run = train_run(shift_view, tmp_path_factory.mktemp("run-template") / "run", "template")
    d = tmp_path_factory.mktemp("valshift")
    outs = []
    for name, seed, parallax in (("a", 3, "1"), ("b", 3, "1"), ("c", 4, "1"), ("d", 3, "0")):
        out = d / f"{name}.h5"
        assert run_cli(["-q", "score", str(run), str(shift_view), "--split", "val", "--shifts", "2",
                        "--shift-seed", str(seed), "--shift-parallax", parallax, "--out", str(out),
                        "--device", "cpu"]) == 0
        outs.append(out)
    with MapsFile(outs[3]) as flat, MapsFile(outs[0]) as a:
        assert flat.attrs["shift_parallax_px"] == 0 and a.attrs["shift_parallax_px"] == 1
        shifted = [k for k, i in enumerate(a.image_ids) if "#" in i]
        # parallax leaves residue registration cannot remove: the shifted copies score higher than flat ones
        assert np.mean(a.scores[shifted]) > np.mean(flat.scores[shifted])
    with MapsFile(outs[0]) as a, MapsFile(outs[1]) as b, MapsFile(outs[2]) as c:
        n_val = sum("#" not in i for i in a.image_ids)
        assert n_val >= 1 and len(a) == 3 * n_val  # each normal image and its two shifted copies
        assert sum(i.endswith("#shift1") for i in a.image_ids) == n_val
        assert a.attrs["shifts"] == 2 and a.attrs["shift_seed"] == 3
        ma, mb, mc = (np.stack([f.map(i) for i in range(len(f))]) for f in (a, b, c))
        assert a.image_ids == b.image_ids and np.array_equal(ma, mb)
        assert not np.array_equal(ma, mc)  # another seed, other shifts
        assert a.has_valid
    thr = d / "thr.json"
    assert run_cli(["calibrate", str(outs[0]), "--out", str(thr)]) == 0
    doc = json.loads(thr.read_text())
    assert doc["source"]["shifts"] == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{3 * n_val} normal images" in err and f"{2 * n_val} synthetic camera shifts" in err
