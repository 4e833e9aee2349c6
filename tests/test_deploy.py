"""``lineclear deploy``: bundles, the manifest (lineclear.deploy/2) and its hashes.

Also holds the helpers the check tests share: a toy model registered for the test (anomaly map =
|image − mean training image|), views of textured scenes that ORB can register, and runs whose
thresholds carry the provenance `lineclear calibrate` records.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineclear.errors import FormatError
from lineclear.formats import MapsFile, read_mask, sha256_file, write_mask, write_thresholds
from lineclear.formats.deploy import read_manifest, verify_files, view_problems
from lineclear.images import write_image
from lineclear.models import MODELS
from tests.conftest import run_cli
from tests.toy import toy_entry

H, W = 192, 256  # camera frame of the test views
MAP = (48, 64)  # the toy model's map size


# -- helpers shared with the check tests ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_model():
    MODELS["toyline"] = toy_entry("toyline", MAP)
    yield "toyline"
    MODELS.pop("toyline", None)


def make_scene(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A textured machine interior: blurred rectangles and discs (float32 (h,w,3) in [0,1])."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 0.25, np.float32)
    for _ in range(60):
        c = rng.uniform(0.05, 0.8, 3).tolist()
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(5, 40)), y + int(rng.integers(5, 40))), c, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(3, 18)), c, -1)
    return cv2.GaussianBlur(img, (0, 0), 1.5)


def noisy(img: np.ndarray, seed: int, sigma: float = 0.004) -> np.ndarray:
    return np.clip(img + np.random.default_rng(seed).normal(0, sigma, img.shape), 0, 1).astype(np.float32)


def shift(img: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The camera moved: the scene seen through image→reference transform T (reference = img)."""
    return cv2.warpPerspective(img, np.linalg.inv(T), (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)


def make_view(root: Path, name: str, seed: int, n_train: int = 5, roi: bool = False) -> Path:
    view = root / name
    base = make_scene(seed)
    for i in range(n_train):
        write_image(view / "train" / "good" / f"{i:03d}.png", noisy(base, 100 * seed + i))
    write_image(view / "test" / "good" / "000.png", noisy(base, 100 * seed + 50))
    write_image(view / "reference.png", base)
    if roi:
        m = np.ones((H, W), bool)
        m[:, W - 40:] = False  # the right edge shows moving mechanics: ignored
        write_mask(view / "roi.png", m)
    return view


def make_run(view: Path, run: Path, model: str, mask_stage: str = "none", image_thr: float = 0.2,
             pixel_thr: float = 0.12, level: str = "image") -> Path:
    """Train the toy model, score the validation split, and write thresholds with their provenance."""
    assert run_cli(["-q", "train", str(view), "--model", model, "--out", str(run), "--device", "cpu"]) == 0
    maps = run / "val_maps.h5"
    extra = [] if mask_stage == "none" else ["--mask", str(view / "roi.png"), "--mask-stage", mask_stage]
    # the thresholds below are set by hand above the normal scores: no synthetic shifts (tested in test_shifts.py)
    assert run_cli(["-q", "score", str(run), str(view), "--split", "val", "--out", str(maps), "--shifts", "0",
                    *extra]) == 0
    with MapsFile(maps) as f:
        a = f.attrs
        source = {k: a.get(k) for k in ("model", "view", "mask_stage", "registered", "checkpoint_sha256")}
        source.update(path=str(maps), sha256=sha256_file(maps), map_size=list(f.map_size))
        assert float(f.scores.max()) < image_thr  # the fixed thresholds are above every normal score
    write_thresholds(run / "thresholds.json", {
        "method": "max", "params": {}, "level": level, "pixel": {"threshold": pixel_thr, "stats": {}},
        "image": {"threshold": image_thr, "stats": {}}, "source": source})
    return run


def _runs(tmp: Path, model: str) -> dict[str, Path]:
    a = make_view(tmp / "data", "A", seed=1)
    b = make_view(tmp / "data", "B", seed=2, roi=True)
    return {"A": make_run(a, tmp / "runs" / "A", model),
            "B": make_run(b, tmp / "runs" / "B", model, mask_stage="post")}


@pytest.fixture(scope="module")
def line_runs(tmp_path_factory, toy_model: str) -> dict[str, Path]:
    """Two views (A: no mask; B: inspection mask, post stage) with trained, calibrated runs (read-only)."""
    return _runs(tmp_path_factory.mktemp("runs"), toy_model)


@pytest.fixture
def own_runs(tmp_path: Path, toy_model: str) -> dict[str, Path]:
    """Like ``line_runs``, for a test that changes the runs or their view directories."""
    return _runs(tmp_path, toy_model)


def deploy(runs: dict[str, Path], out: Path, *extra: str) -> int:
    return run_cli(["-q", "deploy", *map(str, runs.values()), "--out", str(out), *extra])


# -- tests --------------------------------------------------------------------------------------------------


def test_deploy_builds_a_verified_bundle(line_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "line"
    assert deploy(line_runs, out) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["views"]) == {"A", "B"}
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["schema"] == "lineclear.deploy/2" and doc["views"]["A"]["runtime"] == "torch"
    a, b = doc["views"]["A"], doc["views"]["B"]
    # the mask and stage are those of the calibration maps; A was calibrated without one
    assert a["mask_stage"] == "none" and a["mask"] is None
    assert b["mask_stage"] == "post" and b["mask"] == "B/mask.png"
    assert (read_mask(out / "B" / "mask.png") == read_mask(line_runs["B"].parent.parent / "data" / "B" / "roi.png")).all()
    assert a["map_size"] == list(MAP) and a["image_size"] == [H, W] and a["pattern"] == "A"
    assert a["registration"]["model"] == "homography" and a["registration"]["limits"]["min_inliers"] == 20
    from lineclear.scoring import DEFAULT_BORDER_MARGIN

    assert a["border_margin"] == DEFAULT_BORDER_MARGIN  # calibration maps were not registered: score's default
    # every file is listed with its hash, and the copies are byte-identical to the run's
    for rel in ("A/model.pt", "A/thresholds.json", "A/reference.png", "A/run.json", "B/mask.png"):
        assert doc["files"][rel]["sha256"] == sha256_file(out / rel)
    assert sha256_file(out / "A" / "model.pt") == sha256_file(line_runs["A"] / "model.pt")
    bundle = read_manifest(out)
    assert verify_files(bundle) == {}
    assert not list(tmp_path.glob(".line.*"))  # the temporary build folder is gone


def test_deploy_refuses_overwrite_and_replaces_atomically(line_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "line"
    assert deploy(line_runs, out) == 0
    before = (out / "manifest.json").read_text()
    assert deploy(line_runs, out) == 1
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == before
    assert deploy(line_runs, out, "--overwrite", "--pattern", "A=cam1_*.png") == 0
    assert json.loads((out / "manifest.json").read_text())["views"]["A"]["pattern"] == "cam1_*.png"
    # --overwrite never replaces a folder that is not a bundle
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert deploy(line_runs, other, "--overwrite") == 1
    assert "not a lineclear bundle" in capsys.readouterr().err and (other / "keep.txt").exists()


def test_deploy_overwrite_swaps_in_one_step(line_runs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """Killed mid-swap, the line still has a bundle: the old one goes out as the new one comes in (found by
    reading build_bundle for tests/test_crash_safety.py: two renames left a moment with no bundle at all)."""
    import os

    out = tmp_path / "line"
    assert deploy(line_runs, out) == 0
    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        if Path(src) == out:  # the bundle was just moved aside: a kill now would leave the line without one
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace_then_die)
    assert deploy(line_runs, out, "--overwrite", "--pattern", "A=cam1_*.png") == 0
    monkeypatch.undo()
    assert read_manifest(out).views["A"].pattern == "cam1_*.png" and verify_files(read_manifest(out)) == {}
    assert not list(tmp_path.glob(".line.*"))  # the old bundle went with the temporary folder


def test_manifest_refuses_a_tampered_file(line_runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "line"
    assert deploy(line_runs, out) == 0
    thr = out / "B" / "thresholds.json"
    doc = json.loads(thr.read_text())
    doc["image"]["threshold"] = 99.0  # someone "fixes" false alarms by hand
    thr.write_text(json.dumps(doc))
    bundle = read_manifest(out)
    problems = verify_files(bundle)
    assert list(problems) == ["B/thresholds.json"] and "tampered" in problems["B/thresholds.json"]
    assert view_problems(bundle, problems) == {"A": [], "B": [problems["B/thresholds.json"]]}
    (out / "A" / "reference.png").unlink()
    assert "missing" in verify_files(read_manifest(out))["A/reference.png"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(schema="lineclear.maps/1"), "schema is"),
    (lambda d: d["views"]["A"].update(checkpoint="../../etc/passwd"), "outside the bundle"),
    (lambda d: d["views"]["A"].update(mask_stage="pre"), "no mask"),
    (lambda d: d["files"].pop("A/model.pt"), "not listed in 'files'"),
    (lambda d: d.update(views={}), "non-empty"),
])
def test_manifest_validation(line_runs: dict[str, Path], tmp_path: Path, edit, message) -> None:
    out = tmp_path / "line"
    assert deploy(line_runs, out) == 0
    doc = json.loads((out / "manifest.json").read_text())
    edit(doc)
    (out / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=message):
        read_manifest(out)


def test_deploy_cross_checks_the_pieces(own_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    line_runs = own_runs
    out = tmp_path / "line"
    # thresholds calibrated on another checkpoint
    thr_b = line_runs["B"] / "thresholds.json"
    assert deploy(line_runs, out, "--thresholds", f"A={thr_b}") == 1
    assert "another checkpoint" in capsys.readouterr().err and not out.exists()
    # a mask that is not the calibrated one
    other = write_mask(tmp_path / "other.png", np.ones((H, W), bool))
    assert deploy(line_runs, out, "--mask", f"B={other}") == 1
    assert "not the mask the thresholds were calibrated with" in capsys.readouterr().err
    # a mask for a view calibrated without one
    assert deploy(line_runs, out, "--mask", f"A={other}") == 2
    # the calibrated mask moved: --mask with the same file is accepted
    moved = tmp_path / "moved_roi.png"
    roi = line_runs["B"].parent.parent / "data" / "B" / "roi.png"
    moved.write_bytes(roi.read_bytes())
    roi.unlink()
    assert deploy(line_runs, out) == 1
    assert "mask file is not available" in capsys.readouterr().err
    assert deploy(line_runs, out, "--mask", f"B={moved}") == 0
    capsys.readouterr()
    # usage errors: unknown view, malformed item, a run without thresholds
    assert deploy(line_runs, tmp_path / "l2", "--pattern", "Z=*.png") == 2
    assert deploy(line_runs, tmp_path / "l2", "--pattern", "A") == 2
    (line_runs["A"] / "thresholds.json").unlink()
    assert deploy(line_runs, tmp_path / "l2") == 1
    assert "no thresholds for view A" in capsys.readouterr().err


def test_bundle_is_readable_by_other_accounts(line_runs: dict[str, Path], tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = tmp_path / "line"
        assert deploy(line_runs, out) == 0
    finally:
        os.umask(old)
    # a line service account that is not the deploying user reads the bundle: 0755 folders, 0644 files
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for p in out.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


def test_overwrite_never_deletes_files_the_bundle_does_not_list(line_runs: dict[str, Path], tmp_path: Path,
                                                                 capsys) -> None:
    out = tmp_path / "line"
    assert deploy(line_runs, out) == 0
    (out / "A" / "notes.txt").write_text("the operator's notes")
    capsys.readouterr()
    assert deploy(line_runs, out, "--overwrite") == 1
    assert "holds files that are not part of the bundle (A/notes.txt)" in capsys.readouterr().err
    assert (out / "A" / "notes.txt").read_text() == "the operator's notes"
    (out / "A" / "notes.txt").unlink()
    assert deploy(line_runs, out, "--overwrite") == 0


def test_scene_change_limit_is_in_the_manifest(line_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    from lineclear.formats.deploy import DEFAULT_MAX_RAISED_FRACTION

    out = tmp_path / "line"
    assert deploy(line_runs, out) == 0
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["views"]["A"]["max_raised_fraction"] == DEFAULT_MAX_RAISED_FRACTION == 0.5
    assert deploy(line_runs, out, "--overwrite", "--max-raised-fraction", "0.3") == 0
    assert read_manifest(out).views["B"].max_raised_fraction == 0.3
    # a manifest written before the key existed gets the default; a bad value is refused
    doc = json.loads((out / "manifest.json").read_text())
    del doc["views"]["A"]["max_raised_fraction"]
    doc["views"]["B"]["max_raised_fraction"] = 0
    (out / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"views\['B'\].max_raised_fraction must be a number in \(0, 1\]"):
        read_manifest(out)
    doc["views"]["B"]["max_raised_fraction"] = 0.3
    (out / "manifest.json").write_text(json.dumps(doc))
    assert read_manifest(out).views["A"].max_raised_fraction == 0.5
