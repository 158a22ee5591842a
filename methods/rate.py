"""``rate``: the classic rate-coding baseline (Diehl et al. 2015; Rueckauer et al. 2017).

IF neurons with reset by subtraction and initial potential θ/2, the same analog image at
every step (direct input), layer-wise thresholds at the 99.9th percentile of the ReLU
output, output = running mean. Every engine setting can be overridden (``--set
neuron=mt``, ``--set threshold=iteration`` ...), which makes it the rate-coding arm of
the DCGS ablations too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from snnbench.methods.snn.engine import EngineMethod, EngineSettings


@dataclass(frozen=True)
class RateSettings(EngineSettings):
    """Rate-coding defaults: IF neurons, rate coding, 99.9 % percentile, layer-wise."""

    neuron: Literal["mt", "if"] = "if"
    n: int = 1
    coding: Literal["differential", "rate"] = "rate"
    threshold: Literal["auto", "iteration", "percentile", "max", "grid", "hmt_iteration"] = "percentile"
    granularity: Literal["auto", "layer", "channel", "token"] = "layer"
    threshold_scale: float | None = 1.0


class RateCoding(EngineMethod):
    """Rate coding with IF neurons and 99.9 %-percentile layer-wise thresholds (Rueckauer 2017)."""

    name = "rate"
    version = "1"
    settings_cls = RateSettings
