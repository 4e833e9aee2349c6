"""Synthetic anomalies for DRAEM training (thesis §3.2, eq. 6, and the Cutout path).

Each training image independently takes one of three paths, with probabilities
``p_none``, ``p_perlin``, ``p_cutout`` (normalised):

* unaltered (mask all zero);
* Perlin: a Perlin-noise mask M_a with a random threshold, a texture A from the texture
  source after 3 random augmentations, blended as ``I_a = (1−M_a)·I + M_a·((1−β)·I + β·A)``
  with opacity β ~ U(beta_min, beta_max) (eq. 6);
* Cutout: an opaque, off-white rectangle of plausible size (optionally slightly rotated,
  shaded, with printed lines) — the thesis's stand-in for a left-behind leaflet.

Pixels outside the returned mask are bit-identical to the input. All randomness comes
from the ``np.random.Generator`` passed in, so a seed fixes the whole stream.
"""

from __future__ import annotations

import string

import cv2
import numpy as np

from lineclear.models.draem.perlin import perlin_mask, rotate
from lineclear.models.draem.textures import TextureSource

# -- texture augmentations (uint8 RGB in, uint8 RGB out) -----------------------------------


def _gamma(img, rng):
    g = rng.uniform(0.5, 2.0, size=3)
    return (255.0 * (img / 255.0) ** g).astype(np.uint8)


def _brightness(img, rng):
    return np.clip(img * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30), 0, 255).astype(np.uint8)


def _sharpen(img, rng):
    k = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
    sharp = cv2.filter2D(img, -1, k)
    a = rng.uniform(0.0, 1.0)
    return cv2.addWeighted(img, 1 - a, sharp, a, 0)


def _hue_saturation(img, rng):
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-25, 26))) % 180  # OpenCV hue is 0..179
    hsv[..., 1] = np.clip(hsv[..., 1] + int(rng.integers(-50, 51)), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _solarize(img, rng):
    t = int(rng.integers(32, 129))
    return np.where(img >= t, 255 - img, img).astype(np.uint8)


def _posterize(img, rng):
    bits = int(rng.integers(2, 7))
    shift = 8 - bits
    return ((img >> shift) << shift).astype(np.uint8)


def _invert(img, rng):
    return (255 - img).astype(np.uint8)


def _autocontrast(img, rng):
    lo = img.reshape(-1, 3).min(0).astype(np.float32)
    hi = img.reshape(-1, 3).max(0).astype(np.float32)
    return np.clip((img - lo) * (255.0 / np.maximum(hi - lo, 1)), 0, 255).astype(np.uint8)


def _equalize(img, rng):
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(img[..., c])) for c in range(3)], axis=-1)


def _affine(img, rng):
    return rotate(img, float(rng.uniform(-45, 45)), border=cv2.BORDER_REFLECT)


TEXTURE_AUGMENTATIONS = {
    "gamma": _gamma,
    "brightness": _brightness,
    "sharpen": _sharpen,
    "hue_saturation": _hue_saturation,
    "solarize": _solarize,
    "posterize": _posterize,
    "invert": _invert,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "rotate": _affine,
}


def augment_texture(img: np.ndarray, rng: np.random.Generator, n: int = 3) -> np.ndarray:
    """Apply ``n`` distinct augmentations drawn at random, in random order (as DRAEM does)."""
    names = list(TEXTURE_AUGMENTATIONS)
    for i in rng.choice(len(names), size=min(n, len(names)), replace=False):
        img = TEXTURE_AUGMENTATIONS[names[int(i)]](img, rng)
    return np.ascontiguousarray(img)


# -- the two anomaly paths ------------------------------------------------------------------


