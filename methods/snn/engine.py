"""The conversion engine shared by the DCGS-family methods: settings -> statistics -> SNN.

A method plugin is a preset of :class:`EngineSettings` (``methods/dcgs.py``,
``methods/rate.py``); every field can be overridden with ``--set key=value``, so an
ablation (coding x threshold rule x neuron) is a setting, not new code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from snnbench.methods.base import ConversionContext, ConversionMethod, SpikingModel
from snnbench.methods.settings import SettingsError
from snnbench.methods.snn.fused import resolve_fuse
from snnbench.methods.snn.graph import NetworkGraph, Site, network_graph
from snnbench.methods.snn.network import SimulatedNetwork
from snnbench.methods.snn.stats import StatKind, Stats
from snnbench.methods.snn.thresholds import threshold_iteration
from snnbench.methods.snn.units import GradedUnit, ProductUnit, SpikingNeuron

#: the official code's hard-coded threshold scale c for transformers (dcgs.md §1.1)
TRANSFORMER_THRESHOLD_SCALE = 8.0


@dataclass(frozen=True)
class EngineSettings:
    """Settings of the spiking-conversion engine (all overridable from the CLI).

    Attributes:
        neuron: ``mt`` (multi-threshold, levels ±θ/2^k) or ``if`` (integrate-and-fire).
        n: MT levels per sign (DCGS default 8).
        coding: ``differential`` (DCGS) or ``rate``.
        threshold: ``iteration`` (DCGS Algorithm 1 on pre-activation mean/var),
            ``percentile``, ``max``, ``grid`` (SNN Calibration's MSE search) or ``auto``
            (iteration for CNNs, percentile for transformers: the official recipes).
        iteration_mode: ``official`` (θ_0 = 1, 100 steps, as released) or ``converged``.
        percentile: p of the percentile rule (99.9).
        percentile_scope: percentile over ``all`` values or ``nonzero`` values only.
        granularity: ``layer``, ``channel`` (feature axis), ``token`` (dim 1, the official
            code's "channel"), or ``auto`` (channel for CNNs, token for transformers).
        threshold_scale: c in θ = c·θ_rule; empty = auto (1 for CNNs, 8 for transformers,
            as the official code hard-codes).
        placement: neurons at ``activations`` (CNN recipe), at layer ``inputs``
            (transformer recipe), or ``auto``.
        fuse: compile each neuron step into one fused kernel with ``torch.compile``
            (identical spikes; pays a one-off compilation of ~10-30 s per process, then
            steps several times faster; see methods/snn/fused.py and BENCHMARKS.md).
            Empty = auto (the default): on when a C++ compiler is present and
            ``SNNBENCH_FUSE`` is not 0; any compilation failure falls back to eager.
        kernel: ``auto`` (the fused Triton MT kernel on CUDA tensors, PyTorch otherwise),
            ``torch`` or ``triton`` (force; on CPU only under ``TRITON_INTERPRET=1``).
    """

    neuron: Literal["mt", "if"] = "mt"
    n: int = 8
    coding: Literal["differential", "rate"] = "differential"
    threshold: Literal["auto", "iteration", "percentile", "max", "grid"] = "auto"
    iteration_mode: Literal["official", "converged"] = "official"
    percentile: float = 99.9
    percentile_scope: Literal["all", "nonzero"] = "all"
    granularity: Literal["auto", "layer", "channel", "token"] = "auto"
    threshold_scale: float | None = None
    placement: Literal["auto", "activations", "inputs"] = "auto"
    fuse: bool | None = None
    kernel: Literal["auto", "torch", "triton"] = "auto"

    def validate(self) -> None:
        if self.kernel == "triton" and self.neuron != "mt":
            raise SettingsError("kernel=triton implements the MT neuron; use neuron=mt or kernel=torch")
        if self.n < 1 or self.n > 24:
            raise SettingsError(f"n must be between 1 and 24, got {self.n}")
        if not 0 < self.percentile <= 100:
            raise SettingsError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.threshold_scale is not None and self.threshold_scale <= 0:
            raise SettingsError(f"threshold_scale must be positive, got {self.threshold_scale}")

    def levels_for_iteration(self, T: int) -> int:
        """N of threshold iteration / grid search: T·2^n for MT neurons, T for IF (dcgs.md §3.3)."""
        return T * 2**self.n if self.neuron == "mt" else T


class EngineMethod(ConversionMethod[EngineSettings]):
    """A method that is a preset of the engine settings."""

    settings_cls = EngineSettings

    # -- resolution of "auto" settings -----------------------------------------------
    def graph(self, model: nn.Module, example: torch.Tensor) -> NetworkGraph:
        return network_graph(model, example, self.settings.placement)

    def resolved(self, graph: NetworkGraph) -> dict[str, Any]:
        s = self.settings
        transformer = graph.placement == "inputs"
        granularity = s.granularity if s.granularity != "auto" else ("token" if transformer else "channel")
        scale = s.threshold_scale if s.threshold_scale is not None else (
            TRANSFORMER_THRESHOLD_SCALE if transformer else 1.0)
        rule = s.threshold if s.threshold != "auto" else ("percentile" if transformer else "iteration")
        return {"placement": graph.placement, "granularity": granularity, "threshold_scale": scale,
                "threshold": rule}

    def _stat_kind(self, graph: NetworkGraph, T: int) -> StatKind:
        s, r = self.settings, self.resolved(graph)
        common = dict(granularity=r["granularity"], placement=graph.placement)
        if r["threshold"] == "percentile":
            return StatKind("percentile", p=s.percentile, scope=s.percentile_scope, **common)
        if r["threshold"] == "max":
            return StatKind("max", **common)
        if r["threshold"] == "grid":
            return StatKind("mse_grid", levels=s.levels_for_iteration(T), **common)
        if graph.placement != "activations":
            raise SettingsError("threshold=iteration models ReLU pre-activations and needs neurons at activations; "
                                "transformer placement (inputs) takes threshold=percentile (the official recipe)")
        return StatKind("moments", **common)

    def stat_kinds(self, model: nn.Module, ctx: ConversionContext) -> tuple[StatKind, ...]:
        return (self._stat_kind(self.graph(model, ctx.example), ctx.T),)

    # -- conversion ----------------------------------------------------------------------
    def site_threshold(self, site: Site, stats: Stats, kind: StatKind, T: int, scale: float) -> torch.Tensor:
        s = self.settings
        values = stats.site(kind, site.name)
        if kind.quantity == "moments":
            theta = threshold_iteration(values["mean"], values["var"], s.levels_for_iteration(T), s.iteration_mode)
        else:
            theta = values["value"]
        return (scale * theta.float()).clamp_min(0)

    def make_neuron(self, site: Site, theta: torch.Tensor) -> SpikingNeuron:
        s = self.settings
        if site.kind == "activation":
            # differential coding needs negative spikes to correct its running estimate;
            # rate-coded MT neurons use them as the official baseline does (MTH_with_neg)
            signed = s.coding == "differential" or s.neuron == "mt"
            return SpikingNeuron(theta, rule=s.neuron, n=s.n, coding=s.coding, signed=signed, floor=site.floor,
                                 ceiling=site.ceiling, fuse=resolve_fuse(s.fuse), kernel=self._kernel())
        return SpikingNeuron(theta, rule=s.neuron, n=s.n, coding=s.coding, signed=True, floor=None, ceiling=None,
                             fuse=resolve_fuse(s.fuse), kernel=self._kernel())

    def _kernel(self) -> str:
        return "torch" if self.settings.neuron != "mt" else self.settings.kernel

    def convert(self, model: nn.Module, stats: Stats, ctx: ConversionContext) -> SpikingModel:
        snn, _, _ = self.build(model, stats, ctx)
        return snn

    def build(self, model: nn.Module, stats: Stats, ctx: ConversionContext
              ) -> tuple[SimulatedNetwork, NetworkGraph, dict[str, str]]:
        """The converted network, the graph it came from and the module path of each site's neuron."""
        if ctx.example is None:
            raise ValueError("conversion needs an example input (ConversionContext.example)")
        graph = self.graph(model, ctx.example)
        resolved = self.resolved(graph)
        kind = self._stat_kind(graph, ctx.T)
        thetas = {site.name: self.site_threshold(site, stats, kind, ctx.T, resolved["threshold_scale"])
                  for site in graph.sites}
        coding = self.settings.coding
        def graded(node, fn, positions, label):
            if graph.kinds[node.name] == "product":
                return ProductUnit(fn, positions, coding=coding, label=label)
            return GradedUnit(fn, positions, coding=coding, label=label)

        net, unit_paths = graph.instantiate(site_unit=lambda site: self.make_neuron(site, thetas[site.name]),
                                            graded_unit=graded)
        zero_sites = sum(int((t == 0).all()) for t in thetas.values())
        description = {"method": self.name, **resolved, "sites": len(graph.sites), "silent_sites": zero_sites,
                       "statistic": kind.key(),
                       "theta_mean": float(torch.stack([t.float().mean() for t in thetas.values()]).mean())
                       if thetas else 0.0}
        snn = SimulatedNetwork(net.eval(), coding=coding, description=description).to(ctx.device)
        return snn, graph, unit_paths
