"""A bundle view loaded once: model, thresholds, inspection mask, registrar and the pixel-check limits.

:meth:`LoadedView.load` checks that the pieces fit the manifest (model name, map size, mask and
reference size); whatever does not raises, and the checker makes the view ``undecided`` in every check.
A view whose runtime is ``onnx`` or ``openvino`` loads its export (:mod:`lineclear.runtime`) and never
imports PyTorch; a ``torch`` view loads its checkpoint (:mod:`lineclear.scoring`, imported only then).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lineclear.errors import LineclearError
from lineclear.formats import decision_threshold, level_of, read_mask, read_thresholds, resize_mask
from lineclear.formats.deploy import ViewSpec
from lineclear.images import read_raw, to_float_rgb
from lineclear.images import resize as resize_image
from lineclear.line.image import ImageQC
from lineclear.register import RegistrationConfig, Registrar
from lineclear.runtime import load_export


@dataclass
class LoadedView:
    spec: ViewSpec
    error: str | None = None  # why the view cannot be checked at all
    model: Any = None
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    level: str = "image"  # what decides: the image score (image) or any counted pixel (pixel), thresholds' level
    roi: np.ndarray | None = None  # (h,w) bool at map size
    registrar: Registrar | None = None
    fill: np.ndarray | None = None  # (h,w,3) float32: the reference at map size, continues the scene at the seam
    image_qc: ImageQC = field(default_factory=ImageQC)

    @property
    def mask_stage(self) -> str:
        """The stage the inspection mask is applied at (``none`` without a mask)."""
        return self.spec.mask_stage if self.roi is not None else "none"

    @property
    def exported(self) -> bool:
        return self.spec.runtime != "torch"

    def load(self, device: Any) -> None:
        """Read everything a check of this view needs; :class:`LineclearError` for what does not fit the manifest."""
        spec = self.spec
        if self.exported:
            # the bundle's hashes (checked by the checker) cover every file of the export
            model = load_export(spec.export, threads=1, verify=False)
            name, size, where = model.info.model, model.map_size, spec.export
        else:
            from lineclear.scoring import load_model

            model, meta, cfg = load_model(spec.checkpoint, device)
            name, size, where = meta.get("model"), tuple(int(x) for x in cfg.image_size), spec.checkpoint
        if name != spec.model:
            raise LineclearError(f"{where}: a {name} model, the manifest says {spec.model}")
        if tuple(size) != tuple(spec.map_size):
            raise LineclearError(f"{where}: map size {list(size)} differs from the manifest's {list(spec.map_size)}")
        thr = read_thresholds(spec.thresholds)
        self.image_threshold = thr["image"]["threshold"]
        self.pixel_threshold = thr["pixel"]["threshold"]
        self.level = level_of(thr)
        if decision_threshold(thr) is None:
            raise LineclearError(f"{spec.thresholds}: no {self.level} threshold")
        if spec.mask is not None:
            m = read_mask(spec.mask)
            if m.shape != tuple(spec.image_size):
                raise LineclearError(f"{spec.mask}: mask size {m.shape} differs from the reference's {spec.image_size}")
            self.roi = resize_mask(m, spec.map_size)
        ref = read_raw(spec.reference)
        if ref.shape[:2] != tuple(spec.image_size):
            raise LineclearError(f"{spec.reference}: size {ref.shape[:2]} differs from the manifest's {spec.image_size}")
        if spec.registration is not None:
            self.registrar = Registrar(ref, RegistrationConfig.from_dict(spec.registration))
            self.fill = resize_image(to_float_rgb(ref), tuple(spec.map_size))
        self.image_qc = ImageQC.from_dict(spec.image_qc)
        self.model = model
