"""The line-side verdict: per camera view, ``clear``, ``leftover`` (with where) or ``undecided`` (with why).

A :class:`Checker` is built once from a deployment bundle (:mod:`lineclear.deploy`): it verifies the
SHA-256 of every bundle file, loads each view's model, thresholds, inspection mask and registration
reference **once**, and warms the models up. :meth:`Checker.check` then takes one image per view:

1. read the file (a truncated PNG/JPEG or an undecodable file is refused), and sanity-check the pixels
   (black, saturated or uniform: camera covered, lights off, sensor fault);
2. register it to the view's reference with quality control (:mod:`lineclear.register`): a failed
   registration means the camera moved beyond what can be trusted;
3. score it with the view's model, mask and mask stage, exactly as the thresholds were calibrated
   (:func:`lineclear.scoring.score_arrays`, as ``lineclear score`` does): the scene is continued from the
   reference outside the camera frame, and the seam, eroded by the border margin, never counts;
4. a map raised over more than the view's ``max_raised_fraction`` (manifest, default 0.5) of the inspected
   area is no leftover but a changed scene (lighting, dirty lens, a camera that moved within what
   registration accepts, a calibration without camera shifts): ``undecided``, "scene changed: …";
5. compare the image score with the image threshold (strictly greater → ``leftover``) and find the
   connected components (8-connected) of the map above the pixel threshold: bounding box, area and peak,
   mapped back to the **original image's** pixel coordinates through the map→reference scale and the
   inverse registration transform.

Fail-safe: whatever cannot be established -- a damaged bundle file, a model that does not load, an
unreadable/black/saturated/uniform image, a failed registration, a view without an image, a non-finite
score, a map raised almost everywhere, any unexpected error -- gives ``undecided`` with the reason, never ``clear``.

Exit codes (the interface to a PLC): 0 every view clear, 3 leftover found in some view and no view
undecided, 4 some view undecided (it takes precedence: a view that could not be checked may hide
leftover product, so the machine must not restart either way; the JSON says which view is which).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import math
import os
import re
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import cv2
import numpy as np
import torch
from scipy import ndimage

from lineclear import __version__
from lineclear.errors import LineclearError, UsageError
from lineclear.formats import read_mask, read_thresholds, resize_mask
from lineclear.formats.deploy import Bundle, ViewSpec, read_manifest, verify_files, view_problems
from lineclear.images import is_image_path, read_raw, to_float_rgb, write_image
from lineclear.images import resize as resize_image

CLEAR, LEFTOVER, UNDECIDED = "clear", "leftover", "undecided"
VERDICTS = (CLEAR, LEFTOVER, UNDECIDED)
EXIT_CODES = {CLEAR: 0, LEFTOVER: 3, UNDECIDED: 4}
MAX_REGIONS = 50  # regions listed per view (largest peak first); ``regions_total`` counts all


# ---------------------------------------------------------------------------------------------- image sanity


@dataclass(frozen=True)
class ImageQC:
    """Limits of the pixel sanity check that runs before registration (values in [0,1] of full scale).

    black:     the 99th percentile of the gray levels is below ``dark_level`` (lights off, lens cap)
    saturated: more than ``max_saturated_fraction`` of the pixels are at or above ``bright_level``
    uniform:   the gray levels' standard deviation is below ``min_std`` (covered, defocused, sensor fault)
    """

    dark_level: float = 0.06
    bright_level: float = 0.98
    max_saturated_fraction: float = 0.9
    min_std: float = 0.01

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ImageQC":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"unknown image check setting(s) {sorted(unknown)} (known: {sorted(known)})")
        return cls(**{k: float(v) for k, v in d.items()})


def image_stats(raw: np.ndarray) -> dict[str, float]:
    """Gray-level statistics of a raw image (uint8/uint16, gray/RGB[A]) on a ≤512 px copy, values in [0,1]."""
    img = raw
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_RGB2GRAY)
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    h, w = img.shape[:2]
    s = min(1.0, 512 / max(h, w))
    if s < 1:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    g = img.astype(np.float32) / scale
    return {
        "mean": round(float(g.mean()), 5),
        "std": round(float(g.std()), 5),
        "p99": round(float(np.percentile(g, 99)), 5),
        "saturated_fraction": round(float((g >= 0.98).mean()), 5),
    }


def image_problem(stats: Mapping[str, float], limits: ImageQC) -> str | None:
    """Why the pixels cannot be trusted, or None."""
    if stats["p99"] < limits.dark_level:
        return f"image is black (99% of pixels below {limits.dark_level:.0%} brightness: lights off or camera covered?)"
    if stats["saturated_fraction"] > limits.max_saturated_fraction:
        return f"image is saturated ({stats['saturated_fraction']:.0%} of pixels white: overexposed or blinded?)"
    if stats["std"] < limits.min_std:
        return f"image is uniform (gray-level spread {stats['std']:.4f} < {limits.min_std}: covered, defocused or a sensor fault?)"
    return None


def file_problem(path: Path) -> str | None:
    """A PNG without its IEND chunk or a JPEG without its end marker was cut short (still being written?)."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if b"IEND" not in tail[-12:]:
            return "truncated PNG (no end chunk)"
    elif head.startswith(b"\xff\xd8"):
        if b"\xff\xd9" not in tail.rstrip(b"\x00"):
            return "truncated JPEG (no end marker)"
    return None


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Region:
    """One connected component of the anomaly map above the pixel threshold.

    ``bbox`` [x, y, w, h] and ``area_px`` are in pixels of the **original** image (as the camera saw it);
    ``bbox_map`` / ``area_map_px`` in anomaly-map pixels (registered frame at the model's resolution).
    """

    bbox: list[int]
    area_px: int
    peak_score: float
    peak_xy: list[float]
    bbox_map: list[int]
    area_map_px: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ViewVerdict:
    view: str
    verdict: str
    reason: str
    image: str | None = None
    model: str | None = None
    score: float | None = None
    threshold: float | None = None
    pixel_threshold: float | None = None
    regions: list[Region] = field(default_factory=list)
    regions_total: int = 0
    peak_xy: list[float] | None = None
    registration: dict[str, Any] | None = None
    image_qc: dict[str, Any] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    overlay: str | None = None
    overlay_error: str | None = None
    raised_fraction: float | None = None  # share of the counted map pixels above the pixel threshold
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. the image was resized)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["regions"] = [r.to_dict() if isinstance(r, Region) else r for r in self.regions]
        for key in ("overlay_error", "raised_fraction"):
            if d[key] is None:
                d.pop(key)
        if not d["notes"]:
            d.pop("notes")
        return d


