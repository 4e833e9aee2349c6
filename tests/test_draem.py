"""DRAEM: networks, loss, synthesis, masking (tiny sizes, CPU)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lineclear.errors import UsageError
from lineclear.models import MODELS
from lineclear.models.base import resolve_config
from lineclear.models.draem import DraemConfig, DraemModel
from lineclear.models.draem.augment import AnomalySynthesizer, augment_texture, cutout_anomaly, perlin_anomaly
from lineclear.models.draem.loss import draem_loss, focal_loss, ssim_map
from lineclear.models.draem.model import effective_filter_size, image_score_from_map
from lineclear.models.draem.perlin import perlin_2d, perlin_mask
from lineclear.models.draem.textures import FolderTextures, ProceduralTextures, make_texture_source


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw) -> DraemConfig:
    base = dict(image_size=(64, 64), recon_width=4, disc_width=4, batch_size=2, epochs=1)
    base.update(kw)
    return DraemConfig(**base)


def test_demo_preset_trains_on_one_thread():
    """Regression: the demo run took 44-95 s instead of ~10 s on a loaded 2-core PC (OpenMP threads spinning)."""
    demo = resolve_config(MODELS["draem"], "demo")
    assert demo.threads == 1
    assert resolve_config(MODELS["draem"], "fast").threads == 0  # real budgets keep every core


def test_registered_with_presets():
    entry = MODELS["draem"]
    assert {"paper", "fast", "demo"} <= set(entry.presets)
    paper = resolve_config(entry, "paper")
    assert paper.image_size == (512, 512) and paper.epochs == 3000 and paper.batch_size == 1
    assert paper.milestones() == [1200, 2100] and paper.lr_gamma == pytest.approx(0.1) and paper.lr == pytest.approx(1e-4)
    assert paper.lr_at(1199) == pytest.approx(1e-4) and paper.lr_at(1200) == pytest.approx(1e-5)
    assert paper.lr_at(2100) == pytest.approx(1e-6)
    assert paper.p_cutout > 0 and paper.checkpoint_every == 250 and paper.keep_from == 2000
    assert paper.recon_width == 128 and paper.disc_width == 64 and paper.rotate is False
    fast = resolve_config(entry, "fast", {"epochs": "7", "image_size": "64x96"})
    assert fast.epochs == 7 and fast.image_size == (64, 96)


def test_milestones_fractions_scale_with_epochs():
    cfg = DraemConfig(epochs=100, lr_milestones="0.4,0.7")
    assert cfg.milestones() == [40, 70]


def test_map_is_a_probability_and_the_networks_backpropagate():
    """Shapes, finite values and pre-masking of every model: test_models_registry.py."""
    torch.manual_seed(0)
    model = DraemModel(tiny(image_size=(32, 64)))
    x = torch.rand(2, 3, 32, 64)
    model.eval()
    with torch.inference_mode():
        out = model(x)
    assert (out.anomaly_map >= 0).all() and (out.anomaly_map <= 1).all()
    model.train()
    rec, logits = model.networks(x)
    assert rec.shape == x.shape and logits.shape == (2, 2, 32, 64)
    terms = draem_loss(x, rec, logits, (torch.rand(2, 1, 32, 64) > 0.8).float())
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_size_must_be_multiple_of_32():
    with pytest.raises(UsageError, match="multiple of 32"):
        DraemModel(tiny(image_size=(48, 64)))


def test_pre_masking_accepts_2d_mask_and_rejects_wrong_size():
    model = DraemModel(tiny()).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        out = model(x, torch.ones(64, 64))
        ref = model(x)
    assert torch.allclose(out.anomaly_map, ref.anomaly_map, atol=1e-6)
    with pytest.raises(UsageError, match="mask"):
        model(x, torch.ones(32, 32))


def test_image_score_mean_filter_and_zeroed_map():
    model = DraemModel(tiny(score_filter=5, score_filter_ref=0))
    assert model.filter_size == 5
    m = torch.zeros(1, 64, 64)
    assert model.image_score(m).item() == 0.0
    m[0, 10:15, 20:25] = 1.0  # a 5x5 block fills the filter exactly once
    assert model.image_score(m).item() == pytest.approx(1.0)
    m[0, 40, 40] = 1.0  # an isolated pixel: 1/25 after the mean filter, below the block
    m2 = torch.zeros(1, 64, 64)
    m2[0, 40, 40] = 1.0
    assert model.image_score(m2).item() == pytest.approx(1 / 25)
    # post-masking (done by the scoring stage): zeroing the block leaves only the pixel
    post = m * (torch.arange(64)[None, :, None] > 30).float()
    assert model.image_score(post).item() == pytest.approx(1 / 25)
    # oracle: scipy uniform filter with zero padding
    from scipy.ndimage import uniform_filter

    r = torch.rand(2, 64, 64)
    ref = [uniform_filter(r[i].numpy().astype(np.float64), 5, mode="constant").max() for i in range(2)]
    assert np.allclose(image_score_from_map(r, 5).numpy(), ref, atol=1e-6)


def test_effective_filter_size_scales_and_is_odd():
    assert effective_filter_size(21, (256, 256), 256) == 21
    assert effective_filter_size(21, (512, 512), 256) == 43
    assert effective_filter_size(21, (128, 192), 256) == 11
    assert effective_filter_size(21, (128, 192), 0) == 21
    assert effective_filter_size(1, (512, 512), 256) == 1


def test_focal_loss_hand_computed():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1,2,1,2): pixel a logits (2,0), pixel b (0,1)
    target = torch.tensor([[[[1.0, 0.0]]]])
    pa = np.exp(0) / (np.exp(2) + np.exp(0))  # p(anomalous) at pixel a, true class 1
    pb = np.exp(0) / (np.exp(0) + np.exp(1))  # p(normal) at pixel b, true class 0
    want = np.mean([-((1 - pa) ** 2) * np.log(pa), -((1 - pb) ** 2) * np.log(pb)])
    assert focal_loss(logits, target, gamma=2).item() == pytest.approx(want, rel=1e-5)
    # gamma = 0 is cross-entropy
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0].long())
    assert focal_loss(logits, target, gamma=0).item() == pytest.approx(ce.item(), rel=1e-5)


def test_ssim_against_reference():
    """Oracle: the SSIM formula evaluated with scipy's correlate (zero padding, same Gaussian)."""
    from scipy.ndimage import correlate

    rng = np.random.default_rng(0)
    a = rng.random((40, 40))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ours = ssim_map(torch.tensor(a)[None, None], torch.tensor(b)[None, None]).numpy()[0, 0]
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    win = np.outer(g, g)

    def f(z):
        return correlate(z, win, mode="constant", cval=0.0)

    ma, mb = f(a), f(b)
    va, vb, cab = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    ref = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    assert np.allclose(ours, ref, atol=1e-8)
    try:  # and, where installed, scikit-image away from the borders
        from skimage.metrics import structural_similarity
    except ImportError:
        return
    _, full = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    assert np.allclose(ours[6:-6, 6:-6], full[6:-6, 6:-6], atol=1e-6)


