"""``lineclear synth``: layout, determinism, masks == labels(VIA CSV), roi == ignore CSV, true shifts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineclear.dataset import View
from lineclear.errors import OutputExistsError, UsageError
from lineclear.formats.synth import read_shifts
from lineclear.formats.via import read_via
from lineclear.synth import KINDS, VIEWS, generate
from tests.conftest import run_cli

SIZE = (192, 128)
COUNTS = dict(n_train=4, n_good=1, n_shifted=2, n_anomalous=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, size=SIZE, seed=3, workers=1, **COUNTS)
    return root


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def gray(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_layout_of_every_view(data):
    for v in VIEWS:
        d = data / v
        assert len(list((d / "train" / "good").glob("*.png"))) == COUNTS["n_train"]
        assert not (d / "val").exists()
        good = sorted(p.name for p in (d / "test" / "good").glob("*.png"))
        assert good == ["good_000.png", "shift_000.png", "shift_001.png"]
        assert sorted(p.name for p in (d / "test").iterdir()) == sorted([*KINDS, "good"])
        for kind in KINDS:
            imgs = sorted((d / "test" / kind).glob("*.png"))
            assert len(imgs) == COUNTS["n_anomalous"] // 4
            for img in imgs:
                mask = gray(d / "ground_truth" / kind / f"{img.stem}_mask.png")
                assert mask.dtype == np.uint8 and mask.shape == (SIZE[1], SIZE[0])
                assert set(np.unique(mask)) == {0, 255}
        ref = gray(d / "reference.png")
        assert ref.shape == (SIZE[1], SIZE[0], 3) and ref.dtype == np.uint8
        roi = gray(d / "roi.png")
        assert roi.shape == (SIZE[1], SIZE[0]) and set(np.unique(roi)) == {0, 255}
        assert 0.4 < (roi > 0).mean() < 0.95  # something is masked, most is inspected
        view = View(d)
        assert len(view.train()) + len(view.val()) == COUNTS["n_train"] and len(view.val()) == 1
        assert view.reference == d / "reference.png" and view.roi == d / "roi.png"
        assert all(view.gt_path(s) is not None for s in view.test() if s.label == 1)


def test_masks_equal_labels_of_the_via_csv(data, tmp_path):
    for v in VIEWS:
        out = tmp_path / v
        assert run_cli(["labels", str(data / v / "annotations_via.csv"), "--images", str(data / v),
                        "--out", str(out)]) == 0
        made = sorted(out.glob("*_mask.png"))
        assert len(made) == COUNTS["n_good"] + COUNTS["n_shifted"] + COUNTS["n_anomalous"]
        for m in made:
            stem = m.name[: -len("_mask.png")]
            kind = stem.rsplit("_", 1)[0]
            if kind in ("good", "shift"):
                assert not gray(m).any()
            else:
                assert (gray(m) == gray(data / v / "ground_truth" / kind / m.name)).all(), m.name


def test_csv_is_via2_with_empty_rows_and_all_shapes(data):
    shapes, kinds = set(), set()
    for v in VIEWS:
        text = (data / v / "annotations_via.csv").read_text()
        assert text.startswith(
            "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes\n")
        assert 'good_000.png,' in text and ',0,0,"{}","{}"' in text
        paths = {p.name: p for p in (data / v / "test").rglob("*.png")}
        anns = read_via(data / v / "annotations_via.csv")
        assert sorted(a.basename for a in anns) == sorted(paths)  # every test image is listed
        for ann in anns:
            assert ann.size == paths[ann.basename].stat().st_size  # file_size as VIA writes it
            for r in ann.regions:
                shapes.add(r.shape["name"])
                kinds.add(r.attributes["type"])
    assert kinds == set(KINDS)
    assert {"polygon", "ellipse"} <= shapes and shapes & {"rect", "circle"}


def test_roi_is_the_complement_of_the_ignore_csv(data, tmp_path):
    for v in VIEWS:
        out = tmp_path / v
        assert run_cli(["labels", str(data / v / "ignore_regions_via.csv"), "--images", str(data / v),
                        "--out", str(out)]) == 0
        ignore = gray(out / "reference_mask.png") > 0
        assert ((gray(data / v / "roi.png") == 0) == ignore).all()


def test_shifts_json(data):
    for v in VIEWS:
        doc = read_shifts(data / v / "shifts.json")
        assert doc["view"] == v and doc["image_size"] == list(SIZE)
        by = {it["image"]: it for it in doc["images"]}
        n_imgs = sum(COUNTS.values())
        assert len(by) == n_imgs
        shifted = [k for k, it in by.items() if it["shifted"]]
        assert len(shifted) == COUNTS["n_shifted"] + COUNTS["n_anomalous"] // 2
        assert all(k.startswith("test/") for k in shifted)
        for k, it in by.items():
            assert (data / v / k).is_file() and it["image_id"] == f"{v}/{k}"
            if not it["shifted"]:
                assert np.array_equal(it["H"], np.eye(3))
            else:
                assert not np.allclose(it["H"], np.eye(3))
                p = it["params"]
                assert abs(p["rotation_deg"]) <= 3 and abs(p["scale"] - 1) <= 0.03


def test_true_homography_registers_the_shifted_image(tmp_path):
    # Larger images so that the alignment is measurable: warping the reference by H must match the
    # shifted image much better than the unwarped reference does.
    root = tmp_path / "d"
    generate(root, views=["B2"], size=(384, 256), n_train=1, n_good=0, n_shifted=2, n_anomalous=0, workers=1)
    ref = gray(root / "B2" / "reference.png").astype(np.float32).mean(axis=2)
    roi = gray(root / "B2" / "roi.png") > 0
    for it in read_shifts(root / "B2" / "shifts.json")["images"]:
        if not it["shifted"]:
            continue
        img = gray(root / "B2" / it["image"]).astype(np.float32).mean(axis=2)
        warped = cv2.warpPerspective(ref, it["H"], (384, 256))
        roi_img = cv2.warpPerspective(roi.astype(np.uint8), it["H"], (384, 256)) > 0
        inner = np.zeros_like(roi_img)
        inner[30:-30, 30:-30] = True
        sel = roi_img & inner
        c_true = np.corrcoef(warped[sel], img[sel])[0, 1]
        c_none = np.corrcoef(ref[sel], img[sel])[0, 1]
        assert c_true > 0.9 and c_true > c_none + 0.1, (c_true, c_none)


def test_deterministic_per_seed_and_different_across_seeds(data, tmp_path):
    again = tmp_path / "again"
    generate(again, size=SIZE, seed=3, workers=2, **COUNTS)
    assert files(again) == files(data)
    other = tmp_path / "other"
    generate(other, views=["A"], size=SIZE, seed=4, workers=1, **COUNTS)
    a, b = files(other / "A"), files(data / "A")
    assert a.keys() == b.keys()
    # The machine layout (and so roi.png) is fixed per view; every image and mask changes with the seed.
    assert all(a[k] != b[k] for k in a if k.endswith(".png") and k != "roi.png")


def test_one_view_alone_is_the_same_as_in_the_full_set(data, tmp_path):
    alone = tmp_path / "alone"
    generate(alone, views=["C"], size=SIZE, seed=3, workers=1, **COUNTS)
    assert files(alone / "C") == files(data / "C")


def test_images_have_the_documented_difficulties(tmp_path):
    root = tmp_path / "d"
    generate(root, size=(384, 256), n_train=3, n_good=0, n_shifted=0, n_anomalous=4, workers=2)
    def load(v, rel):
        return gray(root / v / rel).astype(np.float32)
    # Illumination and noise vary between normal images.
    t0, t1 = load("A", "train/good/train_000.png"), load("A", "train/good/train_001.png")
    assert abs(t0.mean() - t1.mean()) > 0.5 or np.abs(t0 - t1).mean() > 2
    # A2: the belt (ignored region) changes far more between images than the inspected region.
    roi = gray(root / "A2" / "roi.png") > 0
    def detail(img):  # high-pass: the illumination changes are smooth, the belt texture is not
        g = img.mean(axis=2)
        return g - cv2.GaussianBlur(g, (0, 0), 6)
    a, b = detail(load("A2", "train/good/train_000.png")), detail(load("A2", "train/good/train_001.png"))
    diff = np.abs(a - b)
    belt = ~roi & (np.arange(256)[:, None] > 140) & (np.arange(256)[:, None] < 195)
    assert diff[belt].mean() > 2 * diff[roi].mean(), (diff[belt].mean(), diff[roi].mean())
    # B is out of focus: far less fine detail than B2.
    def sharpness(v):
        g = load(v, "reference.png").mean(axis=2)
        return cv2.Laplacian(cv2.GaussianBlur(g, (0, 0), 0.7), cv2.CV_32F).var()
    assert sharpness("B") < 0.5 * sharpness("B2")
    # Leftover product changes the pixels under its mask.
    contrast = {}
    for v in VIEWS:
        hs = {it["image"]: it["H"] for it in read_shifts(root / v / "shifts.json")["images"]}
        for kind in KINDS:
            img = load(v, f"test/{kind}/{kind}_000.png")
            ref = cv2.warpPerspective(load(v, "reference.png"), hs[f"test/{kind}/{kind}_000.png"], (384, 256))
            m = gray(root / v / "ground_truth" / kind / f"{kind}_000_mask.png") > 0
            assert m.sum() > 20
            d = np.abs(img - ref).mean(axis=2)
            # Against a ring 5-10 px away (beyond the contact shadow): the illumination change is similar there.
            grow = lambda k: cv2.dilate(m.astype(np.uint8), np.ones((k, k), np.uint8)) > 0  # noqa: E731
            ring = grow(21) & ~grow(11)
            contrast[v, kind] = d[m].mean() / d[ring].mean()
    # Products are visible in the sharp views; in blurry B some are faint (as in the thesis), not most.
    assert all(c > 1.5 for (v, _), c in contrast.items() if v != "B"), contrast
    assert sum(c > 1.5 for c in contrast.values()) >= len(contrast) - 2, contrast


def test_bad_arguments(tmp_path):
    with pytest.raises(UsageError, match="unknown view"):
        generate(tmp_path / "x", views=["Z"])
    with pytest.raises(UsageError, match="too small"):
        generate(tmp_path / "x", size=(32, 32))
    generate(tmp_path / "x", views=["B2"], size=SIZE, n_train=1, n_good=0, n_shifted=0, n_anomalous=0, workers=1)
    with pytest.raises(OutputExistsError):
        generate(tmp_path / "x", views=["B2"], size=SIZE, n_train=1, n_good=0, n_shifted=0, n_anomalous=0)
    (tmp_path / "y" / "A").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="not written by synth"):
        generate(tmp_path / "y", views=["A"], size=SIZE, overwrite=True)


def test_cli(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["synth", str(out), "--views", "A2,B", "--size", "192x128", "--n-train", "2", "--n-shifted", "1",
            "--n-anomalous", "2", "--n-good", "1", "-q", "--json"]
    assert run_cli(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["size"] == [192, 128] and list(summary["views"]) == ["A2", "B"]
    assert summary["views"]["A2"]["anomalous"] == {"leaflet": 1, "blister": 1}
    assert cv2.imread(str(out / "B" / "test" / "blister" / "blister_000.png")).shape == (128, 192, 3)
    assert run_cli(args) == 1
    assert "exists" in capsys.readouterr().err
    assert run_cli([*args, "--overwrite"]) == 0
    capsys.readouterr()
    assert run_cli(["synth", str(tmp_path / "e"), "--size", "big"]) == 2
    assert "--size 'big'" in capsys.readouterr().err
    assert run_cli(["synth", str(tmp_path / "e"), "--views", "A", "--size", "192x128", "--n-train", "2",
                    "--n-shifted", "0", "--n-anomalous", "1", "--n-good", "0"]) == 0
    assert "wrote 4 images of 192x128 in 1 views" in capsys.readouterr().out


def test_shifts_file_round_trip_and_rejection(tmp_path):
    from lineclear.errors import FormatError
    from lineclear.formats.synth import SHIFTS_SCHEMA, write_shifts

    doc = {"view": "A", "image_size": [10, 8], "reference": "reference.png",
           "images": [{"image": "test/good/shift_000.png", "image_id": "A/test/good/shift_000.png", "shifted": True,
                       "H": [[1.0, 0.01, 2.5], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]], "params": None}]}
    p = write_shifts(tmp_path / "shifts.json", doc)
    back = read_shifts(p)
    assert back["schema"] == SHIFTS_SCHEMA and back["images"][0]["H"].shape == (3, 3)
    assert back["images"][0]["H"][0, 2] == 2.5 and "warpPerspective" in back["convention"]
    with pytest.raises(OutputExistsError):
        write_shifts(p, doc)
    (tmp_path / "foreign.json").write_text('{"schema": "lineclear.thresholds/1"}')
    with pytest.raises(FormatError, match="expected lineclear.shifts/1"):
        read_shifts(tmp_path / "foreign.json")
    bad = json.loads(p.read_text())
    bad["images"][0]["H"] = [[1, 0], [0, 1]]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(FormatError, match="3x3"):
        read_shifts(tmp_path / "bad.json")


def test_output_under_a_file_is_one_clean_error(tmp_path, capsys):
    """Regression: an output folder that cannot be created was an 'internal error: NotADirectoryError'."""
    (tmp_path / "afile").write_text("x")
    assert run_cli(["synth", str(tmp_path / "afile" / "sub"), "--views", "A", "--size", "192x128"]) == 1
    err = capsys.readouterr().err
    assert "afile/sub: cannot create the output folder" in err and "internal error" not in err


def test_overwrite_never_removes_a_file_synth_did_not_write(tmp_path):
    """``--overwrite`` replaces a synth view whole; a file the user put into it is not synth's to delete."""
    kw = dict(views=["B2"], size=SIZE, n_train=1, n_good=1, n_shifted=0, n_anomalous=2, workers=1)
    generate(tmp_path / "x", **kw)
    generate(tmp_path / "x", overwrite=True, **kw)  # synth's own files only: replaced
    precious = tmp_path / "x" / "B2" / "train" / "good" / "my_notes.txt"
    precious.write_text("keep me")
    with pytest.raises(OutputExistsError, match="did not write .*my_notes.txt"):
        generate(tmp_path / "x", overwrite=True, **kw)
    assert precious.read_text() == "keep me"