def combine(verdicts: Iterable[str]) -> str:
    """The set's verdict: undecided if any view is, else leftover if any view is, else clear."""
    vs = list(verdicts)
    if not vs or UNDECIDED in vs:
        return UNDECIDED
    return LEFTOVER if LEFTOVER in vs else CLEAR


@dataclass
class CheckResult:
    """One image set: one :class:`ViewVerdict` per expected view."""

    bundle: str
    views: list[ViewVerdict]
    timings_ms: dict[str, float]
    device: str
    checked_utc: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"))

    @property
    def verdict(self) -> str:
        return combine(v.verdict for v in self.views)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        from lineclear.formats.verdict import VERDICT_SCHEMA

        return {
            "schema": VERDICT_SCHEMA,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "bundle": self.bundle,
            "views": [v.to_dict() for v in self.views],
            "timings_ms": self.timings_ms,
            "device": self.device,
            "checked_utc": self.checked_utc,
            "lineclear_version": __version__,
        }


# ---------------------------------------------------------------------------------------------- the checker


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def _short(exc: BaseException) -> str:
    if isinstance(exc, LineclearError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


@dataclass
class _View:
    spec: ViewSpec
    error: str | None = None
    model: Any = None
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    roi: np.ndarray | None = None  # (h,w) bool at map size
    registrar: Any = None
    fill: np.ndarray | None = None  # (h,w,3) float32: the reference at map size, continues the scene at the seam
    image_qc: ImageQC = field(default_factory=ImageQC)


@dataclass
class _Prepared:
    raw: np.ndarray  # the image as stored (for the overlay)
    x: np.ndarray  # (h,w,3) float32 registered, at map size
    valid: np.ndarray | None  # (h,w) bool at map size (not eroded: scoring erodes by the border margin)
    transform: np.ndarray  # (3,3) image → reference
    registration: dict[str, Any] | None
    stats: dict[str, float]
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)


