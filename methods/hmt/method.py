"""``hmt``: Harmony Multi-Threshold neurons with the generalized threshold iteration (Zhang, Huang,
Bu, Huang and Yu, "Generalized Threshold Optimization with Harmony Multi-Threshold Neurons for
Accurate ANN-to-SNN Conversion", AAAI-26; code github.com/faizwh/H-MT).

Recipe (paper §4-5 and the released ``*_test_channel_hmt.yaml`` configs):

* rate coding (the analog image at every step, output = running mean; no bias pass);
* every ReLU becomes the **Pos** basal neuron of H-MT (thresholds λ_min·2^k, k < n, visited largest
  first, up to n binary sub-spikes per step, v[0] = λ_min/2; methods/hmt/harmony.py); signed sites
  (transformer placement, y = x) get the full H-MT neuron, with the communication mechanism
  (Eq. 21) unless ``communication=false``;
* channel-wise λ_min from the generalized threshold iteration (Eq. 29, Algorithm 1) on the
  pre-activation mean/variance, with N = T and levels 0..T(2^n - 1) (ReLU) or ±T(2^n - 1) (y = x),
  the range of the neuron's rate-coded output (Eq. 20). ``iteration_mode=converged`` (default)
  iterates to the fixed point, which the tests check against brute-force minimisation;
  ``official`` is the released code's truncation (θ_0 = 1, 1500 updates), which for large
  b = T(2^n - 1) barely leaves θ_0: for x ~ N(0, 1), n = 8, T = 8 the released float32 update
  gives λ_min ≈ 1.0 against the optimum 0.0197 (the code's comment mentions a commented-out
  normalisation θ_0 = T/(b - a) used "to overcome extreme cases"), so the published n = 8 rows
  may have used another start.
* ``threshold=percentile`` is the paper's "999" rule: λ_min = c·(99.9th percentile)/(2^n - 1)
  (the released code multiplies by a further 2: c = 2, the paper's "9992").

Counting: each sub-spike is one event on its own threshold channel and reaches the whole fan-out
(Eq. 32), so synaptic operations are Σ sub-spikes x fan-out; unit spikes are in λ_min units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx as fx

from snnbench.methods.base import CountPlan, Fairness
from snnbench.methods.hmt.harmony import HarmonyNeuron
from snnbench.methods.settings import SettingsError
from snnbench.methods.snn.engine import EngineMethod, check_threshold_rule_settings
from snnbench.methods.snn.generalized_thresholds import generalized_threshold_iteration
from snnbench.methods.snn.graph import NetworkGraph, Site
from snnbench.methods.snn.network import POOL_MODULES, RESHAPE_METHODS, RESHAPE_MODULES, SimulatedNetwork
from snnbench.methods.snn.stats import StatKind, Stats


@dataclass(frozen=True)
class HMTSettings:
    """H-MT settings (all overridable with ``--set``).

    Attributes:
        n: thresholds per basal neuron (paper: 4 and 8; 8 is its best row).
        threshold: ``hmt_iteration`` (paper's "Opt"), ``percentile`` (its "999") or ``max``.
        iteration_mode: ``converged`` (Algorithm 1 to its fixed point) or ``official`` (θ_0 = 1,
            1500 updates, as released).
        percentile, percentile_scope: the percentile rule's p and scope.
        granularity: ``channel`` (paper), ``layer``, ``token`` or ``auto`` (channel for CNNs,
            token for transformers).
        threshold_scale: c in λ_min = c·λ_rule; empty = 1.
        placement: ``activations`` (CNNs: Pos neuron at every ReLU), ``inputs`` (transformers:
            H-MT in front of every linear layer) or ``auto``.
        communication: the Pos/Neg communication of Eq. 21 in full H-MT neurons.
    """

    n: int = 8
    threshold: Literal["hmt_iteration", "percentile", "max"] = "hmt_iteration"
    iteration_mode: Literal["official", "converged"] = "converged"
    percentile: float = 99.9
    percentile_scope: Literal["all", "nonzero"] = "all"
    granularity: Literal["auto", "layer", "channel", "token"] = "auto"
    threshold_scale: float | None = None
    placement: Literal["auto", "activations", "inputs"] = "auto"
    communication: bool = True

    def validate(self) -> None:
        if not 1 <= self.n <= 16:
            raise SettingsError(f"n must be between 1 and 16, got {self.n}")
        check_threshold_rule_settings(self.percentile, self.threshold_scale)

    def top_level(self, T: int) -> int:
        """b of Eq. 20: the largest rate-coded output after T steps, in units of λ_min/T."""
        return T * (2**self.n - 1)


class HMTNetwork(SimulatedNetwork):
    """A rate-coded network of H-MT neurons; counts each sub-spike as one event (Eq. 32)."""

    def _harmony_neurons(self) -> list[HarmonyNeuron]:
        return [m for m in self.net.modules() if isinstance(m, HarmonyNeuron)]

    def fairness(self) -> Fairness:
        """Rate coding (no frame before readout); a Pos neuron sends one of 2^n values per step
        (n bits, up to n sub-spikes), a full H-MT neuron one of 2^(n+1) - 1; at most 2^n - 1 units
        of λ_min per step."""
        neurons = self._harmony_neurons()
        if not neurons:
            return Fairness()
        values = max((2 ** (m.n + 1) - 1) if m.part == "harmony" else 2**m.n for m in neurons)
        return Fairness(frames_before_readout=0, levels_per_step=math.log2(values),
                        max_spikes_per_step=max(m.max_units_per_step() for m in neurons))

    def count_plan(self) -> CountPlan:
        plan = super().count_plan()
        gm = self.net
        sources: dict[str, list[HarmonyNeuron]] = {}
        unresolved: set[str] = set()
        for node in gm.graph.nodes:
            if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
                continue
            neuron = subspike_source(gm, node.args[0])
            if neuron is not None:
                sources.setdefault(node.target, []).append(neuron)
            else:
                unresolved.add(node.target)
        uncounted = []
        for site in plan.connections:
            if site.input_kind != "spike" or site.op == "product":
                continue
            neurons = sources.get(site.name)
            if not neurons or site.name in unresolved:
                uncounted.append(site.name)  # spikes through cat/permute: one event per non-zero element
                continue
            site.input_events = _SubspikeLookup(site.name, neurons)
        self._description["subspikes_uncounted_layers"] = uncounted
        return plan

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        neurons = self._harmony_neurons()
        out.update(hmt_neurons={"pos": sum(m.part == "pos" for m in neurons),
                                "harmony": sum(m.part == "harmony" for m in neurons)},
                   max_subspikes_per_step=max((m.n * (2 if m.part == "harmony" else 1) for m in neurons), default=0))
        return out


class _SubspikeLookup:
    """Per-element sub-spike counts of the H-MT neuron whose output a layer (or pool) reads.

    A layer may be shared by several neurons (detection heads run one conv per pyramid level), so
    the neuron is matched by storage: the layer's input is the neuron's output or a reshaped view
    of it, which shares its data pointer.
    """

    def __init__(self, layer: str, neurons: list[HarmonyNeuron]) -> None:
        self.layer, self.neurons = layer, neurons

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for neuron in self.neurons:
            out, counts = getattr(neuron, "last_output", None), neuron.last_subspikes
            if out is not None and counts is not None and out.data_ptr() == x.data_ptr() and out.numel() == x.numel():
                return counts.reshape(x.shape)
        raise RuntimeError(f"layer {self.layer}: no sub-spike counts from the H-MT neuron feeding it this frame")


def subspike_source(gm: fx.GraphModule, node: fx.Node) -> HarmonyNeuron | None:
    """The H-MT neuron feeding ``node`` through reshapes and at most one average pool, else None."""
    pool_seen = False
    for _ in range(64):
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, HarmonyNeuron):
                return module
            if isinstance(module, POOL_MODULES) and not pool_seen:
                pool_seen = True
            elif not isinstance(module, RESHAPE_MODULES):
                return None
        elif node.op == "call_method" and node.target in RESHAPE_METHODS:
            pass
        elif node.op == "call_function" and getattr(node.target, "__name__", "") in ("flatten", "reshape"):
            pass
        else:
            return None
        if not node.args or not isinstance(node.args[0], fx.Node):
            return None
        node = node.args[0]
    return None


class HMT(EngineMethod):
    """H-MT (AAAI-26): Pos/Neg multi-threshold neurons, rate coding, generalized threshold iteration."""

    name = "hmt"
    version = "1"
    settings_cls = HMTSettings
    network_cls = HMTNetwork

    def coding(self) -> str:
        return "rate"

    def resolved(self, graph: NetworkGraph) -> dict[str, Any]:
        s = self.settings
        transformer = graph.placement == "inputs"
        granularity = s.granularity if s.granularity != "auto" else ("token" if transformer else "channel")
        scale = s.threshold_scale if s.threshold_scale is not None else 1.0
        return {"placement": graph.placement, "granularity": granularity, "threshold_scale": scale,
                "threshold": s.threshold, "iteration_mode": s.iteration_mode, "communication": s.communication}

    def _stat_kind(self, graph: NetworkGraph, T: int) -> StatKind:
        s, r = self.settings, self.resolved(graph)
        common = dict(granularity=r["granularity"], placement=graph.placement)
        if s.threshold == "percentile":
            return StatKind("percentile", p=s.percentile, scope=s.percentile_scope, **common)
        if s.threshold == "max":
            return StatKind("max", **common)
        return StatKind("moments", **common)

    def site_threshold(self, site: Site, stats: Stats, kind: StatKind, T: int, scale: float) -> torch.Tensor:
        """λ_min of one site: Eq. 29 iterated (N = T, levels a..b of Eq. 20) or rule value/(2^n - 1)."""
        s = self.settings
        values = stats.site(kind, site.name)
        if kind.quantity == "moments":
            b = s.top_level(T)
            a = 0 if self._part(site) == "pos" else -b
            lam = generalized_threshold_iteration(values["mean"], values["var"], T, a, b, s.iteration_mode)
        else:
            lam = values["value"].float() / (2**s.n - 1)
        return (scale * lam.float()).clamp_min(0)

    @staticmethod
    def _part(site: Site) -> str:
        return "pos" if site.kind == "activation" and site.floor is not None else "harmony"

    def make_neuron(self, site: Site, theta: torch.Tensor) -> HarmonyNeuron:
        s = self.settings
        part = self._part(site)
        return HarmonyNeuron(theta, n=s.n, part=part, communication=s.communication,
                             ceiling=site.ceiling if part == "pos" else None)
