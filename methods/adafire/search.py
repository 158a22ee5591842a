"""AdaFire's two layer-wise searches (Wang et al., AAAI 2025, §3.3-3.4; docs/baseline-methods.md §4).

Both measure, one layer at a time on one calibration batch, how much the SNN's output
moves away from the ANN's (the *sensitivity*) and how many spikes the layer fires (the
*cost*) for each candidate setting of that layer, every other layer left as it is; then a
Pareto-frontier dynamic programme over the layers picks one candidate per layer:

* **Adaptive-Firing** (:func:`cap_sensitivity`): candidates are burst caps
  k ∈ [minspike, initialspike]; the sensitivity is the symmetric KL divergence between the
  SNN's and the ANN's softmax outputs. Selection: minimise Σ sensitivity subject to
  Σ spikes <= maxspike_ratio · Σ spikes at the desired cap.
* **Sensitivity Spike Compression, SSC** (:func:`threshold_sensitivity`): candidates scale
  the layer's thresholds by r ∈ {1.0, 1.5, ..., 10.0}. Selection with the roles swapped:
  minimise Σ spikes subject to Σ sensitivity <= threshold_ratio · Σ sensitivity at r = 1.

:func:`pareto_select` is the exact multiple-choice-knapsack frontier DP the paper
describes. The released code's default ``--method dp`` is not implemented there (only its
``pruning`` frontier is); this module implements the frontier, with three choices of ours,
each a fix of a quirk in the release: the budget uses the cost *at the desired cap* (the
release indexes the table as if minspike were 1), SSC's ratios are returned in layer order
(the release returns them reversed), and an infeasible budget falls back to the reference
choice (the release crashes on an empty frontier).

Calibration batches carry no labels, so the ``agreement`` metric (the release's
``accuracy``) is the drop in top-1 agreement with the ANN's own predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F

from snnbench.methods.adafire.burst import BurstNeuron
from snnbench.methods.base import SpikingModel

#: SSC's threshold ratios r ∈ {1.0, 1.5, ..., 10.0} (19 candidates, the release's ``arange(1, 10.1, 0.5)``)
SSC_RATIOS: tuple[float, ...] = tuple(1.0 + 0.5 * i for i in range(19))

Metric = Literal["kl", "agreement"]


def symmetric_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> float:
    """(KL(p‖q) + KL(q‖p))/2 of two batches of distributions, summed over classes and
    averaged over the batch (the release's ``symmetric_kl``); ``eps`` guards log(0)."""
    p, q = p.double().clamp_min(eps), q.double().clamp_min(eps)
    kl_pq = (p * (p / q).log()).sum() / p.shape[0]
    kl_qp = (q * (q / p).log()).sum() / q.shape[0]
    return float((kl_pq + kl_qp) / 2)


@dataclass
class _Node:
    cost: float
    loss: float
    choice: int
    parent: "_Node | None"


def pareto_select(loss: Sequence[Sequence[float]], cost: Sequence[Sequence[float]], budget: float
                  ) -> list[int] | None:
    """One candidate index per layer minimising Σ loss subject to Σ cost <= budget.

    ``loss[l][j]`` and ``cost[l][j]`` are layer l's values for candidate j. Layer by layer
    the DP extends every kept partial selection by every candidate and keeps the Pareto
    frontier: sorted by cost, a selection survives only if its loss is strictly below that
    of every cheaper one and its cost is within the budget (costs are non-negative, so a
    partial selection over budget can never become feasible). The frontier holds every
    optimal completion, so the result is the exact optimum. Returns None when no selection
    fits the budget.
    """
    if len(loss) != len(cost) or any(len(a) != len(b) for a, b in zip(loss, cost)):
        raise ValueError("loss and cost tables must have the same shape")
    frontier = [_Node(0.0, 0.0, -1, None)]
    for layer_loss, layer_cost in zip(loss, cost):
        grown = [_Node(n.cost + float(c), n.loss + float(s), j, n)
                 for n in frontier for j, (s, c) in enumerate(zip(layer_loss, layer_cost))]
        grown.sort(key=lambda n: (n.cost, n.loss))
        frontier = []
        for node in grown:
            if node.cost > budget:
                break
            if not frontier or node.loss < frontier[-1].loss:
                frontier.append(node)
        if not frontier:
            return None
    best = min(frontier, key=lambda n: n.loss)
    choices: list[int] = []
    while best.parent is not None:
        choices.append(best.choice)
        best = best.parent
    return choices[::-1]


# -- measurements ----------------------------------------------------------------------
def snn_mean_output(snn: SpikingModel, batch: torch.Tensor, T: int) -> torch.Tensor:
    """The SNN's output after T steps (mean of the per-step outputs, rate coding)."""
    out = None
    with torch.inference_mode():
        snn.reset()
        for out in snn.simulate(batch, T):
            pass
        snn.reset()
    if not isinstance(out, torch.Tensor):
        raise TypeError("AdaFire's searches need a tensor output (classification logits)")
    return out


class _UnitSpikeMeter:
    """Counts, per sample, the unit spikes (Σ k) one burst neuron fires while attached."""

    def __init__(self, neuron: BurstNeuron) -> None:
        self.neuron, self.total = neuron, None
        self._handle = neuron.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        theta = module.effective_theta(output)
        safe = torch.where(theta > 0, theta, torch.ones_like(theta))
        per_sample = (output / safe).reshape(output.shape[0], -1).sum(dim=1).double()
        self.total = per_sample if self.total is None else self.total + per_sample

    def close(self) -> None:
        self._handle.remove()


def sensitivity(snn_logits: torch.Tensor, ann_logits: torch.Tensor, metric: Metric) -> float:
    """Distance of the SNN's output from the ANN's: symmetric KL of the softmax outputs, or
    the drop in top-1 agreement with the ANN's predictions (1 - agreement)."""
    if metric == "kl":
        return symmetric_kl(F.softmax(snn_logits.float(), dim=1), F.softmax(ann_logits.float(), dim=1))
    if metric == "agreement":
        return float(1.0 - (snn_logits.argmax(1) == ann_logits.argmax(1)).float().mean())
    raise ValueError(f"metric must be 'kl' or 'agreement', got {metric!r}")


#: samples simulated together when candidates are batched (candidates x search batch)
BATCHED_SAMPLES = 1024


def layer_table(snn: SpikingModel, neurons: Sequence[BurstNeuron], batch: torch.Tensor, T: int,
                ann_logits: torch.Tensor, candidates: Sequence[float],
                apply: Callable[[BurstNeuron, torch.Tensor], Callable[[], None]], metric: Metric
                ) -> tuple[list[list[float]], list[list[float]]]:
    """Sensitivity and unit-spike cost of every (layer, candidate), one layer changed at a time.

    Candidates are evaluated side by side: the search batch is repeated once per candidate
    (in chunks of about :data:`BATCHED_SAMPLES` samples) and ``apply(neuron, values)`` gives
    the neuron a per-sample candidate value ``values`` (shape ``[samples, 1, ...]``),
    returning a function that restores it. Samples do not interact, so each copy of the
    batch is exactly the simulation with that candidate. Returns ``(loss[l][j], cost[l][j])``.
    """
    n = batch.shape[0]
    per_chunk = max(1, BATCHED_SAMPLES // max(n, 1))
    loss = [[0.0] * len(candidates) for _ in neurons]
    cost = [[0.0] * len(candidates) for _ in neurons]
    for l, neuron in enumerate(neurons):
        for first in range(0, len(candidates), per_chunk):
            chunk = list(candidates[first:first + per_chunk])
            g = len(chunk)
            values = torch.tensor(chunk, dtype=torch.float32, device=batch.device).repeat_interleave(n)
            restore = apply(neuron, values)
            meter = _UnitSpikeMeter(neuron)
            try:
                out = snn_mean_output(snn, batch.repeat(g, *([1] * (batch.ndim - 1))), T)
            finally:
                meter.close()
                restore()
            spikes = meter.total.reshape(g, n).sum(dim=1)
            for i in range(g):
                loss[l][first + i] = sensitivity(out[i * n:(i + 1) * n], ann_logits, metric)
                cost[l][first + i] = float(spikes[i])
    return loss, cost


def _set_cap(neuron: BurstNeuron, caps: torch.Tensor) -> Callable[[], None]:
    old = neuron.maxspike
    neuron.maxspike = caps  # one cap per sample, broadcast by the neuron

    def restore() -> None:
        neuron.maxspike = old
    return restore


def _scale_threshold(neuron: BurstNeuron, ratios: torch.Tensor) -> Callable[[], None]:
    neuron.sample_scale = ratios

    def restore() -> None:
        neuron.sample_scale = None
    return restore


@dataclass
class SearchReport:
    """What a search chose, for provenance."""

    choices: list[float]
    feasible: bool
    budget: float
    loss: float
    cost: float
    reference_cost: float

    def to_dict(self) -> dict:
        return {"choices": self.choices, "feasible": self.feasible, "budget": self.budget,
                "loss": self.loss, "cost": self.cost, "reference_cost": self.reference_cost}


def _report(loss, cost, candidates, picks, budget, reference_cost) -> SearchReport:
    chosen = [candidates[j] for j in picks]
    return SearchReport(chosen, True, budget, sum(loss[l][j] for l, j in enumerate(picks)),
                        sum(cost[l][j] for l, j in enumerate(picks)), reference_cost)


def search_caps(snn: SpikingModel, neurons: Sequence[BurstNeuron], batch: torch.Tensor, T: int,
                ann_logits: torch.Tensor, minspike: int, initialspike: int, desired: int, ratio: float
                ) -> SearchReport:
    """Adaptive-Firing: per-layer burst caps minimising Σ symmetric KL subject to
    Σ unit spikes <= ratio · Σ unit spikes with every layer at the desired cap.

    The caps are left unchanged on the neurons; apply ``report.choices`` yourself.
    Infeasible budgets fall back to the desired cap everywhere (``feasible=False``).
    """
    candidates = list(range(minspike, initialspike + 1))
    if desired not in candidates:
        raise ValueError(f"the desired cap {desired} must lie in [minspike, initialspike] = [{minspike}, {initialspike}]")
    loss, cost = layer_table(snn, neurons, batch, T, ann_logits, candidates, _set_cap, "kl")
    d = candidates.index(desired)
    reference_cost = sum(row[d] for row in cost)
    budget = ratio * reference_cost
    picks = pareto_select(loss, cost, budget)
    if picks is None:
        report = _report(loss, cost, candidates, [d] * len(neurons), budget, reference_cost)
        report.feasible = False
        return report
    return _report(loss, cost, candidates, picks, budget, reference_cost)


def search_threshold_ratios(snn: SpikingModel, neurons: Sequence[BurstNeuron], batch: torch.Tensor, T: int,
                            ann_logits: torch.Tensor, ratio: float, metric: Metric,
                            ratios: Sequence[float] = SSC_RATIOS) -> SearchReport:
    """SSC: per-layer threshold scales r minimising Σ unit spikes subject to
    Σ sensitivity <= ratio · Σ sensitivity at r = 1 (the first candidate).

    The thresholds are left unchanged; scale them by ``report.choices`` yourself.
    Infeasible budgets (e.g. the baseline sensitivity is zero and every scale costs some)
    fall back to r = 1 everywhere (``feasible=False``).
    """
    candidates = list(ratios)
    loss, cost = layer_table(snn, neurons, batch, T, ann_logits, candidates, _scale_threshold, metric)
    reference = sum(row[0] for row in loss)
    budget = ratio * reference
    # the frontier DP minimises its first table under a budget on its second: swap the roles
    picks = pareto_select(cost, loss, budget)
    ref_cost = sum(row[0] for row in cost)
    if picks is None:
        report = _report(loss, cost, candidates, [0] * len(neurons), budget, ref_cost)
        report.feasible = False
        return report
    return _report(loss, cost, candidates, picks, budget, ref_cost)
