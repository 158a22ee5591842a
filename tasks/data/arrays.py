"""In-memory image arrays and deterministic batching for small datasets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch


@dataclass
class ImageArrays:
    """A split held in memory.

    Attributes:
        images: uint8 (or float in [0, 1]) array ``[N, C, H, W]``.
        labels: int64 array ``[N]``.
        mean, std: per-channel normalisation applied by :meth:`tensor`.
        classes: class names, index = label.
    """

    images: np.ndarray
    labels: np.ndarray
    mean: Sequence[float]
    std: Sequence[float]
    classes: Sequence[str]

    def __post_init__(self) -> None:
        if self.images.ndim == 3:  # [N, H, W] -> [N, 1, H, W]
            self.images = self.images[:, None]
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W]; got shape {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def tensor(self, index: np.ndarray | slice) -> torch.Tensor:
        """Normalised float32 tensor of the selected images."""
        x = torch.from_numpy(np.ascontiguousarray(self.images[index]))
        x = x.float()
        if self.images.dtype == np.uint8:
            x = x / 255.0
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x - mean) / std

    def batches(self, indices: np.ndarray, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches over ``indices`` in the given order."""
        for start in range(0, len(indices), batch_size):
            idx = indices[start:start + batch_size]
            yield self.tensor(idx), torch.from_numpy(self.labels[idx].astype(np.int64))


def subset_indices(n: int, size: int | None, seed: int) -> np.ndarray:
    """``size`` distinct indices of ``range(n)``: all in order when size is None or >= n,
    else a seeded random subset kept in ascending order (a fixed evaluation order)."""
    if size is None or size >= n:
        return np.arange(n)
    if size <= 0:
        raise ValueError(f"subset size must be positive, got {size}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False))
