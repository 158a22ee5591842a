"""``srp``: residual membrane potential (Hao, Bu, Ding, Huang, Yu, "Reducing ANN-SNN Conversion
Error through Residual Membrane Potential", AAAI 2023; docs/baseline-methods.md §3).

Each activation becomes an IF neuron (reset by subtraction, v(0) = θ/2, amplitude θ,
direct analog input at every frame). For every sample:

1. **Pre-simulation**, frames 1..τ (setting ``presim``, default 4 as the official code
   for CIFAR): the network runs normally and its spikes propagate.
2. **At the end of frame τ** each neuron records the mask M = 1[v > tol·θ] of its residual
   potential (tol = ``mask_tolerance``, 1e-3 in units of θ as in the code) and its
   potential is set back to θ/2. A neuron whose residual is <= 0 fired more than its
   input justified (the paper's "unevenness error") and is silenced from now on.
3. **Readout**, frames τ+1..τ+T: neurons integrate, fire and reset as usual, but the
   spike they emit is multiplied by M (the mask suppresses output, not integration).
   The output is the running mean of the last layer over the readout frames only.

So readout step t is frame τ + t: the result's ``latency`` is t + τ (the published "T"
excludes τ), and the energy and spike counts of step t include the τ pre-simulation
frames (``CountPlan.readout_offset``).

Thresholds (``threshold``): ``auto`` takes the learned λ of a QCFS-trained ANN (the
published setting) and, on a plain ReLU ANN, the 99.9th percentile rule of ``rate``;
``qcfs`` insists on λ; ``percentile`` / ``max`` / ``grid`` use calibration statistics.
On a plain ANN the row is labelled "SRP mechanism, non-QCFS ANN": the published numbers
rely on QCFS-trained networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
from torch import nn
from torch.utils._pytree import tree_map

from snnbench.methods.base import ConversionContext, CountPlan, Fairness
from snnbench.methods.qcfs.method import is_qcfs_graph, qcfs_site_thresholds
from snnbench.methods.settings import SettingsError
from snnbench.methods.snn.engine import EngineMethod, EngineSettings
from snnbench.methods.snn.fused import resolve_fuse, spike_counts
from snnbench.methods.snn.graph import NetworkGraph, Site
from snnbench.methods.snn.network import SimulatedNetwork
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.stats import StatKind, Stats

#: the label of SRP rows on plain ReLU ANNs (docs/baseline-methods.md §3, "Training-free on a plain ReLU ANN?")
PLAIN_ANN_NOTE = "SRP mechanism, non-QCFS ANN"


class SRPNeuron(SpikingNeuron):
    """IF neuron (rate coding, v(0) = θ/2) with SRP's pre-simulation mask (Hao et al. 2023, §4).

    Step t (counted from the last reset), after the ordinary IF step
    m = v + x; s = θ·1[m >= θ]; v = m - s:

    * t = τ: M = 1[v > tol·θ]; v = θ/2 (the spike of this frame still propagates);
    * t > τ: s = s·M.

    With τ = 0 it is the plain QCFS/rate IF neuron.
    """

    def __init__(self, theta: torch.Tensor, presim: int, mask_tolerance: float = 1e-3, fuse: bool = False) -> None:
        super().__init__(theta, rule="if", n=1, coding="rate", signed=False, floor=0.0, ceiling=None, fuse=fuse,
                         kernel="torch")
        if presim < 0:
            raise ValueError(f"presim must be >= 0, got {presim}")
        self.presim = int(presim)
        self.mask_tolerance = float(mask_tolerance)
        self.register_state("mask")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", presim={self.presim}, mask_tolerance={self.mask_tolerance}"

    def _rate_step(self, x: torch.Tensor) -> torch.Tensor:
        s = super()._rate_step(x)
        if self.presim == 0 or self.t < self.presim:
            return s
        if self.t == self.presim:
            self.mask = (self.v > self.mask_tolerance * self.theta).to(s.dtype)
            self.v = self.initial_potential(x)
            return s
        s = s * self.mask
        if self.count_spikes:  # the counts of the emitted (masked) spikes; layers it feeds read them
            self.last_counts = spike_counts(s, self.unit_amplitude())
            self.last_hits = None
        return s


class SRPNetwork(SimulatedNetwork):
    """A rate-coded network run for τ pre-simulation frames before its T readout frames."""

    def __init__(self, net: nn.Module, presim: int, description: dict[str, Any] | None = None) -> None:
        super().__init__(net, coding="rate", description=description)  # type: ignore[arg-type]
        self.presim = int(presim)

    def simulate(self, x: torch.Tensor, T: int) -> Iterator[Any]:
        for frame in range(1, self.presim + 1):
            self.frame = frame
            self.step(x)
        estimate = None
        for t in range(1, T + 1):
            self.frame = self.presim + t
            y = self.step(x)
            estimate = y if estimate is None else tree_map(lambda e, v, t=t: e + (v - e) / t, estimate, y)
            yield estimate

    def count_plan(self) -> CountPlan:
        plan = super().count_plan()
        plan.readout_offset = self.presim
        return plan

    def fairness(self) -> Fairness:
        base = super().fairness()
        return Fairness(frames_before_readout=self.presim, levels_per_step=base.levels_per_step,
                        max_spikes_per_step=base.max_spikes_per_step)


@dataclass(frozen=True)
class SRPSettings(EngineSettings):
    """SRP defaults: IF neurons, rate coding, τ = 4, λ thresholds on QCFS ANNs (else 99.9 % percentile).

    Attributes (besides the engine's threshold-rule settings):
        presim: τ, the pre-simulation frames before readout (official: 4 on CIFAR, 8 or 14 on ImageNet).
        mask_tolerance: a neuron stays active when its residual potential after τ exceeds this
            fraction of θ (official: 1e-3).
        threshold: ``auto`` (λ on a QCFS ANN, else percentile), ``qcfs``, ``percentile``,
            ``max`` or ``grid``.
    """

    neuron: Literal["if"] = "if"  # type: ignore[assignment]
    n: int = 1
    coding: Literal["rate"] = "rate"  # type: ignore[assignment]
    threshold: Literal["auto", "qcfs", "percentile", "max", "grid"] = "auto"  # type: ignore[assignment]
    granularity: Literal["auto", "layer", "channel", "token"] = "layer"
    threshold_scale: float | None = 1.0
    placement: Literal["activations"] = "activations"  # type: ignore[assignment]
    presim: int = 4
    mask_tolerance: float = 1e-3

    def validate(self) -> None:
        super().validate()
        if self.n != 1:
            raise SettingsError("SRP uses IF neurons; n must be 1")
        if self.presim < 0:
            raise SettingsError(f"presim must be >= 0, got {self.presim}")
        if self.mask_tolerance < 0:
            raise SettingsError(f"mask_tolerance must be >= 0, got {self.mask_tolerance}")


class SRP(EngineMethod):
    """SRP (Hao et al., AAAI 2023): τ pre-simulation frames, then spikes masked by the residual potential."""

    name = "srp"
    version = "1"
    settings_cls = SRPSettings

    def rule(self, graph: NetworkGraph) -> str:
        """The threshold rule in force: ``qcfs`` or a calibration statistic."""
        wanted = self.settings.threshold
        if wanted == "auto":
            return "qcfs" if is_qcfs_graph(graph) else "percentile"
        return wanted

    def resolved(self, graph: NetworkGraph) -> dict[str, Any]:
        out = super().resolved(graph)
        out["threshold"] = self.rule(graph)
        qcfs = is_qcfs_graph(graph)
        out["track"] = "qcfs" if qcfs else "plain"
        if not qcfs:
            out["note"] = PLAIN_ANN_NOTE
        return out

    def stat_kinds(self, model: nn.Module, ctx: ConversionContext) -> tuple[StatKind, ...]:
        graph = self.graph(model, ctx.example)
        return () if self.rule(graph) == "qcfs" else (self._stat_kind(graph, ctx.T),)

    def site_thresholds(self, graph: NetworkGraph, stats: Stats, ctx: ConversionContext
                        ) -> tuple[dict[str, torch.Tensor], str]:
        if self.rule(graph) == "qcfs":
            return qcfs_site_thresholds(graph, self.name), "qcfs_lambda"
        return super().site_thresholds(graph, stats, ctx)

    def make_neuron(self, site: Site, theta: torch.Tensor) -> SpikingNeuron:
        s = self.settings
        return SRPNeuron(theta, s.presim, s.mask_tolerance, fuse=resolve_fuse(s.fuse))

    def make_network(self, net: nn.Module, coding: str, description: dict[str, Any]) -> SimulatedNetwork:
        return SRPNetwork(net, self.settings.presim, dict(description, presim=self.settings.presim))
