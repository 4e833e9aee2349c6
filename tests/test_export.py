"""``lineclear export`` and the runtime without PyTorch: maps equal to PyTorch's, verdicts identical.

Tolerance: an exported model's maps and image scores equal the PyTorch ones within 1e-4 of the maps' range, on every image of a tiny synthetic view, with and without a pre-mask,
for every exportable model and both formats. The numpy twins of the PyTorch functions are each compared
with their twin. A bundle deployed with ``--runtime onnx`` gives the same verdicts as ``--runtime torch``
and is checked in a subprocess that never imports torch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lineclear.dataset import list_images
from lineclear.export import export_run
from lineclear.formats.deploy import read_manifest
from lineclear.formats.export import read_export
from lineclear.images import read_rgb
from lineclear.models.draem.model import image_score_from_map
from lineclear.models.patchcore import search
from lineclear.models.patchcore.model import gaussian_blur as torch_blur
from lineclear.runtime import load_export, ops
from lineclear.runtime.score import score_arrays as score_exported
from lineclear.scoring import load_model, score_arrays
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("restore_thread_counts")
TOL = 1e-4
FORMATS = ("onnx", "openvino")
REPO = Path(__file__).resolve().parent.parent


# -- the numpy twins ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid, p", [((8, 12), 5), ((5, 7), 3), ((8, 12), 1)])
def test_valid_cells_twin(grid, p):
    from lineclear.models.patchcore.model import valid_cells

    valid = np.ones((64, 96), np.float32)
    valid[:, :13] = 0
    valid[50:, 70:] = 0
    ref = valid_cells(torch.from_numpy(valid)[None, None], grid, p)[0].numpy()
    got = ops.valid_cells(valid, grid, p)
    assert np.array_equal(got, ref) and got.any() and not got.all()


@pytest.mark.parametrize("sigma, shape", [(4.0, (40, 56)), (2.0, (33, 17)), (1.5, (5, 7))])
def test_blur_twin(sigma, shape):
    x = np.random.default_rng(0).random(shape).astype(np.float32) * 10
    ref = torch_blur(torch.from_numpy(x)[None], sigma)[0].numpy()
    np.testing.assert_allclose(ops.gaussian_blur(x, sigma), ref, atol=1e-5 * 10)


@pytest.mark.parametrize("src, dst", [((8, 12), (64, 96)), ((5, 7), (37, 50)), ((32, 48), (256, 384))])
def test_bilinear_twin(src, dst):
    x = np.random.default_rng(1).random(src).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None, None], size=dst, mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ops.resize_bilinear(x, dst), ref, atol=1e-5)


@pytest.mark.parametrize("src, dst", [((64, 96), (8, 12)), ((37, 50), (5, 7))])
def test_adaptive_max_pool_twin(src, dst):
    x = (np.random.default_rng(2).random(src) > 0.97).astype(np.float32)
    ref = F.adaptive_max_pool2d(torch.from_numpy(x)[None, None], dst)[0, 0].numpy()
    assert np.array_equal(ops.adaptive_max_pool(x, dst), ref)


@pytest.mark.parametrize("size", [1, 5, 7])
def test_mean_filter_twin(size):
    x = np.random.default_rng(3).random((20, 30)).astype(np.float32)
    x[3, 4] = 5.0  # a peak at the border: the zero padding counts
    ref = float(image_score_from_map(torch.from_numpy(x)[None], size)[0])
    assert ops.mean_filter_max(x, size) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("radius", [0, 1, 2, 30])
def test_nearest_neighbour_twins(radius):
    rng = np.random.default_rng(4)
    grid, c = (6, 9), 16
    n = 3 * grid[0] * grid[1]
    pos = np.stack([rng.integers(0, grid[0], n), rng.integers(0, grid[1], n)], 1).astype(np.int32)
    pos = pos[~((pos[:, 0] == 2) & (pos[:, 1] < 4))]  # empty cells: +inf within radius 0
    bank = rng.normal(size=(len(pos), c)).astype(np.float32)
    test = rng.normal(size=(*grid, c)).astype(np.float32)
    tf, tn = search.dense_bank(torch.from_numpy(bank), torch.from_numpy(pos), grid)
    nf, nn_ = ops.dense_bank(bank, pos, grid)
    ref = search.positional_nn(torch.from_numpy(test)[None], tf, tn, radius)[0].numpy()
    got = ops.positional_nn(test, nf, nn_, radius)
    assert np.array_equal(np.isinf(got), np.isinf(ref)) and (radius > 0 or np.isinf(ref).any())
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-5, atol=1e-4)
    g_ref = search.global_nn(torch.from_numpy(test.reshape(-1, c)), torch.from_numpy(bank), 0.01).numpy()
    np.testing.assert_allclose(ops.global_nn(test.reshape(-1, c), bank, block_mb=0.01), g_ref, rtol=1e-5, atol=1e-4)


# -- exported models against PyTorch ---------------------------------------------------------------------------

TRAIN = {
    "patchcore": ["--preset", "demo", "--image-size", "64x96"],
    "template": ["--image-size", "64x96"],
    "draem": ["--preset", "demo", "--image-size", "64x96", "--epochs", "1", "--set", "steps_per_epoch=2"],
}


def ddad_run(tmp: Path) -> Path:
    """A run directory holding an (untrained) tiny DDAD checkpoint: two DDIM steps (noise drawn between them)."""
    from lineclear.formats import save_checkpoint
    from lineclear.models import MODELS
    from lineclear.models.base import resolve_config

    entry = MODELS["ddad"]
    cfg = resolve_config(entry, "demo", {"image_size": (24, 32), "unet_channels": (8, 16), "unet_attention_res": 12,
                                         "unet_heads": 2, "backbone_weights": "none", "t_prime": 50, "skip": 25})
    run = tmp / "ddad"
    save_checkpoint(run / "model.pt", entry.build(cfg, False).state_dict(), {"model": "ddad", "config": cfg.to_dict()})
    return run


@pytest.fixture(scope="module")
def view(tmp_path_factory) -> Path:
    from lineclear.synth import generate

    data = tmp_path_factory.mktemp("data")
    generate(data, views=("A",), size=(288, 192), seed=0, n_train=6, n_good=1, n_shifted=1, n_anomalous=1)
    return data / "A"


@pytest.fixture(scope="module")
def runs(view, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for model, args in TRAIN.items():
        run = root / model
        assert run_cli(["-q", "train", str(view), "--model", model, *args, "--out", str(run), "--device", "cpu"]) == 0
        out[model] = run
    out["ddad"] = ddad_run(root)  # untrained and tiny: the DDIM loop's fidelity does not depend on training
    return out


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", [*TRAIN, "ddad"])
def test_exported_maps_equal_torch_maps(runs, view, tmp_path, model, fmt):
    out = tmp_path / "exp"
    assert run_cli(["-q", "export", str(runs[model]), "--format", fmt, "--out", str(out),
                    "--images", str(view / "test")]) == 0
    info = read_export(out)
    assert info.model == model and info.format == fmt and info.doc["fidelity"]["ok"]
    assert info.doc["fidelity"]["max_map_diff_rel"] <= TOL
    assert (info.doc["graph"] is None) == (model == "template")
    torch_model, _, cfg = load_model(runs[model] / "model.pt")
    exported = load_export(out)
    size = tuple(cfg.image_size)
    x = np.stack([read_rgb(p, size) for p in list_images(view / "test")])
    roi = np.ones(size, bool)
    roi[:, : size[1] // 3] = False
    seam = np.ones((len(x), *size), bool)  # registered images: their bottom rows came from outside the frame
    seam[:, -size[0] // 4:] = False
    for stage, mask, valid in (("none", None, None), ("pre", roi, None), ("post", roi, None), ("none", None, seam),
                               ("pre", roi, seam)):
        ref_maps, ref_scores, _ = score_arrays(torch_model, x, roi=mask, valid=valid, mask_stage=stage, border_margin=2)
        maps, scores, _ = score_exported(exported, x, roi=mask, valid=valid, mask_stage=stage, border_margin=2)
        rng_map = float(ref_maps.max() - ref_maps.min())
        assert rng_map > 0
        assert np.abs(maps - ref_maps).max() <= TOL * rng_map, (stage, valid is None, np.abs(maps - ref_maps).max())
        assert np.abs(scores - ref_scores).max() <= TOL * rng_map, stage


def test_export_refuses_a_disagreeing_export_and_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "exp"
    rc = run_cli(["-q", "export", str(runs["patchcore"]), "--format", "onnx", "--out", str(out), "--tolerance", "1e-12"])
    err = capsys.readouterr().err
    assert rc == 1 and "disagrees with the PyTorch model" in err and "nothing written" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".exp")]


def test_export_refuses_to_overwrite_and_an_unexportable_model(runs, view, tmp_path, capsys):
    out = tmp_path / "exp"
    assert run_cli(["-q", "export", str(runs["template"]), "--out", str(out)]) == 0
    assert run_cli(["-q", "export", str(runs["template"]), "--out", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    assert run_cli(["-q", "export", str(runs["template"]), "--out", str(out), "--overwrite"]) == 1
    assert "not part of the export" in capsys.readouterr().err and (out / "notes.txt").is_file()
    from lineclear.formats import save_checkpoint
    from lineclear.models import MODELS
    from tests.toy import toy_entry

    MODELS["toyexp"] = toy_entry("toyexp", (16, 24))
    try:
        toy = tmp_path / "toy"
        save_checkpoint(toy / "model.pt", MODELS["toyexp"].build(MODELS["toyexp"].config_cls(), False).state_dict(),
                        {"model": "toyexp", "config": {}})
        capsys.readouterr()
        assert run_cli(["-q", "export", str(toy), "--format", "onnx"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "toyexp" in err[0] and "cannot be exported" in err[0] and "--runtime torch" in err[0]
    finally:
        MODELS.pop("toyexp", None)


def test_a_damaged_export_is_refused(runs, tmp_path):
    out = tmp_path / "exp"
    export_run(runs["template"], "onnx", out)
    data = bytearray((out / "arrays.npz").read_bytes())
    data[-100] ^= 0xFF
    (out / "arrays.npz").write_bytes(bytes(data))
    with pytest.raises(Exception, match="tampered or corrupt"):
        load_export(out)


# -- bundles: verdicts identical, no torch ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated(runs, view) -> dict[str, Path]:
    for model in ("patchcore", "template", "draem"):
        run = runs[model]
        assert run_cli(["-q", "score", str(run), str(view), "--split", "val", "--out", str(run / "val_maps.h5"),
                        "--mask", str(view / "roi.png"), "--mask-stage", "post"]) == 0
        assert run_cli(["-q", "calibrate", str(run / "val_maps.h5"), "--method", "ksigma"]) == 0
    return {m: runs[m] for m in ("patchcore", "template", "draem")}


def _check(bundle: Path, image: Path, capsys) -> dict:
    capsys.readouterr()
    run_cli(["check", str(bundle), "--view", f"A={image}", "-q"])
    return json.loads(capsys.readouterr().out)["views"][0]


@pytest.mark.parametrize("model", ["patchcore", "template", "draem"])
def test_deployed_runtimes_give_identical_verdicts(calibrated, view, tmp_path, model, capsys):
    bundles = {}
    for rt in ("torch", *FORMATS):
        bundles[rt] = tmp_path / f"line-{rt}"
        assert run_cli(["-q", "deploy", str(calibrated[model]), "--out", str(bundles[rt]), "--runtime", rt]) == 0
    m = read_manifest(bundles["onnx"])
    spec = m.views["A"]
    assert spec.runtime == "onnx" and spec.checkpoint is None and not m.needs_torch
    assert m.manifest["schema"] == "lineclear.deploy/2" and any(f.endswith(".onnx") or f.endswith(".npz") for f in m.files)
    images = list_images(view / "test")
    assert len(images) >= 3
    verdicts = {}
    for rt, b in bundles.items():
        verdicts[rt] = [_check(b, p, capsys) for p in images]
    ref = verdicts["torch"]
    assert {v["verdict"] for v in ref} >= {"clear", "leftover"} or model != "patchcore"  # the others barely trained
    for rt in FORMATS:
        for a, b in zip(ref, verdicts[rt]):
            assert a["verdict"] == b["verdict"] and a["regions_total"] == b["regions_total"], (rt, a, b)
            assert a["score"] == pytest.approx(b["score"], rel=1e-4, abs=1e-4 * max(1.0, a["threshold"]))


def test_check_and_watch_of_an_exported_bundle_never_import_torch(calibrated, view, tmp_path):
    bundle = tmp_path / "line"
    assert run_cli(["-q", "deploy", str(calibrated["patchcore"]), "--out", str(bundle), "--runtime", "onnx"]) == 0
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(view / "test" / "good" / "shift_000.png", inbox / "A.png")
    code = (
        "import sys, contextlib, io\n"
        "from lineclear.cli.main import run\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        run(['-q', 'check', {str(bundle)!r}, {str(inbox / 'A.png')!r}])\n"
        "    except SystemExit as e:\n"
        "        rc = e.code\n"
        "watched = io.StringIO()\n"
        "with contextlib.redirect_stdout(watched):\n"
        "    try:\n"
        f"        run(['-q', 'check', {str(bundle)!r}, '--watch', {str(inbox)!r}, '--existing', '--max-sets', '1',\n"
        "             '--settle', '0', '--timeout', '60'])\n"
        "    except SystemExit as e:\n"
        "        wrc = e.code\n"
        "import json\n"
        "print(json.dumps({'rc': rc, 'wrc': wrc, 'torch': 'torch' in sys.modules, 'doc': json.loads(out.getvalue()),\n"
        "                  'watched': [json.loads(x) for x in watched.getvalue().splitlines() if x.strip()]}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["torch"] is False and doc["rc"] in (0, 3, 4) and doc["wrc"] == 0
    first = doc["doc"]["views"][0]
    assert first["verdict"] in ("clear", "leftover") and first["score"] is not None
    (watched,) = doc["watched"]  # --watch: the same image as one set, the same verdict and score
    assert watched["set"] == 1 and watched["views"][0]["verdict"] == first["verdict"]
    assert watched["views"][0]["score"] == first["score"]


def test_a_damaged_export_in_a_bundle_makes_the_view_undecided(calibrated, view, tmp_path, capsys):
    bundle = tmp_path / "line"
    assert run_cli(["-q", "deploy", str(calibrated["template"]), "--out", str(bundle), "--runtime", "onnx"]) == 0
    npz = bundle / "A" / "onnx" / "arrays.npz"
    data = bytearray(npz.read_bytes())
    data[-50] ^= 0xFF
    npz.write_bytes(bytes(data))
    v = _check(bundle, view / "test" / "good" / "good_000.png", capsys)
    assert v["verdict"] == "undecided" and "arrays.npz" in v["reason"] and "SHA-256" in v["reason"]


def test_a_version_1_manifest_still_loads(calibrated, view, tmp_path, capsys):
    bundle = tmp_path / "line"
    assert run_cli(["-q", "deploy", str(calibrated["template"]), "--out", str(bundle)]) == 0
    p = bundle / "manifest.json"
    doc = json.loads(p.read_text())
    doc["schema"] = "lineclear.deploy/1"
    for v in doc["views"].values():
        for k in ("runtime", "export", "export_files"):
            v.pop(k, None)
    p.write_text(json.dumps(doc))
    m = read_manifest(bundle)
    assert m.views["A"].runtime == "torch" and m.needs_torch
    v = _check(bundle, view / "test" / "good" / "good_000.png", capsys)
    assert v["verdict"] in ("clear", "leftover") and v["score"] is not None


def test_region_peaks_and_boxes_equal_scipy_ndimage():
    """The numpy label statistics that keep scipy out of a check's start-up, against scipy.ndimage."""
    import cv2
    from scipy import ndimage

    from lineclear.line.regions import label_boxes, label_peaks

    rng = np.random.default_rng(5)
    amap = rng.random((60, 80)).astype(np.float32)
    n, labels, _, _ = cv2.connectedComponentsWithStats((amap > 0.6).astype(np.uint8), connectivity=8)
    assert n > 5
    peaks, pos = label_peaks(amap, labels, n)
    assert np.array_equal(peaks, ndimage.maximum(amap, labels, index=np.arange(1, n)))
    assert pos == [tuple(int(c) for c in p) for p in ndimage.maximum_position(amap, labels, index=np.arange(1, n))]
    lab = labels.astype(np.uint16)
    lab[lab == 3] = 0  # an absent label
    assert label_boxes(lab, n - 1) == ndimage.find_objects(lab, max_label=n - 1)
    tie = np.array([[0.7, 0.7, 0.0, 0.2, 0.5, 0.5]], np.float32)
    _, pos = label_peaks(tie, np.array([[1, 1, 0, 2, 2, 2]]), 3)
    assert pos == [(0, 0), (0, 4)]  # a tie: the first in raster order
