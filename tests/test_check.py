"""``lineclear check``: verdicts, regions in image coordinates, exit codes and the fail-safe cases.

The bundle is built once per module from two toy-model views (see tests/test_deploy.py): A without a
mask, B with an inspection mask at the post stage; both register their images to the reference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineclear.line.checker import Checker
from lineclear.line.image import ImageQC, file_problem, image_problem, image_stats
from lineclear.line.matching import name_matches
from lineclear.line.regions import find_regions
from lineclear.errors import UsageError
from lineclear.formats.verdict import read_verdict
from lineclear.images import read_rgb, write_image
from lineclear.models import MODELS
from tests.toy import toy_entry
from tests.conftest import run_cli
from tests.test_deploy import MAP, H, W, make_run, make_scene, make_view, noisy, shift

# a camera nudge: 5 px right, 3.5 px up, 0.6 degrees; registration must undo it
NUDGE = np.array([[1, 0.01, 5.2], [-0.01, 1, -3.5], [0, 0, 1]])
ROT70 = np.vstack([cv2.getRotationMatrix2D((W / 2, H / 2), 70, 1.0), [0, 0, 1]])
LEAFLET = (60, 100, 40, 30)  # x, y, w, h in the reference frame


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    MODELS["toyline"] = toy_entry("toyline", MAP)
    tmp = tmp_path_factory.mktemp("line")
    a = make_view(tmp / "data", "A", seed=1)
    b = make_view(tmp / "data", "B", seed=2, roi=True)
    runs = [make_run(a, tmp / "runs" / "A", "toyline"), make_run(b, tmp / "runs" / "B", "toyline", mask_stage="post")]
    assert run_cli(["-q", "deploy", *map(str, runs), "--out", str(tmp / "line")]) == 0
    yield tmp / "line"
    MODELS.pop("toyline", None)


def _image(seed: int, out: Path, *, leaflet=None, T=None, noise_seed: int = 7) -> Path:
    img = noisy(make_scene(seed), noise_seed)
    if leaflet is not None:
        x, y, w, h = leaflet
        img[y:y + h, x:x + w] = 1.0
    if T is not None:
        img = shift(img, T)
    return write_image(out, img)


def _check(bundle: Path, *args: str, capsys) -> tuple[int, dict]:
    capsys.readouterr()
    rc = run_cli(["check", str(bundle), "--device", "cpu", *args])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else {})


def _views(doc: dict) -> dict[str, dict]:
    return {v["view"]: v for v in doc["views"]}


def _overlap(a, b) -> float:
    """Intersection over the smaller box, [x, y, w, h] boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / min(a[2] * a[3], b[2] * b[3])


pytestmark = pytest.mark.usefixtures("restore_thread_counts")


# -- exit codes ------------------------------------------------------------------------------------------


def test_all_clear_exits_0_even_after_a_camera_nudge(bundle: Path, tmp_path: Path, capsys) -> None:
    a = _image(1, tmp_path / "A.png", T=NUDGE)
    b = _image(2, tmp_path / "line2-B.png")
    rc, doc = _check(bundle, str(a), str(b), "--overlay-dir", str(tmp_path / "ov"), capsys=capsys)
    assert rc == 0 and doc["verdict"] == "clear" and doc["exit_code"] == 0
    v = _views(doc)
    assert v["A"]["verdict"] == v["B"]["verdict"] == "clear"
    assert v["A"]["registration"]["ok"] and v["A"]["registration"]["max_corner_shift_px"] > 4
    assert v["A"]["score"] <= v["A"]["threshold"] and v["A"]["regions"] == []
    assert Path(v["A"]["overlay"]).is_file() and Path(v["B"]["overlay"]).is_file()
    assert {"read", "register", "score", "total"} <= set(v["A"]["timings_ms"])


