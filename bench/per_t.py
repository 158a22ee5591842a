"""The per-t rows of a cell result: the metric and the counts at every t = 1..T.

Two sources, one row layout (the contract of :mod:`snnbench.record`):

* :func:`simulated_rows`: a converted SNN's simulation, metric at the scored steps and op
  counts at every step, every energy convention of :mod:`snnbench.energy` from the same raw
  counts;
* :func:`reference_rows`: the static ANN reference (a method whose ``reference`` flag is
  set, :class:`snnbench.methods.base.ConversionMethod`): the cached ANN evaluation at every
  t, one frame of latency, no spikes, the dense MACs, energy ratio 1 under every convention.
"""

from __future__ import annotations

from typing import Any

from snnbench.energy import ENERGY_MODELS, EnergyInputs, EnergyModel, all_ratios, ratio_key


def reference_rows(ann: dict[str, Any], metric: str, T: int) -> dict[str, dict[str, Any]]:
    """Rows of the ANN reference from its cached evaluation (``metrics``, ``dense_macs``)."""
    row = {"metric": ann["metrics"][metric], **ann["metrics"], "latency": 1, "spikes_per_sample": 0.0,
           "unit_spikes_per_sample": 0.0, "synops_per_sample": 0.0, "macs_per_sample": ann["dense_macs"],
           "energy_ratio": 1.0, **{ratio_key(name): 1.0 for name in ENERGY_MODELS}}
    return {str(t): dict(row) for t in range(1, T + 1)}


def simulated_rows(metrics: dict[int, dict[str, float]], summary, fairness, energy: EnergyModel,
                   ann_dense_macs: float, metric: str, T: int) -> dict[str, dict[str, Any]]:
    """Rows of a simulated SNN: ``metrics`` per scored t, ``summary`` the op counter's (cumulative per t)."""
    raw = EnergyInputs(layers=summary.layers, neuron_updates=summary.neuron_updates, ann_dense_macs=ann_dense_macs,
                       T=T)
    rows = {}
    for t in range(1, T + 1):
        m = metrics.get(t, {})  # a t outside eval_ts: counts only, metric None
        acs, macs = summary.acs[t - 1], summary.macs[t - 1]
        rows[str(t)] = {"metric": m.get(metric), **m, "latency": fairness.latency(t),
                        "spikes_per_sample": summary.events[t - 1],
                        "unit_spikes_per_sample": summary.unit_spikes[t - 1],
                        "synops_per_sample": acs, "macs_per_sample": macs,
                        "neuron_updates_per_sample": summary.neuron_updates[t - 1],
                        "steps_per_sample": summary.steps[t - 1],
                        "energy_ratio": energy.ratio(acs, macs, ann_dense_macs),
                        # the official DCGS convention: every op priced as an AC
                        "energy_ratio_all_ac": energy.ratio(acs + macs, 0.0, ann_dense_macs),
                        # every named convention from the same raw counts (snnbench.energy)
                        **all_ratios(raw, t)}
    return rows


__all__ = ["reference_rows", "simulated_rows"]
