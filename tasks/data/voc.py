"""Reader of the Pascal VOC 2012 segmentation layout (real VOC, or the generated canvases).

Expected under the root (the ``VOC2012`` directory itself, or a directory holding
``VOC2012/`` or ``VOCdevkit/VOC2012/``, torchvision's layout)::

    JPEGImages/<id>.jpg            (or .jpeg / .png: the generated canvases are PNG)
    SegmentationClass/<id>.png     palette ("P") or grey ("L") PNG of class indices,
                                   255 = ignore (VOC's object borders); an RGB mask is
                                   mapped back through the VOC colour map
    ImageSets/Segmentation/val.txt ids, one per line (train.txt optional)

Calibration reads ``train.txt`` when it exists; otherwise a fixed hold-out of every 10th
``val`` id is used for calibration and excluded from evaluation, so the two never share an
image (ids listed in both files are dropped from calibration).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from snnbench.tasks.base import DataNotFoundError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
IGNORE_INDEX = 255
HOLDOUT_EVERY = 10
LAYOUT = ("JPEGImages/<id>.jpg|.png, SegmentationClass/<id>.png and ImageSets/Segmentation/val.txt "
          "(optionally train.txt)")


def resolve_root(data_root: str | os.PathLike | None) -> Path:
    """The directory holding ``JPEGImages/``, ``SegmentationClass/`` and ``ImageSets/``."""
    if not data_root:
        raise DataNotFoundError(f"Pascal VOC needs --data-root DIR: the VOC2012 directory (or one holding "
                                f"VOCdevkit/VOC2012) with {LAYOUT}")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"VOC directory {root} does not exist; pass --data-root with {LAYOUT}")
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise DataNotFoundError(f"{root} is not a VOC 2012 segmentation tree: no ImageSets/Segmentation/ in it, "
                            f"nor in {root / 'VOC2012'} or {root / 'VOCdevkit' / 'VOC2012'}. Expected {LAYOUT}")


def read_ids(root: Path, split: str) -> list[str]:
    """Ids listed in ``ImageSets/Segmentation/<split>.txt``, in file order."""
    path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        raise DataNotFoundError(f"VOC split list {path} not found; expected one image id per line ({LAYOUT})")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataNotFoundError(f"VOC split list {path} is empty")
    return ids


def voc_colormap() -> np.ndarray:
    """VOC's colour map, ``[256, 3]`` uint8 (index -> RGB): the palette of its mask PNGs."""
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def read_mask(path: Path) -> np.ndarray:
    """Class indices ``[H, W]`` uint8 of a mask PNG (palette indices, grey values, or VOC colours)."""
    if not path.is_file():
        raise DataNotFoundError(f"VOC mask {path} not found (expected SegmentationClass/<id>.png)")
    with Image.open(path) as img:
        if img.mode in ("P", "L"):
            return np.array(img, dtype=np.uint8)
        if img.mode in ("RGB", "RGBA"):
            rgb = np.array(img.convert("RGB"), dtype=np.int64)
        else:
            raise DataNotFoundError(f"VOC mask {path} has PIL mode {img.mode!r}; expected a palette (P) or grey "
                                    "(L) PNG of class indices, or an RGB PNG in VOC colours")
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    cmap = voc_colormap().astype(np.int64)
    table = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(cmap)}
    uniq, inverse = np.unique(codes, return_inverse=True)
    unknown = [hex(int(u)) for u in uniq if int(u) not in table]
    if unknown:
        raise DataNotFoundError(f"VOC mask {path} holds colours {unknown[:5]} that are not in the VOC colour map")
    return np.array([table[int(u)] for u in uniq], dtype=np.uint8)[inverse.reshape(codes.shape)]


def find_image(root: Path, image_id: str) -> Path:
    for ext in IMAGE_EXTENSIONS:
        path = root / "JPEGImages" / f"{image_id}{ext}"
        if path.is_file():
            return path
    raise DataNotFoundError(f"VOC image for id {image_id!r} not found: expected {root / 'JPEGImages' / image_id}"
                            f".jpg (or {', '.join(IMAGE_EXTENSIONS[1:3])})")


