"""Image reading (bit depths, channels, formats) and the dataset layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lineclear.dataset import View, image_id, label_from_path, split_train_val
from lineclear.errors import FormatError, LineclearError
from lineclear.images import image_size, read_gray, read_raw, read_rgb


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_read_rgb_formats(tmp_path: Path, ext: str) -> None:
    bgr = np.zeros((10, 12, 3), np.uint8)
    bgr[:, :, 2] = 200  # red in OpenCV's BGR order
    p = tmp_path / f"x{ext}"
    cv2.imwrite(str(p), bgr)
    rgb = read_rgb(p)
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.float32
    assert abs(rgb[..., 0].mean() - 200 / 255) < 0.02 and rgb[..., 2].max() < 0.02
    assert image_size(p) == (10, 12)


def test_sixteen_bit_and_gray(tmp_path: Path) -> None:
    g16 = np.full((4, 5), 65535 // 2, np.uint16)
    p = tmp_path / "g16.png"
    cv2.imwrite(str(p), g16)
    assert read_raw(p).dtype == np.uint16
    rgb = read_rgb(p)
    assert rgb.shape == (4, 5, 3) and np.allclose(rgb, 0.5, atol=1e-4)
    assert read_gray(p).dtype == np.uint8 and abs(int(read_gray(p)[0, 0]) - 127) <= 1
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 1] = 255
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert read_rgb(tmp_path / "a.png", size=(6, 6)).shape == (6, 6, 3)


def test_unreadable_images(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(FormatError, match="bad.png"):
        read_rgb(bad)
    with pytest.raises(LineclearError, match="no such image"):
        read_rgb(tmp_path / "missing.png")
    with pytest.raises(FormatError):
        image_size(bad)


def test_view_layout(tiny_view: Path) -> None:
    v = View(tiny_view)
    train, val = v.train(), v.val()
    assert len(train) == 5 and len(val) == 1
    assert {s.path for s in train}.isdisjoint({s.path for s in val})
    assert View(tiny_view, seed=0).val() == val  # seeded
    test = v.test()
    assert [s.label for s in test] == [0, 0, 1, 1] and test[2].defect == "leaflet"
    assert test[2].image_id == "V/test/leaflet/000.png"
    assert v.gt_path(test[2]).name == "000_mask.png" and v.gt_path(test[0]) is None
    assert v.reference == train[0].path or v.reference.name.endswith(".png")
    assert v.roi is not None and v.defects() == ["leaflet"]
    (tiny_view / "val" / "good").mkdir(parents=True)
    cv2.imwrite(str(tiny_view / "val" / "good" / "v.png"), np.zeros((32, 48, 3), np.uint8))
    assert len(View(tiny_view).train()) == 6 and [s.path.name for s in View(tiny_view).val()] == ["v.png"]


def test_split_and_labels(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(15)]
    tr, va = split_train_val(paths, 0.2, seed=3)
    assert len(tr) == 12 and len(va) == 3 and sorted(tr + va) == sorted(paths)
    assert split_train_val(paths[:1], 0.2) == (paths[:1], [])
    assert label_from_path("A/test/good/x.png") == 0
    assert label_from_path("A/test/leaflet/x.png") == 1
    assert label_from_path("somewhere/x.png") == -1
    assert image_id(tmp_path / "A" / "x.png", tmp_path) == "A/x.png"
    with pytest.raises(LineclearError, match="not a view directory"):
        View(tmp_path)


def test_a_header_claiming_an_absurd_size_is_refused(tmp_path: Path) -> None:
    """Found by tests/test_formats_fuzz.py: OpenCV raised cv2.error for a BMP claiming 16 million rows."""
    p = tmp_path / "a.bmp"
    assert cv2.imwrite(str(p), np.zeros((12, 16, 3), np.uint8))
    data = bytearray(p.read_bytes())
    data[22:26] = (1 << 24).to_bytes(4, "little")  # BITMAPINFOHEADER height
    p.write_bytes(bytes(data))
    for read in (read_raw, read_rgb, read_gray):
        with pytest.raises(FormatError, match="not a readable image"):
            read(p)
