"""``generate``: the whole synthetic dataset, view by view, deterministic per seed.

Per view ``<out>/<view>/``::

    train/good/train_000.png ...        n_train anomaly-free, camera in place
    test/good/good_000.png ...          n_good anomaly-free, camera in place
    test/good/shift_000.png ...         n_shifted anomaly-free, camera shifted
    test/<kind>/<kind>_000.png ...      n_anomalous with leftover product (kind = leaflet, blister,
                                        carton, cap in turn); half of each kind shifted
    ground_truth/<kind>/<kind>_000_mask.png
    reference.png                       unshifted, moving parts at rest, neutral illumination
    roi.png                             255 = inspect, 0 = ignore (= not ignore_regions_via.csv)
    shifts.json                         true homography of every image (lineclear.shifts/1)
    annotations_via.csv                 VIA 2 CSV of the product regions of every test image
    ignore_regions_via.csv              VIA 2 CSV: polygons to ignore on reference.png

Each image has its own random stream (seed, view, role, index), so a view or an
image does not change when other views or counts change.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from lineclear.errors import LineclearError, OutputExistsError, UsageError
from lineclear.formats._io import make_temp_dir, publish_dir
from lineclear.formats.synth import write_shifts
from lineclear.formats.via import ImageAnnotation, format_via_csv
from lineclear.labels import Region, rasterise, validate_shape
from lineclear.progress import Progress, ensure
from lineclear.synth import geometry as g
from lineclear.synth.products import KINDS, Product, composite, image_shapes, make_product
from lineclear.synth.scene import DESCRIPTIONS, VIEWS, Scene, build_scene, finish, render_layers

_ROLE = {"scene": 0, "train": 1, "good": 2, "shift": 3, "anomalous": 4, "reference": 5}
_HARD = ("moving", "rotating", "loose")


def _rng(seed: int, view: str, role: str, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, VIEWS.index(view), _ROLE[role], index])


def _noise_seed(seed: int, view: str, role: str, index: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, VIEWS.index(view), _ROLE[role], index, 7])
               .generate_state(1)[0] & 0x7FFFFFFF)


class _Placer:
    """Chooses plausible, non-overlapping places for products in the reference frame."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        w, h = scene.width, scene.height
        self.hard = rasterise([r["shape"] for r in scene.ignore if any(k in r["reason"] for k in _HARD)], (h, w))
        band_polys = []
        for (x0, y0), (x1, y1), hw in scene.bands:
            d = np.array([x1 - x0, y1 - y0], float)
            n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-12) * (hw + 2 * scene.s)
            pts = [np.array([x0, y0]) + n, np.array([x1, y1]) + n, np.array([x1, y1]) - n, np.array([x0, y0]) - n]
            band_polys.append({"name": "polygon", "all_points_x": [float(p[0]) for p in pts],
                               "all_points_y": [float(p[1]) for p in pts]})
        self.band_mask = rasterise(band_polys, (h, w))
        zones = scene.zones
        self.weights = np.array([z[4] for z in zones], float) / sum(z[4] for z in zones)

    def place(self, kind: str, rng: np.random.Generator, taken: np.ndarray,
              axis: bool | None = None) -> tuple[Product, np.ndarray]:
        """A product of ``kind`` not overlapping ``taken``; ``axis=True`` forces it square to the image
        (and unhidden, so it stays a rect or circle)."""
        sc = self.scene
        w, h = sc.width, sc.height
        patch, shape = make_product(kind, rng, sc.s, sc.product_scale)
        ph, pw = patch.shape[:2]
        full = rasterise([validate_shape(shape)], (ph, pw)).sum()
        opacity = float(rng.uniform(0.45, 0.75)) if rng.random() < 0.2 else 1.0
        for _ in range(200):
            if kind != "cap" and sc.bands and not axis and rng.random() < 0.25:
                # Partly under a rail: centre near a rail's axis.
                (x0, y0), (x1, y1), hw = sc.bands[int(rng.integers(len(sc.bands)))]
                t = rng.uniform(0, 1)
                d = np.array([x1 - x0, y1 - y0], float)
                n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-12)
                c = np.array([x0, y0]) + t * d + n * rng.uniform(-0.35, 0.35) * max(pw, ph)
                cx, cy = float(c[0]), float(c[1])
                if not (0.08 * w < cx < 0.92 * w and 0.08 * h < cy < 0.92 * h):
                    continue
            else:
                zx0, zy0, zx1, zy1, _ = sc.zones[int(rng.choice(len(sc.zones), p=self.weights))]
                cx, cy = float(rng.uniform(zx0, zx1)), float(rng.uniform(zy0, zy1))
            square = bool(axis) or (axis is None and rng.random() < 0.3)
            if square:
                m = g.translation(round(cx - pw / 2), round(cy - ph / 2))
            else:
                k = float(rng.uniform(0.6, 1.0)) if kind == "cap" and rng.random() < 0.5 else 1.0
                ang = float(rng.uniform(-180, 180))
                m = g.similarity(ang, 1.0, 0, 0) @ np.diag([1.0, k, 1.0]) @ g.translation(-pw / 2, -ph / 2)
                m = g.translation(cx, cy) @ m
            prod = Product(kind, patch, shape, m, opacity, square)
            shapes = image_shapes(prod, None, sc.bands, w, h)
            if not shapes or (axis and shapes[0]["name"] != shape["name"]):
                continue
            mask = rasterise([validate_shape(s) for s in shapes], (h, w))
            area = int(mask.sum())
            if area < 0.35 * full * (1.0 if square else 0.6) or area < 12:
                continue
            if shapes[0]["name"] in ("circle", "ellipse") and (mask & self.band_mask).any():
                continue
            if (mask & self.hard).any() or (mask & taken).any():
                continue
            return prod, mask
        raise LineclearError(f"synth: could not place a {kind} in view {sc.name} at {w}x{h} (image too small?)")


