"""Shared fixtures. ``tiny_view``: a hand-made MVTec-style view, built in milliseconds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lineclear.formats import write_mask
from lineclear.images import write_image


def run_cli(args: list[str]) -> int:
    """Run the lineclear CLI in-process; return the exit code."""
    from lineclear.cli.main import run

    old = sys.argv
    sys.argv = ["lineclear", *args]
    try:
        run(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = old
    return 0


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.35 + 0.1 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    img = np.repeat(base[:, :, None], 3, axis=2) + rng.normal(0, 0.01, (h, w, 3))
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.fixture
def restore_thread_counts():
    """The checker sets PyTorch's and OpenCV's process-wide thread counts; give other tests theirs back."""
    import cv2
    import torch

    t, c = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(t)
    cv2.setNumThreads(c)


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster than two, and several times faster on a shared,
    loaded CPU (no OpenMP barriers waiting for a descheduled sibling). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny_view(tmp_path: Path) -> Path:
    """data/V with 6 train images, 2 good + 2 anomalous test images, GT masks, roi.png (32x48)."""
    rng = np.random.default_rng(0)
    h, w = 32, 48
    view = tmp_path / "data" / "V"
    for i in range(6):
        write_image(view / "train" / "good" / f"{i:03d}.png", _scene(rng, h, w))
    for i in range(2):
        write_image(view / "test" / "good" / f"{i:03d}.png", _scene(rng, h, w))
    for i in range(2):
        img = _scene(rng, h, w)
        m = np.zeros((h, w), bool)
        m[8 + i : 16 + i, 10:20] = True
        img[m] = 1.0
        write_image(view / "test" / "leaflet" / f"{i:03d}.png", img)
        write_mask(view / "ground_truth" / "leaflet" / f"{i:03d}_mask.png", m)
    roi = np.ones((h, w), bool)
    roi[:, 40:] = False
    write_mask(view / "roi.png", roi)
    return view


def pytest_terminal_summary(terminalreporter) -> None:
    """How many inputs each fuzzed reader was given, how many commands were killed (tests/fuzzing.py)."""
    fuzzing = sys.modules.get("tests.fuzzing")
    if fuzzing is None or not (fuzzing.COUNTS or fuzzing.KILLS):
        return
    terminalreporter.section(f"fuzzed readers and killed commands (LINECLEAR_FUZZ={fuzzing.PROFILE})")
    for line in fuzzing.summary_lines():
        terminalreporter.write_line(line)
