"""SNN Calibration's training-free corrections (Li et al., ICML 2021; docs/baseline-methods.md §2).

After conversion (rate coding, IF neurons), the mean output of each neuron layer over T
steps differs from the ANN activation it replaces (clipping above θ, quantisation, and
the errors of the layers before it). Layer by layer, front to back, with the layers
before already corrected, on one calibration batch:

* **bias correction** (light calibration): per channel,
  δ = E_{N,H,W}[SNN_T / T] - E_{N,H,W}[ANN], and the layer's bias becomes b - δ; here the
  correction is added to the neuron's input at every step, which is the same thing for
  the affine layer feeding it (and also works after a residual add);
* **potential correction**: per neuron, v(0) = θ/2 + (E_N[ANN] - E_N[SNN_T / T])·T, a full
  tensor the size of the feature map (so the input size must not change).

Each site needs the site's neuron output over T steps with the sites before it corrected.
The reference path (:func:`calibrate_network_reference`) runs one T-step simulation of the
whole network per site: (sites x T) forward passes. :func:`calibrate_network` runs the
network once, in segments: the graph is cut just before each site's neuron; the values
that cross a cut (the neuron's input and any skip connection) are kept for all T steps,
and the next segment (that neuron, now corrected, up to the next site's neuron) runs T
steps from them. A feed-forward network of stateful units may be stepped unit by unit
instead of frame by frame (each unit's state depends only on its own input history), so
the corrections are identical; the cost is about one T-step simulation, plus T copies of
the values crossing one cut in memory (``max_cached_bytes``; when exceeded, that segment
falls back to re-running the prefix from the input).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn

from snnbench.methods.snn.graph import NetworkGraph, Site
from snnbench.methods.snn.network import SimulatedNetwork
from snnbench.methods.snn.neurons import SpikingNeuron


class _Recorder(nn.Module):
    """Stands in for an activation and keeps its ANN output."""

    def __init__(self, site: Site, store: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.site, self.store = site, store

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.site
        # the ANN value the site's neuron stands for: the activation's range (ReLU: floor 0,
        # ReLU6: also ceiling 6); a signed input site (transformer placement) is the identity
        post = x if s.floor is None and s.ceiling is None else x.clamp(min=s.floor, max=s.ceiling)
        self.store[s.name] = post.detach()
        return post


def ann_activations(graph: NetworkGraph, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ANN output of every activation site on ``batch``."""
    store: dict[str, torch.Tensor] = {}
    recorder, _ = graph.instantiate(site_unit=lambda site: _Recorder(site, store), graded_unit=None)
    device = batch.device
    recorder.to(device).eval()
    with torch.inference_mode():
        recorder(batch)
    return store


def mean_rate(snn: SimulatedNetwork, neuron: SpikingNeuron, batch: torch.Tensor, T: int) -> torch.Tensor:
    """The neuron's decoded output after T steps (mean spike value), per element."""
    total: list[torch.Tensor] = []

    def hook(module, args, output):
        total.append(output.detach() if not total else total.pop() + output.detach())

    handle = neuron.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            snn.reset()
            for _ in snn.simulate(batch, T):
                pass
    finally:
        handle.remove()
    return total[0] / T


def _reduce(x: torch.Tensor, site: Site, per: Literal["channel", "neuron"]) -> torch.Tensor:
    """Mean over the batch (``neuron``) or over everything but the feature axis (``channel``)."""
    if per == "neuron":
        return x.mean(dim=0, keepdim=True)
    axis = site.feature_dim % x.ndim if x.ndim > 1 else 0
    dims = tuple(d for d in range(x.ndim) if d != axis)
    return x.mean(dim=dims, keepdim=True)


def _correct(neuron: SpikingNeuron, site: Site, ann: torch.Tensor, rate: torch.Tensor, T: int,
             mode: Literal["bias", "potential"]) -> float:
    """Install one site's correction from its ANN target and SNN rate; returns the |error| before."""
    if mode == "bias":
        delta = _reduce(rate, site, "channel") - _reduce(ann, site, "channel")
        current = neuron.input_bias if neuron.input_bias is not None else torch.zeros_like(delta)
        neuron.set_corrections(input_bias=current - delta)
    else:
        delta = _reduce(ann, site, "neuron") - _reduce(rate, site, "neuron")
        base = neuron.initial_potential(delta)
        neuron.set_corrections(v_init=base + delta * T)
    return float((_reduce(rate, site, "channel") - _reduce(ann, site, "channel")).abs().mean())


