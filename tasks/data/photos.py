"""Unlabelled photographs for the label-free ``agreement`` task.

Two sources:

* any folder (``--data-root DIR``): every image file below it, recursively, in the common
  formats of :data:`IMAGE_SUFFIXES` (case-insensitive), sorted by relative path;
* the default set, :data:`DEFAULT_PHOTOS`: the real photographs that ship inside the
  scikit-image wheel (``skimage/data``; only files that are in the wheel itself, none of
  the ones ``skimage.data`` fetches with pooch). Their licences, from the scikit-image
  docstrings, are recorded next to each name.

Calibration and evaluation are disjoint *files*: :func:`split_files` holds out a fixed
fraction chosen by a hash of each file's relative path (stable when files are added or
removed elsewhere in the folder). Each file is then seen through a few fixed *views*
(:data:`VIEWS`: the whole image, four overlapping corner crops, and their mirror images),
so a dozen photographs give over a hundred distinct network inputs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from snnbench.common.hashing import sha256_text
from snnbench.tasks.base import DataNotFoundError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")

#: fraction of the files held out for calibration (at least one file)
CALIBRATION_FRACTION = 0.25


@dataclass(frozen=True)
class Photo:
    """One photograph of the default set: its file in ``skimage/data`` and its licence."""

    file: str
    title: str
    licence: str


#: Real photographs inside the scikit-image wheel (colour first, then grey-level photos).
#: Synthetic images (colour wheel, logo, phantom, chessboards), scans of text and microscope
#: phase images are left out, and so are photographs whose licence scikit-image does not state
#: (moon, the Middlebury motorcycle pair). Licences as stated in the ``skimage.data`` docstrings.
DEFAULT_PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut.png", "astronaut Eileen Collins (NASA)", "public domain (NASA)"),
    Photo("chelsea.png", "Chelsea the cat", "CC0 (Stefan van der Walt)"),
    Photo("coffee.png", "coffee cup", "CC0 (Rachel Michetti)"),
    Photo("hubble_deep_field.jpg", "Hubble eXtreme Deep Field", "public domain (NASA)"),
    Photo("ihc.png", "immunohistochemistry staining", "no known copyright restrictions (CMMI)"),
    Photo("retina.jpg", "human retina fundus photograph", "CC0 (Mikael Haggstrom)"),
    Photo("rocket.jpg", "DSCOVR launch on Falcon 9 (SpaceX)", "public domain (SpaceX)"),
    Photo("camera.png", "man with a camera (grey)", "CC0 (Lav Varshney)"),
    Photo("coins.png", "Greek coins from Pompeii (grey)", "no known copyright restrictions (Brooklyn Museum)"),
    Photo("brick.png", "brick wall (grey)", "CC0 (cc0textures.com)"),
    Photo("grass.png", "grass (grey)", "CC0 (linolafett, DeviantArt)"),
    Photo("gravel.png", "gravel (grey)", "CC0 (cc0textures.com)"),
    Photo("clock_motion.png", "motion-blurred wall clock (grey)", "public domain (Stefan van der Walt)"),
)


@dataclass(frozen=True)
class View:
    """A fixed crop of an image: ``box`` in fractions of width/height, then an optional mirror."""

    name: str
    box: tuple[float, float, float, float]
    flip: bool = False


def _views() -> tuple[View, ...]:
    corner = 0.8  # corner crops keep 80% of each side: overlapping, distinct inputs
    boxes = [("full", (0.0, 0.0, 1.0, 1.0)), ("top_left", (0.0, 0.0, corner, corner)),
             ("top_right", (1 - corner, 0.0, 1.0, corner)), ("bottom_left", (0.0, 1 - corner, corner, 1.0)),
             ("bottom_right", (1 - corner, 1 - corner, 1.0, 1.0))]
    plain = [View(name, box) for name, box in boxes]
    mirrored = [View(f"{name}_flip", box, flip=True) for name, box in boxes]
    # the whole image and its mirror first: the first N evaluation samples are whole photographs
    return (plain[0], mirrored[0], *plain[1:], *mirrored[1:])


VIEWS: tuple[View, ...] = _views()


def default_photo_dir() -> Path:
    """``skimage/data`` of the installed scikit-image (the files are in the wheel)."""
    try:
        import skimage
    except ImportError as err:
        raise DataNotFoundError("the default image set of the agreement task is scikit-image's bundled photographs; "
                                "install it (pip install scikit-image) or pass --data-root DIR") from err
    return Path(skimage.__file__).parent / "data"


def default_photo_files() -> list[Path]:
    """Paths of :data:`DEFAULT_PHOTOS`; a missing file is an error naming it."""
    folder = default_photo_dir()
    paths = [folder / p.file for p in DEFAULT_PHOTOS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataNotFoundError(f"scikit-image's sample photographs {missing} are missing from {folder}; "
                                "reinstall scikit-image or pass --data-root DIR")
    return paths


def scan_images(root: str | os.PathLike[str]) -> list[Path]:
    """Every image file below ``root`` (recursive, :data:`IMAGE_SUFFIXES`), sorted by relative path."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(f"--data-root {folder} is not a directory (the agreement task reads every image "
                                f"below it, recursively: {', '.join(IMAGE_SUFFIXES)})")
    found = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                found.append(Path(dirpath) / name)
    found.sort(key=lambda p: p.relative_to(folder).as_posix())
    if len(found) < 2:
        raise DataNotFoundError(f"{folder} holds {len(found)} image file(s); the agreement task needs at least 2 "
                                f"(one held out for calibration), with suffixes {', '.join(IMAGE_SUFFIXES)}")
    return found


def split_files(files: list[Path], root: Path, fraction: float = CALIBRATION_FRACTION) -> tuple[list[Path], list[Path]]:
    """``(calibration, evaluation)``: disjoint, ``ceil(fraction * n)`` (>= 1) files held out.

    The held-out files are those with the smallest sha256 of their path relative to ``root``:
    deterministic, independent of the listing order, and stable for the other files when one
    is added. Both lists keep the input order.
    """
    if len(files) < 2:
        raise DataNotFoundError("the agreement task needs at least 2 images (one held out for calibration)")
    n_calib = min(len(files) - 1, max(1, math.ceil(fraction * len(files))))

    def rank(path: Path) -> str:
        return sha256_text(path.relative_to(root).as_posix())

    held = set(sorted(files, key=rank)[:n_calib])
    return [f for f in files if f in held], [f for f in files if f not in held]


def view_samples(files: list[Path]) -> list[tuple[Path, View]]:
    """Every (file, view) pair, view-major: all whole images first, then their mirrors, ..."""
    return [(f, v) for v in VIEWS for f in files]


class ViewDataset(torch.utils.data.Dataset):
    """(file, view) samples read with PIL as RGB, cropped, mirrored, then ``transform``-ed.

    Items are ``(tensor, index)``: the index is the sample's position, so callers can attach
    per-sample data (the ANN's reference logits) without labels.
    """

    def __init__(self, samples: list[tuple[Path, View]], transform: Callable) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, view = self.samples[i]
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        w, h = rgb.size
        left, top, right, bottom = view.box
        crop = rgb.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
        if view.flip:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.transform(crop), i


__all__ = ["CALIBRATION_FRACTION", "DEFAULT_PHOTOS", "IMAGE_SUFFIXES", "VIEWS", "Photo", "View", "ViewDataset",
           "default_photo_dir", "default_photo_files", "scan_images", "split_files", "view_samples"]
