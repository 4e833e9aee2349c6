"""The line-side verdict: per camera view, ``clear``, ``leftover`` (with where) or ``undecided`` (with why).

A :class:`Checker` is built once from a deployment bundle (:mod:`lineclear.line.deploy`): it verifies the
SHA-256 of every bundle file, loads each view's model, thresholds, inspection mask and registration
reference **once** (:mod:`~lineclear.line.views`), and warms the models up. :meth:`Checker.check` then
takes one image per view and runs the steps of a check, each in its own module:

1. :mod:`~lineclear.line.image`: read the file (a truncated PNG/JPEG or an undecodable file is refused),
   and sanity-check the pixels (black, saturated or uniform: camera covered, lights off, sensor fault);
2. :mod:`~lineclear.line.registration`: register it to the view's reference with quality control
   (:mod:`lineclear.register`): a failed registration means the camera moved beyond what can be trusted;
3. :mod:`~lineclear.line.score`: score it with the view's model, mask and mask stage, exactly as the
   thresholds were calibrated (:func:`lineclear.scoring.score_arrays`, as ``lineclear score`` does);
4. :mod:`~lineclear.line.regions`: a map raised over more than the view's ``max_raised_fraction``
   (manifest, default 0.5) of the inspected area is no leftover but a changed scene (lighting, dirty
   lens, a camera that moved within what registration accepts, a calibration without camera shifts):
   ``undecided``, "scene changed: …"; otherwise the connected components (8-connected) of the map above
   the pixel threshold: bounding box, area and peak in the **original image's** pixel coordinates;
5. :mod:`~lineclear.line.verdict`: the image score against the image threshold (strictly greater →
   ``leftover``);
6. :mod:`~lineclear.line.overlay`: with an overlay folder, the image with the boxes and the verdict.

Fail-safe: whatever cannot be established -- a damaged bundle file, a model that does not load, an
unreadable/black/saturated/uniform image, a failed registration, a view without an image, a non-finite
score, a map raised almost everywhere, any unexpected error -- gives ``undecided`` with the reason, never ``clear``.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping

import cv2
import numpy as np

from lineclear.errors import UsageError
from lineclear.formats.deploy import Bundle, read_manifest, verify_files, view_problems
from lineclear.line.image import check_pixels, image_stats, read_image
from lineclear.line.matching import match_images, views_for
from lineclear.line.overlay import write_overlay
from lineclear.line.regions import find_regions, map_to_image, peak_xy, raised_fraction
from lineclear.line.registration import align
from lineclear.line.score import Scored, check_usable, score_view, warm_up
from lineclear.line.verdict import (
    UNDECIDED, CheckResult, Evidence, Undecidable, ViewVerdict, decide, decide_by_pixels, ms_since, scene_changed,
    short_error,
)
from lineclear.line.views import LoadedView


class Checker:
    """Models and references loaded once; :meth:`check` gives the verdicts for one image set.

    ``torch_threads`` (default 1) sets PyTorch's and OpenCV's process-wide thread counts: the checker
    parallelises across views instead (an exported view's graph runs on one thread too). PyTorch is
    imported only when a view of the bundle runs on it (``runtime`` torch in the manifest).

    ``bundle``: a bundle directory or a :class:`~lineclear.formats.deploy.Bundle`. A manifest that cannot
    be read raises :class:`~lineclear.errors.FormatError` (no verdict is possible). Everything else that
    is wrong with a view (damaged file, model that does not load) makes that view ``undecided`` in every
    check, with the reason, while the other views are still checked.
    """

    def __init__(self, bundle: str | os.PathLike | Bundle, device: Any = "cpu", *, bf16: bool = False,
                 warmup: bool = True, torch_threads: int | None = 1) -> None:
        t0 = time.perf_counter()
        self.bundle = bundle if isinstance(bundle, Bundle) else read_manifest(bundle)
        torch = None
        if self.bundle.needs_torch:
            import torch
        if torch_threads:
            # Parallelism comes from checking the views side by side (one worker thread per core), each
            # network single-threaded: on a busy 2-core machine PyTorch's own thread pool stalls at its
            # barriers (measured: patchcore at 256x384 took 2.9 CPU-s with 2 threads, 0.2 with 1).
            # Process-wide setting; None leaves PyTorch's and OpenCV's defaults alone.
            if torch is not None:
                torch.set_num_threads(torch_threads)
            cv2.setNumThreads(torch_threads)
        self.device = torch.device(device) if torch is not None else str(device)
        self.bf16 = bf16
        n_jobs = max(1, min(len(self.bundle.views), os.cpu_count() or 1))
        problems = view_problems(self.bundle, verify_files(self.bundle, jobs=n_jobs))

        def load(name: str) -> LoadedView:
            v = LoadedView(self.bundle.views[name])
            if problems.get(name):
                v.error = "bundle damaged: " + "; ".join(problems[name])
                return v
            try:
                v.load(self.device)
                if warmup:
                    warm_up(v, self.device, self.bf16)
            except Exception as exc:  # noqa: BLE001 - fail-safe: the view is undecided, never clear
                v.error = f"cannot load the view: {short_error(exc)}"
                v.model = None
            return v

        # the views load side by side, as they are checked (hashing, graph set-up and warm-up release the GIL)
        names = list(self.bundle.views)
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            self.views: dict[str, LoadedView] = dict(zip(names, pool.map(load, names)))
        self.load_ms = ms_since(t0)

    @property
    def errors(self) -> dict[str, str]:
        """Views that cannot be checked at all, with the reason."""
        return {n: v.error for n, v in self.views.items() if v.error}

    # -- matching images to views ---------------------------------------------------------------------------
    def views_for(self, path: str | os.PathLike) -> list[str]:
        """Views whose pattern matches the file name (see :func:`lineclear.line.matching.name_matches`)."""
        return views_for(self.bundle, path)

    def match(self, images: Iterable[str | os.PathLike], explicit: Mapping[str, str | os.PathLike] | None = None
              ) -> dict[str, Path]:
        """See :func:`lineclear.line.matching.match_images`."""
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
            verdict, raw = self._check_view(n, path)
            if out_dir is not None:
                write_overlay(verdict, raw, self.views[n].spec.image_size, out_dir, overwrite, overlay_prefix)
            return verdict

        n_jobs = max(1, min(len(todo), jobs or os.cpu_count() or 1))
        if n_jobs == 1:
            results.update({n: one(n) for n in todo})
        else:
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                results.update(zip(todo, pool.map(one, todo)))
        return CheckResult(
            bundle=str(self.bundle.root), views=[results[n] for n in expected],
            timings_ms={"load": self.load_ms, "check": ms_since(t0)}, device=str(self.device),
        )

    def check_one(self, view: str, image: str | os.PathLike, **kw: Any) -> ViewVerdict:
        return self.check({view: image}, views=[view], **kw).views[0]

    def _undecided(self, view: str, path: Path | None, reason: str, **kw: Any) -> ViewVerdict:
        v = self.views[view]
        return ViewVerdict(view, UNDECIDED, reason, image=str(path) if path else None, model=v.spec.model,
                           threshold=v.image_threshold, pixel_threshold=v.pixel_threshold, level=v.level, **kw)

    def _check_view(self, view: str, path: Path) -> tuple[ViewVerdict, np.ndarray | None]:
        """One view's verdict and the image as read (None when it could not be): the steps in order.

        A step that cannot establish what the verdict needs raises :class:`Undecidable`; any other error
        is an internal one. Either way the view is undecided, with what the steps before established.
        """
        v = self.views[view]
        evidence = Evidence()
        raw = None
        step = "reading/registering"
        try:
            if v.error:
                raise Undecidable(v.error)
            with evidence.timed("read"):
                raw = read_image(path)
            evidence.image_qc = image_stats(raw)
            check_pixels(evidence.image_qc, v.image_qc)
            aligned = align(raw, v.spec, v.registrar, evidence)
            step = "scoring"
            with evidence.timed("score"):
                scored = score_view(v, aligned, self.device, self.bf16)
            check_usable(scored)
            return self._judge(v, path, raw.shape[:2], aligned.transform, scored, evidence), raw
        except Undecidable as stop:
            return self._undecided(view, path, stop.reason, **evidence.fields(), **stop.fields), raw
        except Exception as exc:  # noqa: BLE001 - fail-safe: an unexpected error never gives clear
            return self._undecided(view, path, f"internal error while {step}: {short_error(exc)}",
                                   **evidence.fields()), raw

    def _judge(self, v: LoadedView, path: Path, image_size: tuple[int, int], transform: np.ndarray, scored: Scored,
               evidence: Evidence) -> ViewVerdict:
        """Steps 4 and 5: raised share and regions, then the image score against the threshold."""
        spec = v.spec
        t = time.perf_counter()
        M = map_to_image(spec, transform)
        regions, total, raised = [], 0, None
        if v.pixel_threshold is not None:
            raised = raised_fraction(scored.amap, v.pixel_threshold, scored.counted)
            if raised > spec.max_raised_fraction:
                raise Undecidable(scene_changed(raised, spec.max_raised_fraction), score=round(scored.score, 6),
                                  raised_fraction=round(raised, 4))
            regions, total = find_regions(scored.amap, v.pixel_threshold, scored.counted, M, image_size)
        peak = peak_xy(scored.amap, scored.counted, M)
        evidence.timings_ms["regions"] = ms_since(t)
        thr = float(v.image_threshold) if v.image_threshold is not None else None
        if v.level == "pixel":
            counted = scored.amap if scored.counted is None else scored.amap[scored.counted]
            top = float(counted.max()) if counted.size else float("-inf")
            verdict, reason = decide_by_pixels(top, float(v.pixel_threshold), total, peak)  # type: ignore[arg-type]
        else:
            verdict, reason = decide(scored.score, thr, total, peak)  # type: ignore[arg-type]
        timings = dict(evidence.timings_ms)
        timings["total"] = round(sum(timings.values()), 2)
        return ViewVerdict(spec.name, verdict, reason, image=str(path), model=spec.model, score=round(scored.score, 6),
                           threshold=thr, pixel_threshold=v.pixel_threshold, level=v.level, regions=regions,
                           regions_total=total,
                           peak_xy=peak, registration=evidence.registration, image_qc=evidence.image_qc,
                           timings_ms=timings, raised_fraction=None if raised is None else round(raised, 4),
                           notes=list(evidence.notes))
