"""SNN Calibration's training-free corrections (Li et al., ICML 2021; baselines.md §2).

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

Each site needs one simulation of T steps of the whole network on the batch, so the
cost is (sites x T) forward passes of one batch.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from snnbench.methods.snn.graph import NetworkGraph, Site
from snnbench.methods.snn.network import SimulatedNetwork
from snnbench.methods.snn.units import SpikingNeuron


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


def calibrate_network(snn: SimulatedNetwork, graph: NetworkGraph, unit_paths: dict[str, str], batch: torch.Tensor,
                      T: int, mode: Literal["bias", "potential"]) -> dict[str, float]:
    """Apply bias or potential correction, site by site; returns the mean |error| before/after
    of the last site corrected, per site (for provenance and tests)."""
    if snn.coding != "rate":
        raise ValueError("SNN Calibration's corrections assume rate coding (set coding=rate)")
    targets = ann_activations(graph, batch)
    report: dict[str, float] = {}
    for site in graph.sites:
        neuron = snn.net.get_submodule(unit_paths[site.name])
        if not isinstance(neuron, SpikingNeuron):  # pragma: no cover - sites always hold neurons
            continue
        ann = targets[site.name]
        rate = mean_rate(snn, neuron, batch, T)
        if mode == "bias":
            delta = _reduce(rate, site, "channel") - _reduce(ann, site, "channel")
            current = neuron.input_bias if neuron.input_bias is not None else torch.zeros_like(delta)
            neuron.set_corrections(input_bias=current - delta)
        else:
            delta = _reduce(ann, site, "neuron") - _reduce(rate, site, "neuron")
            base = neuron.initial_potential(delta)
            neuron.set_corrections(v_init=base + delta * T)
        report[site.name] = float((_reduce(rate, site, "channel") - _reduce(ann, site, "channel")).abs().mean())
    snn.reset()
    return report
