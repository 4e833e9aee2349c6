"""Data-parallel training over several processes (PyTorch DistributedDataParallel).

``torchrun --nproc-per-node N -m lineclear train …`` starts N processes; each calls :func:`start`,
which joins the process group torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``): backend ``nccl`` with one GPU per process when the device is CUDA,
``gloo`` on the CPU. ``lineclear train --distributed N`` runs torchrun itself (:func:`launch`).
Outside torchrun nothing changes: :data:`SINGLE`, a world of one process.

What makes an N-process run the same run as a one-process run of the same configuration:

* ``batch_size`` is the *global* batch. Every process draws the same global batch (same seed, same
  RNG stream) and trains on its contiguous share of it (:meth:`World.shard`). This is a distributed
  sampler that shards each batch rather than the epoch (as ``torch.utils.data.DistributedSampler``
  does): sharding the epoch would give an N-process run other batches than a one-process run, so
  its results would depend on N; sharding each batch keeps them independent of N, and ``--resume``
  can continue a run with a different N.
* Each process scales its loss by ``N · share / batch`` (:meth:`World.loss_scale`), so DDP's average
  of the gradients is the gradient of the global batch's mean loss, also for unequal shares.
* BatchNorm layers see the statistics of the global batch (:func:`sync_batchnorm`); GroupNorm,
  LayerNorm and frozen (eval-mode) BatchNorm need nothing.

What remains different is the order of floating-point sums (a batch's gradient is the average of
N partial gradients): results agree with a one-process run to rounding, not bit for bit.

Only rank 0 writes files (:class:`lineclear.training.TrainSession` does nothing on other ranks);
every rank reads ``train_state.pt`` on ``--resume``, so the run directory must be visible to all.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from lineclear.device import resolve_device
from lineclear.errors import UsageError

# rank 0 alone writes checkpoints and may spend a while on it (or, in DDAD, on a checkpoint's domain
# adaptation): the others must not give up waiting at the next collective
TIMEOUT = _dt.timedelta(minutes=60)

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (a single process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo", "nccl", or None for a single process
    owns_group: bool = field(default=False, compare=False)  # :func:`start` made the process group

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and reports."""
        return self.rank == 0

    def shard(self, total: int) -> slice:
        """This rank's contiguous share of ``total`` items: sizes differ by at most one, rank 0 first.

        A share may be empty (``total < size``, e.g. DDAD's last batch of an epoch).
        """
        base, extra = divmod(int(total), self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def loss_scale(self, share: int, total: int) -> float:
        """Factor for this rank's mean loss over ``share`` of ``total`` items (1.0 for a single process).

        DDP averages gradients over ranks: ``(1/N) Σ_r N·(share_r/total)·∇mean_r = ∇(mean over all)``.
        """
        return self.size * share / total if self.size > 1 else 1.0

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel (itself for a single process).

        Buffers are not broadcast at every forward: synchronised BatchNorm keeps them equal.
        """
        if self.size == 1:
            return module
        dev = next(module.parameters()).device
        ddp_cls = nn.parallel.DistributedDataParallel
        # newer PyTorch renamed broadcast_buffers (and warns about the old name)
        name = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp_cls).parameters else "broadcast_buffers"
        return ddp_cls(module, device_ids=[dev.index] if dev.type == "cuda" else None, **{name: False})

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """The sum of ``values`` over ranks (``values`` itself for a single process); no gradient."""
        if self.size == 1:
            return values
        out = values.detach().clone()
        dist.all_reduce(out)
        return out

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite ``tensor`` in place with rank 0's value; return it."""
        if self.size > 1:
            dist.broadcast(tensor, 0)
        return tensor

    def run_on_main(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on rank 0 while the others wait; its result on rank 0, None elsewhere.

        For work on shared files (preparing the run directory). An error on rank 0 (reported there)
        ends the other ranks with the same exit code and no message of their own.
        """
        if self.size == 1:
            return fn(*args)
        verdict: list[Any] = [0]
        result = None
        if self.is_main:
            try:
                result = fn(*args)
            except BaseException as exc:
                verdict = [getattr(exc, "exit_code", 130 if isinstance(exc, KeyboardInterrupt) else 1)]
                dist.broadcast_object_list(verdict, 0)
                raise
        dist.broadcast_object_list(verdict, 0)
        if verdict[0]:
            raise SystemExit(verdict[0])
        return result

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group, if :func:`start` joined it (not one the caller had set up)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = World()


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or anything that sets its environment)."""
    return all(k in os.environ for k in _TORCHRUN_ENV)


def requested_world_size(processes: int | None = None) -> int:
    """The world size a ``train`` run will have: torchrun's, else ``--distributed N``, else 1."""
    if under_torchrun():
        return int(os.environ["WORLD_SIZE"])
    return int(processes or 1)


def start(device: str = "auto", processes: int | None = None) -> tuple[World, torch.device]:
    """Join torchrun's process group (outside torchrun: :data:`SINGLE`). Returns the world and this
    process's device: ``cuda:LOCAL_RANK`` when ``device`` resolves to CUDA, else the CPU.

    ``processes`` (``--distributed N``), when given under torchrun, must equal torchrun's world size.
    """
    dev = resolve_device(device)
    if not under_torchrun():
        return SINGLE, dev
    size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if processes and processes != size:
        raise UsageError(f"--distributed {processes} under torchrun, which started {size} processes: drop --distributed")
    if size == 1:
        return World(rank, 1, local, None), dev
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UsageError(f"process {rank} wants GPU {local} but this machine has {torch.cuda.device_count()}: "
                             "start at most one process per GPU")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend, timeout=TIMEOUT)
    else:
        backend = dist.get_backend()
    return World(rank, size, local, backend, owns), dev


def launch(processes: int, device: str, argv: Sequence[str]) -> int:
    """Run ``lineclear ARGV`` in ``processes`` processes on this machine through torchrun; its exit code.

    ``--standalone`` picks a free port, so several launches (``make -j``) can share a machine.
    """
    if processes < 1:
        raise UsageError(f"--distributed {processes}: need at least 1 process")
    if resolve_device(device).type == "cuda" and processes > torch.cuda.device_count():
        raise UsageError(f"--distributed {processes} on CUDA but this machine has {torch.cuda.device_count()} GPU(s)")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", "lineclear", *argv]
    return subprocess.call(cmd)


def without_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (how ``--distributed N`` is dropped for the workers)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


# -- synchronised BatchNorm ----------------------------------------------------------------------

class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the gradients (every rank's loss used it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, for the gloo backend.

    ``torch.nn.SyncBatchNorm`` runs on GPUs only. This computes per-channel Σx and Σx² (float64, so
    ``E[x²] − E[x]²`` does not cancel), sums them and the count over ranks in one all-reduce, and lets
    autograd carry the gradient back through the sum. Same parameters and buffers as BatchNorm2d;
    in eval mode, or alone, it is BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xd = x.double()
        count = torch.full((1,), float(x.numel() // c), dtype=torch.float64, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        scale = (var + self.eps).rsqrt()
        if self.weight is not None:
            scale = scale * self.weight.double()
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.double()
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return x * scale.to(x.dtype)[None, :, None, None] + shift.to(x.dtype)[None, :, None, None]


def _swap_batchnorm(module: nn.Module, make: Callable[[nn.modules.batchnorm._BatchNorm], nn.Module | None]) -> nn.Module:
    """Replace every BatchNorm layer ``bn`` in ``module`` by ``make(bn)`` (when not None), keeping its
    parameters and buffers (the same tensors, so a state dict is unaffected)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        new = make(module)
        if new is not None:
            new.weight, new.bias = module.weight, module.bias
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
            new.train(module.training)
            return new
        return module
    for name, child in module.named_children():
        new = _swap_batchnorm(child, make)
        if new is not child:
            setattr(module, name, new)
    return module


def _like(cls: type, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    return cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)


def sync_batchnorm(module: nn.Module, world: World) -> nn.Module:
    """BatchNorm layers of ``module`` (in place) computing global-batch statistics when ``world`` has
    several processes: ``torch.nn.SyncBatchNorm`` with nccl, :class:`CpuSyncBatchNorm` with gloo.
    Undo with :func:`plain_batchnorm`."""
    if world.size == 1:
        return module
    if world.backend == "nccl":
        return _swap_batchnorm(module, lambda bn: _like(nn.SyncBatchNorm, bn))
    return _swap_batchnorm(module, lambda bn: _like(CpuSyncBatchNorm, bn) if isinstance(bn, nn.BatchNorm2d) else None)


def plain_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`sync_batchnorm`: ordinary BatchNorm2d layers (the model is pure again)."""
    return _swap_batchnorm(
        module, lambda bn: _like(nn.BatchNorm2d, bn) if isinstance(bn, (nn.SyncBatchNorm, CpuSyncBatchNorm)) else None
    )
