"""DDAD: U-Net, noise schedule, conditioned reconstruction, anomaly map, domain adaptation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lineclear.errors import UsageError
from lineclear.models import MODELS
from lineclear.models.base import resolve_config
from lineclear.models.ddad import anomaly as A
from lineclear.models.ddad.diffusion import NoiseSchedule, conditioned_reconstruction, ddpm_loss
from lineclear.models.ddad.domain_adaptation import adapt_feature_extractor, da_loss, frozen_copy, pair_indices
from lineclear.models.ddad.unet import UNet, timestep_embedding

ENTRY = MODELS["ddad"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**kw):
    base = dict(image_size=(24, 32), unet_channels=(8, 16), unet_res_blocks=1, unet_attention_res=12,
                unet_heads=2, backbone="tf_efficientnet_lite0", backbone_weights="none", epochs=2,
                batch_size=4, da_epochs=1, da_batch_size=4, blur_sigma=1.0)
    base.update(kw)
    return resolve_config(ENTRY, "demo", base)


def scene(n: int, h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = 0.4 + 0.15 * torch.sin(xx / 3.0) * torch.cos(yy / 4.0)
    img = base.expand(n, 3, h, w) + 0.02 * torch.randn(n, 3, h, w, generator=g)
    return img.clamp(0, 1).float()


# ---------------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize("size", [(16, 16), (24, 32), (20, 30)])
def test_unet_shapes_any_size(size):
    torch.manual_seed(0)
    net = UNet(channels=(8, 16, 24), res_blocks=1, attention_res=8, heads=2, image_size=size)
    x = torch.randn(3, 3, *size)
    out = net(x, torch.tensor([0, 500, 999]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert any(isinstance(m, nn.Module) and m.__class__.__name__ == "Attention" for m in net.modules())


def test_unet_backward_step_reduces_loss():
    torch.manual_seed(0)
    net = UNet(channels=(8, 16), res_blocks=1, attention_res=16, heads=2, image_size=(16, 16))
    sched = NoiseSchedule()
    x0 = scene(4, 16, 16) * 2 - 1
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    loss0 = ddpm_loss(net, sched, x0, generator=g)
    loss0.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    # the zero-initialised output conv gets a gradient at once
    assert net.out[-1].weight.grad.abs().sum() > 0
    opt.step()
    losses = []
    for _ in range(30):
        g = torch.Generator().manual_seed(1)
        loss = ddpm_loss(net, sched, x0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * float(loss0)


def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0, 10]), 8)
    assert e.shape == (2, 8)
    assert torch.allclose(e[0], torch.tensor([0, 0, 0, 0, 1, 1, 1, 1.0]))
    assert math.isclose(float(e[1, 0]), math.sin(10.0), rel_tol=1e-6)


# ---------------------------------------------------------------------------------- schedule
def test_noise_schedule_matches_hand_computation():
    s = NoiseSchedule(1000, 1e-4, 0.02)
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    prod = 1.0
    hand = []
    for b in betas:
        prod *= 1 - b
        hand.append(prod)
    assert np.allclose(s.alphas_cumprod.numpy(), hand, rtol=1e-5)
    assert math.isclose(float(s.alphas_cumprod[0]), 1 - 1e-4, rel_tol=1e-7)
    assert math.isclose(float(s.alphas_cumprod[249]), hand[249], rel_tol=1e-6)
    assert 0.5 < hand[249] < 0.55  # noise level at T' = 250
    assert float(s.alpha_bar(torch.tensor([-1]))) == 1.0
    assert float(s.alpha_bar(torch.tensor([999]))) == pytest.approx(hand[999], rel=1e-5)
    assert s.step_sequence(250, 25) == list(range(249, -1, -25))
    assert len(s.step_sequence(250, 25)) == 10
    assert len(s.step_sequence(1000, 25)) == 40


def _oracle(clean: torch.Tensor, sched: NoiseSchedule) -> nn.Module:
    """A 'perfect' denoiser that believes every image is ``clean``: ε = (x_t − √ᾱ clean)/√(1−ᾱ)."""

    class Oracle(nn.Module):
        def forward(self, x, t):
            a = sched.alpha_bar(t)
            return (x - a.sqrt() * clean) / (1 - a).sqrt()

    return Oracle()


def test_conditioned_reconstruction_pulls_towards_target():
    sched = NoiseSchedule()
    torch.manual_seed(0)
    y = scene(2) * 2 - 1
    nominal = y.clone()
    nominal[:, :, 5:15, 5:15] = -1.0  # the model's idea of the image differs from the target here
    unet = _oracle(nominal, sched)
    g = torch.Generator().manual_seed(0)
    fixed = torch.randn(y.shape, generator=g)
    a = sched.alpha_bar(torch.tensor([249]))
    noised = a.sqrt() * y + (1 - a).sqrt() * fixed

    def rec(w, eta=0.0):
        return conditioned_reconstruction(unet, sched, y, y, 250, 25, w, eta, noise=lambda: fixed)

    d_noised = (noised - y).abs().mean()
    r0, r2, r8 = rec(0.0), rec(2.0), rec(8.0)
    # without conditioning the perfect denoiser returns its nominal image exactly
    assert torch.allclose(r0, nominal, atol=1e-4)
    # conditioning moves the reconstruction towards the target, more with larger w
    d0, d2, d8 = ((r - y).abs().mean() for r in (r0, r2, r8))
    assert d8 < d2 < d0
    assert d2 < d_noised
    # with a stochastic schedule (eta = 1) the reconstruction is still closer than the noised input
    assert (rec(2.0, eta=1.0) - y).abs().mean() < d_noised


def test_reconstruction_argument_checks():
    sched = NoiseSchedule()
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError):
        conditioned_reconstruction(nn.Identity(), sched, x, x, 0, 25, 1.0)
    with pytest.raises(ValueError):
        conditioned_reconstruction(nn.Identity(), sched, x, x, 1001, 25, 1.0)


# ---------------------------------------------------------------------------------- anomaly map
def test_combine_is_per_image():
    d_f = torch.zeros(2, 1, 4, 4)
    d_p = torch.zeros(2, 1, 4, 4)
    d_f[0, 0, 1, 1], d_p[0, 0, 2, 2] = 0.5, 0.1
    d_f[1, 0, 0, 0], d_p[1, 0, 3, 3] = 2.0, 10.0  # a batch-mate with much larger distances
    out = A.combine(d_f, d_p, v=1.0)
    # image 0: D_p rescaled by its own max D_f / max D_p = 0.5 / 0.1
    assert out[0, 0, 2, 2] == pytest.approx(0.5)
    assert out[0, 0, 1, 1] == pytest.approx(0.5)
    assert out[1, 0, 3, 3] == pytest.approx(2.0)
    alone = A.combine(d_f[:1], d_p[:1], v=1.0)
    assert torch.equal(alone, out[:1])
    # the reference's batch normalisation would have given image 0: 0.1 * 2 / 10 = 0.02
    assert out[0, 0, 2, 2] != pytest.approx(0.02)


def test_patch_mean_and_feature_distance():
    f = torch.zeros(1, 2, 5, 5)
    f[0, 0, 2, 2] = 9.0
    pm = A.patch_mean(f)
    assert pm[0, 0, 1:4, 1:4].eq(1.0).all() and pm[0, 0, 0, 0] == 0
    a = [torch.randn(2, 4, 3, 4), torch.randn(2, 6, 2, 2)]
    d_same = A.feature_distance(a, a, (12, 16))
    assert d_same.shape == (2, 1, 12, 16) and d_same.abs().max() < 1e-5
    d_neg = A.feature_distance(a, [-t for t in a], (12, 16))
    assert torch.allclose(d_neg, torch.full_like(d_neg, 4.0), atol=1e-4)  # 2 layers × (1 − (−1))


def test_gaussian_blur_kernel_and_mass():
    k = A.gaussian_kernel1d(4.0)
    assert k.numel() == 2 * int(4 * 4 + 0.5) + 1 == 33
    assert float(k.sum()) == pytest.approx(1.0)
    m = torch.zeros(1, 1, 64, 64)
    m[0, 0, 32, 32] = 1.0
    b = A.gaussian_blur(m, 4.0)
    assert float(b.sum()) == pytest.approx(1.0, rel=1e-4)
    assert b[0, 0, 32, 32] == b.max()
    tiny = A.gaussian_blur(torch.rand(1, 1, 6, 6), 4.0)  # kernel larger than the map
    assert tiny.shape == (1, 1, 6, 6)


class _ConvFE(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        return [a, torch.relu(self.c2(a))]


def test_anomaly_map_per_image_and_mask():
    fe = _ConvFE().eval()
    imgs = scene(3)
    rec = imgs.clone()
    rec[1, :, 4:10, 4:12] = 1.0  # image 1 badly reconstructed
    rec[2] += 0.01
    with torch.no_grad():
        batch = A.anomaly_map(imgs, rec, fe, v=1.0, sigma=1.0)
        alone0 = A.anomaly_map(imgs[:1], rec[:1], fe, v=1.0, sigma=1.0)
        alone2 = A.anomaly_map(imgs[2:], rec[2:], fe, v=1.0, sigma=1.0)
    assert batch.shape == (3, 24, 32)
    assert torch.allclose(batch[0], alone0[0], atol=1e-6)
    assert torch.allclose(batch[2], alone2[0], atol=1e-6)
    peak = torch.nonzero(batch[1] == batch[1].max())[0]
    assert 2 <= peak[0] <= 12 and 2 <= peak[1] <= 14
    # pre-masking: zero outside, and whatever lies outside cannot change the map
    mask = torch.ones(3, 1, 24, 32)
    mask[:, :, :, 20:] = 0
    other = imgs.clone()
    other[:, :, :, 20:] = torch.rand(3, 3, 24, 12)
    rec2 = rec.clone()
    rec2[:, :, :, 20:] = 0.0
    with torch.no_grad():
        m1 = A.anomaly_map(imgs, rec, fe, 1.0, 1.0, mask)
        m2 = A.anomaly_map(other, rec2, fe, 1.0, 1.0, mask)
    assert m1[:, :, 20:].abs().max() == 0
    assert torch.allclose(m1, m2, atol=1e-6)


# ---------------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def tiny_model():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    return ENTRY.build(cfg, True).eval()


def test_score_is_the_maximum_of_the_map(tiny_model):
    """Batch independence, pre-masking and the rest of the contract: test_models_registry.py."""
    imgs = scene(3, seed=1)
    imgs[2, :, 5:12, 8:20] = 1.0
    with torch.no_grad():
        full = tiny_model(imgs)
    assert torch.allclose(full.score, full.anomaly_map.flatten(1).amax(1))


def test_feature_scale_resizes_what_the_extractor_sees():
    torch.manual_seed(0)
    seen = []
    model = ENTRY.build(tiny_cfg(feature_scale=2.0), True).eval()
    hook = model.feature_extractor.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    imgs = scene(2, seed=3)
    imgs[1, :, 5:12, 8:20] = 1.0
    with torch.no_grad():
        out = model(imgs)
        single = model(imgs[1:])
    hook.remove()
    assert seen[0] == (4, 3, 48, 64)  # input and reconstruction of 2 images, each side doubled
    assert out.anomaly_map.shape == (2, 24, 32)  # the map stays at the model resolution
    assert torch.allclose(out.anomaly_map[1], single.anomaly_map[0], rtol=1e-4, atol=1e-6)
    plain = ENTRY.build(tiny_cfg(feature_scale=1.0), True).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain(imgs).anomaly_map, out.anomaly_map)
    with pytest.raises(UsageError, match="feature_scale"):
        tiny_cfg(feature_scale=0)


def test_state_dict_holds_feature_extractor(tiny_model):
    keys = tiny_model.state_dict().keys()
    assert any(k.startswith("unet.") for k in keys)
    assert any(k.startswith("feature_extractor.") for k in keys)


# ---------------------------------------------------------------------------------- domain adaptation
def test_pair_indices_cover_all_without_self_pairs():
    torch.manual_seed(0)
    for n in (1, 2, 5, 13):
        inp, tgt = pair_indices(n)
        assert sorted(tgt.tolist()) == list(range(n)) and sorted(inp.tolist()) == list(range(n))
        if n > 1:
            assert (inp != tgt).all()


def test_domain_adaptation_reduces_its_loss():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = ENTRY.build(cfg, True).eval()
    imgs = torch.rand(6, 3, 24, 32, generator=torch.Generator().manual_seed(4))
    imgs[::2] = scene(3, seed=4)  # two kinds of image: features of pairs differ
    frozen = frozen_copy(model.feature_extractor)
    torch.manual_seed(1)
    inp, tgt = pair_indices(6)
    with torch.no_grad():
        recon = model.reconstruct(imgs[inp], target=imgs[tgt], w=cfg.w_da, noise=lambda: torch.zeros(1, 3, 24, 32))
    _, before = da_loss(model.feature_extractor, frozen, recon, imgs[tgt], cfg.lambda_dl)
    torch.manual_seed(2)
    losses = adapt_feature_extractor(model, imgs, epochs=6, batch_size=3, lr=1e-3, w_da=cfg.w_da,
                                     lambda_dl=cfg.lambda_dl)
    with torch.no_grad():
        _, after = da_loss(model.feature_extractor, frozen, recon, imgs[tgt], cfg.lambda_dl)
    assert len(losses) == 6
    # L_DA, as minimised, falls over the epochs
    assert losses[-1] < 0.6 * losses[0]
    # on a fixed set of pairs the features of reconstruction and target come closer ...
    assert after["similarity"] < 0.5 * before["similarity"]
    # ... while the distillation terms (zero before: φ = φ̄) now hold the extractor near φ̄
    assert before["distill_target"] == pytest.approx(0, abs=1e-6)
    assert 0 < after["distill_target"] < 1
    assert not any(p.requires_grad for p in model.feature_extractor.parameters())


# ---------------------------------------------------------------------------------- config
def test_t_prime_validation():
    assert tiny_cfg(t_prime=1000).t_prime == 1000
    for bad in (0, -5, 1001):
        with pytest.raises(UsageError, match="t-prime"):
            tiny_cfg(t_prime=bad)
    with pytest.raises(UsageError, match="skip"):
        tiny_cfg(skip=0)


def test_presets_resolve():
    for name in ("paper", "fast", "demo"):
        cfg = resolve_config(ENTRY, name)
        assert cfg.T == 1000 and cfg.t_prime == 250 and cfg.skip == 25
        assert cfg.domain_adaptation is True and tuple(cfg.feature_layers) == (2, 3)
    paper = resolve_config(ENTRY, "paper")
    assert paper.image_size == (512, 512) and paper.epochs == 3000 and paper.batch_size == 1
    assert (paper.checkpoint_every, paper.checkpoint_from) == (250, 2000)
    assert paper.backbone == "wide_resnet101_2"
    assert resolve_config(ENTRY, "fast").backbone == "tf_efficientnet_lite0"
    off = resolve_config(ENTRY, "fast", {"domain_adaptation": False})
    assert off.domain_adaptation is False
