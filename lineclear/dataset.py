"""The dataset layout (MVTec AD / anomalib Folder compatible), one view at a time::

    <root>/<view>/train/good/*.png              anomaly-free, camera in its usual place
                  val/good/*.png                optional; else a seeded 20 % split of train
                  test/good/*.png               anomaly-free, including camera-shifted ones
                  test/<defect>/*.png           with leftover product
                  ground_truth/<defect>/<stem>_mask.png
                  valid/<split>/<defect>/<stem>_valid.png   registration validity (written by register)
                  reference.png                 registration reference (default: first train image)
                  roi.png                       optional inspection mask (255 = inspect)

Image ids are paths relative to the dataset root (``A/test/leaflet/003.png``).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from lineclear.errors import LineclearError
from lineclear.images import IMAGE_EXTENSIONS, is_image_path

SPLITS = ("train", "val", "test")
GOOD = "good"


@dataclass(frozen=True)
class Sample:
    path: Path
    image_id: str
    split: str | None
    defect: str | None
    label: int  # 0 normal, 1 anomalous, -1 unknown


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``folder`` (hidden files and mask/valid PNGs excluded)."""
    folder = Path(folder)
    it = folder.rglob("*") if recursive else folder.iterdir()
    out = [
        p
        for p in it
        if p.is_file()
        and is_image_path(p)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(out)


def label_from_path(path: str | os.PathLike) -> int:
    """MVTec folder names: ``.../good/x.png`` → 0, ``.../test/<defect>/x.png`` → 1, else −1."""
    p = Path(path)
    parent = p.parent.name
    if parent == GOOD:
        return 0
    if p.parent.parent.name == "test":
        return 1
    return -1


def find_view_dir(path: str | os.PathLike) -> Path | None:
    """The view directory containing ``path`` (an ancestor with a train/ or test/ folder)."""
    p = Path(path).resolve()
    for anc in [p, *p.parents]:
        if anc.is_dir() and ((anc / "train").is_dir() or (anc / "test").is_dir()) and anc.name not in SPLITS:
            return anc
    return None


def image_id(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """Path relative to the dataset root (the parent of the view dir) in POSIX form."""
    p = Path(path).resolve()
    if root is None:
        view = find_view_dir(p)
        root = view.parent if view is not None else Path.cwd()
    try:
        return p.relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(os.path.relpath(p, Path(root).resolve())).as_posix()


def split_train_val(paths: list[Path], fraction: float = 0.2, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """The thesis's 80/20 split, seeded: (train, val). At least one image stays in train."""
    paths = sorted(paths)
    if len(paths) < 2 or fraction <= 0:
        return paths, []
    rng = random.Random(seed)
    shuffled = paths[:]
    rng.shuffle(shuffled)
    n_val = max(1, int(round(len(paths) * fraction)))
    n_val = min(n_val, len(paths) - 1)
    val = sorted(shuffled[:n_val])
    train = sorted(shuffled[n_val:])
    return train, val


class View:
    """One camera view in lineclear's layout."""

    def __init__(self, path: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> None:
        self.dir = Path(path)
        if not self.dir.is_dir():
            raise LineclearError(f"{self.dir}: no such view directory")
        if not (self.dir / "train").is_dir() and not (self.dir / "test").is_dir():
            raise LineclearError(f"{self.dir}: not a view directory (expected train/ and test/ folders inside)")
        self.name = self.dir.resolve().name
        self.root = self.dir.resolve().parent
        self.val_fraction = val_fraction
        self.seed = seed

    def _sample(self, path: Path, split: str | None) -> Sample:
        defect = path.parent.name if split in SPLITS else None
        return Sample(path=path, image_id=image_id(path, self.root), split=split, defect=defect,
                      label=label_from_path(path))

    def _split_paths(self) -> tuple[list[Path], list[Path]]:
        train_all = list_images(self.dir / "train" / GOOD) if (self.dir / "train" / GOOD).is_dir() else []
        if (self.dir / "val" / GOOD).is_dir():
            return train_all, list_images(self.dir / "val" / GOOD)
        return split_train_val(train_all, self.val_fraction, self.seed)

    def train(self) -> list[Sample]:
        """Training images (``train/good`` minus the validation split when there is no ``val/``)."""
        return [self._sample(p, "train") for p in self._split_paths()[0]]

    def val(self) -> list[Sample]:
        split = "val" if (self.dir / "val" / GOOD).is_dir() else "train"
        return [self._sample(p, split) for p in self._split_paths()[1]]

    def test(self) -> list[Sample]:
        d = self.dir / "test"
        return [self._sample(p, "test") for p in list_images(d)] if d.is_dir() else []

    def defects(self) -> list[str]:
        d = self.dir / "test"
        return sorted(p.name for p in d.iterdir() if p.is_dir() and p.name != GOOD) if d.is_dir() else []

    def reference_file(self) -> Path | None:
        """The view's own ``reference.<ext>``, or None (no fallback to a training image)."""
        for ext in IMAGE_EXTENSIONS:
            p = self.dir / f"reference{ext}"
            if p.is_file():
                return p
        return None

    @property
    def reference(self) -> Path:
        p = self.reference_file()
        if p is not None:
            return p
        train = self.train() or [self._sample(p, "train") for p in list_images(self.dir / "train")]
        if not train:
            raise LineclearError(f"{self.dir}: no reference image and no training image to use instead")
        return train[0].path

    @property
    def roi(self) -> Path | None:
        p = self.dir / "roi.png"
        return p if p.is_file() else None

    def gt_path(self, sample_or_path: Sample | str | os.PathLike) -> Path | None:
        """``ground_truth/<defect>/<stem>_mask.png`` for a test image, if it exists."""
        p = sample_or_path.path if isinstance(sample_or_path, Sample) else Path(sample_or_path)
        return gt_path_for(p, self.dir)

    def valid_path(self, sample_or_path: Sample | str | os.PathLike) -> Path | None:
        p = sample_or_path.path if isinstance(sample_or_path, Sample) else Path(sample_or_path)
        return valid_path_for(p, self.dir)


def gt_path_for(image: str | os.PathLike, view_dir: str | os.PathLike | None = None) -> Path | None:
    image = Path(image)
    view_dir = Path(view_dir) if view_dir is not None else find_view_dir(image)
    if view_dir is None:
        return None
    p = Path(view_dir) / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
    return p if p.is_file() else None


def valid_path_for(image: str | os.PathLike, view_dir: str | os.PathLike | None = None) -> Path | None:
    """``valid/<split>/<defect>/<stem>_valid.png`` written by ``lineclear register``, if present."""
    image = Path(image)
    view_dir = Path(view_dir) if view_dir is not None else find_view_dir(image)
    if view_dir is None:
        return None
    try:
        rel = image.resolve().relative_to(Path(view_dir).resolve())
    except ValueError:
        return None
    p = Path(view_dir) / "valid" / rel.parent / f"{image.stem}_valid.png"
    return p if p.is_file() else None


class RegisteredLookup:
    """Where the validity mask and the reference of a registered image are.

    ``lineclear register`` leaves a marker (:data:`lineclear.formats.registration.MARKER_NAME`) in every
    output folder, naming the reference and the folder of validity masks: a view's ``valid/`` or a plain
    folder's ``<out>_valid/``. This follows it; images of a registered view without a marker (written by an
    older lineclear) fall back to the view layout ``<view>/valid/``. ``valid_dir`` overrides both: masks in
    ``valid_dir/<path relative to base>/<stem>_valid.png``.
    """

    def __init__(self, valid_dir: str | os.PathLike | None = None, base: str | os.PathLike | None = None) -> None:
        self.valid_dir = Path(valid_dir) if valid_dir is not None else None
        self.base = Path(base).resolve() if base is not None else None
        self._markers: dict[Path, dict] = {}

    def marker(self, image: str | os.PathLike) -> dict | None:
        from lineclear.formats.registration import find_marker, read_marker

        m = find_marker(image)
        if m is None:
            return None
        if m not in self._markers:
            self._markers[m] = {**read_marker(m), "folder": m.parent.resolve()}
        return self._markers[m]

    def valid_path(self, image: str | os.PathLike) -> Path | None:
        image = Path(image)
        if self.valid_dir is not None:
            base = self.base or image.resolve().parent
            try:
                rel = image.resolve().relative_to(base)
            except ValueError:
                rel = Path(image.name)
            p = self.valid_dir / rel.parent / f"{image.stem}_valid.png"
            return p if p.is_file() else None
        doc = self.marker(image)
        if doc is not None:
            rel = image.resolve().relative_to(doc["folder"])
            p = doc["valid_root"] / rel.parent / f"{image.stem}_valid.png"
            if p.is_file():
                return p
        return valid_path_for(image)

    def reference(self, image: str | os.PathLike) -> Path | None:
        """The registration reference of ``image``: its marker's, else its view's ``reference.*``, else None."""
        doc = self.marker(image)
        if doc is not None and Path(doc["reference"]["path"]).is_file():
            return Path(doc["reference"]["path"])
        view = find_view_dir(image)
        if view is not None:
            for ext in IMAGE_EXTENSIONS:
                p = view / f"reference{ext}"
                if p.is_file():
                    return p
        return None
