"""What a model's training function receives: data, config, device and the run directory.

Run directory layout (written by ``lineclear train``)::

    RUN_DIR/config.json        schema lineclear.run/1: model, preset, resolved config, view, images
    RUN_DIR/model.pt           the final checkpoint (state dict + JSON, see formats.checkpoint)
    RUN_DIR/checkpoints/*.pt   intermediate checkpoints kept by the preset (e.g. epoch_2000.pt)
    RUN_DIR/train_state.pt     resumable state (model, optimiser, scheduler, RNG, epoch)
    RUN_DIR/train_log.jsonl    one JSON object per logged step/epoch

A model's ``train(model, session)`` fits ``model`` in place. Long trainings call
``session.save_state`` every so often and start with ``session.load_state()`` so that
``--resume`` continues an interrupted run and ends where an uninterrupted one ends.

Under torchrun (``session.world``, see :mod:`lineclear.distributed`) every process trains on its
share of each batch and rank 0 alone writes: logging, states and checkpoints do nothing on the
other ranks. A state holds nothing that depends on the number of processes, so ``--resume``
may continue it with another.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lineclear.distributed import SINGLE, World
from lineclear.formats import load_checkpoint, save_checkpoint
from lineclear.formats.checkpoint import TRAIN_STATE_SCHEMA
from lineclear.progress import NullProgress, Progress

RUN_SCHEMA = "lineclear.run/1"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class TrainSession:
    """Everything a training function needs; no file paths leak into the model code."""

    images: torch.Tensor  # (N,3,H,W) float32 RGB in [0,1] at config.image_size, on the CPU
    config: Any
    device: torch.device
    run_dir: Path | None = None
    valid: torch.Tensor | None = None  # (N,1,H,W) float {0,1}: pixels that count, or None (all)
    image_ids: list[str] = field(default_factory=list)
    model_name: str = ""
    resume: bool = False
    progress: Progress = field(default_factory=NullProgress)
    extra_meta: dict[str, Any] = field(default_factory=dict)
    world: World = SINGLE
    # the normal validation images (N,3,H,W) and their valid pixels (N,1,H,W) or None, for models whose
    # ModelEntry.uses_validation (an ensemble normalises its members on them); None for the others
    val_images: torch.Tensor | None = None
    val_valid: torch.Tensor | None = None

    # -- logging -------------------------------------------------------------------------
    def log(self, **record: Any) -> None:
        """Append one JSON line to ``train_log.jsonl`` (no-op without a run dir and off rank 0)."""
        if self.run_dir is None or not self.world.is_main:
            return
        with open(self.run_dir / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")

    # -- resumable state -----------------------------------------------------------------
    def save_state(self, state: dict[str, Any]) -> None:
        """Atomically save a resumable state: a dict of state dicts, tensors and JSON-able values.

        Python/NumPy RNG states are added automatically; torch's CPU RNG state too. Rank 0 only.
        """
        if self.run_dir is None or not self.world.is_main:
            return
        tensors: dict[str, Any] = {}
        plain: dict[str, Any] = {}
        for k, v in state.items():
            if isinstance(v, (torch.Tensor, dict)):
                tensors[k] = v
            else:
                plain[k] = v
        np_state = np.random.get_state()
        plain["_numpy_rng"] = [np_state[0], np_state[1].tolist(), *np_state[2:]]
        plain["_python_rng"] = _py_state_to_json(random.getstate())
        plain["_world_size"] = self.world.size  # provenance only: a state resumes with any world size
        tensors["_torch_rng"] = torch.get_rng_state()
        save_checkpoint(
            self.run_dir / "train_state.pt",
            {"state": tensors},  # nested dicts of tensors are fine for weights_only loading
            {"model": self.model_name, "plain": plain},
            overwrite=True,
            schema=TRAIN_STATE_SCHEMA,
        )

    def load_state(self) -> dict[str, Any] | None:
        """The state saved by :meth:`save_state` when resuming, else None. Restores RNGs (every rank reads it)."""
        if self.run_dir is None or not self.resume:
            return None
        path = self.run_dir / "train_state.pt"
        if not path.is_file():
            return None
        sd, meta = load_checkpoint(path, schema=TRAIN_STATE_SCHEMA)
        state: dict[str, Any] = dict(sd["state"])
        plain = dict(meta.get("plain", {}))
        torch.set_rng_state(state.pop("_torch_rng"))
        np_state = plain.pop("_numpy_rng")
        np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
        random.setstate(_py_state_from_json(plain.pop("_python_rng")))
        saved_world = plain.pop("_world_size", 1)
        if saved_world != self.world.size:
            self.log(event="world_size_changed", saved_with=saved_world, resumed_with=self.world.size)
        state.update(plain)
        return state

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, model: torch.nn.Module, name: str = "model.pt", **meta: Any) -> Path | None:
        """Write ``run_dir/name`` (e.g. ``model.pt`` or ``checkpoints/epoch_2000.pt``) on rank 0."""
        if self.run_dir is None or not self.world.is_main:
            return None
        cfg = self.config.to_dict() if hasattr(self.config, "to_dict") else dict(self.config)
        return save_checkpoint(
            self.run_dir / name,
            model.state_dict(),
            {"model": self.model_name, "config": cfg, **self.extra_meta, **meta},
            overwrite=True,
        )


def _py_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_state_from_json(obj: list) -> tuple:
    version, internal, gauss = obj
    return (version, tuple(internal), gauss)


def load_view_images(
    samples: list, size: tuple[int, int], with_valid: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Read a view's samples at ``size`` = (H, W): images (N,3,H,W), valid (N,1,H,W) or None, notes.

    Notes name what the user should know (e.g. mixed source sizes that were resized).
    """
    from lineclear.dataset import valid_path_for
    from lineclear.formats import read_mask
    from lineclear.images import image_size, read_rgb
    from lineclear.masking import valid_at

    notes: list[str] = []
    sizes = {image_size(s.path) for s in samples}
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
        notes.append(f"training images have mixed sizes ({shown}); all are resized to {size[1]}x{size[0]}")
    imgs = np.stack([read_rgb(s.path, size) for s in samples]).transpose(0, 3, 1, 2)
    valid = None
    if with_valid:
        vs = [valid_path_for(s.path) for s in samples]
        if any(v is not None for v in vs):
            valid = np.stack(
                [valid_at(read_mask(v), size) if v is not None else np.ones(size, bool) for v in vs]
            )[:, None].astype(np.float32)
    return (
        torch.from_numpy(np.ascontiguousarray(imgs, dtype=np.float32)),
        torch.from_numpy(valid) if valid is not None else None,
        notes,
    )


