"""``qcfs``: the QCFS conversion (Bu et al., "Optimal ANN-SNN Conversion for High-accuracy
and Ultra-low-latency SNNs", ICLR 2022; docs/baseline-methods.md §5). QCFS track only.

Every QCFS activation h(x) = λ·clip(floor(x·L/λ + 1/2)/L, 0, 1) of a QCFS-trained ANN
becomes an IF neuron with reset by subtraction, threshold θ = the layer's learned λ,
spike amplitude θ and initial potential v(0) = θ/2 (the shift term, which makes the
expected conversion error zero; the paper's Theorem 2). The analog image enters at every
step (direct input) and the output is the running mean of the last layer. The thresholds
come from the weights, so no calibration data is read.

A model without QCFS activations (a plain ReLU ANN) is refused with an error naming the
QCFS-track models; ``rate`` is the plain-ANN method with the same neuron.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from snnbench.common.activations import QCFS
from snnbench.methods.base import ConversionContext
from snnbench.methods.snn.engine import EngineMethod
from snnbench.methods.snn.fused import resolve_fuse
from snnbench.methods.snn.graph import NetworkGraph, Site, build_network_graph
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.stats import StatKind, Stats

#: what a plain-ANN user should run instead, and which models are QCFS-trained
QCFS_MODELS_HINT = ("QCFS-track models: vgg_small_qcfs, resnet_small_qcfs, qcfs/NAME with --weights (your QCFS "
                    "checkpoint); plain ReLU ANNs take rate, calibration or dcgs")


class NotQCFSModelError(ValueError):
    """The model has neuron sites that are not QCFS activations."""


def qcfs_modules(graph: NetworkGraph) -> dict[str, QCFS | None]:
    """Per activation site, its QCFS module (None where the site is a plain ReLU/ReLU6)."""
    out: dict[str, QCFS | None] = {}
    for site in graph.sites:
        module = graph.module.get_submodule(site.name) if site.kind == "activation" else None
        out[site.name] = module if isinstance(module, QCFS) else None
    return out


def is_qcfs_graph(graph: NetworkGraph) -> bool:
    """True when every neuron site of ``graph`` is a QCFS activation."""
    modules = qcfs_modules(graph)
    return bool(modules) and all(m is not None for m in modules.values())


def qcfs_site_thresholds(graph: NetworkGraph, method: str) -> dict[str, torch.Tensor]:
    """θ = λ of every site's QCFS activation; raises :class:`NotQCFSModelError` otherwise."""
    modules = qcfs_modules(graph)
    plain = [name for name, m in modules.items() if m is None]
    if not modules or plain:
        shown = ", ".join(plain[:5]) + (" ..." if len(plain) > 5 else "")
        raise NotQCFSModelError(f"method {method!r} takes thresholds from QCFS activations, but "
                                f"{'the model has no activation site' if not modules else 'these sites are plain ReLUs: ' + shown}. "
                                f"{QCFS_MODELS_HINT}")
    return {name: m.threshold().float().clamp_min(0).reshape(1) for name, m in modules.items()}  # type: ignore[union-attr]


def qcfs_if_neuron(theta: torch.Tensor, fuse: bool | None) -> SpikingNeuron:
    """The QCFS neuron: IF, reset by subtraction, v(0) = θ/2, unsigned, amplitude θ."""
    return SpikingNeuron(theta, rule="if", n=1, coding="rate", signed=False, floor=0.0, ceiling=None,
                         fuse=resolve_fuse(fuse), kernel="torch")


@dataclass(frozen=True)
class QCFSSettings:
    """QCFS has no free knob: the neuron, coding and thresholds are fixed by the paper.

    Attributes:
        fuse: compile the neuron step (as in the engine settings; empty = auto).
    """

    fuse: bool | None = None


class QCFSConversion(EngineMethod):
    """IF neurons with θ = λ and v(0) = θ/2 on a QCFS-trained ANN (Bu et al. 2022)."""

    name = "qcfs"
    version = "1"
    settings_cls = QCFSSettings  # type: ignore[assignment]
    uses_calibration_data = False
    tracks = ("qcfs",)

    def graph(self, model: nn.Module, example: torch.Tensor) -> NetworkGraph:
        return build_network_graph(model, example, "activations")

    def resolved(self, graph: NetworkGraph) -> dict[str, Any]:
        return {"placement": graph.placement, "threshold": "qcfs_lambda", "neuron": "if", "v0": "theta/2",
                "calibration": "none (thresholds are the learned QCFS lambda)", "track": "qcfs"}

    def coding(self) -> str:
        return "rate"

    def stat_kinds(self, model: nn.Module, ctx: ConversionContext) -> tuple[StatKind, ...]:
        return ()

    def site_thresholds(self, graph: NetworkGraph, stats: Stats, ctx: ConversionContext
                        ) -> tuple[dict[str, torch.Tensor], str]:
        return qcfs_site_thresholds(graph, self.name), "qcfs_lambda"

    def make_neuron(self, site: Site, theta: torch.Tensor) -> SpikingNeuron:
        return qcfs_if_neuron(theta, self.settings.fuse)