def perlin_anomaly(
    image: np.ndarray,
    texture: np.ndarray,
    rng: np.random.Generator,
    beta: tuple[float, float] = (0.1, 1.0),
    threshold: tuple[float, float] = (0.5, 0.5),
    max_scale_exp: int = 6,
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 6 on one image. image (H,W,3) float32 [0,1], texture (H,W,3) uint8 → (I_a, M_a (H,W) {0,1})."""
    h, w = image.shape[:2]
    m = perlin_mask((h, w), rng, max_scale_exp, threshold)
    b = float(rng.uniform(*beta))
    a = texture.astype(np.float32) / 255.0
    blended = (1.0 - b) * image + b * a
    out = np.where(m[..., None] > 0, blended, image).astype(np.float32)
    return out, m


def cutout_anomaly(
    image: np.ndarray,
    rng: np.random.Generator,
    size: tuple[float, float] = (0.08, 0.35),
    max_angle: float = 20.0,
    p_print: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """A white-ish rectangle (a leaflet seen from above). image (H,W,3) float32 → (I_a, M_a).

    Side lengths are fractions ``size`` of the image's sides; the rectangle may be rotated
    by up to ``max_angle`` degrees, is lit with a gentle gradient, and with probability
    ``p_print`` carries dark printed lines or glyphs (leaflets carry text).
    """
    h, w = image.shape[:2]
    rh = rng.uniform(*size) * h
    rw = rng.uniform(*size) * w
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ang = rng.uniform(-max_angle, max_angle)
    box = cv2.boxPoints(((float(cx), float(cy)), (float(rw), float(rh)), float(ang)))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)

    base = rng.uniform(0.85, 1.0)
    tint = rng.uniform(-0.03, 0.03, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gy, gx = rng.uniform(-0.08, 0.08, size=2)
    shade = gy * (yy - cy) / h + gx * (xx - cx) / w
    patch = np.clip(base + tint[None, None, :] + shade[..., None], 0, 1).astype(np.float32)
    if rng.random() < p_print:
        patch = _print_lines(patch, box, rng)
    out = np.where(mask[..., None] > 0, patch, image).astype(np.float32)
    return out, mask.astype(np.float32)


def _print_lines(patch: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw rows of glyphs or bars across the box's bounding rectangle (clipped by the mask later)."""
    h, w = patch.shape[:2]
    x0, y0 = np.clip(box.min(0), 0, [w - 1, h - 1]).astype(int)
    x1, y1 = np.clip(box.max(0), 0, [w - 1, h - 1]).astype(int)
    ink = rng.uniform(0.0, 0.45, 3).astype(np.float32)
    scale = rng.uniform(0.2, 0.5) * max(1.0, min(h, w) / 256)
    step = max(3, int(rng.uniform(14, 30) * scale))
    glyphs = rng.random() < 0.6
    chars = string.ascii_letters + string.digits + "  "
    alpha = np.zeros((h, w), np.uint8)  # ink coverage; OpenCV draws text on 8-bit images only
    for y in range(y0 + step, y1, step):
        if glyphs:
            n = max(1, int((x1 - x0) / (10 * scale)))
            txt = "".join(chars[i] for i in rng.integers(0, len(chars), size=n))
            cv2.putText(alpha, txt, (int(x0 + 2), int(y)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)
        else:
            xe = int(x0 + (x1 - x0) * rng.uniform(0.5, 1.0))
            cv2.line(alpha, (int(x0 + 2), int(y)), (xe, int(y)), 255, max(1, int(scale * 3)), cv2.LINE_AA)
    a = (alpha.astype(np.float32) / 255.0)[..., None]
    return (patch * (1 - a) + ink[None, None, :] * a).astype(np.float32)


class AnomalySynthesizer:
    """Draws the path and produces ``(augmented (H,W,3) float32, mask (H,W) float32, path name)``."""

    PATHS = ("none", "perlin", "cutout")

    def __init__(self, config, textures: TextureSource) -> None:
        p = np.array([config.p_none, config.p_perlin, config.p_cutout], np.float64)
        if (p < 0).any() or p.sum() <= 0:
            from lineclear.errors import UsageError

            raise UsageError("draem: p_none, p_perlin, p_cutout must be ≥ 0 and not all 0")
        self.p = p / p.sum()
        self.cfg = config
        self.textures = textures

    def __call__(self, image: np.ndarray, rng: np.random.Generator, valid: np.ndarray | None = None):
        cfg = self.cfg
        path = self.PATHS[int(rng.choice(3, p=self.p))]
        if path == "none":
            return image, np.zeros(image.shape[:2], np.float32), path
        if path == "perlin":
            tex = augment_texture(self.textures.sample(rng, image.shape[:2]), rng, cfg.texture_augs)
            out, m = perlin_anomaly(
                image, tex, rng, (cfg.beta_min, cfg.beta_max), (cfg.perlin_threshold_min, cfg.perlin_threshold_max)
            )
        else:
            out, m = cutout_anomaly(image, rng, (cfg.cutout_min, cfg.cutout_max), cfg.cutout_angle, cfg.p_cutout_print)
        if valid is not None:
            # anomalies only where the (registered) image has real pixels
            m = m * (valid > 0.5)
            out = np.where(m[..., None] > 0, out, image).astype(np.float32)
        return out, m, path