def test_leftover_exits_3_with_the_region_in_image_coordinates(bundle: Path, tmp_path: Path, capsys) -> None:
    a = _image(1, tmp_path / "shot_A.png", leaflet=LEAFLET, T=NUDGE)
    b = _image(2, tmp_path / "shot_B.png")
    rc, doc = _check(bundle, str(a), str(b), "--overlay-dir", str(tmp_path / "ov"), "--out", str(tmp_path / "v.json"),
                     capsys=capsys)
    assert rc == 3 and doc["verdict"] == "leftover"
    va = _views(doc)["A"]
    assert va["verdict"] == "leftover" and va["score"] > va["threshold"] and va["regions_total"] == 1
    region = va["regions"][0]
    # where the leaflet is in the image the camera took (the reference box moved by the nudge)
    x, y, w, h = LEAFLET
    c = cv2.perspectiveTransform(np.array([[[x, y], [x + w, y], [x + w, y + h], [x, y + h]]], np.float64),
                                 np.linalg.inv(NUDGE))[0]
    truth = [c[:, 0].min(), c[:, 1].min(), np.ptp(c[:, 0]), np.ptp(c[:, 1])]
    assert _overlap(region["bbox"], truth) > 0.8 and _overlap(truth, region["bbox"]) > 0.8
    for got, want in zip(region["bbox"], truth):
        assert abs(got - want) <= 4  # one map pixel is 4 image pixels
    assert abs(region["area_px"] - w * h) < 0.35 * w * h
    assert truth[0] <= region["peak_xy"][0] <= truth[0] + truth[2]
    assert _views(doc)["B"]["verdict"] == "clear"
    # the overlay shows the box in red on the original image; the verdict file equals stdout
    ov = read_rgb(va["overlay"])
    bx, by, bw, bh = region["bbox"]
    edge = ov[by + bh - 1, bx + bw // 2]
    assert edge[0] > 0.7 and edge[1] < 0.3
    assert read_verdict(tmp_path / "v.json")["views"] == doc["views"]


def test_masked_region_is_ignored_as_calibrated(bundle: Path, tmp_path: Path, capsys) -> None:
    # B's inspection mask ignores the right 40 px: a leaflet there does not count
    b = _image(2, tmp_path / "B.png", leaflet=(W - 35, 60, 30, 40))
    a = _image(1, tmp_path / "A.png")
    rc, doc = _check(bundle, str(a), str(b), capsys=capsys)
    assert rc == 0 and _views(doc)["B"]["verdict"] == "clear"
    b2 = _image(2, tmp_path / "B2.png", leaflet=(100, 60, 30, 40))
    rc, doc = _check(bundle, "--view", f"A={a}", "--view", f"B={b2}", capsys=capsys)
    assert rc == 3 and _views(doc)["B"]["verdict"] == "leftover"


# -- fail-safe: undecided, never clear ------------------------------------------------------------------


def _corrupt(path: Path) -> Path:
    good = _image(1, path.with_name("tmp_A.png"))
    data = good.read_bytes()
    good.unlink()
    path.write_bytes(data[: len(data) // 2])  # cut short, like a copy interrupted mid-way
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4 + b"IEND\xaeB`\x82")
    return path


@pytest.mark.parametrize("make, reason", [
    (lambda p: _image(1, p, T=ROT70), "camera moved / registration failed"),  # beyond a nudge
    (lambda p: _image(5, p), "camera moved / registration failed"),  # another scene: the camera points elsewhere
    (_corrupt, "unreadable image: truncated PNG"),
    (_garbage, "unreadable image"),
    (lambda p: write_image(p, np.zeros((H, W, 3), np.uint8)), "image is black"),
    (lambda p: write_image(p, np.full((H, W, 3), 255, np.uint8)), "image is saturated"),
    (lambda p: write_image(p, np.full((H, W, 3), 128, np.uint8)), "image is uniform"),
])
def test_fail_safe_cases_are_undecided(bundle: Path, tmp_path: Path, capsys, make, reason) -> None:
    a = make(tmp_path / "A.png")
    b = _image(2, tmp_path / "B.png")
    rc, doc = _check(bundle, str(a), str(b), "--overlay-dir", str(tmp_path / "ov"), capsys=capsys)
    va = _views(doc)["A"]
    assert rc == 4 and doc["verdict"] == "undecided"
    assert va["verdict"] == "undecided" and va["reason"].startswith(reason), va["reason"]
    assert _views(doc)["B"]["verdict"] == "clear"  # the other view is still checked


def test_a_view_without_an_image_is_undecided_and_outranks_leftover(bundle: Path, tmp_path: Path, capsys) -> None:
    a = _image(1, tmp_path / "A.png", leaflet=LEAFLET)
    rc, doc = _check(bundle, str(a), capsys=capsys)
    assert rc == 4 and doc["exit_code"] == 4
    v = _views(doc)
    assert v["A"]["verdict"] == "leftover" and v["B"]["verdict"] == "undecided"
    assert v["B"]["reason"] == "no image for this view" and v["B"]["image"] is None
    # --only narrows the set that is expected
    rc, doc = _check(bundle, str(a), "--only", "A", capsys=capsys)
    assert rc == 3 and [x["view"] for x in doc["views"]] == ["A"]


def test_a_tampered_bundle_file_makes_its_view_undecided(bundle: Path, tmp_path: Path, capsys) -> None:
    line = shutil.copytree(bundle, tmp_path / "line")
    thr = line / "A" / "thresholds.json"
    doc = json.loads(thr.read_text())
    doc["image"]["threshold"] = 1e6  # would make every image "clear"
    thr.write_text(json.dumps(doc))
    a = _image(1, tmp_path / "A.png", leaflet=LEAFLET)
    b = _image(2, tmp_path / "B.png")
    rc, out = _check(line, str(a), str(b), capsys=capsys)
    va = _views(out)["A"]
    assert rc == 4 and va["verdict"] == "undecided"
    assert va["reason"].startswith("bundle damaged") and "thresholds.json" in va["reason"]
    assert _views(out)["B"]["verdict"] == "clear"
    assert run_cli(["check", str(line), "--verify"]) == 1
    assert run_cli(["check", str(bundle), "--verify"]) == 0


def test_a_model_that_cannot_load_is_undecided(bundle: Path, tmp_path: Path, capsys) -> None:
    from lineclear.formats import sha256_file

    line = shutil.copytree(bundle, tmp_path / "line")
    ckpt = line / "B" / "model.pt"
    ckpt.write_bytes(b"not a checkpoint")
    man = json.loads((line / "manifest.json").read_text())  # re-hashed: the file is "intact" but useless
    man["files"]["B/model.pt"] = {"sha256": sha256_file(ckpt), "bytes": ckpt.stat().st_size}
    (line / "manifest.json").write_text(json.dumps(man))
    rc, out = _check(line, str(_image(1, tmp_path / "A.png")), str(_image(2, tmp_path / "B.png")), capsys=capsys)
    vb = _views(out)["B"]
    assert rc == 4 and vb["verdict"] == "undecided" and vb["reason"].startswith("cannot load the view")
    assert _views(out)["A"]["verdict"] == "clear"


def test_errors_inside_the_pipeline_are_undecided(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    checker = Checker(bundle, "cpu")
    a, b = _image(1, tmp_path / "A.png"), _image(2, tmp_path / "B.png")
    assert checker.check({"A": a, "B": b}).verdict == "clear"

    def nan_forward(images, mask=None):
        from lineclear.models.base import AnomalyOutput

        m = torch.full(images.shape[:1] + images.shape[2:], float("nan"))
        return AnomalyOutput(m, m.flatten(1).amax(1))

    monkeypatch.setattr(checker.views["A"].model, "forward", nan_forward)
    res = checker.check({"A": a, "B": b})
    assert res.exit_code == 4 and res.views[0].reason == "the model produced a non-finite score"

    def boom(*args, **kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(checker.views["A"].model, "forward", boom)
    monkeypatch.setattr(checker.views["B"].registrar, "register", boom)
    res = checker.check({"A": a, "B": b})
    assert [v.verdict for v in res.views] == ["undecided", "undecided"]
    assert "out of memory" in res.views[0].reason and "out of memory" in res.views[1].reason


# -- the command itself ------------------------------------------------------------------------------------


def test_usage_and_domain_errors(bundle: Path, tmp_path: Path, capsys) -> None:
    a = _image(1, tmp_path / "A.png")
    both = _image(1, tmp_path / "A_B.png")
    other = _image(1, tmp_path / "C.png")
    assert run_cli(["check", str(bundle)]) == 2  # nothing to check
    assert run_cli(["check", str(bundle), str(other)]) == 2
    assert "matches no view" in capsys.readouterr().err
    assert run_cli(["check", str(bundle), str(both)]) == 2
    assert "several views" in capsys.readouterr().err
    assert run_cli(["check", str(bundle), str(a), "--view", f"A={a}"]) == 2
    assert run_cli(["check", str(bundle), "--view", f"Z={a}"]) == 2
    assert run_cli(["check", str(bundle), "--view", "A"]) == 2
    assert run_cli(["check", str(bundle), str(a), "--log", "x.jsonl"]) == 2
    assert run_cli(["check", str(tmp_path / "nowhere"), str(a)]) == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"schema": "something.else/1"}')
    assert run_cli(["check", str(foreign), str(a)]) == 1
    assert "schema is 'something.else/1'" in capsys.readouterr().err
    # outputs are never overwritten silently
    out = tmp_path / "v.json"
    out.write_text("{}")
    assert run_cli(["check", str(bundle), str(a), "--out", str(out)]) == 1
    assert out.read_text() == "{}"


# -- pure helpers ------------------------------------------------------------------------------------------


def test_name_matching() -> None:
    assert name_matches("A", "A.png") and name_matches("A", "2026-11-29_a_0012.PNG")
    assert name_matches("A", "line2-A.tif") and not name_matches("A", "CAM_B.png")
    assert not name_matches("A", "AB.png") and name_matches("cam1_*.png", "CAM1_x.png")
    assert not name_matches("cam1_*.png", "cam2_x.png")


def test_image_sanity_checks() -> None:
    qc = ImageQC()
    assert image_problem(image_stats((make_scene(1) * 255).astype(np.uint8)), qc) is None
    dark = (make_scene(1) * 255 * 0.04).astype(np.uint8)  # lights off: a faint image is still black
    assert image_problem(image_stats(dark), qc).startswith("image is black")
    assert image_problem(image_stats(np.full((40, 40), 60000, np.uint16)), qc).startswith("image is uniform")


def test_file_problem_detects_truncation(tmp_path: Path) -> None:
    img = (make_scene(1) * 255).astype(np.uint8)
    for ext in (".png", ".jpg"):
        p = write_image(tmp_path / f"x{ext}", img)
        assert file_problem(p) is None
        cut = tmp_path / f"cut{ext}"
        cut.write_bytes(p.read_bytes()[:-100])
        assert "truncated" in file_problem(cut)
    (tmp_path / "empty.png").write_bytes(b"")
    assert file_problem(tmp_path / "empty.png") == "empty file"


def test_find_regions_maps_boxes_back_through_a_rotation() -> None:
    """A 10x6 blob in a 40x60 map; the image is 4x larger and the camera rotated 10 degrees."""
    from lineclear.register import resize_transform

    amap = np.zeros((40, 60), np.float32)
    amap[10:16, 20:30] = 1.0
    amap[12, 25] = 2.0
    amap[30:32, 50:52] = 0.6  # a second, weaker region
    R = np.vstack([cv2.getRotationMatrix2D((120, 80), 10, 1.0), [0, 0, 1]])  # image → reference
    M = np.linalg.inv(R) @ resize_transform((40, 60), (160, 240))
    regions, total = find_regions(amap, 0.5, None, M, (160, 240))
    assert total == 2 and regions[0].peak_score == 2.0 and regions[1].peak_score == pytest.approx(0.6)
    assert regions[0].bbox_map == [20, 10, 10, 6] and regions[0].area_map_px == 60
    # oracle: the blob's reference-frame rectangle mapped through R⁻¹
    c = cv2.perspectiveTransform(np.array([[[80, 40], [120, 40], [120, 64], [80, 64]]], np.float64) - 0.5,
                                 np.linalg.inv(R))[0]
    x0, y0 = c.min(0)
    x1, y1 = c.max(0)
    bx, by, bw, bh = regions[0].bbox
    assert abs(bx - x0) <= 2 and abs(by - y0) <= 2 and abs(bx + bw - x1) <= 2 and abs(by + bh - y1) <= 2
    assert regions[0].area_px == pytest.approx(40 * 24, rel=0.1)  # rotation keeps the area
    px, py = regions[0].peak_xy
    want = cv2.perspectiveTransform(np.array([[[25 * 4 + 1.5, 12 * 4 + 1.5]]]), np.linalg.inv(R))[0, 0]
    assert abs(px - want[0]) < 0.5 and abs(py - want[1]) < 0.5
    counted = np.ones_like(amap, bool)
    counted[30:, 45:] = False
    assert find_regions(amap, 0.5, counted, M, (160, 240))[1] == 1  # ignored pixels never form a region


def test_checker_matches_and_refuses(bundle: Path) -> None:
    checker = Checker(bundle, "cpu", warmup=False)
    assert checker.views_for("x_A.png") == ["A"] and checker.views_for("x.png") == []
    assert checker.match(["A.png", "B.png"]) == {"A": Path("A.png"), "B": Path("B.png")}
    with pytest.raises(UsageError, match="two images"):
        checker.match(["A.png", "A_2.png"])


# -- a changed scene, unreadable images, other sizes ---------------------------------------------------------


def _brighter(seed: int, out: Path, gain: float = 0.25) -> Path:
    """The lights changed: the whole scene is brighter (not saturated, still registrable)."""
    return write_image(out, np.clip(noisy(make_scene(seed), 7) + gain, 0, 1))


def test_a_map_raised_almost_everywhere_is_a_changed_scene_not_a_leftover(bundle: Path, tmp_path: Path,
                                                                           capsys) -> None:
    a = _brighter(1, tmp_path / "A.png")
    b = _image(2, tmp_path / "B.png")
    rc, doc = _check(bundle, str(a), str(b), "--overlay-dir", str(tmp_path / "ov"), capsys=capsys)
    va = _views(doc)["A"]
    assert rc == 4 and va["verdict"] == "undecided"
    assert va["reason"].startswith("scene changed: ") and "(limit 50%)" in va["reason"]
    assert va["raised_fraction"] > 0.5 and va["regions"] == []  # no frame-sized "leftover" box
    assert va["score"] > va["threshold"]  # the image score alone would have said leftover
    assert _views(doc)["B"]["verdict"] == "clear" and _views(doc)["B"]["raised_fraction"] < 0.05
    # the limit is the manifest's: a bundle that allows the whole frame reports the leftover again
    from lineclear.formats.deploy import read_manifest

    loose = read_manifest(bundle)
    loose.views["A"].max_raised_fraction = 1.0
    v = Checker(loose, "cpu").check_one("A", a)
    assert v.verdict == "leftover" and v.regions


def test_a_real_leftover_is_still_a_leftover(bundle: Path, tmp_path: Path) -> None:
    big = (40, 40, 120, 100)  # a large bag: a quarter of the frame, well under the limit
    v = Checker(bundle, "cpu").check_one("A", _image(1, tmp_path / "A.png", leaflet=big))
    assert v.verdict == "leftover" and 0.1 < v.raised_fraction < 0.5


def test_an_unreadable_image_gets_an_overlay_that_says_why(bundle: Path, tmp_path: Path, capsys) -> None:
    a = _corrupt(tmp_path / "A.png")
    b = _image(2, tmp_path / "B.png")
    rc, doc = _check(bundle, str(a), str(b), "--overlay-dir", str(tmp_path / "ov"), capsys=capsys)
    va = _views(doc)["A"]
    assert rc == 4 and va["reason"].startswith("unreadable image")
    ov = (read_rgb(va["overlay"]) * 255).round().astype(int)
    assert ov.shape == (H, W, 3)  # the camera's frame, grey, with the banner
    assert (ov[H - 10:, :] == 96).all()
    band = ov[:, 2]
    orange = [(r > 150 and 50 < g < 150 and b < 80) for r, g, b in band]
    assert orange[0] and not orange[-1]


def test_a_long_reason_is_wrapped_onto_several_banner_lines() -> None:
    from lineclear.line.overlay import blank_frame, draw_overlay
    from lineclear.line.verdict import ViewVerdict

    def band_height(reason: str) -> int:
        img = draw_overlay(blank_frame((H, W)), ViewVerdict("A", "undecided", reason))
        return int(np.argmax((img[:, 1] == 96).all(axis=1)))

    short, long = band_height("no image"), band_height("camera moved / registration failed: " + "x " * 120)
    assert long >= 4 * short  # every word is on the image, none cut off at the right edge
    img = draw_overlay(blank_frame((H, W)), ViewVerdict("A", "undecided", "word " * 60))
    text = (img[: long, :, :] == 255).all(axis=2)
    assert text[:, W - 40:].sum() < text[:, : W - 40].sum() / 5  # lines end inside the frame


def test_an_image_of_another_size_gets_a_note(bundle: Path, tmp_path: Path, capsys) -> None:
    img = noisy(make_scene(1), 7)
    a = write_image(tmp_path / "A.png", cv2.resize(img, (W * 3 // 4, H * 3 // 4), interpolation=cv2.INTER_AREA))
    b = _image(2, tmp_path / "B.png")
    capsys.readouterr()
    rc = run_cli(["check", str(bundle), "--device", "cpu", str(a), str(b)])
    err = capsys.readouterr().err
    assert f"view A: image is {W * 3 // 4}x{H * 3 // 4}, the view's reference {W}x{H}: registered to it" in err
    assert err.count("image is ") == 1 and rc == 0


def test_the_old_module_paths_still_export_the_line_names() -> None:
    """``lineclear.check``, ``lineclear.deploy`` and ``lineclear.watch`` stay importable for one release."""
    import lineclear.check as old_check
    import lineclear.deploy as old_deploy
    import lineclear.watch as old_watch
    from lineclear.line import checker, deploy, regions, verdict, watch

    assert old_check.Checker is checker.Checker and old_check.ViewVerdict is verdict.ViewVerdict
    assert old_check.find_regions is regions.find_regions and old_check.EXIT_CODES == {"clear": 0, "leftover": 3,
                                                                                        "undecided": 4}
    assert old_deploy.build_bundle is deploy.build_bundle and old_deploy.view_from_run is deploy.view_from_run
    assert old_watch.watch is watch.watch and old_watch.WatchOptions is watch.WatchOptions
    for mod in (old_check, old_deploy, old_watch):
        assert all(hasattr(mod, name) for name in mod.__all__)
