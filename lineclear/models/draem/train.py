"""The DRAEM training loop: synthetic anomalies → both networks → L2 + SSIM + focal → Adam.

Determinism and ``--resume``: every epoch draws its batches from its own
``np.random.Generator(SeedSequence([seed, epoch]))`` and each image of a batch its synthetic
anomaly from ``SeedSequence([seed, epoch, step, position in the batch])``; the networks use no
random layers. An epoch's data therefore depend only on (seed, epoch), and the saved state
(model, optimiser, epoch) is all that is needed to resume at an epoch boundary and end
bit-identical to an uninterrupted run (on the same machine and thread count). An
interruption mid-epoch loses at most that epoch's work.

Several processes (torchrun, ``session.world``): every process draws the same batch indices,
synthesises only its share of each batch (the per-image generators make that share the same
images and anomalies a single process would make) and its BatchNorm layers use the statistics of
the whole batch (:func:`lineclear.distributed.sync_batchnorm`), so the run is the one-process run
of the same ``batch_size`` up to floating-point rounding, for any number of processes.
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch

from torch import nn

from lineclear.distributed import plain_batchnorm, sync_batchnorm
from lineclear.errors import LineclearError, UsageError
from lineclear.models.draem.augment import AnomalySynthesizer
from lineclear.models.draem.loss import draem_loss
from lineclear.models.draem.perlin import rotate
from lineclear.models.draem.textures import make_texture_source


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch)])))


def epoch_batches(rng: np.random.Generator, n: int, batch: int, steps: int) -> np.ndarray:
    """(steps, batch) image indices: concatenated random permutations of ``range(n)``."""
    need = steps * batch
    perms = [rng.permutation(n) for _ in range(math.ceil(need / n))]
    return np.concatenate(perms)[:need].reshape(steps, batch)


def sample_rng(seed: int, epoch: int, step: int, j: int) -> np.random.Generator:
    """The generator of image ``j`` of batch ``step`` in ``epoch`` (its rotation and synthetic anomaly)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), int(step), int(j)])))


def steps_per_epoch(cfg, n: int) -> int:
    return int(cfg.steps_per_epoch) if cfg.steps_per_epoch > 0 else math.ceil(n / cfg.batch_size)


def make_batch(synth: AnomalySynthesizer, images: np.ndarray, valid: np.ndarray | None, idx: np.ndarray,
               rngs: list[np.random.Generator], rotate_images: bool):
    """Clean, augmented (B,3,H,W) and masks (B,1,H,W) as float32 tensors; ``rngs[k]`` draws for ``idx[k]``."""
    clean, aug, masks = [], [], []
    for i, rng in zip(idx, rngs, strict=True):
        img = images[i]
        v = valid[i] if valid is not None else None
        if rotate_images and rng.random() < 0.7:
            ang = float(rng.uniform(-90, 90))
            img = rotate(img, ang)
            v = rotate(v if v is not None else np.ones(img.shape[:2], np.float32), ang)
        a, m, _ = synth(img, rng, v)
        clean.append(img)
        aug.append(a)
        masks.append(m)

    def t(x):
        return torch.from_numpy(np.ascontiguousarray(np.stack(x)))

    return t(clean).permute(0, 3, 1, 2), t(aug).permute(0, 3, 1, 2), t(masks)[:, None]


class _Networks(nn.Module):
    """``model.networks`` as a forward, for DistributedDataParallel (which hooks ``forward``)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.networks(images)


TERMS = ("loss", "l2", "ssim", "focal")


def train_draem(model, session) -> None:
    """Fit ``model`` (a :class:`DraemModel`) in place on ``session.images``; see the module doc."""
    cfg = session.config
    device = session.device
    world = session.world
    n = int(session.images.shape[0])
    if n == 0:
        raise LineclearError("draem: no training images")
    if cfg.batch_size < world.size:
        raise UsageError(f"draem: a batch of {cfg.batch_size} cannot be shared by {world.size} processes "
                         f"(--batch-size is the global batch: give at least {world.size})")
    images = session.images.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)  # (N,H,W,3)
    valid = session.valid[:, 0].numpy().astype(np.float32) if session.valid is not None else None
    synth = AnomalySynthesizer(cfg, make_texture_source(cfg.textures or None))
    steps = steps_per_epoch(cfg, n)

    model.to(device)
    dtype = next(model.parameters()).dtype  # float32, or float64 for tests of numerical equality
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start = 0
    state = session.load_state()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
    sync_batchnorm(model, world)  # after loading: the state dict is that of plain BatchNorm layers
    nets = world.wrap(_Networks(model))

    old_threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(int(cfg.threads))
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
    try:
        nets.train()
        with session.progress.task(f"draem {cfg.epochs} epochs × {steps} steps", total=cfg.epochs * steps) as task:
            task.advance(start * steps)
            for epoch in range(start, cfg.epochs):
                lr = cfg.lr_at(epoch)
                for g in opt.param_groups:
                    g["lr"] = lr
                rng = epoch_rng(cfg.seed, epoch)
                sums = dict.fromkeys(TERMS, 0.0)
                t0 = time.perf_counter()
                for step, idx in enumerate(epoch_batches(rng, n, cfg.batch_size, steps)):
                    mine = world.shard(len(idx))
                    rngs = [sample_rng(cfg.seed, epoch, step, j) for j in range(mine.start, mine.stop)]
                    clean, aug, masks = make_batch(synth, images, valid, idx[mine], rngs, cfg.rotate)
                    clean, aug, masks = (x.to(device, dtype) for x in (clean, aug, masks))
                    with amp:
                        rec, logits = nets(aug)
                    terms = draem_loss(clean, rec, logits, masks, cfg.ssim_window, cfg.ssim_weight, cfg.focal_gamma)
                    scale = world.loss_scale(len(clean), len(idx))
                    opt.zero_grad(set_to_none=True)
                    (terms["loss"] * scale).backward()
                    opt.step()
                    # the batch's terms: each is a mean over images, so the shares' means weighted by size
                    share = len(clean) / len(idx)
                    both = world.all_sum(torch.stack([terms[k].detach().double() * share for k in TERMS]))
                    vals = dict(zip(TERMS, both.tolist()))
                    for k in sums:
                        sums[k] += vals[k]
                    task.advance(1, **vals)  # full precision (the bar shows 4 digits): tests compare them
                e = epoch + 1
                session.log(epoch=e, lr=lr, seconds=round(time.perf_counter() - t0, 3),
                            **{k: v / steps for k, v in sums.items()})
                if cfg.checkpoint_every > 0 and e >= cfg.keep_from and e % cfg.checkpoint_every == 0:
                    session.save_checkpoint(model, f"checkpoints/epoch_{e}.pt", epoch=e)
                if e == cfg.epochs or (cfg.state_every > 0 and e % cfg.state_every == 0):
                    session.save_state({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": e})
    finally:
        plain_batchnorm(model)
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)
        model.eval()
