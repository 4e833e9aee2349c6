"""Training DDAD: DDPM training of the U-Net, then domain adaptation of the extractor.

Every image is used in every epoch (the last batch may be smaller: the reference drops
incomplete batches and so trains on nothing with fewer images than its batch size).
Intermediate checkpoints (``checkpoint_every`` / ``checkpoint_from``) are complete
models: each gets its own domain adaptation, started from the pretrained extractor,
exactly like the final model, so checkpoints can be compared as the thesis does.
Resumable: the state (U-Net, optimiser, epoch, RNG) is saved every few minutes and
after the U-Net phase; ``--resume`` then ends where an uninterrupted run ends.

Several processes (torchrun, ``session.world``): every process draws the same permutation and,
per batch, the timesteps and noise of the whole batch from torch's RNG (seeded alike), and trains
the U-Net on its share of the batch; the U-Net normalises with GroupNorm (per image), so nothing
needs synchronising but the gradients. The run is the one-process run up to floating-point
rounding, for any number of processes. Domain adaptation (a few epochs) runs whole on every
process at the intermediate checkpoints, keeping their RNGs in step, and on rank 0 alone at the
end, where only rank 0's model is written.
"""

from __future__ import annotations

import copy
import time

import torch

from lineclear.models.ddad.diffusion import ddpm_loss
from lineclear.models.ddad.domain_adaptation import adapt_feature_extractor
from lineclear.models.ddad.model import DdadModel, autocast
from lineclear.progress import ensure

STATE_EVERY_SECONDS = 300.0


def checkpoint_epochs(cfg) -> list[int]:
    """Epochs (1-based) after which an intermediate checkpoint is written (the last is model.pt)."""
    if cfg.checkpoint_every <= 0:
        return []
    start = max(cfg.checkpoint_from, cfg.checkpoint_every)
    first = -(-start // cfg.checkpoint_every) * cfg.checkpoint_every
    return [e for e in range(first, cfg.epochs, cfg.checkpoint_every)]


def _domain_adapt(model: DdadModel, images: torch.Tensor, session, progress, label: str) -> list[float]:
    cfg = model.config
    if not cfg.domain_adaptation or cfg.da_epochs == 0:
        return []
    model.eval()
    with progress.task(f"ddad: domain adaptation{label}", total=cfg.da_epochs) as task:
        return adapt_feature_extractor(
            model, images, epochs=cfg.da_epochs, batch_size=cfg.da_batch_size, lr=cfg.da_lr,
            w_da=cfg.w_da, lambda_dl=cfg.lambda_dl, task=task, log=session.log,
        )


def train(model: DdadModel, session) -> None:
    """Fit ``model`` in place on ``session.images`` (N,3,H,W) [0,1] (see module docstring)."""
    cfg = model.config
    dev = session.device
    progress = ensure(session.progress)
    model.to(dev)
    images = session.images.to(dev, torch.float32)
    valid = session.valid.to(dev, torch.float32) if session.valid is not None else None
    n = images.shape[0]
    if n == 0:
        raise ValueError("no training images")

    world = session.world
    unet = model.unet
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch = 0
    state = session.load_state()
    if state is None:
        torch.manual_seed(cfg.seed)
    else:
        unet.load_state_dict(state["unet"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        session.log(event="resume", epoch=start_epoch)

    net = world.wrap(unet)
    pretrained_fe = copy.deepcopy(model.feature_extractor.state_dict())
    ckpt_epochs = set(checkpoint_epochs(cfg))
    last_save = time.monotonic()

    def save(epoch: int) -> None:
        session.save_state({"unet": unet.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch})

    with progress.task("ddad: U-Net", total=cfg.epochs) as task:
        task.advance(start_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            net.train()
            # rank 0's permutation everywhere: a random layer (dropout) could move the ranks' RNGs apart
            perm = world.broadcast_(torch.randperm(n).to(dev))
            total = 0.0
            for s in range(0, n, cfg.batch_size):
                idx = perm[s : s + cfg.batch_size]
                b = idx.numel()
                # the whole batch's draws, in the order ddpm_loss makes them: one process draws the same
                t = torch.randint(0, model.schedule.T, (b,), device=dev)
                noise = torch.randn((b, *images.shape[1:]), device=dev, dtype=images.dtype)
                mine = world.shard(b)
                share = mine.stop - mine.start
                if share == 0:
                    # every rank must join the gradient all-reduce: one image with zero weight
                    mine = slice(0, 1)
                x0 = images[idx[mine]] * 2 - 1
                with autocast(dev, cfg.bf16):
                    loss = ddpm_loss(net, model.schedule, x0, None if valid is None else valid[idx[mine]],
                                     t=t[mine], noise=noise[mine])
                opt.zero_grad(set_to_none=True)
                (loss * world.loss_scale(share, b)).backward()
                opt.step()
                total += float(loss.detach()) * share
            mean = float(world.all_sum(torch.tensor([total], dtype=torch.float64, device=dev))[0]) / n
            task.advance(1, loss=mean)  # full precision (the bar shows 4 digits): tests compare them
            done = epoch + 1
            if done % 10 == 0 or done == cfg.epochs:
                session.log(phase="unet", epoch=done, loss=mean)
            if done in ckpt_epochs:
                _domain_adapt(model, images, session, progress, f" (epoch {done})")
                session.save_checkpoint(model, f"checkpoints/epoch_{done}.pt", epoch=done,
                                        domain_adapted=bool(cfg.domain_adaptation and cfg.da_epochs))
                model.feature_extractor.load_state_dict(pretrained_fe)
                save(done)
                last_save = time.monotonic()
            elif time.monotonic() - last_save > STATE_EVERY_SECONDS and done < cfg.epochs:
                save(done)
                last_save = time.monotonic()
    if start_epoch < cfg.epochs or state is None:
        save(cfg.epochs)

    if world.is_main:
        _domain_adapt(model, images, session, progress, "")
    model.eval()
