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
from snnbench.methods.snn import input_norm
from snnbench.methods.snn.fused import resolve_fuse
from snnbench.methods.snn.generalized_thresholds import generalized_threshold_iteration
from snnbench.methods.snn.graded import GradedUnit, ProductUnit
from snnbench.methods.snn.graph import NetworkGraph, Site, network_graph
from snnbench.methods.snn.network import SimulatedNetwork
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.stats import StatKind, Stats
from snnbench.methods.snn.thresholds import threshold_iteration

#: the official code's hard-coded threshold scale c for transformers (docs/dcgs-official-code.md §1.1)
TRANSFORMER_THRESHOLD_SCALE = 8.0


def check_threshold_rule_settings(percentile: float, threshold_scale: float | None) -> None:
    """The checks every engine-style settings class shares: the percentile rule's p in (0, 100]
    and a positive threshold scale c (empty = auto)."""
    if not 0 < percentile <= 100:
        raise SettingsError(f"percentile must be in (0, 100], got {percentile}")
    if threshold_scale is not None and threshold_scale <= 0:
        raise SettingsError(f"threshold_scale must be positive, got {threshold_scale}")


@dataclass(frozen=True)
class EngineSettings:
    """Settings of the spiking-conversion engine (all overridable from the CLI).

    Attributes:
        neuron: ``mt`` (multi-threshold, levels ±θ/2^k) or ``if`` (integrate-and-fire).
        n: MT levels per sign (DCGS default 8).
        coding: ``differential`` (DCGS) or ``rate``.
        threshold: ``iteration`` (DCGS Algorithm 1 on pre-activation mean/var),
            ``percentile``, ``max``, ``grid`` (SNN Calibration's MSE search), ``hmt_iteration``
            (H-MT's generalized iteration, AAAI-26 Eq. 29: the same objective with levels
            0..N at ReLU sites and -N..N at signed input sites, so it also serves transformer
            placement) or ``auto`` (iteration for CNNs, percentile for transformers: the
            official recipes).
        iteration_mode: ``official`` (θ_0 = 1, 100 steps, as released) or ``converged``.
        percentile: p of the percentile rule (99.9).
        percentile_scope: percentile over ``all`` values or ``nonzero`` values only.
        granularity: ``layer``, ``channel`` (feature axis), ``token`` (dim 1, the official
            code's "channel"), or ``auto`` (channel for CNNs, token for transformers).
        threshold_scale: c in θ = c·θ_rule; empty = auto (1 for CNNs, 8 for transformers,
            as the official code hard-codes).
        placement: neurons at ``activations`` (CNN recipe), at layer ``inputs``
            (transformer recipe), or ``auto``.
        fuse: compile each neuron step into one fused kernel with ``torch.compile``, and the
            element-wise parts of each graded/product unit's step (and a product's op count)
            into in-place kernels on CPU (identical spikes and outputs; pays a one-off
            compilation of ~10-30 s per process, then steps several times faster; see
            methods/snn/fused.py, methods/snn/graded_kernels.py and BENCHMARKS.md).
            Empty = auto (the default): on when a C++ compiler is present and
            ``SNNBENCH_FUSE`` is not 0; any compilation failure falls back to eager.
        compile_frame: run every frame after the first as **one compiled graph** of the whole
            network (methods/snn/frame.py: the converted graph with each unit's functional step,
            one ``torch.compile`` per input shape, t a tensor input), so inductor fuses across
            units (LayerNorm, softmax, GELU, products and neurons of a transformer block) instead
            of dispatching each small op. Identical outputs and unit states to the per-unit path
            (tested); a one-off compilation per input shape; used only while nothing watches single
            modules (with the op counter attached, counting on, and under SNN Calibration's or
            AdaFire's probes the per-unit path runs) and only for graphs whose units all have a
            functional step (H-MT, AdaFire's burst and SRP's neurons keep the per-unit path).
            Off by default (opt-in): it compiles for ~35-40 s per input shape (vit_mini) and
            took ~20 % off a counting-off vit_mini simulation (BENCHMARKS.md §8), and a cell's
            counted simulation never uses it; a compilation failure falls back to the per-unit
            path with one warning.
        kernel: ``auto`` (the fused Triton MT kernel on CUDA tensors, PyTorch otherwise),
            ``torch`` or ``triton`` (force; on CPU only under ``TRITON_INTERPRET=1``).
        if_v_init: IF initial potential ``half`` (θ/2) or ``zero`` (SpikingJelly's default).
        if_negative: signed IF negative spike at ``below_zero`` (v < 0) or
            ``at_or_below_zero`` (v <= 0, the official DCGS code).
        input_percentile_of: at layer-input sites (transformer recipe), the percentile of
            ``abs`` (|x|, default) or ``signed`` x (the official code's ``quantile(x)``).
    """

    neuron: Literal["mt", "if"] = "mt"
    n: int = 8
    coding: Literal["differential", "rate"] = "differential"
    threshold: Literal["auto", "iteration", "percentile", "max", "grid", "hmt_iteration"] = "auto"
    iteration_mode: Literal["official", "converged"] = "official"
    percentile: float = 99.9
    percentile_scope: Literal["all", "nonzero"] = "all"
    granularity: Literal["auto", "layer", "channel", "token"] = "auto"
    threshold_scale: float | None = None
    placement: Literal["auto", "activations", "inputs"] = "auto"
    fuse: bool | None = None
    compile_frame: bool = False
    kernel: Literal["auto", "torch", "triton"] = "auto"
    if_v_init: Literal["half", "zero"] = "half"
    if_negative: Literal["below_zero", "at_or_below_zero"] = "below_zero"
    input_percentile_of: Literal["abs", "signed"] = "abs"

    def validate(self) -> None:
        if self.kernel == "triton" and self.neuron != "mt":
            raise SettingsError("kernel=triton implements the MT neuron; use neuron=mt or kernel=torch")
        if self.n < 1 or self.n > 24:
            raise SettingsError(f"n must be between 1 and 24, got {self.n}")
        check_threshold_rule_settings(self.percentile, self.threshold_scale)

    def levels_for_iteration(self, T: int) -> int:
        """N of threshold iteration / grid search: T·2^n for MT neurons, T for IF
        (docs/dcgs-official-code.md §3.3)."""
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
            return StatKind("percentile", p=s.percentile, scope=s.percentile_scope,
                            input_value=s.input_percentile_of, **common)
        if r["threshold"] == "max":
            return StatKind("max", **common)
        if r["threshold"] == "grid":
            return StatKind("mse_grid", levels=s.levels_for_iteration(T), **common)
        if graph.placement != "activations" and r["threshold"] != "hmt_iteration":
            raise SettingsError("threshold=iteration models ReLU pre-activations and needs neurons at activations; "
                                "transformer placement (inputs) takes threshold=percentile (the official recipe) "
                                "or threshold=hmt_iteration (levels -N..N)")
        return StatKind("moments", **common)

    def stat_kinds(self, model: nn.Module, ctx: ConversionContext) -> tuple[StatKind, ...]:
        return (self._stat_kind(self.graph(model, ctx.example), ctx.T),)

    # -- conversion ----------------------------------------------------------------------
    def site_threshold(self, site: Site, stats: Stats, kind: StatKind, T: int, scale: float) -> torch.Tensor:
        s = self.settings
        values = stats.site(kind, site.name)
        if kind.quantity == "moments" and s.threshold == "hmt_iteration":
            N = s.levels_for_iteration(T)
            a = 0 if site.kind == "activation" else -N
            theta = generalized_threshold_iteration(values["mean"], values["var"], N, a, N, s.iteration_mode)
        elif kind.quantity == "moments":
            theta = threshold_iteration(values["mean"], values["var"], s.levels_for_iteration(T), s.iteration_mode)
        else:
            theta = values["value"]
            if site.ceiling is not None:
                # a statistic of the clipped output (ReLU6, QCFS's λ) cannot exceed the clip; on
                # CUDA torch.quantile over values all equal to the clip can return it plus one ulp,
                # and an IF threshold one ulp above the ceiling never fires at t = 1 (its ceiling
                # room is then below θ): every output stays silent (10 % top-1 seen on an H200)
                theta = theta.clamp(max=site.ceiling)
        return (scale * theta.float()).clamp_min(0)

    def make_neuron(self, site: Site, theta: torch.Tensor) -> SpikingNeuron:
        s = self.settings
        if site.kind == "activation":
            # differential coding needs negative spikes to correct its running estimate;
            # rate-coded MT neurons use them as the official baseline does (MTH_with_neg)
            signed = s.coding == "differential" or s.neuron == "mt"
            return SpikingNeuron(theta, rule=s.neuron, n=s.n, coding=s.coding, signed=signed, floor=site.floor,
                                 ceiling=site.ceiling, fuse=resolve_fuse(s.fuse), kernel=self._kernel(),
                                 if_v_init=s.if_v_init, if_negative=s.if_negative)
        return SpikingNeuron(theta, rule=s.neuron, n=s.n, coding=s.coding, signed=True, floor=None, ceiling=None,
                             fuse=resolve_fuse(s.fuse), kernel=self._kernel(), if_v_init=s.if_v_init,
                             if_negative=s.if_negative)

    def compile_frame(self) -> bool:
        """Whether the network runs its frames after the first as one compiled graph (the
        ``compile_frame`` setting; off by default)."""
        return bool(getattr(self.settings, "compile_frame", False))

    def _kernel(self) -> str:
        return "torch" if self.settings.neuron != "mt" else self.settings.kernel

    #: the spiking model class :meth:`build` returns
    network_cls: type[SimulatedNetwork] = SimulatedNetwork

    def coding(self) -> str:
        """The coding the converted network runs (a setting of the engine presets)."""
        return self.settings.coding

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
        thetas, statistic = self.site_thresholds(graph, stats, ctx)
        coding = self.coding()
        fuse = resolve_fuse(getattr(self.settings, "fuse", False))  # settings without the option: eager

        def graded(node, fn, positions, label):
            if graph.kinds[node.name] == "product":
                return ProductUnit(fn, positions, coding=coding, label=label, fuse=fuse)
            return GradedUnit(fn, positions, coding=coding, label=label, fuse=fuse)

        net, unit_paths = graph.instantiate(site_unit=lambda site: self.make_neuron(site, thetas[site.name]),
                                            graded_unit=graded)
        zero_sites = sum(int((t == 0).all()) for t in thetas.values())
        description = {"method": self.name, **resolved, "sites": len(graph.sites), "silent_sites": zero_sites,
                       "statistic": statistic,
                       "theta_mean": float(torch.stack([t.float().mean() for t in thetas.values()]).mean())
                       if thetas else 0.0}
        if fuse and not self.compile_frame():  # conv -> BatchNorm -> neuron: the neuron's native step normalises
            input_norm.install(net, SpikingNeuron)
        snn = self.make_network(net.eval(), coding, description).to(ctx.device)
        snn.compile_frame = self.compile_frame()
        return snn, graph, unit_paths

    def site_thresholds(self, graph: NetworkGraph, stats: Stats, ctx: ConversionContext
                        ) -> tuple[dict[str, torch.Tensor], str]:
        """θ of every neuron site and the name of the statistic it came from (methods with
        thresholds of their own, such as QCFS's learned λ, override this)."""
        kind = self._stat_kind(graph, ctx.T)
        scale = self.resolved(graph)["threshold_scale"]
        return {site.name: self.site_threshold(site, stats, kind, ctx.T, scale) for site in graph.sites}, kind.key()

    def make_network(self, net: nn.Module, coding: str, description: dict[str, Any]) -> SimulatedNetwork:
        """The spiking model around the converted graph (SRP substitutes its pre-simulating network)."""
        return self.network_cls(net, coding=coding, description=description)
