"""DRAEM training loop: a few steps into a run directory, checkpoints, and --resume equivalence."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import torch

from lineclear.formats import load_checkpoint
from lineclear.models.draem import ENTRY, DraemConfig
from lineclear.training import TrainSession


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw) -> DraemConfig:
    base = dict(image_size=(32, 64), recon_width=4, disc_width=4, batch_size=2, epochs=3, steps_per_epoch=2,
                lr=1e-3, p_none=0.2, p_perlin=0.4, p_cutout=0.4, lr_milestones="0.5", lr_gamma=0.1)
    base.update(kw)
    return DraemConfig(**base)


def images(n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 64, generator=g)


def session(run_dir, cfg, resume=False, progress=None, valid=None) -> TrainSession:
    run_dir.mkdir(parents=True, exist_ok=True)
    kw = {"progress": progress} if progress is not None else {}
    return TrainSession(images=images(), config=cfg, device=torch.device("cpu"), run_dir=run_dir,
                        valid=valid, model_name="draem", resume=resume, **kw)


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return ENTRY.build(cfg, False)


class _Interrupt(Exception):
    pass


class StopAfter:
    """A Progress that raises after ``n`` training steps (like Ctrl-C mid-epoch)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.fields: list[dict] = []

    @contextmanager
    def task(self, description, total):
        outer = self

        class T:
            count = 0

            def advance(self, k=1, **fields):
                if fields:
                    outer.fields.append(fields)
                    T.count += k
                    if T.count >= outer.n:
                        raise _Interrupt

        yield T()


def test_a_few_steps_write_log_state_and_checkpoints(tmp_path):
    cfg = tiny(checkpoint_every=1, keep_from=2)
    model = build(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prog = StopAfter(10**9)
    valid = torch.ones(5, 1, 32, 64)
    valid[..., :, 40:] = 0
    ENTRY.train(model, session(tmp_path, cfg, progress=prog, valid=valid))
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert all({"loss", "l2", "ssim", "focal", "lr"} <= set(r) for r in log)
    assert log[0]["lr"] == pytest.approx(1e-3) and log[2]["lr"] == pytest.approx(1e-4)  # milestone at 0.5·3 → 2
    assert all(abs(r["loss"] - (r["l2"] + r["ssim"] + r["focal"])) < 1e-5 for r in log)
    assert len(prog.fields) == 6 and {"loss", "l2", "ssim", "focal"} <= set(prog.fields[0])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_2.pt", "epoch_3.pt"]
    sd, meta = load_checkpoint(tmp_path / "checkpoints" / "epoch_3.pt")
    assert meta["model"] == "draem" and meta["epoch"] == 3 and meta["config"]["recon_width"] == 4
    assert (tmp_path / "train_state.pt").is_file()
    changed = [k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], sd[k])]
    assert len(changed) > 10
    assert not model.training
    with torch.inference_mode():
        out = model(images(2, seed=9))
    assert torch.isfinite(out.anomaly_map).all() and out.anomaly_map.shape == (2, 32, 64)


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    cfg = tiny()
    full = build(cfg)
    ENTRY.train(full, session(tmp_path / "full", cfg))

    part = build(cfg)
    with pytest.raises(_Interrupt):
        ENTRY.train(part, session(tmp_path / "cut", cfg, progress=StopAfter(3)))  # mid epoch 2
    # a fresh process: differently initialised weights, state comes from train_state.pt
    resumed = build(cfg, seed=123)
    ENTRY.train(resumed, session(tmp_path / "cut", cfg, resume=True))
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k
    log = [json.loads(line)["epoch"] for line in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]  # epoch 2 was interrupted before it was logged, then redone


def test_seed_changes_the_run_and_same_seed_repeats(tmp_path):
    cfg = tiny(epochs=1)
    m1, m2, m3 = build(cfg), build(cfg), build(cfg)
    ENTRY.train(m1, session(tmp_path / "a", cfg))
    ENTRY.train(m2, session(tmp_path / "b", cfg))
    ENTRY.train(m3, session(tmp_path / "c", tiny(epochs=1, seed=5)))
    k = "discriminative.out.weight"
    assert torch.equal(m1.state_dict()[k], m2.state_dict()[k])
    assert not torch.equal(m1.state_dict()[k], m3.state_dict()[k])


def test_batch_larger_than_dataset_and_no_run_dir():
    cfg = tiny(epochs=1, steps_per_epoch=0, batch_size=8)
    model = build(cfg)
    s = TrainSession(images=images(5), config=cfg, device=torch.device("cpu"), run_dir=None, model_name="draem")
    ENTRY.train(model, s)  # one full batch of 8 drawn from 5 images
    assert not model.training
