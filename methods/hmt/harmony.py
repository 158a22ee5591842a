"""The Harmony Multi-Threshold (H-MT) neuron (Zhang, Huang, Bu, Huang and Yu, AAAI-26, §4.1).

**Basal neuron** (Eqs. 12-18). Thresholds λ_i = λ_min·2^(n-i), i = 1..n (λ_1 = 2^(n-1)·λ_min is the
largest), initial potential v[0] = λ_min/2. At each step the input is integrated once,
m_1 = v[t-1] + I[t], and the thresholds are visited from the largest to the smallest: sub-spike
s_i = 1 if m_i >= λ_i, and then m_{i+1} = m_i - λ_i·s_i (reset by subtraction after each sub-spike).
The step's output is x[t] = Σ λ_i·s_i and v[t] = m_1 - x[t]. With powers of two this greedy ladder
emits the binary digits of ⌊m_1/λ_min⌋ clipped to [0, 2^n - 1]: up to n binary sub-spikes per step,
one per threshold channel, and 2^n output values 0, λ_min, ..., (2^n - 1)·λ_min.

**H-MT neuron** (Fig. 1). A Pos and a Neg basal neuron receive u[t] and -u[t]; the output is
x_P[t] - x_N[t]. Optional **communication** (Eq. 21 as the released code applies it: after firing,
v_P += x_N and v_N += x_P) keeps v_P + v_N = λ_min (Lemma 4.1), so at most one half fires per step.
H-MT simulates y = x; at a ReLU the paper uses the Pos neuron alone ("replacing ReLU with the Pos
Neuron part of H-MT", §5.1).

The neuron is rate coded (the paper's and the released code's ``coding_type: rate``): the decoded
output after t steps is the running mean of x. Under its strong assumption (Eq. 19) that mean is
(λ_min/T)·clip(⌊(z·T + λ_min/2)/λ_min⌋, a, b) (Eq. 20) with a = 0 (Pos) or -(2^n - 1)T (H-MT) and
b = (2^n - 1)T, which is what the generalized threshold iteration optimises
(methods/snn/generalized_thresholds.py).

snnbench extension (not in the paper): a ReLU6 site caps the Pos neuron's output so that the
decoded output never exceeds the ceiling (the same "room" mask the MT neurons use): the ladder
fires λ_i only while both the remaining potential and the remaining room reach λ_i.
"""

from __future__ import annotations

from typing import Literal

import torch

from snnbench.methods.snn.units import StatefulUnit

Part = Literal["pos", "harmony"]


