"""Leaderboard plots as PNG files (matplotlib's object API with the Agg canvas: no pyplot,
no global backend switch, safe in threads and notebooks).

* :func:`plot_metric_vs_T`: metric against t for one model, one line per SNN row (band:
  ± one standard deviation over seeds), the ANN and 99 %-of-ANN levels dashed.
* :func:`plot_metric_vs_latency`: the same curves against latency, the frames actually
  simulated up to each readout step (pre-simulation and bias frames included).
* :func:`plot_pareto`: metric against energy ratio at the chosen T for every SNN row of a
  task, the Pareto front drawn as a line; ANN references at ratio 1 as grey crosses.
* :func:`plot_layer_spikes`: spikes per sample of each neuron layer of one cell at a T
  (events, and unit spikes where multi-level neurons make them differ).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from snnbench.leaderboard.rows import Rows
from snnbench.leaderboard.tables import PERCENT, REACH_FRACTION, TaskTable

log = logging.getLogger(__name__)

DPI = 100
_MARKERS = "osD^vP*Xh<>"
_LINESTYLES = ("-", "--", "-.", ":")


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return path


def plot_metric_vs_T(rows: Rows, task: str, model: str, path: Path) -> Path:
    """Metric (%) against t for the rows of (task, model)."""
    block = rows.of_task(task)
    block = block[block["model"] == model]
    fig = _figure()
    ax = fig.add_subplot()
    T_max = int(block["T_max"].max())
    seen: dict[str, int] = {}
    for i, (_, row) in enumerate(block[~block["reference"]].iterrows()):
        color = f"C{i % 10}"
        style = _LINESTYLES[seen.get(row["method"], 0) % len(_LINESTYLES)]   # rows of a method: other dashes
        seen[row["method"]] = seen.get(row["method"], 0) + 1
        curve = rows.curve(row["row_id"])
        curve = curve[curve["metric"].notna()]  # t outside a cell's eval_ts has no metric
        t = curve["t"].to_numpy()
        y = curve["metric"].to_numpy(dtype=float) * PERCENT
        ax.plot(t, y, marker="o", markersize=3, color=color, linestyle=style, label=row["label"])
        sd = curve["metric_sd"].to_numpy(dtype=float) * PERCENT
        if np.isfinite(sd).any():
            ax.fill_between(t, y - np.nan_to_num(sd), y + np.nan_to_num(sd), color=color, alpha=0.15, linewidth=0)
    ann = float(block["ann"].iloc[0]) * PERCENT
    ax.axhline(ann, color="0.3", linestyle="--", linewidth=1, label=f"ANN {ann:.2f}")
    ax.axhline(ann * REACH_FRACTION, color="0.6", linestyle=":", linewidth=1,
               label=f"{REACH_FRACTION:.0%} of ANN")
    _finish_metric_axes(ax, block, f"{task} / {model}", T_max, "time-steps t", "T")
    return _save(fig, path)


def _finish_metric_axes(ax, block, where: str, top: int, xlabel: str, versus: str) -> None:
    """The shared decoration of the metric-curve plots: a log2 x axis ticked at powers of two up
    to ``top`` (and ``top`` itself), the metric (%) on y, title, grid and legend."""
    ax.set_xscale("log", base=2)
    ticks = [2 ** k for k in range(int(np.log2(top)) + 1)] + ([top] if top & (top - 1) else [])
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel(xlabel)
    metric = str(block["metric_name"].iloc[0])
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{where}: {metric} vs {versus}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def plot_metric_vs_latency(rows: Rows, task: str, model: str, path: Path) -> Path:
    """Metric (%) against latency (frames simulated up to each readout step) for the rows of
    (task, model): SRP's curve starts at 1 + τ, differential coding's at 2."""
    block = rows.of_task(task)
    block = block[block["model"] == model]
    fig = _figure()
    ax = fig.add_subplot()
    seen: dict[str, int] = {}
    top = 1
    for i, (_, row) in enumerate(block[~block["reference"]].iterrows()):
        style = _LINESTYLES[seen.get(row["method"], 0) % len(_LINESTYLES)]
        seen[row["method"]] = seen.get(row["method"], 0) + 1
        curve = rows.curve(row["row_id"])
        latency = curve["latency"].to_numpy(dtype=float)
        y = curve["metric"].to_numpy(dtype=float) * PERCENT
        top = max(top, int(np.nanmax(latency)) if latency.size else 1)
        ax.plot(latency, y, marker="o", markersize=3, color=f"C{i % 10}", linestyle=style, label=row["label"])
    ann = float(block["ann"].iloc[0]) * PERCENT
    ax.axhline(ann, color="0.3", linestyle="--", linewidth=1, label=f"ANN {ann:.2f}")
    _finish_metric_axes(ax, block, f"{task} / {model}", top, "latency: frames simulated up to the readout step",
                        "latency")
    return _save(fig, path)


def plot_pareto(table: TaskTable, path: Path) -> Path:
    """Metric against energy ratio at the chosen T; the Pareto front of the SNN rows."""
    frame = table.frame
    metric_col = f"metric_pct_T{table.chosen_T}"
    fig = _figure(6.8, 4.6)
    ax = fig.add_subplot()
    models = list(dict.fromkeys(frame["model"]))
    methods = list(dict.fromkeys(frame.loc[~frame["reference"], "method"]))
    snn = frame[~frame["reference"] & frame[metric_col].notna() & frame["energy_ratio"].notna()]
    for _, rec in snn.iterrows():
        ax.scatter(rec["energy_ratio"], rec[metric_col], color=f"C{methods.index(rec['method']) % 10}",
                   marker=_MARKERS[models.index(rec["model"]) % len(_MARKERS)], s=40, zorder=3,
                   edgecolors="black" if rec["pareto"] else "none")
    labels: dict[tuple[float, float], list[str]] = {}
    for _, rec in snn.iterrows():   # one annotation per point, rows at the same place joined
        text = rec["row"] + (f" ({rec['model']})" if len(models) > 1 else "")
        labels.setdefault((float(rec["energy_ratio"]), float(rec[metric_col])), []).append(text)
    for (x, y), texts in labels.items():
        ax.annotate(" / ".join(texts), (x, y), fontsize=6, xytext=(4, 3), textcoords="offset points")
    front = snn[snn["pareto"]].sort_values("energy_ratio")
    if not front.empty:
        ax.plot(front["energy_ratio"], front[metric_col], color="black", linewidth=1, drawstyle="steps-post",
                label="Pareto front", zorder=2)
    ref = frame[frame["reference"]]
    if not ref.empty:
        ax.scatter(ref["energy_ratio"], ref["ann_metric_pct"], marker="x", color="0.5", label="ANN reference")
    for method in methods:
        ax.scatter([], [], color=f"C{methods.index(method) % 10}", label=method)
    if len(models) > 1:
        for model in models:
            ax.scatter([], [], color="0.4", marker=_MARKERS[models.index(model) % len(_MARKERS)], label=model)
    ax.set_xlabel(f"energy ratio E_SNN/E_ANN at T={table.chosen_T} (lower is better)")
    ax.set_ylabel(f"{table.metric_name} (%) at T={table.chosen_T} (higher is better)")
    ax.set_title(f"{table.task}: {table.metric_name} vs energy ({table.energy_label})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def layer_values(layers: list[dict[str, Any]], t: int) -> tuple[pd.DataFrame, int | None]:
    """Per neuron layer: events and unit spikes per sample at ``t`` (or the last t recorded).

    Returns the frame and the t actually used (None when no neuron layer has counts).
    """
    out, used = [], None
    for layer in layers:
        if layer.get("type") != "neuron":
            continue
        spikes = [v for v in (layer.get("spikes") or [])]
        units = [v for v in (layer.get("unit_spikes") or [])]
        if len(spikes) >= t and spikes[t - 1] is not None:
            at = t
        else:
            known = [i + 1 for i, v in enumerate(spikes) if v is not None]
            if not known:
                continue
            at = known[-1]
        used = at if used is None else min(used, at)
        out.append({"layer": layer.get("layer"), "spikes": float(spikes[at - 1]),
                    "unit_spikes": float(units[at - 1]) if len(units) >= at and units[at - 1] is not None
                    else np.nan})
    return pd.DataFrame(out, columns=["layer", "spikes", "unit_spikes"]), used


def plot_layer_spikes(layers: list[dict[str, Any]], t: int, title: str, path: Path) -> Path | None:
    """Bars of spikes per sample per neuron layer; None when the cell has no neuron layer counts."""
    values, used = layer_values(layers, t)
    if values.empty:
        return None
    fig = _figure(max(6.4, 0.5 * len(values) + 2), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(values))
    show_units = values["unit_spikes"].notna().any() and not np.allclose(
        values["unit_spikes"].fillna(values["spikes"]), values["spikes"])
    width = 0.4 if show_units else 0.7
    ax.bar(x - (width / 2 if show_units else 0), values["spikes"], width, label="spike events", color="C0")
    if show_units:
        ax.bar(x + width / 2, values["unit_spikes"], width, label="unit spikes", color="C1")
    ax.set_xticks(x, values["layer"], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(f"spikes per sample (cumulative to t={used})")
    suffix = "" if used == t else f" (counts recorded only at t={used})"
    ax.set_title(f"{title}, t={used}{suffix}", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
