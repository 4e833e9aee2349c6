"""``lineclear register``: outputs, report, view layout, ground-truth masks, failures, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_register import scene, shift, shifted

from lineclear.dataset import valid_path_for
from lineclear.formats import read_mask, write_mask
from lineclear.formats.registration import read_report
from lineclear.images import read_raw, write_image
from lineclear.register import corner_error

H, W = 256, 384


@pytest.fixture
def shifted_folder(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """tmp/ref.png and tmp/shifted/{a,b}/x.png (two shifted, one flat gray), with the true transforms."""
    ref = scene(H, W, 0)
    write_image(tmp_path / "ref.png", ref)
    truth = {}
    for i, sub in ((1, "a"), (2, "b")):
        Hs = shift(H, W, i)
        write_image(tmp_path / "shifted" / sub / f"img{i}.png", shifted(ref, Hs, i))
        truth[f"{sub}/img{i}.png"] = np.linalg.inv(Hs)
    write_image(tmp_path / "shifted" / "b" / "flat.png", np.full((H, W, 3), 120, np.uint8))
    return tmp_path / "ref.png", tmp_path / "shifted", truth


def test_register_folder_exactly_as_in_the_issue(shifted_folder, monkeypatch, capsys):
    ref, folder, truth = shifted_folder
    monkeypatch.chdir(folder.parent)
    # `lineclear register --ref ref.png shifted/`
    assert run_cli(["register", "--ref", "ref.png", "shifted/", "--report", "report.json"]) == 0
    out = folder.parent / "shifted_registered"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a/img1.png", "b/flat.png", "b/img2.png"]
    valid_dir = folder.parent / "shifted_registered_valid"
    assert (valid_dir / "a" / "img1_valid.png").is_file()
    doc = read_report("report.json")
    assert doc["summary"] == {**doc["summary"], "images": 3, "registered": 2, "failed": 1}
    by_name = {Path(e["input"]).relative_to("shifted").as_posix(): e for e in doc["images"]}
    for rel, T_true in truth.items():
        e = by_name[rel]
        assert e["status"] == "registered" and e["reason"] is None
        assert corner_error(np.array(e["transform"]), T_true, (H, W)).max() < 0.2
        for key in ("matches", "inliers", "inlier_ratio", "reprojection_rmse", "max_corner_shift_px", "scale",
                    "shear", "rotation_deg", "perspective"):
            assert e["qc"][key] is not None
        img = read_raw(e["output"])
        assert img.shape == (H, W, 3)
        valid = read_mask(e["valid"])
        assert 0.8 < valid.mean() < 1.0  # shifted: a border came from outside the frame
        import cv2

        near = cv2.dilate(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # the conservative strip
        assert img[~near].max() == 0
    flat = by_name["b/flat.png"]
    assert flat["status"] == "failed" and "features" in flat["reason"]
    assert np.array_equal(read_raw(flat["output"]), read_raw(flat["input"]))  # passed through unchanged
    assert read_mask(flat["valid"]).all()
    assert np.array_equal(np.array(flat["transform"]), np.eye(3))
    assert doc["config"]["limits"]["min_inliers"] == 20
    cap = capsys.readouterr()
    assert cap.out.strip() == "shifted_registered"  # stdout: where the results went
    err = cap.err
    assert "FAILED" in err and "flat.png" in err and "passed through unchanged" in err


def test_strict_exits_1_and_still_reports(shifted_folder, tmp_path, capsys):
    ref, folder, _ = shifted_folder
    out, report = tmp_path / "o", tmp_path / "r.json"
    code = run_cli(["-q", "register", "--ref", str(ref), str(folder), "--out", str(out), "--report", str(report),
                    "--strict", "--jobs", "1"])
    assert code == 1
    assert "1 of 3 image(s) failed to register (--strict)" in capsys.readouterr().err
    assert read_report(report)["summary"]["failed"] == 1


def test_every_registration_option_reaches_the_recorded_settings(shifted_folder, tmp_path):
    ref, folder, _ = shifted_folder
    report = tmp_path / "r.json"
    assert run_cli(["-q", "register", "--ref", str(ref), str(folder), "--out", str(tmp_path / "o"), "--report",
                    str(report), "--clahe", "0", "--features", "800", "--detect-size", "512", "--model", "affine",
                    "--refine", "ecc", "--max-rmse", "3", "--jobs", "1"]) == 0
    cfg = read_report(report)["config"]
    assert (cfg["detect_clahe"], cfg["n_features"], cfg["detect_max_side"], cfg["model"], cfg["refine"]) == (
        0.0, 800, 512, "affine", "ecc")
    assert cfg["limits"]["max_rmse_px"] == 3.0


def test_masks_warped_with_the_same_transform(shifted_folder, tmp_path):
    ref, folder, truth = shifted_folder
    gt = tmp_path / "gt"
    m_ref = np.zeros((H, W), bool)
    m_ref[60:120, 100:220] = True
    import cv2

    T_true = truth["a/img1.png"]
    m_img = cv2.warpPerspective(m_ref.astype(np.uint8), np.linalg.inv(T_true), (W, H), flags=cv2.INTER_NEAREST) > 0
    write_mask(gt / "a" / "img1_mask.png", m_img)
    out = tmp_path / "reg"
    assert run_cli(["-q", "register", "--ref", str(ref), str(folder), "--out", str(out), "--masks", str(gt),
                    "--masks-out", str(tmp_path / "gt_reg"), "--report", str(tmp_path / "r.json"),
                    "--valid-out", str(tmp_path / "v")]) == 0
    raw = read_raw(tmp_path / "gt_reg" / "a" / "img1_mask.png")
    assert set(np.unique(raw)) <= {0, 255}  # still binary
    warped = raw > 0
    assert (warped & m_ref).sum() / (warped | m_ref).sum() > 0.95  # aligned with the reference
    doc = read_report(tmp_path / "r.json")
    assert doc["summary"]["masks_warped"] == 1
    assert (tmp_path / "v" / "a" / "img1_valid.png").is_file()


def test_register_view_keeps_the_layout(tmp_path):
    ref = scene(H, W, 0)
    view = tmp_path / "data" / "A"
    write_image(view / "reference.png", ref)
    write_image(view / "train" / "good" / "t0.png", shifted(ref, np.eye(3), 5))
    Hs = shift(H, W, 3)
    write_image(view / "test" / "good" / "shift_000.png", shifted(ref, Hs, 3))
    Hl = shift(H, W, 4)
    img = shifted(ref, Hl, 4)
    m = np.zeros((H, W), bool)
    m[100:140, 150:200] = True
    img[m] = 255
    write_image(view / "test" / "leaflet" / "l0.png", img)
    write_mask(view / "ground_truth" / "leaflet" / "l0_mask.png", m)
    write_mask(view / "roi.png", np.ones((H, W), bool))
    (view / "shifts.json").write_text("{}")
    out = tmp_path / "data" / "A_reg"
    assert run_cli(["-q", "register", str(view), "--out", str(out), "--report", str(tmp_path / "r.json")]) == 0
    for rel in ("train/good/t0.png", "test/good/shift_000.png", "test/leaflet/l0.png", "reference.png", "roi.png",
                "ground_truth/leaflet/l0_mask.png", "valid/test/good/shift_000_valid.png",
                "valid/train/good/t0_valid.png"):
        assert (out / rel).is_file(), rel
    assert not (out / "shifts.json").exists()
    assert np.array_equal(read_raw(out / "reference.png"), ref)
    # the scoring stage finds the validity masks through the dataset convention
    assert valid_path_for(out / "test" / "good" / "shift_000.png", out) == out / "valid/test/good/shift_000_valid.png"
    assert read_mask(out / "valid/train/good/t0_valid.png").mean() > 0.99  # unshifted: (almost) all valid
    assert read_mask(out / "valid/test/good/shift_000_valid.png").mean() < 0.99
    # the ground truth of a shifted anomalous image is warped with the image's transform
    doc = read_report(tmp_path / "r.json")
    e = next(e for e in doc["images"] if e["input"].endswith("l0.png"))
    assert e["mask_out"].endswith("ground_truth/leaflet/l0_mask.png")
    import cv2

    expect = cv2.warpPerspective(m.astype(np.uint8), np.linalg.inv(Hl), (W, H), flags=cv2.INTER_NEAREST) > 0
    got = read_mask(out / "ground_truth/leaflet/l0_mask.png")
    assert (got & expect).sum() / (got | expect).sum() > 0.9


def test_other_size_is_warped_to_the_reference_size(tmp_path, capsys):
    import cv2

    ref = scene(H, W, 0)
    write_image(tmp_path / "ref.png", ref)
    small = cv2.resize(shifted(ref, shift(H, W, 6), 6), (W // 2 * 1 + 96, H // 2 + 64))
    write_image(tmp_path / "in" / "s.png", small)
    assert run_cli(["register", "--ref", str(tmp_path / "ref.png"), str(tmp_path / "in" / "s.png"),
                    "--report", str(tmp_path / "r.json")]) == 0
    out = tmp_path / "in_registered" / "s.png"
    assert read_raw(out).shape == (H, W, 3)
    assert "another size than the reference" in capsys.readouterr().err
    e = read_report(tmp_path / "r.json")["images"][0]
    assert e["resized"] and e["status"] == "registered"


def test_bad_input(tmp_path, shifted_folder, capsys):
    ref, folder, _ = shifted_folder
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(["register", "--ref", str(tmp_path / "nope.png"), str(folder)]) == 1
    assert "nope.png: reference image not found" in capsys.readouterr().err
    assert run_cli(["register", "--ref", str(ref), str(empty)]) == 1
    assert "no images" in capsys.readouterr().err
    assert run_cli(["register", "--ref", str(ref), str(tmp_path / "missing")]) == 1
    assert run_cli(["register", str(folder)]) == 2  # --ref needed for a plain folder
    assert run_cli(["register", "--ref", str(ref), str(folder), "--masks", str(folder)]) == 2
    assert run_cli(["register", "--ref", str(ref), str(folder), "--model", "spline"]) == 2
    assert run_cli(["register", "--ref", str(ref), str(folder), "--out", str(folder / "a")]) == 2  # inside input
    # a corrupt image: one line, nothing written
    bad = tmp_path / "bad"
    write_image(bad / "ok.png", scene(H, W, 0))
    (bad / "broken.png").write_bytes(b"\x89PNG not really")
    capsys.readouterr()
    assert run_cli(["register", "--ref", str(ref), str(bad), "--out", str(tmp_path / "bad_out")]) == 1
    assert "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "bad_out").exists()
    # an existing output is refused before anything is written
    out = tmp_path / "o2"
    write_image(out / "a" / "img1.png", np.zeros((4, 4), np.uint8))
    assert run_cli(["register", "--ref", str(ref), str(folder), "--out", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert not (out / "b").exists()
    assert run_cli(["-q", "register", "--ref", str(ref), str(folder), "--out", str(out), "--overwrite"]) == 0
    assert read_raw(out / "a" / "img1.png").shape == (H, W, 3)


def test_json_summary(shifted_folder, tmp_path, capsys):
    import json

    ref, folder, _ = shifted_folder
    capsys.readouterr()
    assert run_cli(["-q", "register", "--ref", str(ref), str(folder), "--out", str(tmp_path / "j"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["registered"] == 2 and doc["failed"][0]["input"].endswith("flat.png")


@pytest.mark.slow
def test_synth_view_end_to_end(tmp_path):
    """On a synthetic view: shifts recovered against shifts.json; its VIA ignore regions give exactly roi.png."""
    from lineclear.formats.synth import read_shifts
    from lineclear.synth import generate

    generate(tmp_path / "syn", views=["A"], size=(384, 256), n_train=1, n_good=0, n_shifted=2, n_anomalous=4)
    view = tmp_path / "syn" / "A"
    out = tmp_path / "syn" / "A_registered"
    assert run_cli(["-q", "register", str(view), "--report", str(tmp_path / "r.json")]) == 0
    doc = read_report(tmp_path / "r.json")
    assert doc["summary"]["failed"] == 0
    truth = {it["image"]: np.linalg.inv(it["H"]) for it in read_shifts(view / "shifts.json")["images"]}
    shifted_n = 0
    for e in doc["images"]:
        rel = Path(e["input"]).relative_to(view).as_posix()
        err = corner_error(np.array(e["transform"]), truth[rel], (256, 384))
        assert err.mean() < 0.5, (rel, err)
        shifted_n += e["qc"]["max_corner_shift_px"] > 2
    assert shifted_n >= 2
    for gt in (out / "ground_truth").rglob("*_mask.png"):
        assert set(np.unique(read_raw(gt))) <= {0, 255}
    roi = tmp_path / "roi.png"
    assert run_cli(["mask", "--ignore", str(view / "ignore_regions_via.csv"), "--ref", str(view / "reference.png"),
                    "--out", str(roi)]) == 0
    assert np.array_equal(read_mask(roi), read_mask(view / "roi.png"))


def test_mask_of_another_shape_is_refused_before_writing(shifted_folder, tmp_path, capsys):
    """Regression: a ground-truth mask of another aspect than its image was stretched and warped silently."""
    ref, folder, _ = shifted_folder
    gt = tmp_path / "gt"
    write_mask(gt / "a" / "img1_mask.png", np.ones((H // 2, W // 3), bool))
    out = tmp_path / "reg"
    assert run_cli(["-q", "register", "--ref", str(ref), str(folder), "--out", str(out), "--masks", str(gt),
                    "--masks-out", str(tmp_path / "gt_reg")]) == 1
    err = capsys.readouterr().err
    assert f"img1_mask.png: mask is {W // 3}x{H // 2} but its image" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "gt_reg").exists()
    # the same shape at half the resolution is still accepted (resized, nearest)
    write_mask(gt / "a" / "img1_mask.png", np.ones((H // 2, W // 2), bool), overwrite=True)
    assert run_cli(["-q", "register", "--ref", str(ref), str(folder), "--out", str(out), "--masks", str(gt),
                    "--masks-out", str(tmp_path / "gt_reg")]) == 0