@dataclass
class VOCSample:
    """One image and its mask: ``image`` uint8 ``[3, H, W]`` (RGB), ``mask`` int64 ``[H, W]``."""

    image_id: str
    image: torch.Tensor
    mask: torch.Tensor


def collate(samples: Sequence[VOCSample]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Raw images (a list: they may differ in size) and masks padded with the ignore index."""
    images = [s.image for s in samples]
    h = max(s.mask.shape[0] for s in samples)
    w = max(s.mask.shape[1] for s in samples)
    targets = torch.full((len(samples), h, w), IGNORE_INDEX, dtype=torch.int64)
    for i, s in enumerate(samples):
        targets[i, : s.mask.shape[0], : s.mask.shape[1]] = s.mask
    return images, targets


class VOCSegmentation:
    """The images and masks of a list of ids, read lazily (no transform: the task decides).

    Args:
        root: the VOC2012 directory (see :func:`resolve_root`).
        ids: image ids to serve, in this order.
        num_classes: labels must be ``< num_classes`` or the ignore index 255; a mask with
            any other value is an error naming the file (a wrong ``num_classes`` or a
            colour mask read as indices would otherwise corrupt the metric silently).
    """

    def __init__(self, root: Path, ids: list[str], num_classes: int) -> None:
        self.root = Path(root)
        self.ids = list(ids)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> VOCSample:
        image_id = self.ids[index]
        path = find_image(self.root, image_id)
        with Image.open(path) as img:
            image = np.array(img.convert("RGB"), dtype=np.uint8)
        mask_path = self.root / "SegmentationClass" / f"{image_id}.png"
        mask = read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataNotFoundError(f"VOC mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {path} "
                                    f"is {image.shape[1]}x{image.shape[0]}; they must match")
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            raise DataNotFoundError(f"VOC mask {mask_path} holds labels {sorted(set(mask[bad].tolist()))[:5]}; "
                                    f"expected 0..{self.num_classes - 1} or {IGNORE_INDEX} (ignore)")
        return VOCSample(image_id, torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                         torch.from_numpy(mask.astype(np.int64)))


@dataclass
class VOCSplits:
    """Disjoint calibration and evaluation ids of a VOC tree, and where each came from."""

    root: Path
    calibration: list[str]
    evaluation: list[str]
    calibration_split: str
    evaluation_split: str = "val"


def split_ids(data_root: str | os.PathLike | None) -> VOCSplits:
    """Calibration ids (``train.txt``, else every 10th ``val`` id) and evaluation ids."""
    root = resolve_root(data_root)
    val = read_ids(root, "val")
    if (root / "ImageSets" / "Segmentation" / "train.txt").is_file():
        train = read_ids(root, "train")
        held = set(val)
        calibration = [i for i in train if i not in held]
        if len(calibration) < len(train):
            log.warning("%d ids of train.txt are also in val.txt; they are left out of calibration",
                        len(train) - len(calibration))
        if not calibration:
            raise DataNotFoundError(f"every id of {root}/ImageSets/Segmentation/train.txt is also in val.txt; "
                                    "calibration needs images disjoint from evaluation")
        return VOCSplits(root, calibration, val, "train")
    calibration = [i for k, i in enumerate(val) if k % HOLDOUT_EVERY == 0]
    evaluation = [i for k, i in enumerate(val) if k % HOLDOUT_EVERY != 0]
    if not evaluation:
        raise DataNotFoundError(f"{root}/ImageSets/Segmentation/val.txt lists too few images to hold out every "
                                f"{HOLDOUT_EVERY}th one for calibration; add train.txt or more val ids")
    return VOCSplits(root, calibration, evaluation, f"val every {HOLDOUT_EVERY}th image",
                     f"val without every {HOLDOUT_EVERY}th image")


__all__ = ["IGNORE_INDEX", "VOCSample", "VOCSegmentation", "VOCSplits", "read_ids", "read_mask", "resolve_root",
           "split_ids", "voc_colormap"]
