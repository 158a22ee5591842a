"""The task protocol: data, the models that fit it, and a metric per time-step.

A task knows nothing of conversion methods. It hands the harness:

* :meth:`Task.build` -> a :class:`ModelBundle`: the ``core`` network a method converts
  (tensor in, tensor or dict of tensors out) plus the task's pre- and post-processing
  around it (detection resizes images before the core and decodes boxes after it);
* calibration batches from a *training* split and evaluation batches from the
  test/validation split (never the same images);
* a :class:`StepMetric` whose ``update(t, outputs, targets)`` is called for every t of one
  simulation, so one run to T yields the metric at every t = 1..T.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import torch

from snnbench.common.outcomes import Outcomes
from torch import nn


class DataNotFoundError(FileNotFoundError):
    """A dataset or weights file is missing; the message says what was expected."""


@dataclass
class ModelBundle:
    """A task's model, split into the convertible core and the glue around it.

    Attributes:
        core: the network a method converts and simulates in time.
        prepare: turns a batch of raw task inputs into the core's input tensor and a
            ``meta`` object kept for :attr:`finish` (identity for classification).
        finish: turns the core's (decoded) output and ``meta`` into task predictions.
        info: provenance (weights file in ``info["weights"]``, training record, input size ...).
        weights_sha256: sha256 of the weights file actually loaded, when the task knows it
            already; otherwise :func:`snnbench.tasks.zoo.weights.bundle_weights_sha256`
            hashes ``info["weights"]``.
    """

    core: nn.Module
    prepare: Callable[[Any], tuple[torch.Tensor, Any]] = field(default=lambda x: (x, None))
    finish: Callable[[Any, Any], Any] = field(default=lambda out, meta: out)
    info: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None


class StepMetric(abc.ABC):
    """A metric accumulated per time-step t = 1..T from a single simulation."""

    #: the headline key of :meth:`compute` (e.g. ``"top1"``)
    name: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = True

    @abc.abstractmethod
    def update(self, t: int, outputs: Any, targets: Any) -> None:
        """Add one batch's predictions decoded at time-step ``t``."""

    @abc.abstractmethod
    def compute(self) -> dict[int, dict[str, float]]:
        """``{t: {metric_name: value, ...}}`` for every t that was updated."""

    def outcomes(self) -> Outcomes | None:
        """Per-sample outcomes of the headline metric at every updated t, from which it can be
        recomputed on resampled images (:mod:`snnbench.common.outcomes`); None when the metric
        keeps none (no interval, no paired test)."""
        return None


class Task(abc.ABC):
    """A benchmark task plugin (registered under the ``snnbench.tasks`` entry-point group)."""

    #: registry name, set by subclasses
    name: ClassVar[str] = ""
    #: the headline metric name, e.g. ``top1``, ``map``, ``miou``
    metric: ClassVar[str] = "metric"
    #: "classification", "detection" or "segmentation"
    kind: ClassVar[str] = ""
    #: short description for ``bench list``
    description: ClassVar[str] = ""
    #: evaluation batch size used when the caller gives none
    default_batch_size: ClassVar[int] = 100
    #: time-steps scored when a cell's ``eval_ts`` is ``auto`` (see ``snnbench.cell.resolve_eval_ts``)
    default_eval_ts: ClassVar[str] = "all"

    def __init__(self, data_root: str | None = None) -> None:
        self.data_root = data_root

    @abc.abstractmethod
    def models(self) -> list[str]:
        """Names of the registered models this task can build."""

    @abc.abstractmethod
    def default_model(self) -> str:
        """The model used when the caller gives none."""

    def sweep_models(self) -> list[str]:
        """Models a sweep uses for this task when ``--models`` is not given."""
        return [self.default_model()]

    @abc.abstractmethod
    def build(self, model: str, weights: str | None = None, device: str | torch.device = "cpu",
              progress: bool = True) -> ModelBundle:
        """Build ``model`` with its weights, ready for evaluation."""

    @abc.abstractmethod
    def calib_batches(self, size: int, batch_size: int, seed: int, bundle: ModelBundle) -> Iterator[torch.Tensor]:
        """Core-input tensors of ``size`` training images, for calibration statistics."""

    @abc.abstractmethod
    def eval_batches(self, size: int | None, batch_size: int, bundle: ModelBundle) -> Iterator[tuple[Any, Any]]:
        """``(inputs, targets)`` over ``size`` evaluation images (all when ``None``), fixed order."""

    @abc.abstractmethod
    def new_metric(self) -> StepMetric:
        """A fresh metric accumulator."""

    def check_data(self) -> None:
        """Raise :class:`DataNotFoundError` now if the task's data is missing (cheap checks)."""

    def eval_set_size(self) -> int | None:
        """Number of images in the full evaluation split, when known cheaply."""
        return None

    def splits(self) -> dict[str, str]:
        """Which splits feed calibration and evaluation, for provenance."""
        return {"calibration": "train", "evaluation": "test"}
