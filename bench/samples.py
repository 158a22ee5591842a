"""A cell's per-sample outcomes in the harness: 95 % intervals per scored t, the samples
file, and the form the ANN evaluation cache stores.

The task's metric keeps the outcomes (:meth:`snnbench.tasks.base.StepMetric.outcomes`);
from them every scored t gets ``metric_ci95`` (:func:`snnbench.significance.outcome_interval`:
Wilson 95 % on classification, a 1000-resample image bootstrap with seed 0 on mAP and
mIoU) and the sweep saves them as ``<results>/samples/<cell_key>.npz``
(:func:`snnbench.common.outcomes.save_outcomes`) for ``bench compare``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnbench.common.outcomes import KINDS, Outcomes, samples_file, save_outcomes
from snnbench.significance import outcome_interval

log = logging.getLogger(__name__)


def intervals(outcomes: Outcomes | None) -> dict[int, list[float]]:
    """``{t: [lo, hi]}``: the 95 % interval of the metric at every scored t."""
    if outcomes is None:
        return {}
    return {int(t): [float(v) for v in outcome_interval(outcomes, k)] for k, t in enumerate(outcomes.t)}


def with_intervals(rows: dict[str, dict[str, Any]], found: dict[int, list[float]]) -> dict[str, dict[str, Any]]:
    """Per-t rows with ``metric_ci95`` added at the scored steps."""
    return {t: ({**row, "metric_ci95": found[int(t)]} if int(t) in found else row) for t, row in rows.items()}


def to_cache(outcomes: Outcomes | None) -> dict[str, Any] | None:
    """Outcomes as tensors, so the ANN evaluation cache can ``torch.load(weights_only=True)`` them."""
    if outcomes is None:
        return None
    return {"kind": outcomes.kind,
            "arrays": {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in outcomes.to_arrays().items()}}


def from_cache(cached: dict[str, Any] | None) -> Outcomes | None:
    """The inverse of :func:`to_cache`."""
    if cached is None:
        return None
    return KINDS[cached["kind"]].from_arrays({name: t.numpy() for name, t in cached["arrays"].items()})


def save_samples(samples_dir: str | None, cell_key: str, outcomes: Outcomes | None) -> Path | None:
    """Write ``<samples_dir>/<cell_key>.npz`` (a sweep's ``<results>/samples``; no-op without a directory)."""
    if samples_dir is None or outcomes is None:
        return None
    return save_outcomes(samples_file(samples_dir, cell_key), outcomes)


__all__ = ["from_cache", "intervals", "save_samples", "to_cache", "with_intervals"]