def test_ssim_hand_case_identical_and_constant():
    a = torch.rand(1, 3, 32, 32)
    assert torch.allclose(ssim_map(a, a), torch.ones(1, 3, 32, 32), atol=1e-5)
    # two constant images: SSIM = (2 m1 m2 + C1) / (m1² + m2² + C1) away from the borders
    x, y = torch.full((1, 1, 32, 32), 0.2), torch.full((1, 1, 32, 32), 0.6)
    c1 = 1e-4
    assert ssim_map(x, y)[0, 0, 16, 16].item() == pytest.approx((2 * 0.12 + c1) / (0.04 + 0.36 + c1), rel=1e-4)


def test_perlin_noise_range_and_determinism():
    n1 = perlin_2d((64, 96), (4, 8), np.random.default_rng(3))
    n2 = perlin_2d((64, 96), (4, 8), np.random.default_rng(3))
    assert n1.shape == (64, 96) and np.array_equal(n1, n2)
    assert np.abs(n1).max() <= 1.5 and n1.std() > 0.05
    m = perlin_mask((64, 96), np.random.default_rng(3), threshold=(0.3, 0.6))
    assert set(np.unique(m)) <= {0.0, 1.0}


def test_perlin_anomaly_changes_exactly_the_mask():
    rng = np.random.default_rng(0)
    img = rng.random((64, 64, 3)).astype(np.float32)
    for seed in range(8):
        r = np.random.default_rng(seed)
        tex = (r.random((64, 64, 3)) * 255).astype(np.uint8)
        out, m = perlin_anomaly(img, tex, r, beta=(0.1, 1.0), threshold=(0.0, 0.2))
        outside = m == 0
        assert np.array_equal(out[outside], img[outside])
        if m.sum():
            changed = np.abs(out - img).max(-1) > 0
            assert changed[m > 0].mean() > 0.99


