"""Where a map is raised: the raised share, the connected regions and the peak, in the camera's pixels.

The anomaly map lives in the registered frame at the model's resolution; :func:`map_to_image` is the
(3,3) transform back to the **original image's** pixels (the map→reference scale, then the inverse
registration), so boxes and peaks say where the camera saw them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lineclear.formats.deploy import ViewSpec
from lineclear.register import project, resize_transform

MAX_REGIONS = 50  # regions listed per view (largest peak first); ``regions_total`` counts all


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


def map_to_image(spec: ViewSpec, transform: np.ndarray) -> np.ndarray:
    """(3,3) map pixel → original image pixel: the map→reference scale, then the inverse registration."""
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


def peak_xy(amap: np.ndarray, counted: np.ndarray | None, map_to_image: np.ndarray) -> list[float]:
    """[x, y] in original-image pixels (0.1 px) of the map's highest counted pixel."""
    work = amap if counted is None else np.where(counted, amap, -np.inf)
    py, px = np.unravel_index(int(np.argmax(work)), work.shape)
    return [round(float(c), 1) for c in project(map_to_image, np.array([[px, py]], np.float64))[0]]


def label_peaks(values: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Per label 1..n-1: the largest value and its (row, col), the first in raster order on a tie
    (scipy's pick among tied values follows its unstable sort).

    (scipy.ndimage's ``maximum`` and ``maximum_position`` do the same; numpy keeps scipy out of a line
    check's start-up, a quarter of a second.)
    """
    flat_l, flat_v = labels.ravel(), values.ravel()
    idx = np.nonzero(flat_l)[0]
    order = np.lexsort((idx, -flat_v[idx], flat_l[idx]))  # by label, then value falling, then raster order
    sorted_l = flat_l[idx][order]
    first = np.r_[0, np.nonzero(np.diff(sorted_l))[0] + 1]  # the first entry of each label's run
    best = idx[order][first]
    peaks = np.full(n - 1, -np.inf, dtype=values.dtype)
    pos = [(0, 0)] * (n - 1)
    w = values.shape[1]
    for lab, k in zip(sorted_l[first], best):
        peaks[lab - 1] = flat_v[k]
        pos[lab - 1] = (int(k // w), int(k % w))
    return peaks, pos


def label_boxes(labels: np.ndarray, n: int) -> list[tuple[slice, slice] | None]:
    """Per label 1..n: its bounding (row slice, col slice), None when absent (as ``ndimage.find_objects``)."""
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs].astype(np.int64)
    keep = lab <= n
    ys, xs, lab = ys[keep], xs[keep], lab[keep]
    big = np.iinfo(np.int64).max
    y0, x0 = np.full(n + 1, big), np.full(n + 1, big)
    y1, x1 = np.full(n + 1, -1), np.full(n + 1, -1)
    np.minimum.at(y0, lab, ys)
    np.minimum.at(x0, lab, xs)
    np.maximum.at(y1, lab, ys)
    np.maximum.at(x1, lab, xs)
    return [(slice(int(y0[i]), int(y1[i]) + 1), slice(int(x0[i]), int(x1[i]) + 1)) if y1[i] >= 0 else None
            for i in range(1, n + 1)]


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
    peaks, peak_pos = label_peaks(amap, labels, n)
    order = np.argsort(-np.asarray(peaks), kind="stable")[:max_regions]
    H, W = image_size
    kept = np.zeros(n, np.uint16)  # map label → 1-based rank among the kept regions (uint16 warps in OpenCV)
    kept[order + 1] = np.arange(1, len(order) + 1)
    warped = cv2.warpPerspective(kept[labels], map_to_image, (W, H), flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    slices = label_boxes(warped, len(order))
    areas = np.bincount(warped.ravel(), minlength=len(order) + 1)
    regions = []
    for rank, i in enumerate(order, start=1):
        lab = i + 1
        x, y, w, h, a = (int(v) for v in stats[lab])
        sl = slices[rank - 1]
        if sl is not None:
            bbox = [sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start]
        else:  # too small to survive nearest-neighbour warping: project the map box's corners
            c = project(map_to_image, np.array([[x - 0.5, y - 0.5], [x + w - 0.5, y - 0.5],
                                                [x + w - 0.5, y + h - 0.5], [x - 0.5, y + h - 0.5]]))
            x0, y0 = np.clip(np.floor(c.min(0)), 0, [W - 1, H - 1]).astype(int)
            x1, y1 = np.clip(np.ceil(c.max(0)), 0, [W, H]).astype(int)
            bbox = [int(x0), int(y0), int(max(1, x1 - x0)), int(max(1, y1 - y0))]
        py, px = peak_pos[i]
        pxy = project(map_to_image, np.array([[px, py]], np.float64))[0]
        regions.append(Region(
            bbox=[int(b) for b in bbox], area_px=int(areas[rank]) if sl is not None else int(bbox[2] * bbox[3]),
            peak_score=round(float(peaks[i]), 6), peak_xy=[round(float(pxy[0]), 1), round(float(pxy[1]), 1)],
            bbox_map=[x, y, w, h], area_map_px=a,
        ))
    return regions, n - 1
