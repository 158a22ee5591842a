"""Mean intersection-over-union and pixel accuracy at every time-step, from int64 confusion matrices.

The segmentation tasks' :class:`~snnbench.tasks.base.StepMetric`; the zoo's segmentation
trainer scores its validation split with it too, so a trained model and its SNN are
scored by the same convention.
"""

from __future__ import annotations

import numpy as np
import torch

from snnbench.common.outcomes import ConfusionOutcomes
from snnbench.tasks.base import StepMetric
from snnbench.tasks.data.voc import IGNORE_INDEX


class ConfusionMIoU(StepMetric):
    """Mean intersection-over-union and pixel accuracy at every time-step.

    One int64 confusion matrix per t (rows: ground truth, columns: prediction) is built
    with ``torch.bincount`` over ``target * C + prediction`` (torchvision's
    ``references/segmentation`` habit). Pixels labelled ``ignore_index`` (VOC's 255
    borders), or with any label outside ``[0, C)``, are not counted: they go to an extra
    bin that is dropped, so no data-dependent masking is needed. Counters stay on the
    predictions' device until :meth:`compute` (on CUDA ``bincount`` itself reads the
    largest index once per call).

    For class c, ``IoU_c = N_cc / (Σ_j N_cj + Σ_i N_ic - N_cc)``. **mIoU averages IoU_c
    over the classes that occur in the ground truth or in the prediction** (union > 0;
    the ``nanmean`` of mmsegmentation); a class absent from both has no IoU and is left
    out rather than counted as 0 or 1. On full VOC val every class occurs, so this equals
    the plain mean over 21 classes. ``pixel_acc = Σ_c N_cc / Σ N``.

    Predictions must be class indices in ``[0, C)`` with the targets' shape
    ``[B, H, W]`` (what the tasks' ``finish`` returns).
    """

    name = "miou"

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._confusion: dict[int, torch.Tensor] = {}
        self._per_image: dict[int, list[torch.Tensor]] = {}

    def update(self, t: int, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if outputs.shape != targets.shape:
            raise ValueError(f"segmentation predictions {tuple(outputs.shape)} and targets {tuple(targets.shape)} "
                             "must have the same shape [B, H, W]")
        if outputs.is_floating_point():
            raise ValueError("segmentation predictions must be class indices (the argmax of the logits), not floats")
        n = self.num_classes
        target = targets.to(outputs.device, torch.int64).reshape(-1)
        pred = outputs.to(torch.int64).reshape(-1)
        valid = (target >= 0) & (target < n) & (target != self.ignore_index)
        index = torch.where(valid, target * n + pred, torch.full_like(target, n * n))
        counts = torch.bincount(index, minlength=n * n + 1)[: n * n]
        self._confusion[t] = self._confusion[t] + counts if t in self._confusion else counts
        self._per_image.setdefault(t, []).append(self._image_counts(pred, target, valid, outputs.shape[0]))

    def _image_counts(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, images: int
                      ) -> torch.Tensor:
        """``[3, B, C]``: per image and class the true-positive, predicted and labelled pixels
        (the diagonal, column sums and row sums of the image's own confusion matrix)."""
        n = self.num_classes
        image = torch.arange(images, device=pred.device).repeat_interleave(pred.numel() // max(images, 1))
        dropped = torch.full_like(target, images * n)
        out = []
        for cls, keep in ((target, valid & (pred == target)), (pred, valid), (target, valid)):
            index = torch.where(keep, image * n + cls.clamp(0, n - 1), dropped)
            out.append(torch.bincount(index, minlength=images * n + 1)[: images * n].view(images, n))
        return torch.stack(out)

    def confusion(self, t: int) -> torch.Tensor:
        """The ``[C, C]`` int64 confusion matrix at ``t`` (rows: truth, columns: prediction)."""
        return self._confusion[t].reshape(self.num_classes, self.num_classes).cpu()

    @staticmethod
    def scores(confusion: torch.Tensor) -> dict[str, float]:
        """mIoU and pixel accuracy of one confusion matrix (the convention of the class docstring)."""
        conf = confusion.to(torch.float64)
        diag = conf.diagonal()
        union = conf.sum(0) + conf.sum(1) - diag
        total = conf.sum()
        if total == 0:
            raise ValueError("no labelled pixels were evaluated (every target pixel is ignored); check the masks")
        present = union > 0
        return {"miou": float((diag[present] / union[present]).mean()), "pixel_acc": float(diag.sum() / total)}

    def compute(self) -> dict[int, dict[str, float]]:
        return {t: self.scores(self.confusion(t)) for t in sorted(self._confusion)}

    def outcomes(self) -> ConfusionOutcomes | None:
        """Per image and class TP / predicted / labelled pixels at every updated t: mIoU on
        image resamples (:class:`~snnbench.common.outcomes.ConfusionOutcomes`)."""
        ts = sorted(self._per_image)
        if not ts:
            return None
        counts = [torch.cat(self._per_image[t], dim=1).cpu().numpy() for t in ts]  # [3, n, C] each
        if len({c.shape for c in counts}) != 1:
            return None  # not one image set at every t: nothing to resample jointly
        stacked = np.stack(counts, axis=1)  # [3, K, n, C]
        return ConfusionOutcomes(t=np.asarray(ts, dtype=np.int64), true_positive=stacked[0], predicted=stacked[1],
                                 labelled=stacked[2])


__all__ = ["ConfusionMIoU"]
