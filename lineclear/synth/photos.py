"""A benchmark lineclear did not draw: fixed-camera views made from real photographs.

Each photograph is a scene seen by a fixed camera. Every image of a view is that scene through a camera
model with the effects a real one has: sub-pixel vibration (all images), small homographies (camera
nudges, on the shifted test images), parallax that no homography explains (a smooth displacement field
of up to ±1.5 px on shifted images), illumination gradients and gain drift, passing shadows, focus drift
and sensor noise. Leftover product (leaflets, blisters, caps, tablets, foreign objects, some faint) is
put into the scene *before* the camera, so its ground truth is exact in every image's own frame.

Photographs: ``builtin`` takes five that ship inside scikit-image (``pip install scikit-image``:
coffee, chelsea, rocket, motorcycle_left, astronaut) — real camera photographs, not drawings; or a
folder of the user's own (every image in it becomes a view). Layout as ``lineclear synth``:
``<view>/train/good`` (16), ``val/good`` (4, camera in place), ``test/good`` (8 clear, all shifted),
``test/<product>/`` (15, half shifted), ``ground_truth/<product>/<stem>_mask.png``, ``reference.png``,
``shifts.json`` (true homographies) and ``annotations_via.csv``. Pure functions plus :func:`generate_photos`
at the edge; the same seed gives the same files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineclear.errors import LineclearError, UsageError

BUILTIN = ("coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "astronaut.png")
PRODUCTS = ("leaflet", "blister", "cap", "tablet", "foreign")
SIZE = (512, 768)  # (H, W) of the camera images


def builtin_photos() -> list[Path]:
    """The five scikit-image photographs (a clear error when scikit-image is not installed)."""
    try:
        import skimage
    except ModuleNotFoundError:
        raise LineclearError("--photos builtin needs scikit-image (pip install 'lineclear[bench]' or scikit-image)") from None
    d = Path(skimage.__file__).parent / "data"
    paths = [d / n for n in BUILTIN]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise LineclearError(f"{d}: scikit-image lacks the photographs {', '.join(missing)}")
    return paths


def scene_from_photo(img: np.ndarray, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Centre-crop to the aspect of ``size`` and resize: (H,W,3) uint8 RGB."""
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, 2)
    img = img[:, :, :3]
    h, w = img.shape[:2]
    th, tw = size
    scale = max(th / h, tw / w)
    ch, cw = int(round(th / scale)), int(round(tw / scale))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw])
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(crop, (tw, th), interpolation=interp)


# --- leftover product -------------------------------------------------------------------------------------


