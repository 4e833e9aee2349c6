"""The exported models without PyTorch: each the twin of a model's ``forward`` in eval mode.

``model.forward(images (B,H,W,3) float32 in [0,1], mask (B,H,W) bool | None)`` → ``(maps (B,H,W) float32,
scores (B,) float32)``, with pre-masking as the PyTorch model does it; ``model.image_score(maps)`` is the
model's own score rule (the map's maximum; DRAEM: after its mean filter), used after post-masking.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from lineclear.errors import FormatError, LineclearError
from lineclear.formats.export import ExportInfo
from lineclear.runtime import ops
from lineclear.runtime.graph import Graph


class ExportedModel(ABC):
    """Base: the export's map size and the score rule of the map's maximum."""

    name = ""
    uses_validity = False  # True: forward(..., valid=) as the PyTorch model (lineclear.models.base)

    def __init__(self, info: ExportInfo, arrays: dict[str, np.ndarray], threads: int = 1) -> None:
        self.info = info
        self.map_size = info.map_size
        self.params = info.params
        self.graph = Graph(info.path("graph"), info.format, threads) if info.doc.get("graph") else None
        self.arrays = arrays

    def image_score(self, maps: np.ndarray) -> np.ndarray:
        return maps.reshape(maps.shape[0], -1).max(1).astype(np.float32)

    def _check(self, images: np.ndarray, mask: np.ndarray | None) -> None:
        if images.ndim != 4 or images.shape[1:3] != self.map_size or images.shape[3] != 3:
            raise LineclearError(f"{self.info.root}: exported for images of {self.map_size[1]}x{self.map_size[0]}, "
                                 f"given {tuple(images.shape)}")
        if mask is not None and mask.shape[-2:] != self.map_size:
            raise LineclearError(f"{self.info.root}: mask of shape {mask.shape} does not fit {self.map_size}")

    def forward(self, images: np.ndarray, mask: np.ndarray | None = None,
                valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """images (B,H,W,3); mask, valid (B,H,W) or (H,W) {0,1} or None → maps (B,H,W), scores (B,)."""
        self._check(images, mask)

        def each(a: np.ndarray | None, i: int) -> np.ndarray | None:
            return None if a is None else a[i] if a.ndim == 3 else a

        kw = lambda i: {"valid": each(valid, i)} if self.uses_validity else {}  # noqa: E731
        maps = np.stack([self.one(images[i], each(mask, i), **kw(i)) for i in range(images.shape[0])])
        return maps, self.image_score(maps)

    @abstractmethod
    def one(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """One image (H,W,3) and its pre-mask (H,W) or None → its map (H,W) float32."""


class PatchCoreExported(ExportedModel):
    """Backbone and feature aggregation in the graph; the memory bank and its search in numpy."""

    name = "patchcore"
    uses_validity = True  # the seam never reaches the map: a validity-weighted blur (PatchCoreModel.map_from_features)

    def __init__(self, info: ExportInfo, arrays: dict[str, np.ndarray], threads: int = 1) -> None:
        super().__init__(info, arrays, threads)
        self.bank = arrays["bank"].astype(np.float32)
        self.bank_sq = (self.bank * self.bank).sum(1)
        self.grid = (int(arrays["grid"][0]), int(arrays["grid"][1]))
        self.mean_image = arrays["mean_image"].astype(np.float32)  # (H,W,3)
        self.radius = self.params.get("radius")
        self.blur_sigma = float(self.params["blur_sigma"])
        self.block_mb = float(self.params.get("block_mb", 64.0))
        self.neighbourhood = int(self.params.get("neighbourhood", info.doc.get("config", {}).get("neighbourhood", 3)))
        c = self.bank.shape[1]
        self.use_global = self.radius is None or (self.radius >= max(self.grid) - 1 and self.bank.shape[0] * c * 4 < 2**30)
        self.dense = None if self.use_global else ops.dense_bank(self.bank, arrays["bank_pos"], self.grid)

    def one(self, image: np.ndarray, mask: np.ndarray | None, valid: np.ndarray | None = None) -> np.ndarray:
        x = image.astype(np.float32)
        m = None
        if mask is not None:
            m = (np.asarray(mask) > 0.5).astype(np.float32)
            x = x * m[..., None] + self.mean_image * (1 - m[..., None])
        feats = self.graph({"image": x[None]})[0][0]  # (Hg,Wg,C)
        if feats.shape[:2] != self.grid:
            raise LineclearError(f"{self.info.root}: feature grid {feats.shape[:2]} differs from the bank's {self.grid}")
        if self.use_global:
            d2 = ops.global_nn(feats.reshape(-1, feats.shape[-1]), self.bank, self.bank_sq, self.block_mb).reshape(self.grid)
        else:
            d2 = ops.positional_nn(feats, *self.dense, int(self.radius))
            lost = ~np.isfinite(d2)
            if lost.any():  # no bank patch within the radius: search all, as the PyTorch model does
                d2[lost] = ops.global_nn(feats[lost], self.bank, self.bank_sq, self.block_mb)
        dist = np.sqrt(d2).astype(np.float32)
        if m is not None:
            dist = dist * ops.adaptive_max_pool(m, self.grid)
        up = lambda a: ops.resize_bilinear(a, self.map_size)  # noqa: E731
        # patches reaching over a registration seam get no weight (one cell further than the bank's rule)
        cells = None if valid is None else ops.valid_cells(valid, self.grid, self.neighbourhood + 2)
        if cells is None or bool(cells.all()):
            amap = ops.gaussian_blur(up(dist), self.blur_sigma)
        else:
            wgt = cells.astype(np.float32)
            num = ops.gaussian_blur(up(dist * wgt), self.blur_sigma)
            den = ops.gaussian_blur(up(wgt), self.blur_sigma)
            amap = np.where(den > 1e-3, num / np.maximum(den, np.float32(1e-3)), np.float32(0))
        if m is not None:
            amap = amap * m
        return amap.astype(np.float32)


class TemplateExported(ExportedModel):
    """No network: the per-pixel envelope and scale in numpy."""

    name = "template"

    def __init__(self, info: ExportInfo, arrays: dict[str, np.ndarray], threads: int = 1) -> None:
        super().__init__(info, arrays, threads)
        self.lo, self.hi, self.scale = (arrays[k].astype(np.float32) for k in ("lo", "hi", "scale"))  # (H,W,3)
        self.blur_sigma = float(self.params["blur_sigma"])

    def one(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        x = image.astype(np.float32)
        excess = np.maximum(np.maximum(self.lo - x, x - self.hi), 0) / self.scale
        m = None if mask is None else (np.asarray(mask) > 0.5).astype(np.float32)
        # a hidden pixel reaches a visible one only through the blur: zeroed before it (and after)
        amap = excess.max(-1) if m is None else excess.max(-1) * m
        amap = ops.gaussian_blur(amap, self.blur_sigma)
        return (amap if m is None else amap * m).astype(np.float32)


class MapGraphExported(ExportedModel):
    """The whole map in one graph (image and mask in, map out); the score is the map's maximum."""

    name = "ddad"  # the DDIM loop unrolled, its noise fixed, the feature comparison and blur in the graph

    def one(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        h, w = self.map_size
        m = np.ones((h, w), np.float32) if mask is None else (np.asarray(mask) > 0.5).astype(np.float32)
        return self.graph({"image": image[None], "mask": m[None]})[0][0].astype(np.float32)


class DraemExported(MapGraphExported):
    """Both subnetworks, the softmax and the mask in one graph; the image score's mean filter in numpy."""

    name = "draem"

    def __init__(self, info: ExportInfo, arrays: dict[str, np.ndarray], threads: int = 1) -> None:
        super().__init__(info, arrays, threads)
        self.filter_size = int(self.params["filter_size"])

    def image_score(self, maps: np.ndarray) -> np.ndarray:
        return np.array([ops.mean_filter_max(m, self.filter_size) for m in maps], np.float32)


RUNTIMES: dict[str, type[ExportedModel]] = {
    c.name: c for c in (PatchCoreExported, TemplateExported, DraemExported, MapGraphExported)}


def build(info: ExportInfo, threads: int = 1) -> ExportedModel:
    """The runtime model of an export (its files' hashes are checked by the caller)."""
    cls = RUNTIMES.get(info.model)
    if cls is None:
        raise FormatError(f"{info.root}: an export of model {info.model!r}, which this lineclear cannot run "
                          f"without PyTorch (exportable: {', '.join(RUNTIMES)})")
    arrays: dict[str, Any] = {}
    path = info.path("arrays")
    if path is not None:
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise FormatError(f"{path}: not a readable arrays file ({exc})") from None
    try:
        return cls(info, arrays, threads)
    except KeyError as exc:
        raise FormatError(f"{info.root}: the export lacks {exc} for a {info.model} model") from None
