"""Batched, streamed inference: images → anomaly maps and image scores.

Masking semantics (thesis section 3.4), for every model alike:

* ``mask_stage="post"``: the map is computed on the whole image, then set to zero
  where the mask is 0; the image score is recomputed from the masked map with the
  model's own rule (``model.image_score``).
* ``mask_stage="pre"``: the mask goes into the model (``model(images, mask)``), which
  hides the masked region before the map is computed (each model's README says how).
* ``mask_stage="none"``: no inspection mask.

A registration validity mask (pixels that came from inside the source frame) is handled the same way
for every model, in two steps:

1. **The scene is continued** where the registered image has no pixels
   (:func:`lineclear.masking.fill_outside`): the view's reference image, gain-matched to the image's
   lighting, fills the area outside the camera frame before the model sees the image. A black fill, or
   any fill that differs from the scene, reaches the features near the seam through their receptive
   field and makes a shifted clear image outscore a small leftover (the "registration seam").
2. **The seam does not count**: the validity mask, eroded by ``border_margin`` map pixels, is
   intersected with the inspection mask to give the pixels that count; the map is zero elsewhere and the
   image score is taken from the counted pixels. These are written to the maps file's ``/valid``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from lineclear.errors import FormatError, LineclearError, UsageError
from lineclear.formats import load_checkpoint, read_mask, resize_mask
from lineclear.images import read_raw, read_rgb, resize, to_float_rgb
from lineclear.masking import counted_maps, scoring_masks, valid_at
from lineclear.models import get_model
from lineclear.models.base import AnomalyModel, config_from_dict
from lineclear.progress import Progress, ensure
from lineclear.register import RegistrationConfig, Registrar
from lineclear.shifts import ShiftRange, shifted_copies

MASK_STAGES = ("none", "pre", "post")
DEFAULT_BORDER_MARGIN = 8  # map pixels along a registration seam that do not count (benchmarks/bench_line.py)
DEFAULT_VAL_SHIFTS = 4  # synthetic camera shifts per normal validation image (benchmarks/bench_line.py)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run directory means its ``model.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
        if not p.is_file():
            raise LineclearError(f"{path}: run directory has no model.pt (training unfinished? try --resume)")
    return p


def saved_checkpoints(run_dir: str | os.PathLike) -> dict[int, Path]:
    """``{epoch: path}`` of the intermediate checkpoints a training kept (``RUN/checkpoints/epoch_<E>.pt``)."""
    found = {}
    for p in (Path(run_dir) / "checkpoints").glob("epoch_*.pt"):
        tail = p.stem[len("epoch_"):]
        if tail.isdigit():
            found[int(tail)] = p
    return dict(sorted(found.items()))


def checkpoint_at(path: str | os.PathLike, epoch: int) -> Path:
    """The checkpoint of ``epoch`` in a run directory (or beside its ``model.pt``); one clear error if none."""
    p = Path(path)
    run = p if p.is_dir() else p.parent
    saved = saved_checkpoints(run)
    if epoch not in saved:
        have = ", ".join(map(str, saved)) or "none"
        raise LineclearError(f"{run}: no checkpoint of epoch {epoch} (checkpoints/epoch_{epoch}.pt); saved epochs: "
                             f"{have} (model.pt is the final one: leave out --checkpoint-epoch)")
    return saved[epoch]


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[AnomalyModel, dict, object]:
    """Load a checkpoint into its model: ``(model in eval mode on device, meta, config)``."""
    p = resolve_checkpoint(path)
    sd, meta = load_checkpoint(p)
    name = meta.get("model")
    try:
        entry = get_model(str(name))
    except UsageError:
        raise FormatError(f"{p}: checkpoint of model {name!r}, which this lineclear does not have") from None
    try:
        cfg = config_from_dict(entry, meta.get("config", {}))
    except UsageError as exc:
        raise FormatError(f"{p}: {exc}") from None
    model = entry.build(cfg, False)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).replace("\n", " ")[:300]
        raise FormatError(f"{p}: checkpoint does not fit model {name} ({first})") from None
    model.eval().to(device)
    return model, meta, cfg


@dataclass
class ScoredBatch:
    paths: list[Path]
    maps: np.ndarray  # (B,h,w) float32
    scores: np.ndarray  # (B,)
    valid: np.ndarray | None  # (B,h,w) bool, None when every pixel counts


def load_batch(
    paths: Sequence[Path],
    size: tuple[int, int],
    valid_lookup: Callable[[Path], Path | None] | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read images (B,H,W,3) float32 at ``size`` and their validity masks (B,H,W) bool (not eroded) or None."""
    imgs = np.stack([read_rgb(p, size) for p in paths])
    valids = []
    any_valid = False
    for p in paths:
        vp = valid_lookup(p) if valid_lookup else None
        if vp is not None:
            any_valid = True
            valids.append(valid_at(read_mask(vp, resize=True, shape=None), size))
        else:
            valids.append(np.ones(size, dtype=bool))
    return imgs, (np.stack(valids) if any_valid else None)


