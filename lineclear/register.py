"""Image registration for camera shifts (thesis section 3.4), made accurate and fast. Pure: arrays in, results out.

The thesis's pipeline is: grayscale, ORB keypoints and descriptors, brute-force Hamming k-NN matching with a
ratio test, a RANSAC homography, and a warp to the reference's size. lineclear keeps that pipeline as the
*coarse* stage and adds what makes it trustworthy on a line:

1. **Reduced copy for detection.** ORB runs on a copy whose longer side is at most ``detect_max_side``
   (1024 px by default): the same scene structure at a fraction of the cost for 3072×2048 frames.
2. **Reference features computed once** per :class:`Registrar` (ORB descriptors, the corners to track and
   their patch mosaic), so registering a folder costs one detection per image, not two.
3. **Sub-pixel refinement at full resolution** (``refine="flow"``, the default): a second, local matching pass
   near the first estimate. A few hundred well-spread reference corners (``goodFeaturesToTrack``) are tracked
   with Lucas–Kanade into patches resampled from the image through the estimate (for large frames a mosaic of
   41×41 patches, ~10 % of the pixels; small frames are warped whole). Both sides are locally
   contrast-normalised first (lighting that differs across the frame would bias the tracks), tracks that do
   not return to their start (forward-backward check) are dropped, and the model is re-fitted with a tight
   RANSAC threshold and least squares; a second pass follows only if the first moved a corner by > 2 px.
   ``refine="ecc"`` uses OpenCV's enhanced-correlation maximisation instead (slower, and less robust to
   moving parts); ``refine="none"`` keeps the coarse estimate.
4. **Quality control** for every image (:attr:`RegistrationResult.qc`) and explicit failure limits
   (:class:`QCLimits`). A failed registration is *never* warped: the result carries the input unchanged
   (resized to the reference size when its size differs), ``ok=False`` and the reason.

Transforms are ``float64 (3,3)`` matrices mapping **image pixel coordinates → reference pixel coordinates**
(pixel centres at integer coordinates, OpenCV convention), so ``cv2.warpPerspective(image, T, (W_ref, H_ref))``
produces the registered image.

Threads: :meth:`Registrar.register` is re-entrant (OpenCV releases the GIL), so a
``ThreadPoolExecutor`` over images parallelises a folder; :func:`register_many` does that.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np

from lineclear.errors import UsageError

TRANSFORM_MODELS = ("homography", "affine", "similarity")  # what RegistrationConfig.model may be
REFINES = ("flow", "ecc", "none")


@dataclass(frozen=True)
class QCLimits:
    """When a registration counts as **failed**. Every limit is checked for every image.

    A camera nudge moves, rotates and slightly tilts the view; anything beyond these limits is taken to be a
    wrong match (another view, a flat or covered image, a camera that moved too far to trust), not a nudge.
    Scale, rotation, shear and perspective are measured on the transform relative to a plain resize to the
    reference size (so an image of another resolution is not penalised for that).
    """

    min_inliers: int = 20  # coarse RANSAC inliers (ORB matches consistent with one transform)
    min_inlier_ratio: float = 0.2  # inliers / ratio-test matches
    max_rmse_px: float = 2.0  # reprojection RMSE of the final fit on its inliers, reference pixels
    max_corner_shift_frac: float = 0.25  # largest corner displacement / reference diagonal
    min_scale: float = 0.75  # sqrt(det) of the local linear part at the centre
    max_scale: float = 1.33
    max_rotation_deg: float = 30.0
    max_shear: float = 0.15  # |off-diagonal of the upper-triangular (QR) factor| / scale
    max_anisotropy: float = 1.2  # ratio of the two local scale factors
    max_perspective: float = 0.25  # (largest / smallest local scale over the frame) − 1
    min_valid_fraction: float = 0.5  # share of the reference frame covered by image pixels

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RegistrationConfig:
    """Settings of a :class:`Registrar`; recorded in the report and in a deployment bundle.

    ``ransac_px`` is in pixels of the reduced detection copy; ``refine_ransac_px`` in full-resolution
    reference pixels.
    """

    model: str = "homography"  # homography | affine | similarity
    detect_max_side: int | None = 1024  # None: detect at full resolution (the thesis)
    n_features: int = 1000  # ORB keypoints per image
    detect_clahe: float = 2.0  # CLAHE clip limit of the fallback detection copy (0 = no fallback): low-contrast scenes
    ratio: float = 0.8  # Lowe ratio test on the two nearest descriptors
    ransac_px: float = 3.0
    refine: str = "flow"  # flow | ecc | none
    refine_points: int = 400  # reference corners tracked by the flow refinement
    refine_ransac_px: float = 1.0
    refine_patch_radius: int = 20  # tracked patches are (2r+1)² px
    refine_fb_px: float = 0.1  # forward-backward tracking tolerance (0 = no check)
    refine_normalise: float = 10.0  # spread σ (px) of the window of local contrast normalisation before tracking (0 = global gain)
    refine_quality: float = 0.005  # goodFeaturesToTrack qualityLevel for the tracked corners
    refine_iters: int = 3  # at most this many flow passes ...
    refine_repeat_px: float = 2.0  # ... another only when the last moved a corner by more than this
    ecc_max_side: int = 1536  # ECC works on a copy of at most this size
    limits: QCLimits = field(default_factory=QCLimits)

    def __post_init__(self) -> None:
        if self.model not in TRANSFORM_MODELS:
            raise UsageError(f"registration model must be one of {', '.join(TRANSFORM_MODELS)}, not {self.model!r}")
        if self.refine not in REFINES:
            raise UsageError(f"refinement must be one of {', '.join(REFINES)}, not {self.refine!r}")
        if self.detect_max_side is not None and self.detect_max_side < 64:
            raise UsageError(f"detect_max_side must be >= 64 px, not {self.detect_max_side}")
        if not 0 < self.ratio <= 1:
            raise UsageError(f"ratio must be in (0, 1], not {self.ratio}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["limits"] = self.limits.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegistrationConfig":
        d = dict(d)
        limits = QCLimits(**d.pop("limits", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(limits=limits, **{k: v for k, v in d.items() if k in known})


@dataclass
class RegistrationResult:
    """The outcome for one image.

    image      the registered image, reference size (H_ref, W_ref[, C]), same dtype as the input; on failure the
               input unchanged (resized to the reference size if needed). ``None`` with ``warp=False``.
    transform  float64 (3,3) actually applied: image → reference (identity / plain resize on failure).
    estimate   float64 (3,3) the transform found (also on failure, for diagnosis), or None.
    valid      bool (H_ref, W_ref): reference pixels whose value came from inside the source frame
               (all four bilinear neighbours inside); all True on failure. ``None`` with ``warp=False``.
    ok         False when registration failed; ``reason`` then says why.
    qc         quality-control figures (see :meth:`Registrar.register`).
    """

    image: np.ndarray | None
    transform: np.ndarray
    estimate: np.ndarray | None
    valid: np.ndarray | None
    ok: bool
    reason: str | None
    qc: dict[str, Any]
    input_size: tuple[int, int]  # (H, W) of the input
    reference_size: tuple[int, int]  # (H, W)

    @property
    def resized(self) -> bool:
        return tuple(self.input_size) != tuple(self.reference_size)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Any (H,W), (H,W,1|3|4) uint8/uint16/float[0,1] image (RGB order) → uint8 (H,W)."""
    img = np.asarray(image)
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        else:
            img = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_RGB2GRAY)
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype == np.uint16:
        return (img.astype(np.float32) * (1 / 257.0) + 0.5).astype(np.uint8)
    if img.dtype.kind == "f":
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    raise UsageError(f"unsupported image dtype {img.dtype} for registration")