class Checker:
    """Models and references loaded once; :meth:`check` gives the verdicts for one image set.

    ``torch_threads`` (default 1) sets PyTorch's and OpenCV's process-wide thread counts: the checker
    parallelises across views instead.

    ``bundle``: a bundle directory or a :class:`~lineclear.formats.deploy.Bundle`. A manifest that cannot
    be read raises :class:`~lineclear.errors.FormatError` (no verdict is possible). Everything else that
    is wrong with a view (damaged file, model that does not load) makes that view ``undecided`` in every
    check, with the reason, while the other views are still checked.
    """

    def __init__(self, bundle: str | os.PathLike | Bundle, device: str | torch.device = "cpu", *, bf16: bool = False,
                 warmup: bool = True, torch_threads: int | None = 1) -> None:
        t0 = time.perf_counter()
        if torch_threads:
            # Parallelism comes from checking the views side by side (one worker thread per core), each
            # network single-threaded: on a busy 2-core machine PyTorch's own thread pool stalls at its
            # barriers (measured: patchcore at 256x384 took 2.9 CPU-s with 2 threads, 0.2 with 1).
            # Process-wide setting; None leaves PyTorch's and OpenCV's defaults alone.
            torch.set_num_threads(torch_threads)
            cv2.setNumThreads(torch_threads)
        self.bundle = bundle if isinstance(bundle, Bundle) else read_manifest(bundle)
        self.device = torch.device(device)
        self.bf16 = bf16
        problems = view_problems(self.bundle, verify_files(self.bundle))
        self.views: dict[str, _View] = {}
        for name, spec in self.bundle.views.items():
            v = _View(spec)
            if problems.get(name):
                v.error = "bundle damaged: " + "; ".join(problems[name])
            else:
                try:
                    self._load(v)
                    if warmup:
                        self._warmup(v)
                except Exception as exc:  # noqa: BLE001 - fail-safe: the view is undecided, never clear
                    v.error = f"cannot load the view: {_short(exc)}"
                    v.model = None
            self.views[name] = v
        self.load_ms = _ms(t0)

    # -- loading ----------------------------------------------------------------------------------------
    def _load(self, v: _View) -> None:
        from lineclear.scoring import load_model

        spec = v.spec
        model, meta, cfg = load_model(spec.checkpoint, self.device)
        if meta.get("model") != spec.model:
            raise LineclearError(f"{spec.checkpoint}: a {meta.get('model')} model, the manifest says {spec.model}")
        if tuple(int(x) for x in cfg.image_size) != tuple(spec.map_size):
            raise LineclearError(f"{spec.checkpoint}: map size {list(cfg.image_size)} differs from the manifest's {list(spec.map_size)}")
        thr = read_thresholds(spec.thresholds)
        v.image_threshold = thr["image"]["threshold"]
        v.pixel_threshold = thr["pixel"]["threshold"]
        if v.image_threshold is None:
            raise LineclearError(f"{spec.thresholds}: no image threshold")
        if spec.mask is not None:
            m = read_mask(spec.mask)
            if m.shape != tuple(spec.image_size):
                raise LineclearError(f"{spec.mask}: mask size {m.shape} differs from the reference's {spec.image_size}")
            v.roi = resize_mask(m, spec.map_size)
        ref = read_raw(spec.reference)
        if ref.shape[:2] != tuple(spec.image_size):
            raise LineclearError(f"{spec.reference}: size {ref.shape[:2]} differs from the manifest's {spec.image_size}")
        if spec.registration is not None:
            from lineclear.register import RegistrationConfig, Registrar

            v.registrar = Registrar(ref, RegistrationConfig.from_dict(spec.registration))
            v.fill = resize_image(to_float_rgb(ref), tuple(spec.map_size))
        v.image_qc = ImageQC.from_dict(spec.image_qc)
        v.model = model

    def _warmup(self, v: _View) -> None:
        """One forward pass on a blank image: the first real check then runs at full speed."""
        from lineclear.scoring import score_arrays

        h, w = v.spec.map_size
        x = np.full((1, h, w, 3), 0.5, np.float32)
        score_arrays(v.model, x, roi=v.roi, valid=None, mask_stage=v.spec.mask_stage if v.roi is not None else "none",
                     device=self.device, bf16=self.bf16)

    @property
    def errors(self) -> dict[str, str]:
        """Views that cannot be checked at all, with the reason."""
        return {n: v.error for n, v in self.views.items() if v.error}

    # -- matching images to views ---------------------------------------------------------------------------
    def views_for(self, path: str | os.PathLike) -> list[str]:
        """Views whose pattern matches the file name (see :func:`name_matches`)."""
        return views_for(self.bundle, path)

    def match(self, images: Iterable[str | os.PathLike], explicit: Mapping[str, str | os.PathLike] | None = None
              ) -> dict[str, Path]:
        """See :func:`match_images`."""
        return match_images(self.bundle, images, explicit)

    # -- checking -----------------------------------------------------------------------------------------
    def check(
        self,
        images: Mapping[str, str | os.PathLike | None],
        *,
        views: Iterable[str] | None = None,
        overlay_dir: str | os.PathLike | None = None,
        overwrite: bool = False,
        missing_reason: str = "no image for this view",
        jobs: int | None = None,
        overlay_prefix: str = "",
    ) -> CheckResult:
        """Verdicts for one image set ``{view: image path}``; ``views`` (default: all) are the ones expected.

        The views are checked in parallel, ``jobs`` at a time (default: one per CPU core), each from reading
        to overlay in one worker thread (OpenCV and PyTorch release the GIL).
        """
        t0 = time.perf_counter()
        expected = list(views) if views is not None else list(self.views)
        for n in list(images) + expected:
            if n not in self.views:
                raise UsageError(f"no view {n!r} in the bundle (views: {', '.join(self.views)})")
        extra = sorted(set(images) - set(expected))
        if extra:
            raise UsageError(f"images given for view(s) {', '.join(extra)} that are not expected in this check")
        todo = [n for n in expected if images.get(n) is not None]
        results: dict[str, ViewVerdict] = {}
        for n in expected:
            if images.get(n) is None:
                results[n] = self._undecided(n, None, missing_reason)
        out_dir = Path(overlay_dir) if overlay_dir is not None else None

        def one(n: str) -> ViewVerdict:
            path = Path(images[n])  # type: ignore[arg-type]
            prep = self._prepare_safe(n, path)
            verdict = prep if isinstance(prep, ViewVerdict) else self._score_safe(n, path, prep)
            if out_dir is not None:
                self._write_overlay(verdict, None if isinstance(prep, ViewVerdict) else prep, out_dir, overwrite,
                                    overlay_prefix)
            return verdict

        n_jobs = max(1, min(len(todo), jobs or os.cpu_count() or 1))
        if n_jobs == 1:
            results.update({n: one(n) for n in todo})
        else:
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                results.update(zip(todo, pool.map(one, todo)))
        return CheckResult(
            bundle=str(self.bundle.root), views=[results[n] for n in expected],
            timings_ms={"load": self.load_ms, "check": _ms(t0)}, device=str(self.device),
        )

    def check_one(self, view: str, image: str | os.PathLike, **kw: Any) -> ViewVerdict:
        return self.check({view: image}, views=[view], **kw).views[0]

    def _undecided(self, view: str, path: Path | None, reason: str, **kw: Any) -> ViewVerdict:
        v = self.views[view]
        return ViewVerdict(view, UNDECIDED, reason, image=str(path) if path else None, model=v.spec.model,
                           threshold=v.image_threshold, pixel_threshold=v.pixel_threshold, **kw)

    def _prepare_safe(self, view: str, path: Path) -> _Prepared | ViewVerdict:
        try:
            return self._prepare(view, path)
        except Exception as exc:  # noqa: BLE001 - fail-safe
            return self._undecided(view, path, f"internal error while reading/registering: {_short(exc)}")

    def _prepare(self, view: str, path: Path) -> _Prepared | ViewVerdict:
        v = self.views[view]
        if v.error:
            return self._undecided(view, path, v.error)
        spec = v.spec
        timings: dict[str, float] = {}
        t = time.perf_counter()
        if not path.is_file():
            return self._undecided(view, path, f"image not found: {path}")
        problem = file_problem(path)
        if problem:
            return self._undecided(view, path, f"unreadable image: {problem}")
        try:
            raw = read_raw(path)
        except LineclearError as exc:
            return self._undecided(view, path, f"unreadable image: {exc}")
        timings["read"] = _ms(t)
        stats = image_stats(raw)
        problem = image_problem(stats, v.image_qc)
        if problem:
            return self._undecided(view, path, problem, image_qc=stats, timings_ms=timings)
        t = time.perf_counter()
        in_size = (int(raw.shape[0]), int(raw.shape[1]))
        notes = []
        if in_size != tuple(spec.image_size):
            notes.append(f"image is {in_size[1]}x{in_size[0]}, the view's reference {spec.image_size[1]}x"
                         f"{spec.image_size[0]}: {'registered' if v.registrar is not None else 'resized'} to it")
        if v.registrar is not None:
            res = v.registrar.register(raw)
            reg = {"ok": bool(res.ok), "reason": res.reason, "transform": np.round(res.transform, 8).tolist(),
                   **{k: val for k, val in res.qc.items() if not isinstance(val, float) or math.isfinite(val)}}
            timings["register"] = _ms(t)
            if not res.ok:
                return self._undecided(view, path, f"camera moved / registration failed: {res.reason}",
                                       registration=reg, image_qc=stats, timings_ms=timings, notes=notes)
            warped, valid_ref, T = res.image, res.valid, res.transform
        else:
            from lineclear.register import resize_transform

            T = resize_transform(in_size, tuple(spec.image_size))
            warped = raw if in_size == tuple(spec.image_size) else resize_image(raw, tuple(spec.image_size))
            valid_ref, reg = None, None
        t = time.perf_counter()
        x = to_float_rgb(warped)
        if x.shape[:2] != tuple(spec.map_size):
            x = resize_image(x, tuple(spec.map_size))
        valid = None if valid_ref is None else resize_mask(valid_ref, tuple(spec.map_size))
        timings["resize"] = _ms(t)
        return _Prepared(raw, x, valid, np.asarray(T, np.float64), reg, stats, timings, notes)

    def _score_safe(self, view: str, path: Path, prep: _Prepared) -> ViewVerdict:
        try:
            return self._score(view, path, prep)
        except Exception as exc:  # noqa: BLE001 - fail-safe
            return self._undecided(view, path, f"internal error while scoring: {_short(exc)}",
                                   registration=prep.registration, image_qc=prep.stats, timings_ms=prep.timings)

    def _score(self, view: str, path: Path, prep: _Prepared) -> ViewVerdict:
        from lineclear.scoring import score_arrays

        v = self.views[view]
        spec = v.spec
        timings = dict(prep.timings)
        t = time.perf_counter()
        stage = spec.mask_stage if v.roi is not None else "none"
        maps, scores, count = score_arrays(
            v.model, prep.x[None], roi=v.roi, valid=None if prep.valid is None else prep.valid[None],
            mask_stage=stage, border_margin=spec.border_margin, fill=v.fill, device=self.device, bf16=self.bf16)
        timings["score"] = _ms(t)
        amap, score = maps[0], float(scores[0])
        counted = None if count is None else count[0]
        common = dict(registration=prep.registration, image_qc=prep.stats, notes=list(prep.notes))
        if not math.isfinite(score) or not np.all(np.isfinite(amap)):
            return self._undecided(view, path, "the model produced a non-finite score", timings_ms=timings, **common)
        if counted is not None and not counted.any():
            return self._undecided(view, path, "no pixel left to inspect (mask and registration border cover all)",
                                   timings_ms=timings, **common)
        t = time.perf_counter()
        M = _map_to_image(spec, prep.transform)
        regions, total, raised = [], 0, None
        if v.pixel_threshold is not None:
            raised = raised_fraction(amap, v.pixel_threshold, counted)
            if raised > spec.max_raised_fraction:
                # a leftover covers a small part of the frame: a map raised nearly everywhere means the
                # scene differs from the calibration, and a frame-sized box would tell nobody where to look
                return self._undecided(
                    view, path, f"scene changed: {raised:.0%} of the inspected area is above the pixel threshold "
                    f"(limit {spec.max_raised_fraction:.0%}): lighting change, dirty lens or camera moved, or "
                    "thresholds calibrated without camera shifts? Look at the line and the camera",
                    score=round(score, 6), raised_fraction=round(raised, 4), timings_ms=timings, **common)
            regions, total = find_regions(amap, v.pixel_threshold, counted, M, prep.raw.shape[:2])
        work = amap if counted is None else np.where(counted, amap, -np.inf)
        py, px = np.unravel_index(int(np.argmax(work)), work.shape)
        peak = [round(float(c), 1) for c in _project(M, np.array([[px, py]], np.float64))[0]]
        timings["regions"] = _ms(t)
        thr = float(v.image_threshold)  # type: ignore[arg-type]
        if score > thr:
            where = f"{total} region(s) above the pixel threshold" if total else (
                f"no region above the pixel threshold; peak at x={peak[0]:.0f}, y={peak[1]:.0f}")
            verdict, reason = LEFTOVER, f"score {score:.4g} > threshold {thr:.4g}; {where}"
        else:
            verdict, reason = CLEAR, f"score {score:.4g} <= threshold {thr:.4g}"
        timings["total"] = round(sum(timings.values()), 2)
        return ViewVerdict(view, verdict, reason, image=str(path), model=spec.model, score=round(score, 6),
                           threshold=thr, pixel_threshold=v.pixel_threshold, regions=regions, regions_total=total,
                           peak_xy=peak, timings_ms=timings, raised_fraction=None if raised is None else round(raised, 4),
                           **common)

    # -- overlays -----------------------------------------------------------------------------------------
    def _write_overlay(self, verdict: ViewVerdict, prep: _Prepared | None, out_dir: Path, overwrite: bool,
                       prefix: str = "") -> None:
        if verdict.image is None:
            return
        raw = prep.raw if prep is not None else None
        if raw is None:
            try:
                raw = read_raw(verdict.image)
            except (LineclearError, OSError):
                # a corrupt or vanished image still gets its overlay: grey, at the camera's size, stating why
                raw = blank_frame(self.views[verdict.view].spec.image_size)
        t = time.perf_counter()
        path = out_dir / (prefix + overlay_name(verdict.view, Path(verdict.image)))
        try:
            write_image(path, draw_overlay(raw, verdict), overwrite=overwrite)
            verdict.overlay = str(path)
        except LineclearError as exc:
            verdict.overlay_error = str(exc)
        verdict.timings_ms["overlay"] = _ms(t)


