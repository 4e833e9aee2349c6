"""A fixed-camera view with a known camera shift, for the tests of registration seams (test_shifts.py)
and of every registered model (test_models_registry.py): import the fixtures ``shift_view`` and
``registered_view`` into the test module."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lineclear.images import write_image
from tests.conftest import run_cli
from tests.test_register import scene, shift

H, W = 128, 192


def nudge(img: np.ndarray, Hs: np.ndarray, seed: int) -> np.ndarray:
    """The scene through camera shift ``Hs`` (reference → image), the same lighting, fresh sensor noise."""
    out = cv2.warpPerspective(img, Hs, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
    return noisy(out, seed)


def noisy(img: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float32) + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)


def make_shift_view(root: Path) -> Path:
    """``root/V``: 8 noisy normal images of one scene, a reference, two clear test images (one shifted by a
    known homography) and a leftover test image (shifted too)."""
    view = root / "V"
    ref = scene(H, W, 0)
    write_image(view / "reference.png", ref)
    for i in range(8):
        write_image(view / "train" / "good" / f"{i:03d}.png", noisy(ref, 10 + i))
    write_image(view / "test" / "good" / "still.png", noisy(ref, 50))
    Hs = shift(H, W, 3, t=0.025, rot=1.5, sc=0.02)
    write_image(view / "test" / "good" / "nudged.png", nudge(ref, Hs, 51))
    left = ref.copy()
    cv2.rectangle(left, (90, 50), (110, 66), (250, 250, 245), -1)
    write_image(view / "test" / "leaflet" / "nudged.png", nudge(left, Hs, 52))
    return view


def register_view(view: Path, out: Path) -> Path:
    """``lineclear register VIEW``: test images registered, validity masks beside them."""
    assert run_cli(["-q", "register", str(view), "--out", str(out)]) == 0
    return out


def train_run(view: Path, out: Path, model: str) -> Path:
    """A run of ``model`` on the view: the demo presets (two epochs) for the networks, the view's size else."""
    if not (out / "model.pt").is_file():
        args = ["-q", "train", str(view), "--model", model, "--out", str(out), "--device", "cpu"]
        if model in ("draem", "ddad"):  # their demo presets (tiny networks, smaller maps), two epochs
            args += ["--preset", "demo", "--epochs", "2"]
        else:
            args += ["--image-size", f"{H}x{W}"]
        assert run_cli(args) == 0
    return out


@pytest.fixture(scope="module")
def shift_view(tmp_path_factory) -> Path:
    return make_shift_view(tmp_path_factory.mktemp("shiftview"))


@pytest.fixture(scope="module")
def registered_view(shift_view: Path, tmp_path_factory) -> Path:
    return register_view(shift_view, tmp_path_factory.mktemp("reg") / "V")