def _poly_mask(pts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    m = np.zeros(size, np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m.astype(bool)


def _rotated_rect(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], float) / 2
    return pts @ np.array([[c, s], [-s, c]]) + [cx, cy]


def paint_product(scene: np.ndarray, kind: str, rng: np.random.Generator, faint: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Put one item of leftover ``kind`` into ``scene`` (H,W,3) float [0,1]: returns (scene, mask (H,W) bool)."""
    h, w = scene.shape[:2]
    out = scene.copy()
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    ang = rng.uniform(0, math.pi)
    s = min(h, w)
    if kind == "leaflet":
        pts = _rotated_rect(cx, cy, rng.uniform(0.12, 0.22) * s, rng.uniform(0.08, 0.14) * s, ang)
        mask = _poly_mask(pts, (h, w))
        paper = np.array([0.93, 0.93, 0.9])
        out[mask] = paper
        # printed text lines
        yy, xx = np.mgrid[0:h, 0:w]
        v = (xx - cx) * -math.sin(ang) + (yy - cy) * math.cos(ang)
        lines = mask & (np.mod(v, 7.0) < 2.0)
        out[lines] = 0.35
    elif kind == "blister":
        pts = _rotated_rect(cx, cy, rng.uniform(0.10, 0.16) * s, rng.uniform(0.06, 0.09) * s, ang)
        mask = _poly_mask(pts, (h, w))
        out[mask] = [0.72, 0.74, 0.78]
        for k in range(-1, 2):
            px = cx + k * 0.035 * s * math.cos(ang)
            py = cy + k * 0.035 * s * math.sin(ang)
            cv2.circle(out, (int(px), int(py)), max(2, int(0.012 * s)), (0.9, 0.9, 0.92), -1)
    elif kind == "cap":
        r = rng.uniform(0.025, 0.045) * s
        mask = np.zeros((h, w), np.uint8)
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
        mask = mask.astype(bool)
        colour = rng.uniform(0.1, 0.9, 3)
        out[mask] = colour
        cv2.circle(out, (int(cx - r / 3), int(cy - r / 3)), max(1, int(r / 4)), tuple(np.minimum(colour + 0.3, 1)), -1)
    elif kind == "tablet":
        mask = np.zeros((h, w), np.uint8)
        ax = (int(rng.uniform(0.012, 0.02) * s), int(rng.uniform(0.008, 0.012) * s))
        cv2.ellipse(mask, (int(cx), int(cy)), ax, math.degrees(ang), 0, 360, 1, -1)
        mask = mask.astype(bool)
        out[mask] = [0.95, 0.95, 0.93]
    elif kind == "foreign":
        n = int(rng.integers(5, 9))
        a = np.sort(rng.uniform(0, 2 * math.pi, n))
        r = rng.uniform(0.02, 0.06, n) * s
        pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)
        mask = _poly_mask(pts, (h, w))
        out[mask] = rng.uniform(0.05, 0.3, 3)
    else:
        raise UsageError(f"unknown product {kind!r} (choose from {', '.join(PRODUCTS)})")
    if faint:  # a faint item: half transparent, the scene shows through
        out = np.where(mask[..., None], 0.55 * out + 0.45 * scene, scene)
    # a soft, one-pixel edge as a real object's outline
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)[..., None]
    out = soft * out + (1 - soft) * scene
    return np.clip(out, 0, 1), mask


# --- the camera -------------------------------------------------------------------------------------------


def random_homography(rng: np.random.Generator, size: tuple[int, int], *, t: float, rot: float, sc: float,
                      persp: float) -> np.ndarray:
    """(3,3) scene → image homography of a camera nudge (uniform within the limits)."""
    h, w = size
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a = math.radians(rng.uniform(-rot, rot))
    s = 1 + rng.uniform(-sc, sc)
    C = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    R = np.array([[s * math.cos(a), -s * math.sin(a), 0], [s * math.sin(a), s * math.cos(a), 0], [0, 0, 1]])
    P = np.array([[1, 0, 0], [0, 1, 0], [rng.uniform(-persp, persp) * 2 / w, rng.uniform(-persp, persp) * 2 / h, 1]])
    T = np.array([[1, 0, rng.uniform(-t, t) * w + cx], [0, 1, rng.uniform(-t, t) * h + cy], [0, 0, 1]])
    Hm = T @ R @ P @ C
    return Hm / Hm[2, 2]


def camera(scene: np.ndarray, Hm: np.ndarray, rng: np.random.Generator, *, parallax: float, mask: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Shoot ``scene`` (H,W,3) float [0,1] through homography ``Hm`` (scene → image) and a camera's effects.

    Returns the uint8 image, the product mask in the image's frame, and what was applied.
    """
    h, w = scene.shape[:2]
    # parallax: a smooth displacement field of up to ``parallax`` px that no homography explains
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = cv2.resize(rng.uniform(-1, 1, (4, 6, 2)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    Hinv = np.linalg.inv(Hm)
    den = Hinv[2, 0] * xx + Hinv[2, 1] * yy + Hinv[2, 2]
    mx = ((Hinv[0, 0] * xx + Hinv[0, 1] * yy + Hinv[0, 2]) / den + parallax * field[..., 0]).astype(np.float32)
    my = ((Hinv[1, 0] * xx + Hinv[1, 1] * yy + Hinv[1, 2]) / den + parallax * field[..., 1]).astype(np.float32)
    img = cv2.remap(scene.astype(np.float32), mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    m_out = None
    if mask is not None:
        m_out = cv2.remap(mask.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) > 0.5
    # lighting: gain drift and a linear gradient, sometimes a passing shadow
    gain = rng.uniform(0.94, 1.06)
    gx, gy = rng.uniform(-0.05, 0.05, 2)
    light = gain * (1 + gx * (xx / w - 0.5) * 2 + gy * (yy / h - 0.5) * 2)
    shadow = bool(rng.random() < 0.3)
    if shadow:
        sh = np.zeros((h, w), np.float32)
        cv2.ellipse(sh, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), (int(0.3 * w), int(0.15 * h)),
                    rng.uniform(0, 180), 0, 360, 1.0, -1)
        light = light * (1 - 0.12 * cv2.GaussianBlur(sh, (0, 0), 0.08 * w))
    img = img * light[..., None]
    focus = float(rng.uniform(0.0, 0.9))
    if focus > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), focus)
    img = img + rng.normal(0, 2.0 / 255, img.shape)
    info = {"gain": round(gain, 4), "gradient": [round(gx, 4), round(gy, 4)], "shadow": shadow,
            "focus_sigma": round(focus, 3), "parallax_px": parallax}
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), m_out, info


def _vibration(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return random_homography(rng, size, t=0.4 / size[1], rot=0.02, sc=0.0005, persp=0.0)


def _nudge(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return random_homography(rng, size, t=0.03, rot=1.5, sc=0.02, persp=0.008)


# --- writing ----------------------------------------------------------------------------------------------


def build_view(photo: np.ndarray, out: Path, seed: int, *, n_train: int = 16, n_val: int = 4, n_clear: int = 8,
               n_left: int = 15, overwrite: bool = False) -> dict[str, Any]:
    """Write one view from one photograph; returns its summary."""
    from lineclear.formats import write_mask
    from lineclear.formats.synth import write_shifts
    from lineclear.formats.via import ImageAnnotation, write_via_csv
    from lineclear.images import write_image
    from lineclear.labels import Region

    scene = scene_from_photo(photo).astype(np.float32) / 255
    size = scene.shape[:2]
    rng = np.random.default_rng(seed)
    write_image(out / "reference.png", camera(scene, np.eye(3), np.random.default_rng([seed, 0]), parallax=0.0,
                                              mask=None)[0], overwrite=overwrite)
    shifts, via = [], []

    def shoot(rel: str, Hm: np.ndarray, parallax: float, sc: np.ndarray, mask: np.ndarray | None, shifted: bool):
        img, m, info = camera(sc, Hm, rng, parallax=parallax, mask=mask)
        write_image(out / rel, img, overwrite=overwrite)
        shifts.append({"image": rel, "H": Hm.tolist(), "shifted": shifted, **info})
        return m

    for i in range(n_train):
        shoot(f"train/good/{i:03d}.png", _vibration(rng, size), 0.0, scene, None, False)
    for i in range(n_val):
        shoot(f"val/good/{i:03d}.png", _vibration(rng, size), 0.0, scene, None, False)
    for i in range(n_clear):
        shoot(f"test/good/{i:03d}.png", _nudge(rng, size), 1.5, scene, None, True)
    counts: dict[str, int] = {}
    for i in range(n_left):
        kind = PRODUCTS[i % len(PRODUCTS)]
        k = counts.get(kind, 0)
        counts[kind] = k + 1
        faint = i % 4 == 3
        sc, mask = paint_product(scene, kind, rng, faint=faint)
        shifted = i % 2 == 1
        Hm = _nudge(rng, size) if shifted else _vibration(rng, size)
        rel = f"test/{kind}/{k:03d}.png"
        m = shoot(rel, Hm, 1.5 if shifted else 0.0, sc, mask, shifted)
        write_mask(out / "ground_truth" / kind / f"{k:03d}_mask.png", m, overwrite=overwrite)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        regions = [Region({"name": "polygon", "all_points_x": [int(p[0][0]) for p in c],
                           "all_points_y": [int(p[0][1]) for p in c]}, {"product": kind, "faint": faint})
                   for c in contours if len(c) >= 3]
        via.append(ImageAnnotation(filename=rel, regions=regions))
    write_shifts(out / "shifts.json", {"image_size": [size[1], size[0]], "images": shifts}, overwrite=overwrite)
    write_via_csv(out / "annotations_via.csv", via, overwrite=overwrite)
    return {"train": n_train, "val": n_val, "test_good": n_clear, "anomalous": counts}


def generate_photos(out: str | os.PathLike, photos: str, seed: int = 0, overwrite: bool = False,
                    progress: Any = None) -> dict[str, Any]:
    """``photos``: ``builtin`` or a folder of photographs (one view each, named after the file)."""
    from lineclear.dataset import list_images
    from lineclear.images import read_raw

    if photos == "builtin":
        paths = builtin_photos()
    else:
        paths = list_images(photos, recursive=False)
        if not paths:
            raise LineclearError(f"{photos}: no photographs in this folder")
    out = Path(out)
    summary: dict[str, Any] = {"views": {}, "photos": [str(p) for p in paths], "seed": seed}
    for i, p in enumerate(paths):
        img = read_raw(p)
        if img.dtype != np.uint8:
            img = (img.astype(np.float32) / np.iinfo(img.dtype).max * 255 + 0.5).astype(np.uint8)
        name = f"P{i + 1}_{Path(p).stem}"
        summary["views"][name] = build_view(img, out / name, seed * 1000 + i, overwrite=overwrite)
    return summary