@torch.inference_mode()
def score_arrays(
    model: AnomalyModel,
    images: np.ndarray,
    *,
    roi: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    mask_stage: str = "none",
    border_margin: int = 0,
    fill: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    bf16: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Score a batch already at the model's size.

    images (B,H,W,3) float32 in [0,1]; roi (H,W) bool or None; valid (B,H,W) bool or None: registration
    validity, not eroded; border_margin: map pixels along its seam that do not count; fill (H,W,3) float32
    in [0,1] or None: what the camera normally sees (the registration reference at this size), used to
    continue the scene outside ``valid`` (inpainting without it).
    Returns maps (B,H,W) float32, scores (B,), and the pixels that count (B,H,W) bool or None.
    """
    b, h, w, _ = images.shape
    images, pre, count = scoring_masks(images, roi, valid, mask_stage, border_margin, fill)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    dev_type = torch.device(device).type
    ctx = torch.autocast(dev_type, dtype=torch.bfloat16) if bf16 else nullcontext()
    kw = {}
    if valid is not None and getattr(model, "uses_validity", False):
        kw["valid"] = torch.from_numpy(np.ascontiguousarray(valid[:, None], dtype=np.float32)).to(device)
    with ctx:
        if pre is not None:
            out = model(x, torch.from_numpy(pre[:, None].astype(np.float32)).to(device), **kw)
        else:
            out = model(x, **kw)
    def image_score(maps: np.ndarray) -> np.ndarray:
        return model.image_score(torch.from_numpy(maps).to(device)).float().cpu().numpy()

    maps, scores = counted_maps(out.anomaly_map.float().cpu().numpy(), out.score.float().cpu().numpy(), pre, count,
                                image_score, (h, w))
    return maps, scores, count


def score_paths(
    model: AnomalyModel,
    paths: Sequence[Path],
    size: tuple[int, int],
    *,
    roi: np.ndarray | None = None,
    mask_stage: str = "none",
    valid_lookup: Callable[[Path], Path | None] | None = None,
    border_margin: int = 0,
    fill: np.ndarray | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    progress: Progress | None = None,
) -> Iterator[ScoredBatch]:
    """Stream batches: the next batch is read from disk while the current one is scored."""
    progress = ensure(progress)
    if roi is not None:
        roi = resize_mask(roi, size)
    batches = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool, progress.task("scoring", len(paths)) as task:
        fut = pool.submit(load_batch, batches[0], size, valid_lookup) if batches else None
        for i, batch in enumerate(batches):
            assert fut is not None
            imgs, valid = fut.result()
            if i + 1 < len(batches):
                fut = pool.submit(load_batch, batches[i + 1], size, valid_lookup)
            maps, scores, count = score_arrays(
                model, imgs, roi=roi, valid=valid, mask_stage=mask_stage, border_margin=border_margin, fill=fill,
                device=device, bf16=bf16,
            )
            task.advance(len(batch))
            yield ScoredBatch(paths=batch, maps=maps, scores=scores, valid=count)


def score_shifted(
    model: AnomalyModel,
    paths: Sequence[Path],
    size: tuple[int, int],
    reference: np.ndarray,
    n: int,
    seed: int,
    *,
    roi: np.ndarray | None = None,
    mask_stage: str = "none",
    valid_lookup: Callable[[Path], Path | None] | None = None,
    border_margin: int = DEFAULT_BORDER_MARGIN,
    fill: np.ndarray | None = None,
    registration: dict | None = None,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    progress: Progress | None = None,
    limits: ShiftRange = ShiftRange(),
) -> Iterator[tuple[ScoredBatch, list[tuple[Path, str]], int]]:
    """Score ``n`` synthetic camera shifts of each image, registered back to ``reference`` (raw array).

    Per image: ``(batch, [(path, "shift<k>")...], failed)``. The shifts of image ``i`` come from
    ``numpy.random.default_rng([seed, i])``, so the same seed gives the same shifts (see
    :mod:`lineclear.shifts`). ``registration``: the settings ``lineclear register`` used (its marker's
    ``config``), default :class:`lineclear.register.RegistrationConfig`.
    """
    progress = ensure(progress)
    cfg = RegistrationConfig.from_dict(registration) if registration else RegistrationConfig()
    registrar = Registrar(reference, cfg)
    if roi is not None:
        roi = resize_mask(roi, size)
    with progress.task("scoring shifted copies", len(paths)) as task:
        for i, p in enumerate(paths):
            raw = read_raw(p)
            vp = valid_lookup(p) if valid_lookup else None
            src_valid = None
            if vp is not None:
                src_valid = resize_mask(read_mask(vp, resize=True, shape=None), raw.shape[:2])
            imgs, valids, failed = shifted_copies(raw, registrar, n, np.random.default_rng([seed, i]), valid=src_valid,
                                                  limits=limits)
            task.advance(1)
            if not imgs:
                yield ScoredBatch([], np.zeros((0, *size), np.float32), np.zeros(0, np.float32), None), [], failed
                continue
            x = np.stack([resize(to_float_rgb(im), size) for im in imgs])
            v = np.stack([valid_at(m, size) for m in valids])
            maps, scores, count = score_arrays(model, x, roi=roi, valid=v, mask_stage=mask_stage,
                                               border_margin=border_margin, fill=fill, device=device, bf16=bf16)
            names = [(p, f"shift{k}") for k in range(len(imgs))]
            yield ScoredBatch([p] * len(imgs), maps, scores, count), names, failed


def looks_registered(paths: Sequence[Path], sample: int = 3) -> Path | None:
    """The first of a few images whose frame edge is largely exact black (a registered image's fill), or None."""
    for p in list(paths)[:sample]:
        try:
            img = read_rgb(p)
        except LineclearError:
            continue
        dark = np.all(img <= 0.0, axis=2)
        edge = np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]])
        if edge.mean() > 0.2 and dark.mean() > 0.002:
            return Path(p)
    return None
