"""Export a trained model for the line: the network as a graph (ONNX, or OpenVINO's IR), the rest as arrays.

:func:`export_run` writes a folder (:mod:`lineclear.formats.export`) that :mod:`lineclear.runtime` runs
without PyTorch, and **checks it before writing it**: the exported model scores a few images (the run's
validation and test images, or those given) and its maps must equal the PyTorch model's within
``tolerance`` × the maps' range (default 1e-4), and its image scores likewise; one image is also scored
with a pre-mask (half the image hidden), so the masked path is checked too. An export that disagrees is
refused, with the figures, and nothing is written.

What goes where, per model:

=========== ============================================== ==============================================
model       graph (fixed input size, preprocessing inside)  numpy beside it (:mod:`lineclear.runtime`)
=========== ============================================== ==============================================
patchcore   backbone + neighbourhood aggregation →          memory bank, position-aware nearest-neighbour
            patch features (1,Hg,Wg,C)                      search, upsampling, blur, masks
template    none (no network)                               envelope and scale statistics, blur, masks
draem       both subnetworks, softmax, mask → map (1,H,W)   the image score's mean filter
ddad        the DDIM loop unrolled (one U-Net call per      —
            step, weights shared, the fixed noise draws
            as constants), feature and pixel comparison,
            blur → map (1,H,W)
=========== ============================================== ==============================================

Graphs are written by PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``,
opset 17): the dynamo exporter needs the onnxscript package and gave nothing the line needs more.
OpenVINO's IR is converted from that ONNX graph (``openvino.convert_model``), weights kept in f32.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lineclear.dataset import View, list_images
from lineclear.errors import LineclearError, UsageError
from lineclear.formats import sha256_file
from lineclear.formats._io import check_replaceable, make_temp_dir, publish_dir, replace_dir
from lineclear.formats.checkpoint import read_checkpoint_meta
from lineclear.formats.export import EXPORT_FORMATS, EXPORT_NAME, ExportInfo, read_export, write_export
from lineclear.formats.run import read_run_config
from lineclear.images import read_rgb
from lineclear.runtime.models import build as build_runtime
from lineclear.runtime.score import score_arrays as score_exported
from lineclear.scoring import load_model, resolve_checkpoint, score_arrays

DEFAULT_TOLERANCE = 1e-4  # of the maps' range: far below any threshold margin, far above float32 rounding
DEFAULT_CHECK_IMAGES = 6
OPSET = 17


class _PatchCoreGraph(nn.Module):
    """(1,H,W,3) in [0,1] → patch features (1,Hg,Wg,C): the backbone's normalisation inside."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.embed(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class _DraemGraph(nn.Module):
    """(1,H,W,3), mask (1,H,W) {0,1} → map (1,H,W): an all-ones mask is no mask (x·1 = x exactly)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None]
        _, logits = self.model.networks(image.permute(0, 3, 1, 2), m)
        return torch.softmax(logits, dim=1)[:, 1] * mask


class _DdadGraph(nn.Module):
    """(1,H,W,3), mask (1,H,W) → map (1,H,W): the whole DDIM loop unrolled (one U-Net call per step, the
    weights shared), its noise the model's per-image-deterministic draws baked in as constants, then the
    feature and pixel comparison and the blur. An all-ones mask is no mask."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        cfg = model.config
        steps = len(model.schedule.step_sequence(cfg.t_prime, cfg.skip))
        draw = model._fixed_noise(torch.zeros(1, 3, *size))
        self.register_buffer("noise", torch.cat([draw() for _ in range(steps + 1)]))  # in the order they are drawn

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from lineclear.models.ddad.anomaly import anomaly_map

        cfg = self.model.config
        m = mask[:, None]
        x = image.permute(0, 3, 1, 2) * m
        draws = iter(range(self.noise.shape[0]))
        recon = self.model.reconstruct(x, noise=lambda: self.noise[next(draws)][None].expand_as(x))
        return anomaly_map(x, recon, self.features, cfg.v, cfg.blur_sigma, m)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """As ``DdadModel.features``, its resize computed from the fixed size (the tracer sees no shapes)."""
        s = float(self.model.config.feature_scale)
        if s != 1.0:
            h, w = self.model.config.image_size
            images = F.interpolate(images, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                                   align_corners=False)
        return [f.float() for f in self.model.feature_extractor(images)]


def _ddad_parts(model, cfg) -> tuple[nn.Module, tuple, tuple, dict, dict]:
    return _DdadGraph(model, tuple(cfg.image_size)), ("image", "mask"), ("map",), {}, {}


def _patchcore_parts(model, cfg) -> tuple[nn.Module, tuple[str, ...], tuple[str, ...], dict, dict]:
    arrays = {"bank": model.bank.cpu().numpy().astype(np.float32), "bank_pos": model.bank_pos.cpu().numpy(),
              "grid": model.grid.cpu().numpy(), "mean_image": model.mean_image.cpu().permute(1, 2, 0).numpy()}
    params = {"radius": model.radius, "blur_sigma": float(cfg.blur_sigma), "block_mb": float(model.block_mb),
              "neighbourhood": int(cfg.neighbourhood)}
    return _PatchCoreGraph(model), ("image",), ("features",), arrays, params


