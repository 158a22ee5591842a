"""The segmentation bundle's ends: raw images -> the core's input, decoded logits -> predictions.

``prepare`` resizes and normalises the raw uint8 images (and zero-pads a batch of
differently sized images); ``finish`` takes the logits decoded at time-step t, crops the
padding, resizes them bilinearly to each image's original size and returns the per-pixel
argmax, so predictions are scored against the original masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

#: ImageNet normalisation (torchvision's eval transform for its VOC-label weights)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class BatchMeta:
    """What ``finish`` needs to map logits back onto the original masks.

    Attributes:
        resized: per image, its ``(h, w)`` inside the padded core input.
        original: per image, the ``(H, W)`` of its mask.
        target_shape: ``(H_max, W_max)`` of the padded target batch.
    """

    resized: list[tuple[int, int]]
    original: list[tuple[int, int]]
    target_shape: tuple[int, int]


@dataclass(frozen=True)
class SegmentationTransform:
    """Raw uint8 images -> the core's input, and decoded logits -> predictions.

    Args:
        resize: the shorter image side after resizing (torchvision's VOC eval transform:
            520, bilinear with antialiasing), or ``None`` to keep the size.
        mean, std: per-channel normalisation of ``[0, 1]`` RGB values.
    """

    resize: int | None = None
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return (image.float() / 255.0 - mean) / std

    def _resized(self, image: torch.Tensor) -> torch.Tensor:
        if self.resize is None or min(image.shape[-2:]) == self.resize:
            return image
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        return TF.resize(image, [self.resize], interpolation=InterpolationMode.BILINEAR, antialias=True)

    def prepare(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, BatchMeta]:
        """``[B, 3, h_max, w_max]`` normalised input (zero-padded at the bottom/right when the
        images differ in size: zero is the mean colour) and the :class:`BatchMeta`."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = [images]
        resized = [self._normalise(self._resized(img)) for img in images]
        sizes = [tuple(r.shape[-2:]) for r in resized]
        original = [tuple(img.shape[-2:]) for img in images]
        h_max, w_max = max(s[0] for s in sizes), max(s[1] for s in sizes)
        if all(s == (h_max, w_max) for s in sizes):
            x = torch.stack(resized)
        else:
            x = torch.zeros((len(resized), 3, h_max, w_max), dtype=torch.float32)
            for i, r in enumerate(resized):
                x[i, :, : r.shape[1], : r.shape[2]] = r
        target = (max(o[0] for o in original), max(o[1] for o in original))
        return x, BatchMeta(resized=sizes, original=original, target_shape=target)

    def calibration_input(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fixed-size calibration input: resized, then centre-cropped to a square of the
        shorter side (every calibration pixel is image content, none is padding)."""
        from torchvision.transforms.v2 import functional as TF

        crops = []
        for img in images:
            img = self._resized(img)
            side = min(img.shape[-2:])
            crops.append(self._normalise(TF.center_crop(img, [side, side])))
        sizes = {tuple(c.shape) for c in crops}
        if len(sizes) > 1:  # only without a resize: differently sized images, crop to the smallest
            side = min(s[-1] for s in sizes)
            crops = [TF.center_crop(c, [side, side]) for c in crops]
        return torch.stack(crops)

    @staticmethod
    def finish(logits: torch.Tensor, meta: BatchMeta) -> torch.Tensor:
        """Per-pixel class indices ``[B, H_max, W_max]`` at the masks' resolution (0 outside
        each image; those pixels are padded with the ignore index in the targets)."""
        if logits.ndim != 4:
            raise ValueError(f"segmentation logits must be [B, classes, H, W]; got {tuple(logits.shape)}")
        first_r, first_o = meta.resized[0], meta.original[0]
        if all(r == first_r for r in meta.resized) and all(o == first_o for o in meta.original):
            crop = logits[..., : first_r[0], : first_r[1]]
            if tuple(crop.shape[-2:]) != first_o:
                crop = F.interpolate(crop, size=first_o, mode="bilinear", align_corners=False)
            return crop.argmax(1)
        out = torch.zeros((logits.shape[0], *meta.target_shape), dtype=torch.int64, device=logits.device)
        for i, ((h, w), (H, W)) in enumerate(zip(meta.resized, meta.original)):
            crop = logits[i: i + 1, :, :h, :w]
            if (h, w) != (H, W):
                crop = F.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False)
            out[i, :H, :W] = crop[0].argmax(0)
        return out


__all__ = ["BatchMeta", "IMAGENET_MEAN", "IMAGENET_STD", "SegmentationTransform"]