def _check_rate(snn: SimulatedNetwork) -> None:
    if snn.coding != "rate":
        raise ValueError("SNN Calibration's corrections assume rate coding (set coding=rate)")


def calibrate_network_reference(snn: SimulatedNetwork, graph: NetworkGraph, unit_paths: dict[str, str],
                                batch: torch.Tensor, T: int, mode: Literal["bias", "potential"]) -> dict[str, float]:
    """Site by site, one whole-network T-step simulation each (sites x T forward passes).

    The straightforward form of the correction pass, kept as the reference that
    :func:`calibrate_network` is tested against.
    """
    _check_rate(snn)
    targets = ann_activations(graph, batch)
    report: dict[str, float] = {}
    for site in graph.sites:
        neuron = snn.net.get_submodule(unit_paths[site.name])
        if not isinstance(neuron, SpikingNeuron):  # pragma: no cover - sites always hold neurons
            continue
        rate = mean_rate(snn, neuron, batch, T)
        report[site.name] = _correct(neuron, site, targets[site.name], rate, T, mode)
    snn.reset()
    return report


#: default memory budget for the values kept at one cut (all T steps)
MAX_CACHED_BYTES = 2 * 2**30


def calibrate_network(snn: SimulatedNetwork, graph: NetworkGraph, unit_paths: dict[str, str], batch: torch.Tensor,
                      T: int, mode: Literal["bias", "potential"],
                      max_cached_bytes: int = MAX_CACHED_BYTES) -> dict[str, float]:
    """Apply bias or potential correction, site by site, simulating each segment once.

    Same corrections as :func:`calibrate_network_reference` (see the module docstring);
    returns, per site, the mean |error| before its correction (for provenance and tests).
    """
    _check_rate(snn)
    gm = snn.net
    nodes = [n for n in gm.graph.nodes]
    index = {n: i for i, n in enumerate(nodes)}
    neuron_node = {n.target: n for n in nodes if n.op == "call_module"}
    order = []
    for site in graph.sites:
        neuron = gm.get_submodule(unit_paths[site.name])
        if isinstance(neuron, SpikingNeuron):
            order.append((index[neuron_node[unit_paths[site.name]]], site, neuron))
    if [i for i, _, _ in order] != sorted(i for i, _, _ in order):
        # sites not in graph order: the reference visits them as listed
        return calibrate_network_reference(snn, graph, unit_paths, batch, T, mode)
    targets = ann_activations(graph, batch)
    last_use = {n: max((index[u] for u in n.users), default=index[n]) for n in nodes}
    runner = fx.Interpreter(gm)
    # the graph's inputs: the frame, and any further argument at its default (as gm(frame) does)
    inputs = {n: (batch if i == 0 else (n.args[0] if n.args else None))
              for i, n in enumerate(n for n in nodes if n.op == "placeholder")}
    # frames[t]: the values crossing the current cut at step t (rate coding: the input every step)
    frames: list[dict[fx.Node, Any]] | None = None
    start = 0  # first node of the current segment
    report: dict[str, float] = {}
    with torch.inference_mode():
        for end, site, neuron in order:
            if frames is None:  # segment from the input (first site, or after the memory fallback)
                frames = [dict(inputs) for _ in range(T)]
                start = 0
            snn.reset()  # every unit of this segment starts from t = 0 (earlier ones are done)
            keep_next: list[dict[fx.Node, Any]] = []
            crossing = [n for n in nodes[:end] if last_use[n] >= end]
            total: torch.Tensor | None = None
            for t in range(T):
                env = dict(frames[t])
                runner.env = env
                for node in nodes[start:end]:
                    if node.op != "placeholder":
                        env[node] = runner.run_node(node)
                keep_next.append({n: env[n] for n in crossing})
                out = runner.run_node(nodes[end]).detach()
                total = out if total is None else total + out
                runner.env = {}
            rate = total / T
            report[site.name] = _correct(neuron, site, targets[site.name], rate, T, mode)
            frames, start = keep_next, end
            if _cached_bytes(frames) > max_cached_bytes:
                frames = None
    snn.reset()
    return report


def _cached_bytes(frames: list[dict[fx.Node, Any]]) -> int:
    """Memory held by the kept values (a tensor kept at several steps is counted once)."""
    seen: dict[int, int] = {}
    for frame in frames:
        for value in frame.values():
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                seen[id(value)] = value.numel() * value.element_size()
    return sum(seen.values())