def basal_fire_reference(m: torch.Tensor, lambda_min: torch.Tensor, n: int, room: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The basal neuron's firing ladder (Eqs. 15-17), threshold by threshold, largest first.

    Args:
        m: potential after integration, m_1 = v[t-1] + I[t].
        lambda_min: λ_min (>= 0), broadcastable to ``m``; λ_min = 0 never fires.
        n: number of thresholds.
        room: optional cap on the step's output (fires λ_i only while the room left reaches λ_i).

    Returns:
        (x, count): the output Σ λ_i·s_i and the number of sub-spikes Σ s_i (int32), both shaped as ``m``.
    """
    lam = torch.as_tensor(lambda_min, dtype=m.dtype, device=m.device)
    live = lam > 0
    rest = m.clone()
    left = room.to(m.dtype).clone() if room is not None else None
    out = torch.zeros_like(m)
    count = torch.zeros(m.shape, dtype=torch.int32, device=m.device)
    for i in range(n):                        # λ_{i+1} = λ_min·2^(n-1-i): largest threshold first
        level = lam * 2 ** (n - 1 - i)
        fire = (rest >= level) & live
        if left is not None:
            fire &= left >= level
            left = left - torch.where(fire, level, torch.zeros_like(rest))
        spike = torch.where(fire, level, torch.zeros_like(rest)).expand_as(rest)
        rest = rest - spike
        out = out + spike
        count += fire.expand_as(rest).to(torch.int32)
    return out, count


class HarmonyNeuron(StatefulUnit):
    """The H-MT neuron (``part="harmony"``) or its Pos basal neuron alone (``part="pos"``), rate coded.

    Args:
        lambda_min: λ_min per element-broadcastable shape (e.g. ``[1, C, 1, 1]``).
        n: thresholds per basal neuron (λ_min·2^k, k < n).
        part: ``"pos"`` (ReLU: non-negative output) or ``"harmony"`` (Pos and Neg: y = x).
        communication: Eq. 21 between the halves (``harmony`` only).
        ceiling: cap of the decoded output (6 for ReLU6; ``pos`` only), None for none.

    Step t (v_P[0] = v_N[0] = λ_min/2):
        m_P = v_P + u;  x_P, k_P = ladder(m_P);  v_P = m_P - x_P
        m_N = v_N - u;  x_N, k_N = ladder(m_N);  v_N = m_N - x_N          (harmony)
        v_P += x_N;  v_N += x_P                                            (communication)
        emit x_P - x_N
    When ``count_spikes`` is set (the op counter does), ``last_counts`` holds [sub-spikes, unit
    spikes] of the step and ``last_subspikes`` the sub-spikes per element (k_P + k_N bits), which
    the counter uses as the events each element sends to the next layer (H-MT Eq. 32).
    """

    #: the op counter treats this unit's outputs as spikes (network.is_spiking)
    emits_spikes = True

    def __init__(self, lambda_min: torch.Tensor, n: int = 8, part: Part = "pos", communication: bool = True,
                 ceiling: float | None = None) -> None:
        super().__init__()
        if part not in ("pos", "harmony"):
            raise ValueError(f"H-MT part must be 'pos' or 'harmony', got {part!r}")
        if n < 1:
            raise ValueError(f"an H-MT neuron needs n >= 1 thresholds, got {n}")
        if ceiling is not None and part != "pos":
            raise ValueError("a ceiling (ReLU6) applies to the Pos neuron at an activation site only")
        self.register_buffer("lambda_min", torch.as_tensor(lambda_min, dtype=torch.float32).clamp_min(0))
        self.n, self.part, self.communication, self.ceiling = int(n), part, bool(communication), ceiling
        self.count_spikes = False
        self.last_counts: torch.Tensor | None = None
        self.last_subspikes: torch.Tensor | None = None
        self.last_output: torch.Tensor | None = None
        for name in ("v_pos", "v_neg", "c_out"):
            self.register_state(name)

    def extra_repr(self) -> str:
        return (f"n={self.n}, part={self.part}, communication={self.communication}, ceiling={self.ceiling}, "
                f"lambda_shape={tuple(self.lambda_min.shape)}")

    def unit_amplitude(self) -> torch.Tensor:
        """One unit spike is λ_min (the smallest threshold)."""
        return self.lambda_min

    def max_units_per_step(self) -> int:
        """The largest output of one step in units of λ_min: 2^n - 1 (all n sub-spikes)."""
        return 2**self.n - 1

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        self.t += 1
        lam = self.lambda_min.to(u.dtype)
        if self.v_pos is None:
            self.v_pos = (lam / 2).expand_as(u).clone()
            if self.part == "harmony":
                self.v_neg = (lam / 2).expand_as(u).clone()
            if self.ceiling is not None:
                self.c_out = torch.zeros_like(u)
        m_pos = self.v_pos + u
        room = None
        if self.ceiling is not None:
            room = (self.ceiling * self.t - self.c_out).clamp_min(0)
        x_pos, k_pos = basal_fire_reference(m_pos, lam, self.n, room)
        self.v_pos = m_pos - x_pos
        out, count = x_pos, k_pos
        if self.part == "harmony":
            m_neg = self.v_neg - u
            x_neg, k_neg = basal_fire_reference(m_neg, lam, self.n)
            self.v_neg = m_neg - x_neg
            if self.communication:
                self.v_pos = self.v_pos + x_neg
                self.v_neg = self.v_neg + x_pos
            out, count = x_pos - x_neg, k_pos + k_neg
        if self.c_out is not None:
            self.c_out = self.c_out + out
        if self.count_spikes:
            units = (x_pos + (x_neg if self.part == "harmony" else 0)) / lam.clamp_min(1e-30)
            self.last_subspikes = count
            self.last_output = out
            self.last_counts = torch.stack([count.sum().to(torch.int64), units.round().sum().to(torch.int64)])
        else:
            self.last_counts = self.last_subspikes = self.last_output = None
        return out
