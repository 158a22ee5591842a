"""Fashion-MNIST (Xiao et al. 2017; MIT): the full 60k/10k split from local IDX files.

Looked for, in order, under ``data_root`` (when given) and then the standard places:
the directory itself, ``<dir>/FashionMNIST/raw`` and ``<dir>/raw`` (torchvision's layout),
with and without ``.gz``. The Debian package ``dataset-fashion-mnist`` installs the files in
``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from snnbench.tasks.base import DataNotFoundError
from snnbench.tasks.data.arrays import ImageArrays
from snnbench.tasks.data.idx import read_idx

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: mean/std of the training images (Xiao et al.; 72.94/255 measured on the Debian copy)
MEAN, STD = (0.2860,), (0.3530,)
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = ("install the Debian package (apt-get install dataset-fashion-mnist), or put the four "
              "IDX files (train-images-idx3-ubyte[.gz] ...) in a directory and pass --data-root DIR "
              "(torchvision's FashionMNIST/raw layout works too)")


def candidate_dirs(data_root: str | os.PathLike | None) -> list[Path]:
    """Directories searched for the IDX files, most specific first."""
    roots = [Path(data_root).expanduser()] if data_root else [DEBIAN_DIR, Path.home() / ".cache" / "snnbench" / "data"]
    dirs: list[Path] = []
    for root in roots:
        dirs += [root, root / "FashionMNIST" / "raw", root / "raw", root / "fashion-mnist"]
    return dirs


def _find(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def load_split(split: str, data_root: str | os.PathLike | None = None) -> ImageArrays:
    """Load ``split`` ("train" or "test") as uint8 ``[N, 1, 28, 28]`` images."""
    if split not in _FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; valid: train, test")
    dirs = candidate_dirs(data_root)
    paths = [_find(dirs, stem) for stem in _FILES[split]]
    if None in paths:
        looked = ", ".join(str(d) for d in dirs)
        raise DataNotFoundError(
            f"Fashion-MNIST {split} files {_FILES[split][0]}[.gz] / {_FILES[split][1]}[.gz] not found; "
            f"looked in: {looked}. To get them: {HOW_TO_GET}")
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise DataNotFoundError(f"Fashion-MNIST files at {paths[0].parent} have unexpected shapes "
                                f"{images.shape} / {labels.shape}; expected [N, 28, 28] and [N]")
    return ImageArrays(images=images, labels=labels.astype(np.int64), mean=MEAN, std=STD, classes=CLASSES)