def _encode(img: np.ndarray) -> bytes:
    arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    # Huffman-only deflate: noisy camera images barely compress further, and it is 2x faster.
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 1,
                                         cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY])
    if not ok:
        raise LineclearError("synth: could not encode PNG")
    return buf.tobytes()


def _write(root: Path, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def _shift(seed: int, view: str, role: str, i: int, w: int, h: int) -> tuple[np.ndarray, dict]:
    return g.sample_shift(_rng(seed, view, role, 10_000 + i), w, h)


def _view(out_dir: Path, name: str, w: int, h: int, seed: int, n_train: int, n_good: int, n_shifted: int,
          n_anomalous: int, task) -> dict:
    scene = build_scene(name, w, h, _rng(seed, name, "scene"))
    placer = _Placer(scene)
    shifts: list[dict] = []
    annotations: list[ImageAnnotation] = []
    counts: dict[str, int] = {}
    n_regions = 0

    def normal(role: str, i: int, rel: str, shifted: bool, rest: bool = False) -> bytes:
        rng = _rng(seed, name, role, i)
        hmat, params = _shift(seed, name, role, i, w, h) if shifted else (None, None)
        layers = render_layers(scene, rng, hmat, rest=rest)
        img = finish(scene, *layers, rng=rng, noise_seed=_noise_seed(seed, name, role, i), neutral=rest)
        if rel != "reference.png":
            shifts.append({"image": rel, "image_id": f"{name}/{rel}", "shifted": shifted,
                           "H": (hmat if hmat is not None else np.eye(3)).tolist(), "params": params})
        return _encode(img)

    _write(out_dir, "reference.png", normal("reference", 0, "reference.png", False, rest=True))
    task.advance(1, view=name)
    for i in range(n_train):
        rel = f"train/good/train_{i:03d}.png"
        _write(out_dir, rel, normal("train", i, rel, False))
        task.advance(1, view=name)
    for i in range(n_good):
        rel = f"test/good/good_{i:03d}.png"
        data = normal("good", i, rel, False)
        _write(out_dir, rel, data)
        annotations.append(ImageAnnotation(Path(rel).name, len(data)))
        task.advance(1, view=name)
    for i in range(n_shifted):
        rel = f"test/good/shift_{i:03d}.png"
        data = normal("shift", i, rel, True)
        _write(out_dir, rel, data)
        annotations.append(ImageAnnotation(Path(rel).name, len(data)))
        task.advance(1, view=name)
    per_kind: dict[str, int] = {}
    squared: set[str] = set()
    for i in range(n_anomalous):
        kind = KINDS[i % len(KINDS)]
        # Half of each kind shifted: leaflet and carton first, then blister and cap, and so on.
        shifted = ((i % 4) in (0, 2)) != ((i // 4) % 2 == 1)
        j = per_kind.get(kind, 0)
        per_kind[kind] = j + 1
        rel = f"test/{kind}/{kind}_{j:03d}.png"
        rng = _rng(seed, name, "anomalous", i)
        hmat, params = _shift(seed, name, "anomalous", i, w, h) if shifted else (None, None)
        h_corner = g.via_matrix(hmat) if hmat is not None else None
        kinds = [kind]
        if rng.random() < 0.3:  # sometimes a second, different product
            kinds.append(str(rng.choice([k for k in KINDS if k != kind])))
        back, light, fore_rgb, fore_a, movers = render_layers(scene, rng, hmat)
        taken = np.zeros((h, w), bool)
        regions: list[Region] = []
        gt = np.zeros((h, w), bool)
        for n_kk, kk in enumerate(kinds):
            # The first unshifted blister and cap lie square to the image, so the CSV has rect and circle too.
            axis = True if (n_kk == 0 and not shifted and kk in ("blister", "cap") and kk not in squared) else None
            if axis:
                squared.add(kk)
            for _attempt in range(20):
                prod, ref_mask = placer.place(kk, rng, taken, axis=axis)
                shapes = image_shapes(prod, h_corner, scene.bands, w, h)
                vis = rasterise([validate_shape(s) for s in shapes], (h, w)) if shapes else None
                if vis is not None and vis.sum() >= 12 and not (vis & gt).any():
                    break
            else:
                raise LineclearError(f"synth: could not place a {kk} in view {name} at {w}x{h}")
            taken |= ref_mask
            gt |= composite(back, prod, shapes, h_corner, scene.s)
            regions += [Region(validate_shape(s), {"type": kk}) for s in shapes]
        img = finish(scene, back, light, fore_rgb, fore_a, movers, rng=rng,
                     noise_seed=_noise_seed(seed, name, "anomalous", i))
        data = _encode(img)
        _write(out_dir, rel, data)
        _write(out_dir, f"ground_truth/{kind}/{kind}_{j:03d}_mask.png", _encode((gt * 255).astype(np.uint8)))
        # The CSV holds exactly the shapes the mask and the product's alpha were drawn from.
        annotations.append(ImageAnnotation(Path(rel).name, len(data), {}, regions))
        shifts.append({"image": rel, "image_id": f"{name}/{rel}", "shifted": shifted,
                       "H": (hmat if hmat is not None else np.eye(3)).tolist(), "params": params})
        counts[kind] = counts.get(kind, 0) + 1
        n_regions += len(regions)
        task.advance(1, view=name)

    ignore = scene.ignore_mask()
    _write(out_dir, "roi.png", _encode(np.where(ignore, 0, 255).astype(np.uint8)))
    ignore_ann = ImageAnnotation("reference.png", (out_dir / "reference.png").stat().st_size, {}, [
        Region(r["shape"], {"type": "ignore", "reason": r["reason"]}) for r in scene.ignore])
    _write(out_dir, "ignore_regions_via.csv", format_via_csv([ignore_ann]).encode("utf-8"))
    _write(out_dir, "annotations_via.csv", format_via_csv(annotations).encode("utf-8"))
    shifts.sort(key=lambda d: d["image"])
    write_shifts(out_dir / "shifts.json", {"view": name, "image_size": [w, h], "reference": "reference.png",
                                            "images": shifts})
    return {
        "train": n_train,
        "test_good": n_good,
        "test_shifted": n_shifted,
        "anomalous": counts,
        "anomalous_shifted": sum(1 for d in shifts if d["shifted"] and not d["image"].startswith("test/good/")),
        "regions": n_regions,
        "roi_inspected_fraction": round(float(1 - ignore.mean()), 4),
        "description": DESCRIPTIONS[name],
    }


def parse_size(text: str) -> tuple[int, int]:
    """``"768x512"`` → ``(768, 512)`` (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 768x512") from None
    return w, h


def generate(
    out: str | os.PathLike,
    *,
    views: Sequence[str] = VIEWS,
    size: tuple[int, int] = (768, 512),
    seed: int = 0,
    n_train: int = 15,
    n_good: int = 4,
    n_shifted: int = 8,
    n_anomalous: int = 16,
    overwrite: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> dict:
    """Write the synthetic dataset under ``out`` (one folder per view); returns a summary dict.

    ``size`` is (W, H) in pixels. Each view is built in a hidden temporary folder and
    moved into place when complete, so an interrupted run leaves no half-written view.
    An existing view folder is refused unless ``overwrite``; with it, only a folder
    that ``synth`` wrote (it has ``shifts.json``) is replaced. ``workers`` processes
    build views in parallel (default: one per view, up to the CPU count and 4); the
    files are byte-identical whatever the number of workers.
    """
    t0 = time.perf_counter()
    out = Path(out)
    views = list(dict.fromkeys(views))
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise UsageError(f"unknown view(s) {', '.join(unknown)} (known: {', '.join(VIEWS)})")
    w, h = int(size[0]), int(size[1])
    if w < 96 or h < 64:
        raise UsageError(f"--size {w}x{h}: too small (at least 96x64)")
    if w * h > 8192 * 8192:
        raise UsageError(f"--size {w}x{h}: too large")
    for label, n, lo in (("n_train", n_train, 1), ("n_good", n_good, 0), ("n_shifted", n_shifted, 0),
                         ("n_anomalous", n_anomalous, 0)):
        if n < lo:
            raise UsageError(f"{label} must be at least {lo}, got {n}")
    for v in views:
        target = out / v
        if target.exists():
            if not overwrite:
                raise OutputExistsError(f"{target}: exists (use --overwrite to replace it)")
            if not (target / "shifts.json").is_file():
                raise OutputExistsError(f"{target}: exists and was not written by synth; refusing to replace it")
            foreign = foreign_files(target)
            if foreign:
                more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
                raise OutputExistsError(f"{target}: holds files lineclear synth did not write ({foreign[0]}{more}); "
                                        "refusing to replace it (move them out first)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LineclearError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    per_image = 1 + n_train + n_good + n_shifted + n_anomalous
    summary: dict = {"root": str(out), "size": [w, h], "seed": seed, "views": {}}
    args = (w, h, seed, n_train, n_good, n_shifted, n_anomalous)
    if workers is None:
        workers = min(len(views), os.cpu_count() or 1, 4)
    with ensure(progress).task("synth", per_image * len(views)) as task:
        if workers <= 1 or len(views) <= 1:
            for v in views:
                summary["views"][v] = _build_view(out, v, args, overwrite, task)
        else:
            # Views are independent (own random streams), so processes give the same bytes.
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {v: pool.submit(_build_view, out, v, args, overwrite, None) for v in views}
                for v in views:
                    summary["views"][v] = futures[v].result()
                    task.advance(per_image, view=v)
    summary["images"] = per_image * len(views)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


_VIEW_FILES = {"annotations_via.csv", "ignore_regions_via.csv", "reference.png", "roi.png", "shifts.json"}


def foreign_files(view: Path) -> list[str]:
    """Files in an old synth view that synth did not write (relative paths, sorted): a user's own.

    Synth writes the fixed files above, the images its ``shifts.json`` lists and one ground-truth mask per
    listed test image; ``--overwrite`` replaces the view folder whole, so anything else would be lost.
    """
    from lineclear.formats.synth import read_shifts

    try:
        doc = read_shifts(view / "shifts.json")
    except LineclearError:
        return ["shifts.json (unreadable)"]
    ours = set(_VIEW_FILES)
    for item in doc.get("images", []):
        rel = str(item.get("image", ""))
        ours.add(rel)
        parts = Path(rel).parts
        if len(parts) == 3 and parts[0] == "test" and parts[1] != "good":
            ours.add(f"ground_truth/{parts[1]}/{Path(parts[2]).stem}_mask.png")
    found = (p.relative_to(view).as_posix() for p in view.rglob("*") if p.is_file() or p.is_symlink())
    return sorted(f for f in found if f not in ours)


class _Silent:
    def advance(self, n: float = 1, **fields) -> None:
        return None


def _build_view(out: Path, v: str, args: tuple, overwrite: bool, task) -> dict:
    """Build one view in a new hidden folder and move it into place (replacing an old synth view)."""
    tmp = make_temp_dir(out, v)  # new and unique: nothing that was there before is touched
    try:
        result = _view(tmp, v, *args, task if task is not None else _Silent())
        target = out / v
        if target.exists():
            old = out / f".{v}.synth-old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            publish_dir(tmp, target)  # refuses a view another synth run put there meanwhile
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
