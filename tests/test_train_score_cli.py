"""The shared train/score machinery, exercised with a toy model registered for the test.

The real models have their own tests; this one checks what every model relies on:
run directories, checkpoints, split handling, maps provenance and the masking stages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import torch
import typer

from lineclear.formats import MapsFile, load_checkpoint, read_mask
from lineclear.models import MODELS
from tests.conftest import run_cli
from tests.toy import toy_entry


@pytest.fixture
def toy_model():
    MODELS["toy"] = toy_entry("toy")
    yield
    MODELS.pop("toy")


def test_train_then_score(tiny_view: Path, tmp_path: Path, toy_model, capsys) -> None:
    run = tmp_path / "run"
    assert run_cli(["train", str(tiny_view), "--model", "toy", "--out", str(run), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["train_images"] == 5 and result["val_images"] == 1  # the thesis's 80/20 split of 6
    sd, meta = load_checkpoint(run / "model.pt")
    assert meta["model"] == "toy" and meta["config"]["image_size"] == [16, 24]
    assert len(meta["train_image_ids"]) == 5 and meta["val_image_ids"][0].startswith("V/train/good/")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["schema"] == "lineclear.run/1" and cfg["model"] == "toy"
    assert (run / "train_log.jsonl").read_text().strip()

    # a second train into the same directory is refused, --overwrite is not
    assert run_cli(["train", str(tiny_view), "--model", "toy", "--out", str(run)]) == 1
    assert "already holds a trained model" in capsys.readouterr().err

    out = tmp_path / "test_maps.h5"
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--out", str(out), "--device", "cpu"]) == 0
    with MapsFile(out) as f:
        assert len(f) == 4 and f.map_size == (16, 24)
        assert sorted(f.image_ids) == ["V/test/good/000.png", "V/test/good/001.png",
                                       "V/test/leaflet/000.png", "V/test/leaflet/001.png"]
        labels = dict(zip(f.image_ids, f.labels))
        assert labels["V/test/good/000.png"] == 0 and labels["V/test/leaflet/001.png"] == 1
        assert f.attrs["mask_stage"] == "none" and f.attrs["model"] == "toy"
        assert len(f.attrs["checkpoint_sha256"]) == 64
        assert not f.has_valid
        scores = dict(zip(f.image_ids, f.scores))
        # the pasted white rectangle stands out against the mean of the training images
        assert min(scores["V/test/leaflet/000.png"], scores["V/test/leaflet/001.png"]) > 2 * max(
            scores["V/test/good/000.png"], scores["V/test/good/001.png"])

    val = tmp_path / "val_maps.h5"
    assert run_cli(["-q", "score", str(run), str(tiny_view), "--split", "val", "--out", str(val)]) == 0
    with MapsFile(val) as f:
        assert f.image_ids == meta["val_image_ids"]  # the same held-out images as training chose


def test_post_and_pre_masking(tiny_view: Path, tmp_path: Path, toy_model) -> None:
    run = tmp_path / "run"
    assert run_cli(["-q", "train", str(tiny_view), "--model", "toy", "--out", str(run)]) == 0
    roi = tiny_view / "roi.png"
    maps = {}
    for stage in ("none", "post", "pre"):
        out = tmp_path / f"{stage}.h5"
        extra = [] if stage == "none" else ["--mask", str(roi), "--mask-stage", stage]
        assert run_cli(["-q", "score", str(run), str(tiny_view / "test"), "--out", str(out), *extra]) == 0
        with MapsFile(out) as f:
            maps[stage] = (np.stack([f.map(i) for i in range(len(f))]), f.scores.copy(),
                           np.stack([f.valid(i) for i in range(len(f))]), f.attrs["mask_stage"])
    import cv2

    inspect = cv2.resize(read_mask(roi).astype(np.uint8), (24, 16), interpolation=cv2.INTER_NEAREST).astype(bool)
    none_maps, post_maps = maps["none"][0], maps["post"][0]
    # post: exactly the masked pixels are zeroed, the rest is untouched
    np.testing.assert_array_equal(post_maps[:, ~inspect], 0)
    np.testing.assert_array_equal(post_maps[:, inspect], none_maps[:, inspect])
    np.testing.assert_allclose(maps["post"][1], post_maps.reshape(len(post_maps), -1).max(1), rtol=1e-6)
    assert maps["post"][3] == "post" and maps["pre"][3] == "pre"
    assert (maps["post"][2] == inspect).all()
    np.testing.assert_array_equal(maps["pre"][0][:, ~inspect], 0)


def test_score_refuses_bad_inputs(tiny_view: Path, tmp_path: Path, toy_model, capsys) -> None:
    run = tmp_path / "run"
    assert run_cli(["-q", "train", str(tiny_view), "--model", "toy", "--out", str(run)]) == 0
    capsys.readouterr()
    from lineclear.formats import write_mask

    small = write_mask(tmp_path / "small.png", np.ones((5, 5), bool))
    out = tmp_path / "m.h5"
    assert run_cli(["score", str(run), str(tiny_view / "test"), "--out", str(out), "--mask", str(small)]) == 1
    err = capsys.readouterr().err
    assert "small.png" in err and "5x5" in err and not out.exists()
    assert run_cli(["score", str(run), str(tiny_view / "test"), "--out", str(out), "--mask-stage", "middle"]) == 2
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.zeros(1)}, bare)
    assert run_cli(["score", str(bare), str(tiny_view / "test"), "--out", str(out)]) == 1
    assert "not a lineclear checkpoint" in capsys.readouterr().err
    assert run_cli(["score", str(run), str(tmp_path / "nope"), "--out", str(out)]) == 1
    assert run_cli(["train", str(tmp_path / "nope"), "--model", "toy", "--out", str(tmp_path / "r2")]) == 1
    assert run_cli(["train", str(tiny_view), "--model", "toy", "--t-prime", "5", "--out", str(tmp_path / "r3")]) == 2
    assert "does not apply to model toy" in capsys.readouterr().err


def test_registration_validity_and_border_margin(tiny_view: Path, tmp_path: Path, toy_model) -> None:
    from lineclear.formats import write_mask

    run = tmp_path / "run"
    assert run_cli(["-q", "train", str(tiny_view), "--model", "toy", "--out", str(run)]) == 0
    # a registered image whose left 8 source columns (of 48) came from outside the frame
    valid = np.ones((32, 48), bool)
    valid[:, :8] = False
    write_mask(tiny_view / "valid" / "test" / "leaflet" / "000_valid.png", valid)
    out = {}
    for margin in (0, 2):
        p = tmp_path / f"m{margin}.h5"
        assert run_cli(["-q", "score", str(run), str(tiny_view / "test" / "leaflet"), "--out", str(p),
                        "--border-margin", str(margin)]) == 0
        with MapsFile(p) as f:
            assert f.attrs["registered"] == 1 and f.has_valid
            i = f.image_ids.index("V/test/leaflet/000.png")
            j = f.image_ids.index("V/test/leaflet/001.png")
            out[margin] = (f.valid(i), f.map(i), f.valid(j))
    v0, m0, other = out[0]
    # 8 of 48 source columns = 4 of 24 map columns are invalid; the map is zero there
    assert (~v0).sum(axis=1).tolist() == [4] * 16
    assert (m0[~v0] == 0).all()
    assert other.all()  # an image without a validity mask counts everywhere
    v2 = out[2][0]
    # the margin widens only the seam side, not the image edges
    assert (~v2).sum(axis=1).tolist() == [6] * 16
    assert v2[:, -1].all() and v2[0, 10:].all()
    # --no-valid ignores the masks
    p = tmp_path / "novalid.h5"
    assert run_cli(["-q", "score", str(run), str(tiny_view / "test"), "--out", str(p), "--no-valid"]) == 0
    with MapsFile(p) as f:
        assert not f.has_valid and f.attrs["registered"] == 0


def test_failed_training_leaves_nothing(tiny_view: Path, tmp_path: Path, capsys) -> None:
    from lineclear.errors import LineclearError

    def refuse(model, session):
        raise LineclearError("V/train/good: needs more images")

    entry = toy_entry("toyfail")
    MODELS["toyfail"] = type(entry)(**{**entry.__dict__, "train": refuse})
    try:
        out = tmp_path / "runs" / "t"
        assert run_cli(["train", str(tiny_view), "--model", "toyfail", "--out", str(out)]) == 1
        assert "needs more images" in capsys.readouterr().err
        assert not out.exists()
    finally:
        MODELS.pop("toyfail")


def test_corrupt_checkpoint_and_permissions(tiny_view: Path, tmp_path: Path, toy_model, capsys) -> None:
    junk = tmp_path / "j.pt"
    junk.write_text("junk\n")
    assert run_cli(["score", str(junk), str(tiny_view / "test"), "--out", str(tmp_path / "x.h5")]) == 1
    err = capsys.readouterr().err
    assert "j.pt: not a readable checkpoint" in err and "internal error" not in err
    run = tmp_path / "run"
    # global options are accepted after the command too
    assert run_cli(["train", str(tiny_view), "--model", "toy", "--out", str(run), "-q"]) == 0
    assert (run / "model.pt").stat().st_mode & 0o044 == 0o044  # readable by group and others, like any file


def test_unwritable_output_is_one_line(tiny_view: Path, tmp_path: Path, toy_model, capsys) -> None:
    run = tmp_path / "run"
    assert run_cli(["-q", "train", str(tiny_view), "--model", "toy", "--out", str(run)]) == 0
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    capsys.readouterr()
    assert run_cli(["-q", "score", str(run), str(tiny_view / "test"), "--out", str(blocker / "m.h5")]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert errors == [f"lineclear: error: {blocker / 'm.h5'}: cannot write here ({blocker} is a file, not a folder)"]


def test_a_model_setting_declared_with_option_becomes_a_train_option() -> None:
    """The config dataclass is the one source: field, type and help text make the option."""
    from dataclasses import dataclass

    from typer.testing import CliRunner

    from lineclear.cli.train import with_model_options
    from lineclear.models.base import BaseConfig, ModelEntry, declared_options, option

    @dataclass
    class StrongConfig(BaseConfig):
        image_size: tuple[int, int] = (8, 8)  # another default: the option declared by BaseConfig stays
        strength: float = option(0.5, "How strong the toy is.", min=0.0)
        sharp: bool = option(False, "Sharpen first.")
        hidden: int = 3  # no option: --set hidden=4

    opts = declared_options(StrongConfig)
    assert list(opts) == ["image_size", "batch_size", "epochs", "lr", "seed", "strength", "sharp"]
    assert (opts["image_size"].type, opts["strength"].type, opts["sharp"].type) == (str, float, bool)
    strong = ModelEntry("strong", "test", StrongConfig, {"fast": {}}, lambda cfg, pretrained: None, lambda m, s: None)
    seen: dict = {}

    def command(preset: Annotated[str, typer.Option("--preset")] = "fast", **settings) -> None:
        seen.update(settings)

    app = typer.Typer(rich_markup_mode=None)
    app.command()(with_model_options(command, {"toy": toy_entry("toy"), "strong": strong}))
    app.command("other")(lambda: None)  # two commands: Typer then wants the command's name
    runner = CliRunner()
    text = runner.invoke(app, ["command", "--help"], env={"COLUMNS": "200"}).output
    assert "strong: How strong the toy is." in text and "--sharp / --no-sharp" in text
    assert "Override the preset's epochs." in text and "toy:" not in text  # every model has --epochs: no prefix
    assert runner.invoke(app, ["command", "--strength", "0.7", "--sharp", "--image-size", "4x6"]).exit_code == 0
    assert seen["strength"] == 0.7 and seen["sharp"] is True and seen["image_size"] == "4x6" and seen["epochs"] is None
    assert runner.invoke(app, ["command", "--hidden", "4"]).exit_code == 2


def test_every_model_option_of_earlier_releases_still_exists() -> None:
    import inspect

    from lineclear.cli.main import app

    cmd = next(c for c in app.registered_commands if c.name == "train")
    names = set(inspect.signature(cmd.callback).parameters)
    assert {"epochs", "image_size", "batch_size", "lr", "seed", "textures", "backbone", "backbone_weights", "t_prime",
            "skip", "w", "v", "lambda_dl", "domain_adaptation", "coreset_ratio", "position_radius"} <= names