def views_for(bundle: Bundle, path: str | os.PathLike) -> list[str]:
    """Views of the bundle whose pattern matches the file name (see :func:`name_matches`)."""
    return [n for n, spec in bundle.views.items() if name_matches(spec.pattern, Path(path).name)]


def match_images(bundle: Bundle, images: Iterable[str | os.PathLike],
                 explicit: Mapping[str, str | os.PathLike] | None = None) -> dict[str, Path]:
    """Assign images to views by pattern; ``explicit`` {view: image} bypasses the patterns.

    An image that matches no view or several, a view given two images, or an unknown view is a
    :class:`~lineclear.errors.UsageError` (the command line is wrong; nothing is checked).
    """
    out: dict[str, Path] = {}
    for view, img in (explicit or {}).items():
        if view not in bundle.views:
            raise UsageError(f"--view {view}=...: no view {view!r} in the bundle (views: {', '.join(bundle.views)})")
        out[view] = Path(img)
    for img in images:
        p = Path(img)
        found = views_for(bundle, p)
        if not found:
            pats = ", ".join(f"{n}: {spec.pattern}" for n, spec in bundle.views.items())
            raise UsageError(f"{p}: the file name matches no view's pattern ({pats}); use --view VIEW={p}")
        if len(found) > 1:
            raise UsageError(f"{p}: the file name matches several views ({', '.join(found)}); use --view VIEW={p}")
        if found[0] in out:
            raise UsageError(f"view {found[0]} given two images ({out[found[0]]} and {p})")
        out[found[0]] = p
    return out