def _template_parts(model, cfg) -> tuple[None, tuple, tuple, dict, dict]:
    arrays = {k: getattr(model, k).cpu().permute(1, 2, 0).numpy().astype(np.float32) for k in ("lo", "hi", "scale")}
    return None, (), (), arrays, {"blur_sigma": float(cfg.blur_sigma)}


def _draem_parts(model, cfg) -> tuple[nn.Module, tuple, tuple, dict, dict]:
    return _DraemGraph(model), ("image", "mask"), ("map",), {}, {"filter_size": int(model.filter_size)}


EXPORTERS: dict[str, Callable[[Any, Any], tuple]] = {
    "patchcore": _patchcore_parts, "template": _template_parts, "draem": _draem_parts, "ddad": _ddad_parts,
}


def exportable(model_name: str) -> str | None:
    """None when ``model_name`` can be exported, else why not (one line)."""
    if model_name in EXPORTERS:
        return None
    return f"model {model_name!r} cannot be exported to ONNX/OpenVINO; deploy it with --runtime torch"


def check_images(run: Path, images: Sequence[str | os.PathLike] | None, n: int) -> list[Path]:
    """The images the fidelity check scores: those given (files or folders), else the run's validation and
    test images (up to ``n``, spread over them so that anomalous ones take part)."""
    if images:
        out: list[Path] = []
        for p in map(Path, images):
            if p.is_dir():
                out += list_images(p)
            elif p.is_file():
                out.append(p)
            else:
                raise LineclearError(f"{p}: no such image or folder for the fidelity check")
        if not out:
            raise LineclearError(f"no images in {', '.join(map(str, images))} for the fidelity check")
        return out[:max(n, 1)] if len(out) > n else out
    cfg = read_run_config(run) if (run / "config.json").is_file() else {}
    view_dir = cfg.get("view_dir")
    if not view_dir or not Path(view_dir).is_dir():
        raise LineclearError(f"{run}: the view directory the run was trained on ({view_dir}) is not available "
                             f"for the fidelity check; give --images DIR")
    view = View(view_dir, val_fraction=cfg.get("val_fraction", 0.2), seed=cfg.get("split_seed", 0))
    val = [s.path for s in view.val()]
    test = [s.path for s in view.test()]
    anomalous = [s.path for s in view.test() if s.label == 1]
    picked = val[: max(1, n // 3)] + anomalous[: max(1, n // 3)]
    picked += [p for p in val + test if p not in picked][: max(0, n - len(picked))]
    if not picked:
        raise LineclearError(f"{view_dir}: no validation or test images for the fidelity check; give --images DIR")
    return picked[:n]


def _write_graph(module: nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...], examples: tuple,
                 fmt: str, out: Path) -> list[str]:
    """Write the graph into ``out``; the export-relative file names."""
    onnx_path = out / "network.onnx"
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(module.eval(), examples, str(onnx_path), dynamo=False, opset_version=OPSET,
                              input_names=list(inputs), output_names=list(outputs), do_constant_folding=True)
        except ImportError as exc:
            raise LineclearError(f"exporting a graph needs {exc.name or 'onnx'} (pip install 'lineclear[onnx]')") from None
    if fmt == "onnx":
        return ["network.onnx"]
    try:
        import openvino as ov
    except ImportError:
        raise LineclearError("--format openvino needs openvino (pip install 'lineclear[openvino]')") from None
    ov.save_model(ov.convert_model(str(onnx_path)), str(out / "network.xml"), compress_to_fp16=False)
    onnx_path.unlink()
    return ["network.xml", "network.bin"]


def fidelity(model, runtime, images: np.ndarray, tolerance: float) -> dict[str, Any]:
    """Maps and scores of the exported model against the PyTorch model's on ``images`` (N,H,W,3).

    Per image without a mask; the first image once more with its left half pre-masked, and once as a
    registered image whose left fifth and top eighth came from outside the camera frame (the seam).
    ``ok`` when the worst map difference and the worst image-score difference are at most ``tolerance`` ×
    the PyTorch maps' range (scores are in the maps' units: their maximum, or that of a mean filter).
    """
    ref_maps, ref_scores, got_maps, got_scores = [], [], [], []
    h, w = images.shape[1:3]
    half = np.ones((h, w), bool)
    half[:, : w // 2] = False
    seam = np.ones((1, h, w), bool)
    seam[:, :, : w // 5] = False
    seam[:, : h // 8] = False
    cases = [(images[i:i + 1], None, None) for i in range(len(images))] + [(images[:1], half, None),
                                                                            (images[:1], None, seam)]
    for x, roi, valid in cases:
        stage = "pre" if roi is not None else "none"
        m, s, _ = score_arrays(model, x, roi=roi, valid=valid, mask_stage=stage, device="cpu")
        m2, s2, _ = score_exported(runtime, x, roi=roi, valid=valid, mask_stage=stage)
        ref_maps.append(m)
        ref_scores.append(s)
        got_maps.append(m2)
        got_scores.append(s2)
    rm, gm = np.concatenate(ref_maps), np.concatenate(got_maps)
    rs, gs = np.concatenate(ref_scores), np.concatenate(got_scores)
    map_range = float(rm.max() - rm.min()) or 1.0
    if not (np.all(np.isfinite(gm)) and np.all(np.isfinite(gs))):
        return {"ok": False, "images": len(images), "reason": "the exported model produced non-finite values"}
    map_diff = float(np.abs(rm - gm).max())
    score_diff = float(np.abs(rs - gs).max())
    return {
        "ok": map_diff <= tolerance * map_range and score_diff <= tolerance * map_range,
        "images": len(images), "premasked_images": 1, "registered_images": 1, "tolerance": tolerance,
        "map_range": round(map_range, 6), "max_map_diff": map_diff, "max_map_diff_rel": map_diff / map_range,
        "max_score_diff": score_diff, "max_score_diff_rel": score_diff / map_range,
    }


def _replace_problem(out: Path) -> str | None:
    """Why ``--overwrite`` may not replace ``out``: only an earlier export holding nothing but its own files."""
    if not out.is_dir():
        return "exists and is not a folder"
    if not any(out.iterdir()):
        return None
    try:
        listed = set(read_export(out).files) | {EXPORT_NAME}
    except LineclearError as exc:
        return f"is not a lineclear export ({exc}); refusing to replace it"
    foreign = sorted(p.name for p in out.rglob("*") if p.relative_to(out).as_posix() not in listed)
    return f"holds files that are not part of the export ({', '.join(foreign[:3])}); refusing to replace it" if foreign else None


def export_run(
    run: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None = None,
    *,
    images: Sequence[str | os.PathLike] | None = None,
    n_images: int = DEFAULT_CHECK_IMAGES,
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
) -> ExportInfo:
    """Export the run's checkpoint to ``out`` (default ``RUN/export-<fmt>``) after the fidelity check."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if not tolerance > 0:
        raise UsageError(f"--tolerance must be > 0, got {tolerance}")
    run = Path(run)
    ckpt = resolve_checkpoint(run)
    run_dir = run if run.is_dir() else run.parent
    out = Path(out) if out is not None else run_dir / f"export-{fmt}"
    check_replaceable(out, overwrite, _replace_problem)
    why = exportable(str(read_checkpoint_meta(ckpt).get("model")))
    if why:
        raise LineclearError(f"{ckpt}: {why}")
    model, meta, cfg = load_model(ckpt, "cpu")
    name = str(meta.get("model"))
    size = (int(cfg.image_size[0]), int(cfg.image_size[1]))
    paths = check_images(run_dir, images, n_images)
    x = np.stack([read_rgb(p, size) for p in paths]).astype(np.float32)
    graph, inputs, outputs, arrays, params = EXPORTERS[name](model, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, out.name)
    try:
        files: list[str] = []
        graph_file = None
        if graph is not None:
            examples = tuple(torch.from_numpy(x[:1]) if n == "image" else torch.ones(1, *size) for n in inputs)
            files += _write_graph(graph, inputs, outputs, examples, fmt, tmp)
            graph_file = files[0]
        if arrays:
            np.savez(tmp / "arrays.npz", **arrays)
            files.append("arrays.npz")
        doc = {
            "model": name, "format": fmt, "map_size": list(size), "config": meta.get("config", {}), "params": params,
            "graph": graph_file, "graph_inputs": list(inputs), "graph_outputs": list(outputs),
            "arrays": "arrays.npz" if arrays else None, "opset": OPSET if graph is not None else None,
            "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=False)" if graph is not None else None,
            "checkpoint": str(ckpt.resolve()), "checkpoint_sha256": sha256_file(ckpt), "view": meta.get("view"),
        }
        write_export(tmp, doc, files)
        runtime = build_runtime(read_export(tmp))
        fid = fidelity(model, runtime, x, tolerance)
        fid["image_files"] = [str(p) for p in paths]
        if not fid["ok"]:
            raise LineclearError(
                f"{ckpt}: the {fmt} export disagrees with the PyTorch model on {len(paths)} image(s): "
                f"{fid.get('reason') or _describe(fid)}; nothing written")
        write_export(tmp, {**doc, "fidelity": fid}, files, overwrite=True)
        if overwrite and out.exists():
            replace_dir(tmp, out)  # checked above: an earlier export holding nothing but its own files
        else:
            publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_export(out)


def _describe(fid: dict[str, Any]) -> str:
    return (f"maps differ by up to {fid['max_map_diff']:.3g} ({fid['max_map_diff_rel']:.2e} of their range, "
            f"tolerance {fid['tolerance']:.0e}), scores by up to {fid['max_score_diff']:.3g} "
            f"({fid['max_score_diff_rel']:.2e})")
