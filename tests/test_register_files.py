"""Planning a registration run over files (``lineclear.register_files``), without registering anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineclear.errors import LineclearError, UsageError
from lineclear.formats import write_mask
from lineclear.images import write_image
from lineclear.register_files import check_plan, output_roots, plan_jobs

IMG = np.full((8, 12, 3), 128, np.uint8)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A view (splits, ground truth, reference, roi and a stray file), a plain folder and a loose image."""
    view = tmp_path / "V"
    for rel in ("train/good/a.png", "test/good/b.png", "test/leaflet/c.png"):
        write_image(view / rel, IMG)
    write_mask(view / "ground_truth" / "leaflet" / "c_mask.png", np.ones((8, 12), bool))
    write_image(view / "reference.png", IMG)
    write_mask(view / "roi.png", np.ones((8, 12), bool))
    (view / "notes.txt").write_text("x")
    write_image(tmp_path / "F" / "sub" / "d.png", IMG)
    write_image(tmp_path / "loose" / "e.png", IMG)
    return tmp_path


def test_a_view_keeps_its_layout_with_validity_masks_and_its_reference(tree: Path) -> None:
    jobs, copies, notes = plan_jobs(None, [tree / "V"], None, None, None, None)
    base = tree / "V_registered"
    by_name = {j.src.name: j for j in jobs}
    assert sorted(by_name) == ["a.png", "b.png", "c.png"]
    assert by_name["a.png"].dst == base / "train" / "good" / "a.png"
    assert by_name["a.png"].valid == base / "valid" / "train" / "good" / "a_valid.png"
    assert by_name["c.png"].mask_dst == base / "ground_truth" / "leaflet" / "c_mask.png"
    assert {j.ref for j in jobs} == {tree / "V" / "reference.png"} and {j.root for j in jobs} == {base}
    assert sorted(dst.name for _, dst in copies) == ["reference.png", "roi.png"]
    assert len(notes) == 1 and "notes.txt" in notes[0]
    assert output_roots([tree / "V"], jobs) == [str(base)]


def test_plain_folders_and_files_need_a_reference_and_mirror_their_tree(tree: Path) -> None:
    ref = tree / "V" / "reference.png"
    with pytest.raises(UsageError, match="--ref is required"):
        plan_jobs(None, [tree / "F"], None, None, None, None)
    jobs, copies, _ = plan_jobs(ref, [tree / "F", tree / "loose" / "e.png"], tree / "out", None, None, None)
    dst = {j.src.name: j for j in jobs}
    assert dst["d.png"].dst == tree / "out" / "F" / "sub" / "d.png"  # several inputs: one subfolder each
    assert dst["d.png"].valid == tree / "out" / "F_valid" / "sub" / "d_valid.png"
    assert dst["e.png"].dst == tree / "out" / "e.png" and copies == []
    with pytest.raises(LineclearError, match="not an image file"):
        plan_jobs(None, [tree / "V" / "notes.txt"], None, None, None, None)


def test_the_plan_is_refused_before_anything_is_written(tree: Path) -> None:
    ref = tree / "V" / "reference.png"
    inside = plan_jobs(ref, [tree / "F"], tree / "F" / "reg", None, None, None)
    with pytest.raises(UsageError, match="inside the input folder"):
        check_plan(*inside[:2], [tree / "F"], overwrite=False)
    plan = plan_jobs(ref, [tree / "F"], None, None, None, None)
    write_image(tree / "F_registered" / "sub" / "d.png", IMG)
    with pytest.raises(LineclearError, match="exists"):
        check_plan(*plan[:2], [tree / "F"], overwrite=False)
    check_plan(*plan[:2], [tree / "F"], overwrite=True)
    assert not (tree / "F_registered_valid").exists()
