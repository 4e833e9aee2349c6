"""lineclear.masking: building masks, dilate/erode of the ignored area, seam margin, post-masking, preview."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from lineclear.errors import UsageError
from lineclear.masking import (
    apply_post_mask,
    build_mask,
    combine_masks,
    erode_valid,
    grow_ignored,
    render_preview,
    shrink_ignored,
)


def _edt_to(region: np.ndarray) -> np.ndarray:
    """Oracle: exact Euclidean distance from every pixel centre to the nearest pixel of ``region``."""
    return ndimage.distance_transform_edt(~region)


def test_build_mask_semantics():
    ign = np.zeros((20, 30), bool)
    ign[2:6, 3:9] = True
    keep = np.zeros((20, 30), bool)
    keep[:, :20] = True
    base = np.ones((20, 30), bool)
    base[15:, :] = False
    m = build_mask((20, 30), ignore=ign, keep=keep, base=base)
    assert m.dtype == bool and m.shape == (20, 30)
    assert np.array_equal(m, base & keep & ~ign)
    assert build_mask((20, 30)).all()
    assert np.array_equal(build_mask((20, 30), ignore=ign), ~ign)
    # a base mask of another size is resized with nearest neighbour
    small = np.ones((10, 15), np.uint8) * 255
    small[:, :5] = 0
    m2 = build_mask((20, 30), base=small)
    assert not m2[:, :10].any() and m2[:, 10:].all()
    with pytest.raises(UsageError):
        build_mask((20, 30), dilate=-1)


@pytest.mark.parametrize("r", [1, 2.5, 6])
def test_dilate_grows_the_ignored_area_by_exactly_r(r):
    rng = np.random.default_rng(0)
    ign = np.zeros((60, 80), bool)
    ign[20:30, 30:45] = True
    ign[rng.integers(0, 60, 5), rng.integers(0, 80, 5)] = True
    m = build_mask((60, 80), ignore=ign, dilate=r)
    expect_ignored = _edt_to(ign) <= r
    assert np.array_equal(~m, expect_ignored)
    assert np.array_equal(grow_ignored(~ign, r), m)


@pytest.mark.parametrize("r", [1, 3])
def test_erode_shrinks_the_ignored_area_by_exactly_r(r):
    ign = np.zeros((60, 80), bool)
    ign[10:40, 10:60] = True
    m = build_mask((60, 80), ignore=ign, erode=r)
    still_ignored = ign & (_edt_to(~ign) > r)
    assert np.array_equal(~m, still_ignored)
    assert np.array_equal(shrink_ignored(~ign, r), m)
    # the image edge is not an inspected pixel: an ignored strip along the edge stays ignored there
    edge = np.zeros((60, 80), bool)
    edge[:, :5] = True
    m = build_mask((60, 80), ignore=edge, erode=2)
    assert not m[:, :3].any() and m[:, 3:].all()


def test_dilate_then_erode_is_a_closing_of_the_ignored_area():
    ign = np.zeros((40, 60), bool)
    ign[10:30, 10:25] = True
    ign[10:30, 28:45] = True  # a 3 px gap between two ignored blocks
    m = build_mask((40, 60), ignore=ign, dilate=3, erode=3)
    assert not m[15:25, 25:28].any()  # the gap is closed
    assert m[:8, :].all()  # and the rest is back where it was


def test_erode_valid_margin_along_the_seam():
    valid = np.ones((50, 70), bool)
    valid[:, 60:] = False
    valid[45:, :] = False
    out = erode_valid(valid, 3)
    expect = valid & (_edt_to(~valid) > 3)
    assert np.array_equal(out, expect)
    assert not out[:, 57:].any() and out[:42, :57].all()
    # along the image edge there is no seam
    assert out[0, :57].all() and out[:42, 0].all()
    full = np.ones((10, 10), bool)
    assert erode_valid(full, 5).all()
    assert np.array_equal(erode_valid(valid, 0), valid)
    with pytest.raises(UsageError):
        erode_valid(valid, -1)


def test_combine_masks():
    a = np.ones((10, 20), bool)
    a[:, :5] = False
    b = np.full((10, 20), 255, np.uint8)
    b[:3] = 0
    c = combine_masks(a, None, b)
    assert np.array_equal(c, a & (b > 0))
    assert combine_masks() is None and combine_masks(None) is None
    assert combine_masks(shape=(4, 6)).all()
    big = combine_masks(a, shape=(20, 40))
    assert big.shape == (20, 40) and not big[:, :10].any() and big[:, 10:].all()


def test_apply_post_mask_numpy_and_torch():
    rng = np.random.default_rng(1)
    maps = rng.random((3, 8, 12)).astype(np.float32)
    mask = np.ones((8, 12), bool)
    mask[:, :4] = False
    out = apply_post_mask(maps, mask)
    assert out.dtype == np.float32 and out.shape == maps.shape
    assert (out[:, :, :4] == 0).all() and np.array_equal(out[:, :, 4:], maps[:, :, 4:])
    assert np.array_equal(apply_post_mask(maps[0], mask), out[0])
    per_image = np.stack([mask, ~mask, mask])
    out2 = apply_post_mask(maps, per_image)
    assert (out2[1, :, 4:] == 0).all() and np.array_equal(out2[1, :, :4], maps[1, :, :4])
    # a mask of another size is resized (nearest)
    out3 = apply_post_mask(maps, np.repeat(np.repeat(mask, 2, 0), 2, 1))
    assert np.array_equal(out3, out)
    t = torch.from_numpy(maps)[:, None]
    tout = apply_post_mask(t, torch.from_numpy(mask))
    assert isinstance(tout, torch.Tensor) and tout.shape == (3, 1, 8, 12)
    assert np.array_equal(tout[:, 0].numpy(), out)
    tout2 = apply_post_mask(torch.from_numpy(maps), mask.astype(np.float32))
    assert np.array_equal(tout2.numpy(), out)


def test_render_preview():
    img = np.full((40, 60, 3), 100, np.uint8)
    m = np.ones((40, 60), bool)
    m[:, 30:] = False
    p = render_preview(img, m, label=False)
    assert p.shape == (40, 60, 3) and p.dtype == np.uint8
    assert (p[20, 45, 0] > 150) and p[20, 45, 1] < 100  # ignored: tinted red
    assert np.array_equal(p[20, 10], img[20, 10])  # inspected, away from the outline: unchanged
    gray16 = np.full((40, 60), 30000, np.uint16)
    assert render_preview(gray16, m).shape == (40, 60, 3)


def test_valid_at_is_conservative_when_shrinking():
    """A map pixel that averages any pixel from outside the camera frame is not valid (the nearest-neighbour
    resize called it valid, and the dark rim of the seam scored as an anomaly)."""
    from lineclear.masking import valid_at

    v = np.ones((512, 768), bool)
    v[-1, :] = False  # the last row of a registered image came from outside the frame
    v[:, :3] = False  # and a wedge 3 px wide on the left
    small = valid_at(v, (256, 384))
    assert not small[-1].any() and small[-2, 2:].all()
    assert not small[:, :2].any() and small[:-1, 2].all()
    # an image pair whose every averaged pixel is valid stays valid; all-valid stays all-valid
    assert valid_at(np.ones((512, 768), bool), (256, 384)).all()
    # enlarging is nearest-neighbour
    big = valid_at(small, (512, 768))
    assert big.shape == (512, 768) and not big[-2:].any() and big[:-2, 10:].all()
