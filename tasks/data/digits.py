"""scikit-learn's ``load_digits``: 1,797 real 8x8 handwritten digits (UCI, BSD-3).

Always available with pip alone, so the fast tests use it. The split is a fixed,
stratified 80/20 split (seed 0): calibration reads the 1,437 training digits, evaluation
the 360 test digits.
"""

from __future__ import annotations

import numpy as np

from snnbench.tasks.data.arrays import ImageArrays

CLASSES = tuple(str(i) for i in range(10))
#: mean/std of the training digits scaled to [0, 1]
MEAN, STD = (0.3054,), (0.3761,)


def load_split(split: str) -> ImageArrays:
    """Load ``split`` ("train" or "test") as float images in [0, 1], ``[N, 1, 8, 8]``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"unknown digits split {split!r}; valid: train, test")
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    labels = data.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=0,
                                           stratify=labels)
    idx = np.sort(idx_train if split == "train" else idx_test)
    return ImageArrays(images=images[idx], labels=labels[idx], mean=MEAN, std=STD, classes=CLASSES)