def name_matches(pattern: str, filename: str) -> bool:
    """Does an image file name belong to a view with this pattern? Case-insensitive.

    A pattern with glob characters (``*?[``) is matched against the whole file name
    (``cam1_*.png``); a plain word must be one of the name's tokens, the stem split at
    ``_ - . space`` (pattern ``A`` matches ``A.png``, ``A_0012.png``, ``line2-A.tif``, but not
    ``CAM_B.png``).
    """
    pat, name = pattern.lower(), filename.lower()
    if any(c in pat for c in "*?["):
        return fnmatch.fnmatchcase(name, pat)
    return pat in re.split(r"[_\-. ]+", Path(name).stem)


def overlay_name(view: str, image: Path) -> str:
    return f"{view}__{image.stem}.png"


# ---------------------------------------------------------------------------------------------- geometry


def _project(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.hstack([pts, np.ones((len(pts), 1))]) @ T.T
    return p[:, :2] / p[:, 2:3]


def _map_to_image(spec: ViewSpec, transform: np.ndarray) -> np.ndarray:
    """(3,3) map pixel → original image pixel: the map→reference scale, then the inverse registration."""
    from lineclear.register import resize_transform

    S = resize_transform(tuple(spec.map_size), tuple(spec.image_size))
    return np.linalg.inv(transform) @ S


def raised_fraction(amap: np.ndarray, pixel_threshold: float, counted: np.ndarray | None) -> float:
    """Share of the counted pixels (all when ``counted`` is None) whose map value is above ``pixel_threshold``.

    amap (h,w) float; counted (h,w) bool or None. 0 when no pixel counts.
    """
    above = amap > pixel_threshold
    if counted is None:
        return float(above.mean()) if above.size else 0.0
    n = int(counted.sum())
    return float((above & counted).sum() / n) if n else 0.0


def find_regions(
    amap: np.ndarray, pixel_threshold: float, counted: np.ndarray | None, map_to_image: np.ndarray,
    image_size: tuple[int, int], max_regions: int = MAX_REGIONS,
) -> tuple[list[Region], int]:
    """Connected components (8-connected) of ``amap > pixel_threshold`` within ``counted``.

    amap (h,w) float; counted (h,w) bool or None; map_to_image (3,3) map px → image px; image_size (H,W).
    Returns the regions sorted by peak score (at most ``max_regions``) and the total number found.
    The image-space box and area come from warping the component labels back into the original frame
    (nearest neighbour), so a rotated or tilted camera gets the boxes of what it actually saw.
    """
    above = amap > pixel_threshold
    if counted is not None:
        above &= counted
    n, labels, stats, _ = cv2.connectedComponentsWithStats(above.astype(np.uint8), connectivity=8)
    if n <= 1:
        return [], 0
    peaks = ndimage.maximum(amap, labels, index=np.arange(1, n))
    peak_pos = ndimage.maximum_position(amap, labels, index=np.arange(1, n))
    order = np.argsort(-np.asarray(peaks), kind="stable")[:max_regions]
    H, W = image_size
    kept = np.zeros(n, np.uint16)  # map label → 1-based rank among the kept regions (uint16 warps in OpenCV)
    kept[order + 1] = np.arange(1, len(order) + 1)
    warped = cv2.warpPerspective(kept[labels], map_to_image, (W, H), flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    slices = ndimage.find_objects(warped, max_label=len(order))
    areas = np.bincount(warped.ravel(), minlength=len(order) + 1)
    regions = []
    for rank, i in enumerate(order, start=1):
        lab = i + 1
        x, y, w, h, a = (int(v) for v in stats[lab])
        sl = slices[rank - 1]
        if sl is not None:
            bbox = [sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start]
        else:  # too small to survive nearest-neighbour warping: project the map box's corners
            c = _project(map_to_image, np.array([[x - 0.5, y - 0.5], [x + w - 0.5, y - 0.5],
                                                 [x + w - 0.5, y + h - 0.5], [x - 0.5, y + h - 0.5]]))
            x0, y0 = np.clip(np.floor(c.min(0)), 0, [W - 1, H - 1]).astype(int)
            x1, y1 = np.clip(np.ceil(c.max(0)), 0, [W, H]).astype(int)
            bbox = [int(x0), int(y0), int(max(1, x1 - x0)), int(max(1, y1 - y0))]
        py, px = peak_pos[i]
        pxy = _project(map_to_image, np.array([[px, py]], np.float64))[0]
        regions.append(Region(
            bbox=[int(b) for b in bbox], area_px=int(areas[rank]) if sl is not None else int(bbox[2] * bbox[3]),
            peak_score=round(float(peaks[i]), 6), peak_xy=[round(float(pxy[0]), 1), round(float(pxy[1]), 1)],
            bbox_map=[x, y, w, h], area_map_px=a,
        ))
    return regions, n - 1


# ---------------------------------------------------------------------------------------------- drawing

_COLOURS = {CLEAR: (40, 170, 60), LEFTOVER: (220, 30, 30), UNDECIDED: (235, 140, 0)}


def draw_overlay(raw: np.ndarray, verdict: ViewVerdict) -> np.ndarray:
    """The original image (uint8 RGB) with each region's box and peak, and a banner with the verdict."""
    img = raw
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = np.ascontiguousarray(img[:, :, :3]).copy()
    h, w = img.shape[:2]
    unit = max(1, round(max(h, w) / 400))
    colour = _COLOURS[verdict.verdict]
    for k, r in enumerate(verdict.regions, start=1):
        x, y, bw, bh = r.bbox if isinstance(r, Region) else r["bbox"]
        cv2.rectangle(img, (x, y), (x + bw - 1, y + bh - 1), _COLOURS[LEFTOVER] if verdict.verdict == LEFTOVER
                      else (230, 200, 0), unit)
        peak = r.peak_score if isinstance(r, Region) else r["peak_score"]
        cv2.putText(img, f"{k}: {peak:.3g}", (x, max(12 * unit, y - 3 * unit)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * unit, (255, 255, 255), unit, cv2.LINE_AA)
    text = verdict.verdict.upper()
    if verdict.score is not None and verdict.threshold is not None:
        text += f"  score {verdict.score:.3g} / threshold {verdict.threshold:.3g}"
    if verdict.verdict == UNDECIDED:
        text += f"  {verdict.reason}"
    _banner(img, text, colour, unit)
    return img


def _banner(img: np.ndarray, text: str, colour: tuple[int, int, int], unit: int) -> None:
    """Draw ``text`` in a band across the top of ``img`` (in place), wrapped to the image width."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * unit
    h, w = img.shape[:2]
    (cw, ch), _ = cv2.getTextSize("abcdefghijklmnopqrstuvwxyz", font, scale, unit)
    per_line = max(8, int((w - 8 * unit) / (cw / 26)))
    lines = textwrap.wrap(text, per_line, break_long_words=True) or [""]
    line_h = ch + 6 * unit
    band = min(h, line_h * len(lines) + 4 * unit)
    img[:band] = (0.4 * img[:band] + 0.6 * np.array(colour)).astype(np.uint8)
    for i, line in enumerate(lines):
        y = 2 * unit + line_h * (i + 1) - 4 * unit
        if y > h:
            break
        cv2.putText(img, line, (4 * unit, y), font, scale, (255, 255, 255), unit, cv2.LINE_AA)


def blank_frame(size: tuple[int, int]) -> np.ndarray:
    """A mid-grey uint8 RGB frame (H, W): what an overlay is drawn on when the image cannot be read."""
    return np.full((int(size[0]), int(size[1]), 3), 96, np.uint8)


def is_candidate(path: Path) -> bool:
    """A file the checker may be given: an image, not hidden, not a temporary file."""
    return is_image_path(path) and not path.name.startswith(".")
