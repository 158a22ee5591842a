"""AdaFire's burst (multi-spike) neuron (Wang, Fang, Cao, Ren, Xu, "A Unified Conversion
Framework of Spiking Neural Networks", AAAI 2025, arXiv 2412.16219, §3.2; docs/baseline-methods.md §4).

Rate coding, reset by subtraction, at most ``maxspike`` spikes per step (a burst), all of
amplitude θ. Per step t = 1..T of a simulation of length T (the official ``SpikeModule``):

    v ← v + x + θ/(2T)          (the input shift: over T steps it adds θ/2, i.e. rounding)
    k = clamp(floor(v/θ), 0, K) (K = the layer's cap ``maxspike``)
    v ← v - k·θ
    output k·θ

so the mean output after T steps is the burst-aware floor quantiser
floor(clip(a/θ, 0, K)·T)·θ/T of a constant input a (shifted by half a step). A burst of k
spikes is *k unit spikes* (``unit_amplitude`` = θ) and *one event* (one non-zero output):
the op counter reports both (bench/counting.py). The official energy model counts events.

The neuron subclasses :class:`SpikingNeuron` so SNN Calibration's bias correction
(methods/calibration/correction.py), the network's count plan and spike-source tracing treat it
like any other spiking neuron.
"""

from __future__ import annotations

import math

import torch

from snnbench.methods.base import Fairness
from snnbench.methods.snn.network import SimulatedNetwork
from snnbench.methods.snn.neurons import SpikingNeuron

#: the official input shift, as a fraction of θ spread over the T steps of a simulation
OFFICIAL_SHIFT = 0.5


class BurstNeuron(SpikingNeuron):
    """AdaFire neuron: integrate, fire up to ``maxspike`` spikes of amplitude θ, subtract.

    Args:
        theta: threshold θ, broadcastable to the input (``[1, C, 1, 1]`` channel-wise).
        maxspike: the layer's burst cap K (>= 1; K = 1 is an IF neuron with a θ/(2T) shift).
        sim_length: T of the simulation, which sets the per-step shift θ·shift/T.
        shift: fraction of θ added over the T steps (0.5 in the official code).
    """

    def __init__(self, theta: torch.Tensor, maxspike: int, sim_length: int, shift: float = OFFICIAL_SHIFT) -> None:
        super().__init__(theta, rule="if", n=1, coding="rate", signed=False, floor=0.0, ceiling=None,
                         fuse=False, kernel="torch")
        if maxspike < 1:
            raise ValueError(f"a burst neuron needs maxspike >= 1, got {maxspike}")
        if sim_length < 1:
            raise ValueError(f"a burst neuron needs sim_length >= 1, got {sim_length}")
        self.maxspike = int(maxspike)
        self.sim_length = int(sim_length)
        self.shift = float(shift)
        self.needs_rooms = False
        #: per-sample threshold scale (``[batch]``), set only while a search evaluates candidates
        self.sample_scale: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return (f"maxspike={self.maxspike}, sim_length={self.sim_length}, shift={self.shift}, "
                f"theta_shape={tuple(self.theta.shape)}")

    def unit_amplitude(self) -> torch.Tensor:
        """One unit spike is θ: a burst k·θ counts k unit spikes."""
        return self.theta

    def initial_potential(self, like: torch.Tensor) -> torch.Tensor:
        """v(0) = 0 (the shift plays the role of IF's θ/2), unless potential correction set it."""
        if self.v_init is not None:
            return self.v_init.to(like.dtype).expand_as(like).clone()
        return torch.zeros_like(like)

    def _per_sample(self, value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A ``[batch]`` vector shaped to broadcast over ``x`` (one value per sample)."""
        return value.reshape((-1,) + (1,) * (x.ndim - 1)).to(x.dtype)

    def effective_theta(self, x: torch.Tensor) -> torch.Tensor:
        """θ, times the per-sample scale a search may set (``sample_scale``, ``[batch]``)."""
        theta = self.theta.to(x.dtype)
        if self.sample_scale is not None:
            theta = theta * self._per_sample(self.sample_scale, x)
        return theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_bias is not None:
            x = x + self.input_bias
        self.t += 1
        self.last_counts = None
        if self.v is None:
            self.v = self.initial_potential(x)
        theta = self.effective_theta(x)
        live = theta > 0
        safe = torch.where(live, theta, torch.ones_like(theta))
        v = self.v + x + self.shift / self.sim_length * theta
        k = torch.floor(v / safe).clamp_(min=0)
        if isinstance(self.maxspike, torch.Tensor):  # per-sample caps (the cap search's batched candidates)
            k = torch.minimum(k, self._per_sample(self.maxspike, x))
        else:
            k = k.clamp_(max=self.maxspike)
        k = torch.where(live, k, torch.zeros_like(k))  # a silent channel (θ = 0) never fires
        out = k * theta
        self.v = v - out
        return out


class BurstNetwork(SimulatedNetwork):
    """A rate-coded network of :class:`BurstNeuron` s; its fairness figures are the caps."""

    def burst_neurons(self) -> list[BurstNeuron]:
        return [m for m in self.net.modules() if isinstance(m, BurstNeuron)]

    def fairness(self) -> Fairness:
        """max spikes per step = the largest layer cap K; levels = log2(K + 1) ({0..K}·θ)."""
        caps = [int(n.maxspike) for n in self.burst_neurons()] or [1]
        cap = max(caps)
        return Fairness(frames_before_readout=0, levels_per_step=math.log2(cap + 1), max_spikes_per_step=cap)

    def describe(self) -> dict:
        out = super().describe()
        out["maxspike_per_layer"] = [n.maxspike for n in self.burst_neurons()]
        return out