# ---------------------------------------------------------------------------------------------- geometry


def project(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a (3,3) transform to (N,2) points (x, y): (N,2) float64."""
    p = np.hstack([pts, np.ones((len(pts), 1))]) @ T.T
    return p[:, :2] / p[:, 2:3]


def corners_of(size: tuple[int, int]) -> np.ndarray:
    """The four corner pixel centres of an (H, W) frame, (4,2) float64 (x, y)."""
    h, w = size
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)


def corner_error(T_est: np.ndarray, T_true: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Distance in pixels between where the two transforms send the corners of an (H, W) frame, (4,)."""
    c = corners_of(size)
    return np.linalg.norm(project(T_est, c) - project(T_true, c), axis=1)


def resize_transform(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """The plain resize (H, W) → (H, W) as a (3,3) transform (OpenCV pixel-centre convention)."""
    sx, sy = dst[1] / src[1], dst[0] / src[0]
    return np.array([[sx, 0, 0.5 * (sx - 1)], [0, sy, 0.5 * (sy - 1)], [0, 0, 1]], dtype=np.float64)


def _jacobian(T: np.ndarray, x: float, y: float) -> np.ndarray:
    """The 2×2 local linear part of T at (x, y)."""
    w = T[2, 0] * x + T[2, 1] * y + T[2, 2]
    u = (T[0, 0] * x + T[0, 1] * y + T[0, 2]) / w
    v = (T[1, 0] * x + T[1, 1] * y + T[1, 2]) / w
    return np.array(
        [[T[0, 0] - u * T[2, 0], T[0, 1] - u * T[2, 1]], [T[1, 0] - v * T[2, 0], T[1, 1] - v * T[2, 1]]]
    ) / w


def transform_qc(T: np.ndarray, image_size: tuple[int, int], ref_size: tuple[int, int]) -> dict[str, Any]:
    """Geometric plausibility of an image→reference transform.

    Returns corner shifts (reference px), scale, rotation (degrees), shear, anisotropy and perspective of
    ``T`` relative to a plain resize of the image to the reference size, plus ``degenerate`` (a corner maps
    behind the camera, the frame folds over, or the matrix is singular) and ``valid_fraction`` (share of the
    reference frame covered by the image, from the mapped frame polygon).
    """
    out: dict[str, Any] = {}
    T = np.asarray(T, dtype=np.float64)
    N = T @ np.linalg.inv(resize_transform(image_size, ref_size))  # reference → reference "motion"
    h, w = ref_size
    c = corners_of(ref_size)
    wz = np.hstack([c, np.ones((4, 1))]) @ N.T
    degenerate = bool(np.any(wz[:, 2] <= 1e-9) or not np.all(np.isfinite(N)) or abs(np.linalg.det(N)) < 1e-12)
    moved = project(N, c) if not degenerate else c * np.nan
    shifts = np.linalg.norm(moved - c, axis=1)
    J = _jacobian(N, (w - 1) / 2, (h - 1) / 2)
    det = float(np.linalg.det(J))
    if det <= 0:
        degenerate = True
    # QR-style decomposition J = R(θ) · [[sx, k], [0, sy]]; only the shear k is used here
    theta = math.atan2(J[1, 0], J[0, 0])
    c_, s_ = math.cos(theta), math.sin(theta)
    k = c_ * J[0, 1] + s_ * J[1, 1]
    scale = math.sqrt(abs(det))
    sv = np.linalg.svd(J, compute_uv=False)
    local = []
    for x, y in c:
        dj = np.linalg.det(_jacobian(N, x, y)) if not degenerate else np.nan
        local.append(math.sqrt(abs(dj)) if np.isfinite(dj) else np.nan)
    local = np.array(local + [scale])
    convex = bool(cv2.isContourConvex(moved.astype(np.float32).reshape(-1, 1, 2))) if not degenerate else False
    degenerate = degenerate or not convex
    valid_fraction = 0.0
    if not degenerate:
        quad = moved.astype(np.float32)
        frame = c.astype(np.float32)
        inter, _ = cv2.intersectConvexConvex(quad, frame)
        valid_fraction = float(inter) / float((w - 1) * (h - 1)) if w > 1 and h > 1 else 0.0
    out.update(
        max_corner_shift_px=float(np.nanmax(shifts)) if not degenerate else None,
        mean_corner_shift_px=float(np.nanmean(shifts)) if not degenerate else None,
        scale=float(scale),
        rotation_deg=float(math.degrees(theta)),
        shear=float(abs(k) / scale) if scale > 0 else None,
        anisotropy=float(sv[0] / sv[1]) if sv[1] > 0 else None,
        perspective=float(np.nanmax(local) / np.nanmin(local) - 1) if not degenerate and np.nanmin(local) > 0 else None,
        degenerate=degenerate,
        valid_fraction=valid_fraction,
    )
    return out


def check_limits(qc: dict[str, Any], limits: QCLimits, ref_size: tuple[int, int]) -> str | None:
    """The first limit of ``limits`` that ``qc`` violates, as a short reason; None when all hold."""
    if qc.get("inliers", 0) < limits.min_inliers:
        return f"too few inliers ({qc.get('inliers', 0)} < {limits.min_inliers}; another view or a covered camera?)"
    if qc.get("inlier_ratio", 0.0) < limits.min_inlier_ratio:
        return f"inlier ratio {qc['inlier_ratio']:.2f} < {limits.min_inlier_ratio}"
    if qc.get("degenerate"):
        return "degenerate transform (the frame folds over or maps to infinity)"
    rmse = qc.get("reprojection_rmse")
    if rmse is None or rmse > limits.max_rmse_px:
        return f"reprojection RMSE {rmse if rmse is None else round(rmse, 2)} px > {limits.max_rmse_px}"
    if not limits.min_scale <= qc["scale"] <= limits.max_scale:
        return f"implausible scale {qc['scale']:.3f} (allowed {limits.min_scale}..{limits.max_scale})"
    if abs(qc["rotation_deg"]) > limits.max_rotation_deg:
        return f"implausible rotation {qc['rotation_deg']:.1f} deg (> {limits.max_rotation_deg})"
    if qc["shear"] is None or qc["shear"] > limits.max_shear:
        return f"implausible shear {qc['shear']} (> {limits.max_shear})"
    if qc["anisotropy"] is None or qc["anisotropy"] > limits.max_anisotropy:
        return f"implausible anisotropy {qc['anisotropy']} (> {limits.max_anisotropy})"
    if qc["perspective"] is None or qc["perspective"] > limits.max_perspective:
        return f"implausible perspective {qc['perspective']} (> {limits.max_perspective})"
    diag = math.hypot(*ref_size)
    if qc["max_corner_shift_px"] > limits.max_corner_shift_frac * diag:
        return f"corners moved {qc['max_corner_shift_px']:.0f} px (> {limits.max_corner_shift_frac:.0%} of the diagonal)"
    if qc["valid_fraction"] < limits.min_valid_fraction:
        return f"image covers only {qc['valid_fraction']:.0%} of the reference (< {limits.min_valid_fraction:.0%})"
    return None


# ---------------------------------------------------------------------------------------------- fitting


def _fit(model: str, src: np.ndarray, dst: np.ndarray, thresh: float) -> tuple[np.ndarray | None, np.ndarray]:
    """Robust fit of src → dst ((N,2) each); returns (T (3,3) or None, inlier bool (N,))."""
    n = len(src)
    need = 4 if model == "homography" else (3 if model == "affine" else 2)
    if n < need:
        return None, np.zeros(n, bool)
    s = src.astype(np.float32).reshape(-1, 1, 2)
    d = dst.astype(np.float32).reshape(-1, 1, 2)
    if model == "homography":
        T, inl = cv2.findHomography(s, d, cv2.RANSAC, thresh, maxIters=4000, confidence=0.999)
    elif model == "affine":
        A, inl = cv2.estimateAffine2D(s, d, method=cv2.RANSAC, ransacReprojThreshold=thresh, maxIters=4000,
                                      confidence=0.999, refineIters=20)
        T = None if A is None else np.vstack([A, [0, 0, 1]])
    else:
        A, inl = cv2.estimateAffinePartial2D(s, d, method=cv2.RANSAC, ransacReprojThreshold=thresh,
                                             maxIters=4000, confidence=0.999, refineIters=20)
        T = None if A is None else np.vstack([A, [0, 0, 1]])
    if T is None or inl is None:
        return None, np.zeros(n, bool)
    inl = inl.ravel().astype(bool)
    T = np.asarray(T, dtype=np.float64)
    if model == "homography" and inl.sum() >= 8:
        # Least squares on all inliers (findHomography's LM polish uses the same set; this re-fit uses
        # double precision points and is what makes the sub-pixel refinement pay off).
        T2, _ = cv2.findHomography(src[inl].astype(np.float64), dst[inl].astype(np.float64), 0)
        if T2 is not None:
            T = T2
    return T / T[2, 2], inl


def _rmse(T: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float | None:
    if len(src) == 0:
        return None
    return float(np.sqrt(np.mean(np.sum((project(T, src) - dst) ** 2, axis=1))))


# ---------------------------------------------------------------------------------------------- registrar


class Registrar:
    """Registers images to one reference; the reference's features are computed once.

    ``reference``: uint8/uint16/float (H,W) or (H,W,C) RGB image (converted to gray internally).
    Keyword arguments override fields of ``config`` (e.g. ``Registrar(ref, model="affine")``).
    """

    def __init__(self, reference: np.ndarray, config: RegistrationConfig | None = None, **overrides: Any) -> None:
        config = config or RegistrationConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        ref = to_gray(reference)
        if ref.ndim != 2 or min(ref.shape) < 16:
            raise UsageError(f"reference image too small for registration ({ref.shape})")
        self.ref = ref
        self.size: tuple[int, int] = (int(ref.shape[0]), int(ref.shape[1]))
        h, w = self.size
        s = 1.0
        if config.detect_max_side is not None and max(h, w) > config.detect_max_side:
            s = config.detect_max_side / max(h, w)
        self.detect_size = (max(1, round(h * s)), max(1, round(w * s)))
        self._orb = self._make_orb()
        # (points, descriptors) of the reference for the plain detection copy and the equalised one
        self._ref_features: dict[bool, tuple[np.ndarray, np.ndarray | None]] = {}
        for eq in (False, True) if config.detect_clahe > 0 else (False,):
            kp, desc = self._orb.detectAndCompute(self._detect_copy(ref, eq), None)
            self._ref_features[eq] = (self._to_full(kp, self.detect_size, self.size), desc)
        if config.refine == "flow":
            self._prepare_flow()
        if config.refine == "ecc":
            self._prepare_ecc()

    @property
    def ref_points(self) -> np.ndarray:
        """The reference's ORB points (N,2) on the richer detection copy: what the setup check counts."""
        return max((f[0] for f in self._ref_features.values()), key=len)

    # -- setup ------------------------------------------------------------------------------------------
    def _make_orb(self) -> cv2.ORB:
        # A fresh detector per call is cheap and keeps register() safe to call from several threads.
        return cv2.ORB_create(nfeatures=self.config.n_features, fastThreshold=10)

    def _detect_copy(self, gray: np.ndarray, equalise: bool = False) -> np.ndarray:
        """The copy ORB runs on: reduced to the detection size; with ``equalise``, contrast equalised in
        tiles (CLAHE).

        FAST corners need a fixed contrast; in a dim, hazy or defocused scene few pass it and the coarse
        stage has too few matches. Equalising both sides the same way keeps descriptors comparable; it is
        the fallback, not the default, because on ordinary scenes it trades well-placed corners for
        amplified noise (a slightly less exact coarse estimate).
        """
        small = self._reduce(gray, self.detect_size)
        if equalise:
            small = cv2.createCLAHE(clipLimit=self.config.detect_clahe, tileGridSize=(8, 8)).apply(small)
        return small

    @staticmethod
    def _reduce(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Area-average ``gray`` down to ``size`` (H, W); halvings first (pyrDown is several times cheaper)."""
        if gray.shape[:2] == tuple(size):
            return gray
        while gray.shape[0] >= 2 * size[0] and gray.shape[1] >= 2 * size[1]:
            gray = cv2.pyrDown(gray)
        if gray.shape[:2] == tuple(size):
            return gray
        return cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)

    @staticmethod
    def _to_full(kp: Iterable[cv2.KeyPoint], small: tuple[int, int], full: tuple[int, int]) -> np.ndarray:
        pts = np.array([k.pt for k in kp], dtype=np.float64).reshape(-1, 2)
        sx, sy = full[1] / small[1], full[0] / small[0]
        # pixel-centre convention: x_full = (x_small + 0.5) * s - 0.5
        pts[:, 0] = (pts[:, 0] + 0.5) * sx - 0.5
        pts[:, 1] = (pts[:, 1] + 0.5) * sy - 0.5
        return pts

    def _prepare_flow(self) -> None:
        """Reference side of the flow refinement, computed once: corners to track and their patch mosaic.

        Tracking works on a *mosaic*: a (rows·P, cols·P) image made of one P×P reference patch per corner.
        Per image, the same patches are resampled from the image through the current estimate
        (``cv2.remap``), so the refinement touches ~10 % of a large frame's pixels instead of warping it whole.
        """
        h, w = self.size
        r = self._patch_r = self.config.refine_patch_radius
        n = self.config.refine_points
        min_dist = max(4.0, math.sqrt(h * w / (n * 2.0)))
        border = np.zeros((h, w), np.uint8)
        if h > 2 * r + 2 and w > 2 * r + 2:
            border[r + 1:h - r - 1, r + 1:w - r - 1] = 255
        pts = cv2.goodFeaturesToTrack(self.ref, maxCorners=n, qualityLevel=self.config.refine_quality,
                                      minDistance=min_dist, blockSize=7, mask=border)
        pts = np.zeros((0, 2)) if pts is None else pts.reshape(-1, 2).astype(np.float64)
        self.flow_points = pts
        P = 2 * r + 1
        k = max(1, len(pts))
        # Small frames: the patches would hold more pixels than the frame itself, so track in the whole
        # frame warped with the estimate instead (same result, fewer pixels).
        self._whole_frame = k * P * P >= 0.5 * h * w
        if self._whole_frame:
            self._mosaic_pts = pts.astype(np.float32)
            self._win = (21, 21)
            self._ref_track = self._normalise(self.ref)
            return
        cols = int(math.ceil(math.sqrt(k)))
        rows = int(math.ceil(k / cols))
        centre = np.round(pts).astype(np.int64)
        off = np.arange(-r, r + 1)
        xr = np.full((rows * P, cols * P), -1e6, np.float32)  # unused slots map far outside: sampled as 0
        yr = np.full((rows * P, cols * P), -1e6, np.float32)
        mosaic_pts = np.zeros((len(pts), 2), np.float32)
        for i, (cx, cy) in enumerate(centre):
            ry, rx = divmod(i, cols)
            xr[ry * P:(ry + 1) * P, rx * P:(rx + 1) * P] = cx + off[None, :]
            yr[ry * P:(ry + 1) * P, rx * P:(rx + 1) * P] = cy + off[:, None]
            mosaic_pts[i] = (rx * P + r + (pts[i, 0] - cx), ry * P + r + (pts[i, 1] - cy))
        self._mosaic_xy = np.dstack([xr, yr]).reshape(-1, 1, 2)
        self._mosaic_shape = xr.shape
        inside = (xr >= 0) & (yr >= 0)
        ref_m = np.zeros(xr.shape, np.uint8)
        ref_m[inside] = self.ref[yr[inside].astype(np.int64), xr[inside].astype(np.int64)]
        self._ref_mosaic = ref_m
        self._ref_track = self._normalise(ref_m)
        self._mosaic_pts = mosaic_pts
        self._win = (21, 21)

    def _prepare_ecc(self) -> None:
        h, w = self.size
        s = min(1.0, self.config.ecc_max_side / max(h, w))
        self._ecc_size = (max(1, round(h * s)), max(1, round(w * s)))
        self._ecc_ref = self._reduce(self.ref, self._ecc_size).astype(np.float32)

    # -- public -----------------------------------------------------------------------------------------
    def register(self, image: np.ndarray, *, warp: bool = True) -> RegistrationResult:
        """Register one image (uint8/uint16/float, (H,W) or (H,W,C) RGB) to the reference.

        ``qc`` keys: ``features`` (ORB keypoints in the image), ``matches`` (after the ratio test),
        ``inliers`` / ``inlier_ratio`` (coarse RANSAC), ``refine`` (method and whether it was used),
        ``refine_points`` / ``refine_inliers`` (tracked corners and those the final fit kept),
        ``refine_change_px`` (largest corner move from the coarse to the final estimate),
        ``reprojection_rmse`` (final fit, reference px), ``max_corner_shift_px`` / ``mean_corner_shift_px``
        (camera motion at the corners), ``scale``, ``rotation_deg``, ``shear``, ``anisotropy``,
        ``perspective``, ``valid_fraction``, ``degenerate``, ``ms`` (wall time).
        """
        t0 = time.perf_counter()
        img = np.asarray(image)
        gray = to_gray(img)
        in_size = (int(gray.shape[0]), int(gray.shape[1]))
        estimate, reason, qc = self._estimate_checked(gray, in_size, False)
        if reason is not None and True in self._ref_features:
            # a low-contrast scene: try again on contrast-equalised copies of both sides
            second = self._estimate_checked(gray, in_size, True)
            if second[1] is None:
                estimate, reason, qc = second
        ok = reason is None
        T = estimate if ok else resize_transform(in_size, self.size)
        out_img = valid = None
        if warp:
            if ok:
                out_img = self._warp(img, T, cv2.INTER_LINEAR)
                valid = self.valid_mask(T, in_size)
            else:
                out_img = img if in_size == self.size else _plain_resize(img, self.size)
                valid = np.ones(self.size, bool)
        qc["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return RegistrationResult(out_img, T, estimate, valid, ok, reason, qc, in_size, self.size)

    def warp(self, image: np.ndarray, transform: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Warp any (H,W[,C]) array to the reference size with an image→reference transform."""
        return self._warp(np.asarray(image), transform, interpolation)

    def valid_mask(self, transform: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """bool (H_ref, W_ref): reference pixels whose value was sampled from inside the source frame.

        A pixel is valid when its source position lies in ``[0, W−1] × [0, H−1]``, so that all bilinear
        neighbours with a non-zero weight are image pixels. The frame's edges stay straight under a homography,
        so the valid region is a convex quadrilateral: it is filled directly, and the pixels within 2 px of its
        outline are then decided exactly by projecting them back into the image.
        """
        h, w = self.size
        ih, iw = image_size
        T = np.asarray(transform, np.float64)
        quad = corners_of((ih, iw))
        mapped = project(T, quad)
        out = np.zeros((h, w), np.uint8)
        if not np.all(np.isfinite(mapped)):
            return out.astype(bool)
        shift = 8
        poly = np.round(mapped * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillConvexPoly(out, poly, 1, lineType=cv2.LINE_8, shift=shift)
        # exact decision along the outline, where rasterisation may be off by a pixel
        cand = []
        # rasterisation is off by at most a pixel across the edge: the line's pixels and their 4-neighbours
        off = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]])
        for i in range(4):
            a, b = mapped[i], mapped[(i + 1) % 4]
            n = int(np.ceil(np.linalg.norm(b - a))) + 2
            t = np.linspace(0, 1, n)[:, None]
            pts = np.round(a + t * (b - a)).astype(np.int64)
            cand.append((pts[:, None, :] + off[None, :, :]).reshape(-1, 2))
        c = np.concatenate(cand)
        c = c[(c[:, 0] >= 0) & (c[:, 0] < w) & (c[:, 1] >= 0) & (c[:, 1] < h)]
        if len(c):
            cx, cy = c[:, 0], c[:, 1]  # duplicates are harmless: each pixel gets the same decision
            src = cv2.perspectiveTransform(np.stack([cx, cy], axis=1).astype(np.float64).reshape(-1, 1, 2),
                                           np.linalg.inv(T)).reshape(-1, 2)
            # exact (OpenCV 5 interpolates at the exact position: even 0.01 px outside blends in the border);
            # the tolerance only absorbs floating-point noise
            eps = 1e-9
            inside = (src[:, 0] >= -eps) & (src[:, 0] <= iw - 1 + eps) & (src[:, 1] >= -eps) & (src[:, 1] <= ih - 1 + eps)
            out[cy, cx] = inside
        return out.view(bool)

    # -- internals --------------------------------------------------------------------------------------
    def _warp(self, img: np.ndarray, T: np.ndarray, interp: int) -> np.ndarray:
        h, w = self.size
        if img.dtype == bool:
            return self._warp(img.astype(np.uint8), T, cv2.INTER_NEAREST).astype(bool)
        if img.ndim == 3 and img.shape[2] > 4:
            return np.dstack([self._warp(img[:, :, i], T, interp) for i in range(img.shape[2])])
        if abs(T[2, 0]) < 1e-15 and abs(T[2, 1]) < 1e-15:
            out = cv2.warpAffine(img, (T[:2] / T[2, 2]).astype(np.float64), (w, h), flags=interp,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        else:
            out = cv2.warpPerspective(img, T, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if img.ndim == 3 and out.ndim == 2:
            out = out[:, :, None]
        return out

    def _estimate_checked(self, gray: np.ndarray, in_size: tuple[int, int], equalise: bool
                          ) -> tuple[np.ndarray | None, str | None, dict[str, Any]]:
        """:meth:`_estimate` on one detection copy, then the quality-control limits: (estimate, reason, qc)."""
        qc: dict[str, Any] = {"features": 0, "matches": 0, "inliers": 0, "inlier_ratio": 0.0,
                              "detect": "equalised" if equalise else "plain"}
        estimate, reason = self._estimate(gray, qc, equalise)
        if estimate is not None:
            qc.update(transform_qc(estimate, in_size, self.size))
            reason = check_limits(qc, self.config.limits, self.size)
        return estimate, reason, qc

    def _estimate(self, gray: np.ndarray, qc: dict[str, Any], equalise: bool = False
                  ) -> tuple[np.ndarray | None, str | None]:
        cfg = self.config
        ref_points, ref_desc = self._ref_features[equalise]
        if ref_desc is None or len(ref_points) < cfg.limits.min_inliers:
            return None, f"the reference has too few features ({len(ref_points)})"
        in_size = gray.shape[:2]
        small = self._detect_copy(gray, equalise)
        orb = self._make_orb()
        kp, desc = orb.detectAndCompute(small, None)
        qc["features"] = len(kp)
        if desc is None or len(kp) < cfg.limits.min_inliers:
            return None, f"too few features in the image ({len(kp)}; flat, dark or blurred?)"
        pts = self._to_full(kp, self.detect_size, in_size)
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        knn = matcher.knnMatch(desc, ref_desc, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < cfg.ratio * m[1].distance]
        qc["matches"] = len(good)
        if len(good) < cfg.limits.min_inliers:
            return None, f"too few matches ({len(good)} < {cfg.limits.min_inliers}; another view or a covered camera?)"
        src = pts[[m.queryIdx for m in good]]
        dst = ref_points[[m.trainIdx for m in good]]
        det_scale = self.size[1] / self.detect_size[1]
        T, inl = _fit(cfg.model, src, dst, cfg.ransac_px * det_scale)
        qc["inliers"] = int(inl.sum())
        qc["inlier_ratio"] = round(float(inl.mean()), 4) if len(inl) else 0.0
        if T is None:
            return None, "no transform fits the matches"
        qc["reprojection_rmse"] = _rmse(T, src[inl], dst[inl])
        qc["refine"] = cfg.refine
        qc["refined"] = False
        if cfg.refine != "none" and qc["inliers"] >= cfg.limits.min_inliers:
            geo = transform_qc(T, in_size, self.size)
            if not geo["degenerate"]:
                refined = self._refine_flow(gray, T, qc) if cfg.refine == "flow" else self._refine_ecc(gray, T, qc)
                if refined is not None:
                    qc["refine_change_px"] = round(float(corner_error(refined, T, in_size).max()), 3)
                    T = refined
                    qc["refined"] = True
        return T, None

    def _refine_flow(self, gray: np.ndarray, T: np.ndarray, qc: dict[str, Any]) -> np.ndarray | None:
        """Track the reference corners into the image near the estimate ``T`` and re-fit (see module doc)."""
        cfg = self.config
        pts = self.flow_points
        if len(pts) < cfg.limits.min_inliers:
            qc["refine_note"] = "reference has too few corners to track"
            return None
        in_h, in_w = gray.shape[:2]
        margin = 1.5 * self._patch_r + 2
        best = None
        for _ in range(max(1, cfg.refine_iters)):
            Tin = np.linalg.inv(T)
            src0 = project(Tin, pts)  # where each reference corner lies in the image (current estimate)
            inside = (src0[:, 0] >= margin) & (src0[:, 1] >= margin) & (src0[:, 0] <= in_w - 1 - margin) & (
                src0[:, 1] <= in_h - 1 - margin)
            if inside.sum() < cfg.limits.min_inliers:
                qc["refine_note"] = "too few reference corners inside the image"
                return best
            if self._whole_frame:
                warped = self._warp(gray, T, cv2.INTER_LINEAR)
                ref_m = self._ref_track
            else:
                maps = cv2.perspectiveTransform(self._mosaic_xy, Tin).reshape(*self._mosaic_shape, 2)
                warped = cv2.remap(gray, maps[:, :, 0], maps[:, :, 1], cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                ref_m = self._ref_track
            warped = self._normalise(warped) if cfg.refine_normalise > 0 else self._match_gain(warped, ref_m)
            p0 = self._mosaic_pts[inside].reshape(-1, 1, 2)
            p1, status, _err = cv2.calcOpticalFlowPyrLK(
                ref_m, warped, p0, p0.copy(), winSize=self._win, maxLevel=1,
                criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 0.003),
                flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
            st = status.ravel().astype(bool)
            if cfg.refine_fb_px > 0:
                # forward-backward check: a corner that does not track back to where it started sits on an
                # edge (aperture problem), in noise or on something that moves; its position is unreliable
                back, st2, _ = cv2.calcOpticalFlowPyrLK(
                    warped, ref_m, p1, p0.copy(), winSize=self._win, maxLevel=1,
                    criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 0.003),
                    flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
                fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
                st &= st2.ravel().astype(bool) & (fb < cfg.refine_fb_px)
            d = (p1 - p0).reshape(-1, 2).astype(np.float64)
            # a corner that drifted out of its patch was tracking something else
            st &= np.all(np.abs(d) < self._patch_r - self._win[0] // 2, axis=1)
            ref_pts = pts[inside][st]
            # the tracked point in reference coordinates of the resampled patch, then back into the image
            img_pts = project(Tin, ref_pts + d[st])
            qc["refine_points"] = int(len(ref_pts))
            if len(ref_pts) < cfg.limits.min_inliers:
                qc["refine_note"] = f"only {len(ref_pts)} corners tracked"
                return best
            T_new, inl = _fit(cfg.model, img_pts, ref_pts, cfg.refine_ransac_px)
            if T_new is None or inl.sum() < cfg.limits.min_inliers:
                qc["refine_note"] = "the tracked corners do not fit one transform"
                return best
            qc["refine_inliers"] = int(inl.sum())
            qc["reprojection_rmse"] = _rmse(T_new, img_pts[inl], ref_pts[inl])
            change = float(corner_error(T_new, T, (in_h, in_w)).max())
            T = best = T_new
            # Patch translations are exact when the patches were resampled with nearly the right geometry;
            # only a large correction (a poor coarse estimate) warrants another pass with the better one.
            if change < cfg.refine_repeat_px:
                break
        return best

    def _normalise(self, img: np.ndarray) -> np.ndarray:
        """Local contrast normalisation for tracking: (I − local mean) / local std, as uint8 around 128.

        Lighting that changes slowly across the frame (vignetting, a lamp moved with the camera) biases
        intensity-based tracking; after this normalisation only the local structure is compared.
        """
        sigma = self.config.refine_normalise
        if sigma <= 0:
            return img
        k = 2 * int(round(sigma * math.sqrt(3))) + 1  # box of the same spread as a Gaussian of σ; cost per pixel is constant
        f = img.astype(np.float32)
        mean = cv2.boxFilter(f, -1, (k, k))
        d = f - mean
        std = np.sqrt(np.maximum(cv2.boxFilter(d * d, -1, (k, k)), 0)) + 2.0
        return np.clip(d / std * 48 + 128, 0, 255).astype(np.uint8)

    def _match_gain(self, warped: np.ndarray, ref_m: np.ndarray) -> np.ndarray:
        """Match the resampled image's brightness and contrast to the reference (one global gain and offset)."""
        # every 7th pixel is plenty for two moments and keeps this well under a millisecond
        ref_s, img_s = ref_m.reshape(-1)[::7], warped.reshape(-1)[::7]
        used = img_s > 0
        if used.sum() < 100:
            return warped
        a = ref_s[used].astype(np.float32)
        b = img_s[used].astype(np.float32)
        sa, sb = float(a.std()), float(b.std())
        if sb < 1e-3 or sa < 1e-3:
            return warped
        gain = sa / sb
        if abs(gain - 1) < 0.02 and abs(a.mean() - b.mean()) < 1.0:
            return warped
        lut = np.clip((np.arange(256, dtype=np.float32) - b.mean()) * gain + a.mean() + 0.5, 0, 255).astype(np.uint8)
        return cv2.LUT(warped, lut)

    def _refine_ecc(self, gray: np.ndarray, T: np.ndarray, qc: dict[str, Any]) -> np.ndarray | None:
        cfg = self.config
        eh, ew = self._ecc_size
        in_size = gray.shape[:2]
        # work on reduced copies: S_ref · T · S_img⁻¹ maps reduced image → reduced reference
        s_img = (max(1, round(in_size[0] * eh / self.size[0])), max(1, round(in_size[1] * ew / self.size[1])))
        A = resize_transform(self.size, (eh, ew))
        B = resize_transform(in_size, s_img)
        Ts = A @ T @ np.linalg.inv(B)
        img_s = self._reduce(gray, s_img).astype(np.float32)
        motion = {"homography": cv2.MOTION_HOMOGRAPHY, "affine": cv2.MOTION_AFFINE,
                  "similarity": cv2.MOTION_EUCLIDEAN}[cfg.model]
        W = np.linalg.inv(Ts)  # ECC's warp maps template (reference) → input (image)
        W = (W / W[2, 2]).astype(np.float32)
        if motion != cv2.MOTION_HOMOGRAPHY:
            W = W[:2].copy()
        if cfg.model == "similarity":
            # ECC has no similarity model; Euclidean cannot represent the scale, so use affine and
            # project back onto a similarity afterwards.
            motion = cv2.MOTION_AFFINE
        try:
            cc, W = cv2.findTransformECC(self._ecc_ref, img_s, W, motion,
                                         (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 60, 1e-5), None, 3)
        except cv2.error as exc:
            qc["refine_note"] = f"ECC did not converge ({str(exc).splitlines()[-1][:80]})"
            return None
        qc["ecc_correlation"] = round(float(cc), 4)
        if W.shape[0] == 2:
            W = np.vstack([W, [0, 0, 1]])
        Ts_new = np.linalg.inv(W.astype(np.float64))
        T_new = np.linalg.inv(A) @ Ts_new @ B
        if cfg.model == "similarity":
            M = T_new[:2, :2]
            a = (M[0, 0] + M[1, 1]) / 2
            b = (M[1, 0] - M[0, 1]) / 2
            T_new[:2, :2] = [[a, -b], [b, a]]
        return T_new / T_new[2, 2]


def _plain_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if (size[0] < h or size[1] < w) else cv2.INTER_LINEAR
    out = cv2.resize(img, (size[1], size[0]), interpolation=interp)
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def warp_mask(mask: np.ndarray, result: RegistrationResult) -> np.ndarray:
    """Warp a binary mask (H_in, W_in) of the registered image with the same transform: nearest, bool (H_ref, W_ref).

    A mask of another size than the input image is first resized (nearest) to the input size. Pixels that
    come from outside the source frame are False.
    """
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=2)
    m = (m > 0).astype(np.uint8)
    if m.shape != tuple(result.input_size):
        m = cv2.resize(m, (result.input_size[1], result.input_size[0]), interpolation=cv2.INTER_NEAREST)
    h, w = result.reference_size
    T = result.transform
    if not result.ok and tuple(result.input_size) == tuple(result.reference_size):
        return m.astype(bool)
    out = cv2.warpPerspective(m, T, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out > 0


def register_many(
    registrar: Registrar,
    items: Iterable[Any],
    load: Callable[[Any], np.ndarray],
    *,
    jobs: int = 0,
    warp: bool = True,
    on_result: Callable[[Any, RegistrationResult], Any] | None = None,
) -> Iterator[tuple[Any, RegistrationResult | BaseException, Any]]:
    """Register many images in parallel threads; yields ``(item, result_or_exception, on_result(...))`` in order.

    ``load(item)`` returns the image array; ``on_result(item, result)`` (e.g. writing the outputs) runs in the
    worker thread too. ``jobs`` ≤ 0 means one thread per CPU core.
    """
    n = jobs if jobs and jobs > 0 else (os.cpu_count() or 1)

    def work(item: Any) -> tuple[RegistrationResult, Any]:
        res = registrar.register(load(item), warp=warp)
        extra = on_result(item, res) if on_result is not None else None
        return res, extra

    items = list(items)
    if n == 1 or len(items) <= 1:
        for it in items:
            try:
                res, extra = work(it)
                yield it, res, extra
            except Exception as exc:  # noqa: BLE001 - reported per item by the caller
                yield it, exc, None
        return
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(work, it) for it in items]
        for it, fut in zip(items, futures):
            try:
                res, extra = fut.result()
                yield it, res, extra
            except Exception as exc:  # noqa: BLE001
                yield it, exc, None
