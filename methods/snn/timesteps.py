"""Input-aware Adaptive Timesteps, IAT (Wang et al., AAAI 2025, §3.5; docs/baseline-methods.md §4).

After each step t a sample's confidence score is computed on its *cumulative* logits
z_t = Σ_{τ<=t} y_τ (the release sums the per-step outputs; with rate coding that is t times
the running-mean estimate):

    score_t = 1 - H(softmax(z_t)) / log C,

and the sample exits at the first t with score_t > thr_t (or at T). Its prediction from
then on is the one it exited with. Thresholds are fitted on calibration data as the
release's ``calculate_thresholds`` does: with m_t the mean *normalised entropy*
H(softmax(z_t))/log C of the correctly classified samples at step t,

    thr_t = 0.995 + 0.005 · exp(min_τ m_τ - m_t)

(1 where no sample is correct). Calibration batches carry no labels, so "correct" means
agreeing with the ANN's top-1 prediction (our choice; the release uses training labels).

:class:`AdaptiveTimestepNetwork` implements the exit with the harness's per-sample
``active`` protocol (methods/base.py): before computing frame t it sets ``active`` to the
samples that have not exited, the op counter counts only those samples' spikes and ops,
and the yielded output of an exited sample is frozen at its exit value, so every metric
at t is that of the exit policy truncated at t.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import torch

from snnbench.methods.base import Fairness
from snnbench.methods.snn.network import SimulatedNetwork

#: the release's threshold formula constants
THRESHOLD_FLOOR = 0.995
THRESHOLD_SPAN = 0.005


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits))/log C per row (0: one-hot, 1: uniform)."""
    logp = torch.log_softmax(logits.double(), dim=1)
    return -(logp.exp() * logp).sum(dim=1) / math.log(logits.shape[1])


def confidence_score(cumulative_logits: torch.Tensor) -> torch.Tensor:
    """1 - H(softmax(z))/log C per row: IAT's exit score."""
    return 1.0 - normalised_entropy(cumulative_logits)


def thresholds_from_entropies(mean_entropy: Sequence[float | None]) -> list[float]:
    """thr_t = 0.995 + 0.005·exp(min m - m_t); 1.0 where m_t is None (no correct sample)."""
    known = [m for m in mean_entropy if m is not None]
    if not known:
        return [1.0] * len(mean_entropy)
    low = min(known)
    return [1.0 if m is None else THRESHOLD_FLOOR + THRESHOLD_SPAN * math.exp(low - m) for m in mean_entropy]


def fit_exit_thresholds(snn: SimulatedNetwork, ann: torch.nn.Module, batches: Iterable[torch.Tensor], T: int
                        ) -> tuple[list[float], list[float | None]]:
    """Per-step thresholds from calibration batches (labels: the ANN's predictions).

    Returns the thresholds and the mean normalised entropies m_t they came from.
    """
    sums = [0.0] * T
    counts = [0] * T
    with torch.inference_mode():
        for batch in batches:
            labels = ann(batch).argmax(dim=1)
            snn.reset()
            for t, estimate in enumerate(snn.simulate(batch, T), start=1):
                z = estimate * t
                correct = z.argmax(dim=1) == labels
                sums[t - 1] += float(normalised_entropy(z)[correct].sum())
                counts[t - 1] += int(correct.sum())
            snn.reset()
    means = [s / c if c else None for s, c in zip(sums, counts)]
    return thresholds_from_entropies(means), means


class AdaptiveTimestepNetwork(SimulatedNetwork):
    """A rate-coded classification network with IAT's per-sample early exit."""

    def __init__(self, inner: SimulatedNetwork, thresholds: Sequence[float]) -> None:
        if inner.coding != "rate":
            raise ValueError("IAT sums rate-coded per-step outputs; the network must use rate coding")
        super().__init__(inner.net, coding=inner.coding, description=inner.describe())
        self.thresholds = [float(v) for v in thresholds]
        self.compile_frame = inner.compile_frame
        self._fairness = inner.fairness()

    def fairness(self) -> Fairness:
        """The wrapped network's: early exit changes the steps used, not what a step carries."""
        return self._fairness

    def simulate(self, x: torch.Tensor, T: int) -> Iterator[Any]:
        if T > len(self.thresholds):
            raise ValueError(f"IAT thresholds were fitted for T <= {len(self.thresholds)}, asked for T = {T}")
        exited = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        frozen: torch.Tensor | None = None
        for t, estimate in enumerate(self._stepped(x, T, exited), start=1):
            if not isinstance(estimate, torch.Tensor) or estimate.ndim != 2:
                raise TypeError("IAT needs classification logits [batch, classes]")
            out = estimate if frozen is None else torch.where(exited[:, None], frozen, estimate)
            yield out
            newly = ~exited & (confidence_score(estimate * t) > self.thresholds[t - 1])
            frozen = out.clone()
            exited |= newly

    def _stepped(self, x: torch.Tensor, T: int, exited: torch.Tensor) -> Iterator[Any]:
        """The plain simulation, with ``active`` set to the running samples before each frame."""
        inner = super().simulate(x, T)
        for _ in range(T):
            self.active = ~exited  # a copy: later exits do not rewrite the mask of this frame
            yield next(inner)

    def reset(self) -> None:
        super().reset()
        self.active = None

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["iat_thresholds"] = [round(v, 6) for v in self.thresholds]
        return out
