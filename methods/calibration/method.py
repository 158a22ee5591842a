"""``calibration``: SNN Calibration (Li et al., ICML 2021, "A Free Lunch From ANN: Towards
Efficient, Accurate Spiking Neural Networks Calibration"; docs/baseline-methods.md §2), training-free forms.

Rate-coded IF neurons (reset by subtraction, initial potential θ/2, spike amplitude θ) with
thresholds from the layer-wise MSE grid search: candidates θ = max·(1 - 0.01·i), i < 95,
minimising the error of the floor quantiser with T levels, per batch, EMA 0.9 on the old
value. ``mode``:

* ``grid``: the grid-searched thresholds only;
* ``light``: plus bias correction, layer by layer on one calibration batch;
* ``potential``: plus potential correction (the initial membrane potential).

T is the run's T (the released scripts hard-code 32). The advanced (weight-training)
pipeline is not training-free and is not offered. Every engine setting can be overridden,
so ``--set threshold=percentile`` or ``threshold=iteration`` gives the threshold-rule
ablation with the same corrections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from snnbench.methods.base import ConversionContext, SpikingModel
from snnbench.methods.calibration.correction import calibrate_network
from snnbench.methods.settings import SettingsError
from snnbench.methods.snn.engine import EngineMethod, EngineSettings
from snnbench.methods.snn.stats import MSE_GRID_POINTS, MSE_GRID_STEP, StatKind, Stats


@dataclass(frozen=True)
class CalibrationSettings(EngineSettings):
    """SNN Calibration defaults: IF neurons, rate coding, MSE grid search, layer-wise, light."""

    neuron: Literal["mt", "if"] = "if"
    n: int = 1
    coding: Literal["differential", "rate"] = "rate"
    threshold: Literal["auto", "iteration", "percentile", "max", "grid", "hmt_iteration"] = "grid"
    granularity: Literal["auto", "layer", "channel", "token"] = "layer"
    threshold_scale: float | None = 1.0
    mode: Literal["grid", "light", "potential"] = "light"
    grid_points: int = MSE_GRID_POINTS
    grid_step: float = MSE_GRID_STEP
    correction_samples: int = 100

    def validate(self) -> None:
        super().validate()
        if self.mode != "grid" and self.coding != "rate":
            raise SettingsError("SNN Calibration's corrections assume rate coding; use coding=rate or mode=grid")
        if not 1 <= self.grid_points <= 1000 or not 0 < self.grid_step * (self.grid_points - 1) < 1:
            raise SettingsError("the grid must stay inside (0, max]: need grid_step·(grid_points-1) < 1")
        if self.correction_samples < 1:
            raise SettingsError("correction_samples must be positive")


class SNNCalibration(EngineMethod):
    """SNN Calibration (Li et al. 2021): MSE grid-searched thresholds, bias or potential correction."""

    name = "calibration"
    version = "1"
    settings_cls = CalibrationSettings

    def _stat_kind(self, graph, T: int) -> StatKind:
        kind = super()._stat_kind(graph, T)
        if kind.quantity == "mse_grid":
            s = self.settings
            kind = StatKind("mse_grid", granularity=kind.granularity, placement=kind.placement, levels=kind.levels,
                            grid_points=s.grid_points, grid_step=s.grid_step)
        return kind

    def convert(self, model: nn.Module, stats: Stats, ctx: ConversionContext) -> SpikingModel:
        snn, graph, unit_paths = self.build(model, stats, ctx)
        s = self.settings
        if s.mode == "grid":
            return snn
        if ctx.calib_batches is None:
            raise ValueError("SNN Calibration's corrections need calibration batches")
        batch = first_samples(ctx.calib_batches(), s.correction_samples).to(ctx.device)
        report = calibrate_network(snn, graph, unit_paths, batch, ctx.T,
                                   mode="bias" if s.mode == "light" else "potential")
        snn._description.update(correction=s.mode, correction_samples=int(batch.shape[0]),
                                mean_abs_error_before=sum(report.values()) / max(len(report), 1))
        return snn


def first_samples(batches, count: int) -> torch.Tensor:
    parts, have = [], 0
    for b in batches:
        parts.append(b)
        have += b.shape[0]
        if have >= count:
            break
    if not parts:
        raise ValueError("no calibration batches")
    return torch.cat(parts)[:count]
