"""ImageNet-1k validation (and optionally training) images in the ImageFolder layout.

``data_root`` is either the dataset root holding ``val/`` (and maybe ``train/``), or the
validation directory itself. Class folders are WordNet ids (``n01440764`` ...) and are mapped
to the standard 1000-class indices through timm's synset list, so a subset of classes
still gets the right labels. Calibration reads ``train/`` when it exists; otherwise a fixed
hold-out of the validation images (every 10th file) is used for calibration and excluded
from evaluation, so the two never share an image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from snnbench.tasks.base import DataNotFoundError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG")
HOLDOUT_EVERY = 10


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (from timm's package data)."""
    import timm

    path = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    synsets = path.read_text().split()
    if len(synsets) != 1000:
        raise RuntimeError(f"{path} lists {len(synsets)} synsets, expected 1000")
    return synsets


def resolve_dirs(data_root: str | None) -> tuple[Path, Path | None]:
    """(val_dir, train_dir or None) for a data root."""
    if not data_root:
        raise DataNotFoundError("ImageNet needs --data-root DIR: the ImageNet root holding val/ "
                                "(ImageFolder layout, one folder per WordNet id) or the val directory itself")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"ImageNet directory {root} does not exist; pass --data-root with val/ inside")
    if (root / "val").is_dir():
        train = root / "train" if (root / "train").is_dir() else None
        return root / "val", train
    return root, None


def scan_folder(folder: Path) -> list[tuple[str, int]]:
    """(file path, class index) pairs of an ImageFolder tree, sorted by path."""
    index = {s: i for i, s in enumerate(imagenet_synsets())}
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise DataNotFoundError(f"{folder} has no class sub-folders; expected one folder per WordNet id "
                                "(n01440764/ ...), each holding that class's images")
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise DataNotFoundError(f"{folder}: folders {unknown[:5]} are not ImageNet-1k WordNet ids "
                                "(expected names like n01440764)")
    samples = []
    for cls in classes:
        for dirpath, _, files in sorted(os.walk(folder / cls)):
            for name in sorted(files):
                if name.endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, name), index[cls]))
    if not samples:
        raise DataNotFoundError(f"{folder} holds no images with extensions {IMG_EXTENSIONS}")
    return samples


class ImageList(torch.utils.data.Dataset):
    """A list of (path, label) read with PIL and a transform."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), label


def split_samples(data_root: str | None) -> dict[str, list[tuple[str, int]]]:
    """Calibration and evaluation samples; disjoint by construction."""
    val_dir, train_dir = resolve_dirs(data_root)
    val = scan_folder(val_dir)
    if train_dir is not None:
        return {"calibration": scan_folder(train_dir), "evaluation": val, "calibration_split": "train"}
    held = [s for i, s in enumerate(val) if i % HOLDOUT_EVERY == 0]
    rest = [s for i, s in enumerate(val) if i % HOLDOUT_EVERY != 0]
    if not rest:
        raise DataNotFoundError(f"{val_dir} has too few images to hold out a calibration set")
    return {"calibration": held, "evaluation": rest, "calibration_split": f"val every {HOLDOUT_EVERY}th image"}
