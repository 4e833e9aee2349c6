"""``lineclear synth --photos``: views from real photographs, exact ground truth, true camera shifts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli
from test_register import scene

from lineclear.formats import read_mask
from lineclear.formats.synth import read_shifts
from lineclear.formats.via import read_via
from lineclear.images import read_raw
from lineclear.labels import rasterise
from lineclear.register import Registrar
from lineclear.synth.photos import PRODUCTS, build_view, paint_product


def test_products_change_the_scene_inside_their_mask_only():
    base = scene(128, 192, 5).astype(np.float32) / 255
    for i, kind in enumerate(PRODUCTS):
        out, mask = paint_product(base, kind, np.random.default_rng(i))
        assert 5 < mask.sum() < 0.2 * mask.size, kind
        diff = np.abs(out - base).max(2)
        assert diff[mask].mean() > 0.05, kind
        far = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
        assert diff[far].max() < 1e-6, kind


@pytest.fixture(scope="module")
def photo_view(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("photos") / "P"
    build_view(scene(600, 900, 2), out, seed=3, n_train=3, n_val=1, n_clear=2, n_left=5)
    return out


def test_view_layout_and_exact_ground_truth(photo_view):
    p = photo_view
    assert len(list((p / "train" / "good").glob("*.png"))) == 3 and (p / "reference.png").is_file()
    assert read_raw(p / "reference.png").shape == (512, 768, 3)
    ann = {a.filename: a for a in read_via(p / "annotations_via.csv")}
    assert len(ann) == 5
    for kind in PRODUCTS:
        img = p / "test" / kind / "000.png"
        gt = read_mask(p / "ground_truth" / kind / "000_mask.png")
        assert gt.any()
        via = rasterise(ann[f"test/{kind}/000.png"].regions, gt.shape)
        iou = (via & gt).sum() / (via | gt).sum()
        assert iou > 0.7, (kind, iou)  # the VIA polygon outlines the ground-truth mask
        assert img.is_file()


def test_true_shifts_are_recorded_and_registration_recovers_them(photo_view):
    doc = read_shifts(photo_view / "shifts.json")
    ref = read_raw(photo_view / "reference.png")
    reg = Registrar(ref)
    shifted = [e for e in doc["images"] if e["shifted"] and e["image"].startswith("test/good")]
    assert len(shifted) == 2
    for e in shifted:
        H = np.asarray(e["H"], float)
        res = reg.register(read_raw(photo_view / e["image"]))
        assert res.ok
        # image -> reference is the inverse of the true scene -> image homography, up to the parallax field
        # (<= 1.5 px, which no homography explains): compared over the frame's interior
        h, w = ref.shape[:2]
        ys, xs = np.mgrid[0.1 * h : 0.9 * h : 9j, 0.1 * w : 0.9 * w : 9j]
        pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], 1)
        a, b = pts @ res.transform.T, pts @ np.linalg.inv(H).T
        err = np.linalg.norm(a[:, :2] / a[:, 2:] - b[:, :2] / b[:, 2:], axis=1)
        assert err.mean() < 1.5, err.mean()


def test_builtin_photos_through_the_cli(tmp_path):
    pytest.importorskip("skimage")
    from lineclear.synth.photos import builtin_photos

    assert len(builtin_photos()) == 5
    img = read_raw(builtin_photos()[0])
    assert img.ndim == 3 and img.shape[0] > 100  # a real photograph, not a drawing
