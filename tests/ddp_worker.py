"""Train DRAEM and DDAD a few steps on tiny data in the current world; what tests/test_distributed.py compares.

``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py OUT.pt`` runs the
2-process side (gloo, loopback); :func:`run_all` with no process group the 1-process side. Rank 0
saves ``{name: {"steps": [per-step loss terms], "state": state dict, "grad": last step's gradients}}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lineclear.distributed import SINGLE, World  # noqa: E402
from lineclear.models import MODELS  # noqa: E402
from lineclear.models.base import resolve_config  # noqa: E402
from lineclear.progress import RecordingProgress  # noqa: E402
from lineclear.training import TrainSession  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

# a global batch of 4 over 5 images (uneven last batches for DDAD), widths of the demo presets
DRAEM = dict(image_size=(32, 64), recon_width=8, disc_width=8, batch_size=4, epochs=2, steps_per_epoch=2, lr=1e-3,
             lr_milestones="1", lr_gamma=0.5, threads=1)
DDAD = dict(image_size=(24, 32), unet_channels=(8, 16), unet_res_blocks=1, unet_attention_res=12, unet_heads=2,
            backbone="tf_efficientnet_lite0", backbone_weights="none", epochs=4, batch_size=4, lr=1e-3,
            domain_adaptation=False)


def images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = 0.4 + 0.15 * torch.sin(xx / 5.0) * torch.cos(yy / 7.0)
    return (base.expand(n, 3, h, w) + 0.05 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1).float()


def train(name: str, world: World, dtype: torch.dtype = torch.float32, **overrides) -> dict:
    entry = MODELS[name]
    cfg = resolve_config(entry, "demo", {**(DRAEM if name == "draem" else DDAD), **overrides})
    torch.manual_seed(0)
    model = entry.build(cfg, True).to(dtype)
    rec = RecordingProgress()
    h, w = cfg.image_size
    session = TrainSession(images=images(5, h, w).to(dtype), config=cfg, device=torch.device("cpu"),
                           model_name=name, progress=rec, world=world)
    entry.train(model, session)
    # what the trained networks compute on fixed inputs (parameters that a normalisation cancels do not count)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, h, w, generator=g, dtype=dtype)
    with torch.no_grad():
        out = model.networks(x)[1] if name == "draem" else model.unet(x * 2 - 1, torch.tensor([10, 500]))
    return {"steps": rec.steps, "output": out,
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grad": {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}}


def run_all(world: World = SINGLE) -> dict:
    torch.set_num_threads(1)
    return {
        "draem": train("draem", world),
        "draem64": train("draem", world, torch.float64),
        "ddad": train("ddad", world),
    }


# `lineclear train` of DDAD on the tiny view: the CLI side (rank 0 alone writes; config.json; --resume with another N)
CLI_DDAD = ["--model", "ddad", "--preset", "demo", "--image-size", "32x48", "--backbone-weights", "none",
            "--t-prime", "100", "--skip", "50"]


def main(out: str, view: str, work: str) -> None:
    """Rank 0 writes OUT (the sessions' results); every rank writes WORK/codes-RANK.txt (CLI exit codes)."""
    from lineclear.distributed import start

    world, _ = start("cpu")
    try:
        result = run_all(world)
        if world.is_main:
            torch.save(result, out)
        # a refused --out: rank 0 says why, every rank exits 1
        foreign = Path(work) / "foreign"
        if world.is_main:
            foreign.mkdir(parents=True, exist_ok=True)
            (foreign / "notes.txt").write_text("not a run\n")
        world.barrier()
        refused = run_cli(["-q", "train", view, *CLI_DDAD, "--out", str(foreign)])
        trained = run_cli(["-q", "train", view, *CLI_DDAD, "--epochs", "4", "--out", str(Path(work) / "run")])
        (Path(work) / f"codes-{world.rank}.txt").write_text(f"{refused} {trained}\n")
    finally:
        world.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