def test_cutout_changes_exactly_the_mask_and_is_whiteish():
    img = np.zeros((64, 96, 3), np.float32) + 0.3
    for seed in range(8):
        out, m = cutout_anomaly(img, np.random.default_rng(seed), p_print=0.0)
        assert m.sum() > 0
        assert np.array_equal(out[m == 0], img[m == 0])
        assert out[m > 0].mean() > 0.75
        frac = m.mean()
        assert 0.003 < frac < 0.2


def test_synthesizer_paths_and_valid_mask():
    cfg = tiny(p_none=1, p_perlin=1, p_cutout=1, perlin_threshold_min=0.0, perlin_threshold_max=0.2)
    synth = AnomalySynthesizer(cfg, ProceduralTextures())
    img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    valid = np.zeros((64, 64), np.float32)
    valid[:, :32] = 1
    seen = set()
    rng = np.random.default_rng(1)
    for _ in range(30):
        out, m, path = synth(img, rng, valid)
        seen.add(path)
        assert m[:, 32:].sum() == 0  # never outside the valid region
        assert np.array_equal(out[m == 0], img[m == 0])
        if path == "none":
            assert m.sum() == 0 and np.array_equal(out, img)
    assert seen == {"none", "perlin", "cutout"}


def test_texture_sources(tmp_path):
    proc = ProceduralTextures()
    rng = np.random.default_rng(0)
    for kind in ProceduralTextures.KINDS:
        t = getattr(proc, f"_{kind}")(rng, (32, 48))
        assert t.shape == (32, 48, 3) and np.isfinite(t).all()
    s = proc.sample(np.random.default_rng(5), (32, 48))
    assert s.dtype == np.uint8 and np.array_equal(s, proc.sample(np.random.default_rng(5), (32, 48)))
    aug = augment_texture(s, np.random.default_rng(1))
    assert aug.shape == s.shape and aug.dtype == np.uint8
    import cv2

    (tmp_path / "banded" / "deep").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "banded" / "deep" / "t.png"), np.full((10, 20, 3), 200, np.uint8))
    src = make_texture_source(str(tmp_path))
    assert isinstance(src, FolderTextures) and src.sample(rng, (16, 24)).shape == (16, 24, 3)
    with pytest.raises(UsageError, match="no images"):
        FolderTextures(_empty(tmp_path))
    with pytest.raises(UsageError, match="not found"):
        FolderTextures(tmp_path / "missing")


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_config_roundtrip_through_dict():
    from lineclear.models.base import config_from_dict

    cfg = resolve_config(MODELS["draem"], "fast")
    again = config_from_dict(MODELS["draem"], cfg.to_dict())
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
