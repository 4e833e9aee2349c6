"""Inspection masks and how they are applied (thesis section 3.4). Pure: arrays in, arrays out.

An **inspection mask** is ``bool (H,W)``, True = inspect, False = ignore (stored as a PNG with 255 = inspect by
:mod:`lineclear.formats.masks`). It is built from regions drawn over the areas to ignore and/or to keep
(VIA shapes, rasterised by :mod:`lineclear.labels`), from an existing PNG, or both, and can be grown or
shrunk by a distance in pixels.

Two *stages* apply it (the thesis's "timing of masking"):

* ``pre`` — before the anomaly map is computed: the model sees the mask (``model(images, mask)``); the input
  and its reconstruction are masked, so masked pixels do not take part in the computation at all.
* ``post`` — after: the anomaly map is computed on the whole image and then set to 0 where the mask is
  False (:func:`apply_post_mask`); the image score is taken from the masked map.

Registration adds a **validity mask** per image (pixels that came from inside the camera frame);
:func:`erode_valid` removes a margin along its seam, where interpolation against the black border makes
false anomalies, and :func:`combine_masks` intersects everything that applies to one image.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import cv2
import numpy as np

from lineclear.errors import LineclearError, UsageError


def _bool(mask: Any, name: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] in (1, 3, 4):
        m = m.max(axis=2)
    if m.ndim != 2:
        raise UsageError(f"{name} must be (H,W), found shape {m.shape}")
    if m.dtype == bool:
        return m
    if m.dtype in (np.uint8, np.uint16) and m.size and m.max() > 1:
        # 0/255 (or 0/65535) PNG masks: binarise at half range, like lineclear.formats.masks
        return m > (127 if m.dtype == np.uint8 else 32767)
    return m > 0.5


def _resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(shape):
        return mask
    return cv2.resize(mask.astype(np.uint8), (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_NEAREST) > 0


def _within(region: np.ndarray, px: float) -> np.ndarray:
    """Pixels whose centre lies within Euclidean distance ``px`` of a pixel of ``region`` (bool (H,W)).

    Distances are exact Euclidean distances between pixel centres; the image edge is not a region pixel,
    so nothing grows in from outside the frame.
    """
    if px <= 0 or not region.any():
        return region.copy()
    if region.all():
        return region.copy()
    # distance from every pixel to the nearest region pixel (region pixels are the zeros)
    dist = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist <= px + 1e-6


def grow_ignored(inspect: np.ndarray, px: float) -> np.ndarray:
    """``--dilate``: the ignored area grows by ``px`` pixels (the inspected area shrinks); returns the inspect mask."""
    inspect = _bool(inspect)
    return ~_within(~inspect, px)


def shrink_ignored(inspect: np.ndarray, px: float) -> np.ndarray:
    """``--erode``: the ignored area shrinks by ``px`` pixels (the inspected area grows); returns the inspect mask."""
    inspect = _bool(inspect)
    return _within(inspect, px)


def build_mask(
    size: tuple[int, int],
    *,
    ignore: np.ndarray | None = None,
    keep: np.ndarray | None = None,
    base: np.ndarray | None = None,
    dilate: float = 0,
    erode: float = 0,
) -> np.ndarray:
    """An inspection mask ``bool (H,W)`` (True = inspect) for a frame of ``size`` = (H, W).

    ``ignore``: bool (H,W) areas not to inspect; ``keep``: bool (H,W) the only areas to inspect;
    ``base``: an existing inspection mask (True = inspect), resized (nearest) if its size differs.
    The result is ``base ∧ keep ∧ ¬ignore`` (absent parts count as all-True / all-False).
    Then the **ignored area** is dilated by ``dilate`` px (grows: safer, less inspected) and afterwards eroded
    by ``erode`` px (shrinks), both with exact Euclidean distances.
    """
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise UsageError(f"mask size must be positive, found {w}x{h}")
    if dilate < 0 or erode < 0:
        raise UsageError("--dilate and --erode take a distance in pixels >= 0")
    inspect = np.ones((h, w), bool)
    if base is not None:
        inspect &= _resize_nearest(_bool(base, "base mask"), (h, w))
    if keep is not None:
        inspect &= _resize_nearest(_bool(keep, "keep regions"), (h, w))
    if ignore is not None:
        inspect &= ~_resize_nearest(_bool(ignore, "ignore regions"), (h, w))
    if dilate:
        inspect = grow_ignored(inspect, dilate)
    if erode:
        inspect = shrink_ignored(inspect, erode)
    return inspect


def erode_valid(valid: np.ndarray, margin_px: int) -> np.ndarray:
    """Remove a margin along a registration seam: ``bool (H,W)`` → ``bool (H,W)``.

    Valid pixels whose centre lies within ``margin_px`` (Euclidean) of an *invalid* pixel become invalid.
    The image edge is not a seam: a fully valid mask is returned unchanged. ``margin_px`` 0 → a copy.
    """
    valid = _bool(valid, "validity mask")
    if margin_px < 0:
        raise UsageError(f"border margin must be >= 0 px, found {margin_px}")
    if margin_px == 0 or valid.all():
        return valid.copy()
    return ~_within(~valid, float(margin_px))


def valid_at(valid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A validity mask at another size: ``bool (h,w)`` → ``bool (H,W)``, conservative when shrinking.

    Registered images reach the models resized to the map size with area averaging, so a map pixel on the
    seam mixes black pixels from outside the camera frame into its value. Such a pixel must not count as
    valid (a nearest-neighbour resize of the mask says it does, and the dark rim then scores as an
    anomaly along every seam, at the frame edge as well): a map pixel is valid only when every image
    pixel it averages is. Enlarging (a mask smaller than ``shape``) is nearest-neighbour.
    """
    v = _bool(valid, "validity mask")
    h, w = int(shape[0]), int(shape[1])
    if v.shape == (h, w):
        return v.copy()
    if v.all():
        return np.ones((h, w), bool)
    if h > v.shape[0] or w > v.shape[1]:
        return cv2.resize(v.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)
    area = cv2.resize(v.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return area >= 1.0 - 1e-4


def fill_outside(image: np.ndarray, valid: np.ndarray, fill: np.ndarray | None = None,
                 sigma: float | None = None) -> np.ndarray:
    """Continue the scene where a registered image has no pixels: ``(H,W,C)`` float32 → ``(H,W,C)`` float32.

    ``image`` (H,W,C) float in [0,1], registered to the reference frame; ``valid`` (H,W) bool, the pixels that
    came from inside the camera frame (not eroded); ``fill`` (H,W,C) float in [0,1], what the fixed camera
    normally sees there (the registration reference at the same size), or None.

    The pixels outside ``valid`` get ``fill`` times a smooth per-channel gain field: the ratio of the image's
    to the fill's local brightness, estimated from the valid pixels with a Gaussian of ``sigma`` px (default:
    1/16 of the shorter side) and falling back to the global ratio far from any valid pixel. So the scene's
    structure *and* the image's current lighting continue across the seam, and a CNN whose receptive field
    reaches over it sees no black wedge and no brightness step there (the seam artefact that makes shifted
    clear images outscore small leftovers). Without a ``fill``, the hole is inpainted from its border
    (OpenCV Telea): continuous, but without the scene's texture. Valid pixels are returned unchanged.
    """
    img = np.asarray(image, dtype=np.float32)
    v = _bool(valid, "validity mask")
    if v.shape != img.shape[:2]:
        raise UsageError(f"validity mask {v.shape} does not fit an image of {img.shape[:2]}")
    if v.all():
        return img
    if not v.any():
        return img.copy() if fill is None else np.asarray(fill, np.float32).copy()
    if fill is None:
        u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        out = cv2.inpaint(u8, (~v).astype(np.uint8), 3, cv2.INPAINT_TELEA).astype(np.float32) / 255.0
        out = out.reshape(img.shape)
        return np.where(v[..., None], img, out).astype(np.float32)
    f = np.asarray(fill, dtype=np.float32)
    if f.shape != img.shape:
        raise UsageError(f"fill image {f.shape} does not fit an image of {img.shape}")
    h, w = v.shape
    s = float(sigma) if sigma else max(2.0, min(h, w) / 16.0)
    vf = v.astype(np.float32)
    blur = lambda a: cv2.GaussianBlur(a, (0, 0), s, borderType=cv2.BORDER_REPLICATE)  # noqa: E731
    eps = 1e-3  # weight of the global ratio: dominant only where no valid pixel lies within ~3 sigma
    out = img.copy()
    for c in range(img.shape[2]):
        ic, fc = img[:, :, c], f[:, :, c]
        g_img, g_fill = float(ic[v].mean()), float(fc[v].mean())
        gain = (blur(ic * vf) + eps * g_img) / (blur(fc * vf) + eps * g_fill + 1e-6)
        out[:, :, c] = np.where(v, ic, np.clip(fc * np.clip(gain, 0.25, 4.0), 0.0, 1.0))
    return out


def combine_masks(*masks: np.ndarray | None, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """Intersection (logical AND) of the given masks, True = use the pixel. ``None`` entries are skipped.

    Masks of another size than ``shape`` (default: the first mask's shape) are resized with nearest neighbour.
    Returns ``bool (H,W)``; all True when only ``shape`` is given; ``None`` when there is neither a mask nor a
    shape (nothing to restrict).
    """
    given = [_bool(m) for m in masks if m is not None]
    if shape is None:
        if not given:
            return None
        shape = given[0].shape
    out = np.ones(tuple(shape), bool)
    for m in given:
        out &= _resize_nearest(m, tuple(shape))
    return out


def apply_post_mask(anomaly_map: Any, mask: Any) -> Any:
    """Post-masking: the anomaly map set to 0 where ``mask`` is False. Returns a new map of the same type.

    ``anomaly_map``: numpy array or torch tensor ``(H,W)``, ``(B,H,W)`` or ``(B,1,H,W)``.
    ``mask``: bool/0-1 ``(H,W)`` (one for all images) or ``(B,H,W)`` / ``(B,1,H,W)`` (one per image), numpy or
    torch; resized (nearest) when its spatial size differs from the map's.
    """
    try:  # torch is optional for this module: only touched when a tensor comes in
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(anomaly_map, torch.Tensor):
        m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
        m = m.to(device=anomaly_map.device)
        m = (m > 0.5) if m.dtype.is_floating_point else (m != 0)
        hw = anomaly_map.shape[-2:]
        if tuple(m.shape[-2:]) != tuple(hw):
            lead = m.shape[:-2]
            m = torch.nn.functional.interpolate(m.reshape(-1, 1, *m.shape[-2:]).float(), size=tuple(hw),
                                                mode="nearest").reshape(*lead, *hw) > 0.5
        m = _align(m, anomaly_map.ndim)
        return anomaly_map * m.to(anomaly_map.dtype)
    amap = np.asarray(anomaly_map)
    m = np.asarray(mask)
    if m.dtype != bool:
        m = m > 0.5
    hw = amap.shape[-2:]
    if m.shape[-2:] != hw:
        lead = m.shape[:-2]
        flat = m.reshape(-1, *m.shape[-2:])
        m = np.stack([_resize_nearest(x, hw) for x in flat]).reshape(*lead, *hw)
    m = _align(m, amap.ndim)
    return amap * m.astype(amap.dtype)


def _align(m: Any, ndim: int) -> Any:
    """Give a (H,W)/(B,H,W)/(B,1,H,W) mask as many dimensions as the map so that it broadcasts."""
    if m.ndim == ndim:
        return m
    if m.ndim == 2:
        return m.reshape((1,) * (ndim - 2) + tuple(m.shape))
    if m.ndim == 3 and ndim == 4:
        return m[:, None]
    if m.ndim == 4 and ndim == 3:
        return m[:, 0]
    raise UsageError(f"mask of {m.ndim} dimensions does not fit a map of {ndim}")


def mask_fraction(mask: np.ndarray) -> float:
    """Share of pixels that are inspected (True)."""
    m = _bool(mask)
    return float(m.mean()) if m.size else 0.0


def render_preview(
    image: np.ndarray,
    inspect: np.ndarray,
    *,
    tint: tuple[int, int, int] = (220, 40, 40),
    alpha: float = 0.55,
    outline: tuple[int, int, int] = (255, 220, 0),
    label: bool = True,
) -> np.ndarray:
    """The mask drawn over an image for a person to check: ``uint8 (H,W,3)`` RGB.

    ``image``: gray or RGB, uint8/uint16/float [0,1], any size (the mask is resized to it, nearest).
    Ignored areas are tinted ``tint`` at opacity ``alpha``; the boundary between inspected and ignored is
    outlined; ``label`` writes the inspected share in the top-left corner.
    """
    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = (img / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype.kind == "f":
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = img.astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    h, w = img.shape[:2]
    m = _resize_nearest(_bool(inspect), (h, w))
    out = img.astype(np.float32)
    ignored = ~m
    out[ignored] = out[ignored] * (1 - alpha) + np.asarray(tint, np.float32) * alpha
    out = np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    thick = max(1, round(min(h, w) / 300))
    # outline only where inspected meets ignored (not along the frame), on the inspected side
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * thick + 1, 2 * thick + 1))
    edge = m & (cv2.dilate(ignored.astype(np.uint8), kernel) > 0)
    out[edge] = outline
    if label:
        text = f"inspect {m.mean():.0%}  ignore {1 - m.mean():.0%}"
        scale = max(0.4, min(h, w) / 900)
        org = (max(4, w // 100), max(14, int(24 * scale)))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def regions_mask(regions: Iterable[Any], size: tuple[int, int]) -> np.ndarray:
    """VIA regions (:class:`lineclear.labels.Region` or shape dicts) → bool (H,W), via :func:`lineclear.labels.rasterise`."""
    from lineclear.labels import rasterise

    return rasterise(list(regions), size)


def scoring_masks(
    images: np.ndarray, roi: np.ndarray | None, valid: np.ndarray | None, mask_stage: str, border_margin: int,
    fill: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """What a scorer gives its model, for every runtime alike: ``(images, pre, count)``.

    images (B,H,W,3) float32 with the scene continued outside ``valid`` (:func:`fill_outside`); ``pre``
    (B,H,W) bool, the pre-mask for the model, or None; ``count`` (B,H,W) bool, the pixels that count
    (inspection mask ∧ validity eroded by ``border_margin``), or None when all do.
    """
    if mask_stage not in ("none", "pre", "post"):
        raise UsageError(f"mask stage must be one of ('none', 'pre', 'post'), got {mask_stage!r}")
    b, h, w, _ = images.shape
    if roi is not None and mask_stage == "none":
        raise UsageError("an inspection mask was given without a mask stage (pre or post)")
    roi_b = np.broadcast_to(roi, (b, h, w)) if roi is not None else None
    count = None
    if valid is not None:
        # Pixels from outside the camera frame are not data: the scene is continued there (so nothing
        # unusual reaches the features through their receptive field) and the seam does not count.
        images = np.stack([fill_outside(images[i], valid[i], fill) for i in range(b)])
        count = np.stack([erode_valid(valid[i], border_margin) for i in range(b)])
    pre = roi_b.copy() if roi_b is not None and mask_stage == "pre" else None
    if roi_b is not None:
        count = roi_b.copy() if count is None else (count & roi_b)
    return images, pre, count


def counted_maps(
    maps: np.ndarray, scores: np.ndarray, pre: np.ndarray | None, count: np.ndarray | None,
    image_score: Callable[[np.ndarray], np.ndarray], size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """What a scorer returns from its model's output, for every runtime alike: ``(maps, scores)`` float32.

    maps (B,H,W) and scores (B,) as the model gave them; ``pre``, ``count`` from :func:`scoring_masks`;
    ``image_score`` the model's rule (maps → scores). The map is zeroed outside the counted pixels and the
    score recomputed from what is left (unless the model was pre-masked with exactly those pixels). A map
    of another size than ``size`` (H, W) is refused.
    """
    if maps.shape[1:] != tuple(size):
        raise LineclearError(f"model returned maps of size {maps.shape[1:]}, expected {tuple(size)}")
    maps = np.asarray(maps, np.float32)
    if count is not None:
        maps = maps * count.astype(np.float32)
        if pre is None or not np.array_equal(pre, count):
            scores = image_score(maps)
    return maps.astype(np.float32), np.asarray(scores, np.float32)

