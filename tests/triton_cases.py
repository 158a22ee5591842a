"""Bit-exactness cases of the Triton MT kernel against the PyTorch path.

Run by tests/test_triton_kernel.py in a subprocess with ``TRITON_INTERPRET=1`` (the
interpreter must be on before the kernel is defined). Exits non-zero on any mismatch.
"""

from __future__ import annotations

import itertools
import os
import sys

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from snnbench.counting import OpCounter  # noqa: E402
from snnbench.methods.base import CountPlan, NeuronSite, SpikingModel  # noqa: E402
from snnbench.methods.snn.neurons import SpikingNeuron  # noqa: E402


def tricky_frames(theta: torch.Tensor, shape: tuple[int, ...], n: int, steps: int, gen: torch.Generator):
    """Random frames plus exact boundary ties, dead-zone values, zeros and saturation."""
    frames = []
    for step in range(steps):
        x = torch.randn(shape, generator=gen) * theta * 1.3
        flat = x.view(-1)
        k = torch.randint(0, n + 1, (flat.numel(),), generator=gen)
        tie = 0.75 * theta.expand(shape).reshape(-1) / 2.0**k
        pick = torch.rand(flat.numel(), generator=gen)
        flat[pick < 0.15] = tie[pick < 0.15] * torch.sign(flat[pick < 0.15] + 1e-9)
        flat[(pick >= 0.15) & (pick < 0.2)] = 0.0
        flat[(pick >= 0.2) & (pick < 0.25)] *= 10  # saturation
        frames.append(x if step % 2 == 0 else x.transpose(-1, -2).contiguous().transpose(-1, -2))
    return frames


class Holder(SpikingModel):
    def __init__(self, neuron):
        super().__init__()
        self.neuron = neuron

    def reset(self):
        self.neuron.reset()

    def simulate(self, x, T):  # pragma: no cover - not used
        raise NotImplementedError

    def count_plan(self):
        return CountPlan(neurons=[NeuronSite("n", self.neuron, unit=self.neuron.unit_amplitude)])


def run_case(coding: str, n: int, shape: tuple[int, ...], signed: bool, floor, ceiling, theta_kind: str,
             seed: int) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    if theta_kind == "layer":
        theta = torch.tensor(0.8)
    elif theta_kind == "dead-channel":
        theta = torch.rand((1, shape[1]) + (1,) * (len(shape) - 2), generator=gen) + 0.2
        theta.view(-1)[0] = 0.0
    else:
        theta = torch.rand((1, shape[1]) + (1,) * (len(shape) - 2), generator=gen) * 2 + 0.05
    steps = 7
    frames = tricky_frames(theta, shape, n, steps, gen)
    results = {}
    for kernel in ("torch", "triton"):
        neuron = SpikingNeuron(theta, rule="mt", n=n, coding=coding, signed=signed, floor=floor, ceiling=ceiling,
                               kernel=kernel)
        holder = Holder(neuron)
        spikes = []
        with OpCounter(holder, T=steps) as counter:
            for t, x in enumerate(frames):
                holder.frame = t if coding == "differential" else t + 1
                spikes.append(neuron(x))
            counter.add_samples(1)
        summary = counter.summary()
        state = {k: getattr(neuron, k) for k in ("v", "e_in", "e_out", "c_out")}
        results[kernel] = (spikes, state, summary.events, summary.unit_spikes)
    problems = []
    ref, got = results["torch"], results["triton"]
    label = f"{coding} n={n} shape={shape} signed={signed} floor={floor} ceiling={ceiling} theta={theta_kind}"
    for t, (a, b) in enumerate(zip(ref[0], got[0])):
        if not torch.equal(a, b):
            problems.append(f"{label}: spikes differ at step {t} ({int((a != b).sum())} elements)")
    for key, a in ref[1].items():
        b = got[1][key]
        if (a is None) != (b is None) or (a is not None and not torch.equal(a, b)):
            problems.append(f"{label}: state {key} differs")
    if ref[2] != got[2] or ref[3] != got[3]:
        problems.append(f"{label}: counts differ (events {ref[2]} vs {got[2]}, units {ref[3]} vs {got[3]})")
    return problems


def main() -> int:
    problems: list[str] = []
    shapes = [(2, 3, 5, 7), (1, 4, 33), (3, 5)]
    variants = [("differential", True, 0.0, None), ("differential", True, None, None),
                ("differential", True, 0.0, 6.0), ("rate", True, 0.0, None), ("rate", False, 0.0, None),
                ("rate", True, None, None), ("rate", True, 0.0, 6.0)]
    seed = 0
    for (coding, signed, floor, ceiling), n, shape in itertools.product(variants, (1, 4, 8), shapes):
        for theta_kind in ("layer", "channel", "dead-channel"):
            seed += 1
            problems += run_case(coding, n, shape, signed, floor, ceiling, theta_kind, seed)
    for p in problems:
        print(p)
    print(f"{seed} cases, {len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