def add_training_shifts(
    paths: list,
    images: torch.Tensor,
    valid: torch.Tensor | None,
    reference_path: str | os.PathLike,
    n: int,
    seed: int,
    registration: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """The training set plus ``n`` registered synthetic camera shifts of each image.

    paths: the images' files (read raw for the shift: registration works at full resolution);
    images (N,3,H,W) and valid (N,1,H,W) or None as from :func:`load_view_images`. The shifted copies
    have the scene continued past their seam from the reference (as scoring does) and their validity
    masks appended to ``valid``. Returns images, valid and a provenance dict for the run's config.
    See :func:`lineclear.shifts.augment_with_shifts`.
    """
    from lineclear.dataset import valid_path_for
    from lineclear.formats import read_mask, resize_mask
    from lineclear.images import read_raw, resize, to_float_rgb
    from lineclear.masking import fill_outside, valid_at
    from lineclear.shifts import augment_with_shifts

    size = tuple(images.shape[-2:])
    reference = read_raw(reference_path)
    raws, vs = [], []
    for p in paths:
        raw = read_raw(p)
        if raw.shape[:2] != reference.shape[:2]:
            raw = resize(raw, reference.shape[:2])
        vp = valid_path_for(p)
        raws.append(raw)
        vs.append(resize_mask(read_mask(vp), raw.shape[:2]) if vp is not None else None)
    got, gv, _src, failed = augment_with_shifts(raws, vs, reference, n, seed, registration)
    info = {"train_shifts": n, "train_shift_seed": seed, "train_shifted_images": len(got),
            "train_shift_failed": failed, "reference": str(Path(reference_path).resolve())}
    if not got:
        return images, valid, info
    fill = resize(to_float_rgb(reference), size)
    extra_v = np.stack([valid_at(m, size) for m in gv])
    extra = np.stack([fill_outside(resize(to_float_rgb(im), size), m, fill) for im, m in zip(got, extra_v)])
    base_v = (valid[:, 0].numpy() > 0.5) if valid is not None else np.ones((images.shape[0], *size), bool)
    all_i = torch.cat([images, torch.from_numpy(np.ascontiguousarray(extra.transpose(0, 3, 1, 2), np.float32))])
    all_v = torch.from_numpy(np.concatenate([base_v, extra_v])[:, None].astype(np.float32))
    return all_i, all_v, info
