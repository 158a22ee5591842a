"""Leaderboard tables as numbers: per task, the ablation pivots, and the failed cells.

Every table here is a pandas frame of raw values (metrics in percent) plus column
descriptions; :mod:`snnbench.leaderboard.document` formats them once for HTML and Markdown, and
the CSV files hold the same values unformatted.

Semantics:

* Metric columns: the SNN metric at each T of the task (powers of two up to each row's
  T_max, T_max itself and the chosen T), mean over seeds.
* ``t_to_99pct_ann``: the smallest t whose (mean) metric reaches 99 % of the ANN metric,
  searched over every simulated t; blank when never reached.
* Spikes, synaptic operations and energy ratio are per sample, cumulative up to the
  chosen T (default: the largest T every row of the task reached).
* ``95% CI @T``: the 95 % interval of a single cell's metric at the chosen T (Wilson on
  classification, an image bootstrap on mAP/mIoU; ``metric_pct_T<t>_ci95_lo/hi`` in the
  CSV for every T column); a row over several seeds shows mean ± sd instead.
* ``rank group @T``: rows of one model not significantly different at the chosen T share a
  group (paired tests on the saved per-sample outcomes, Holm-adjusted;
  :mod:`snnbench.leaderboard.ties`); "1 (tied)" marks a tie for the best, and the chosen-T
  metric's best mark goes to the whole of group 1.
* Best values are marked per column among the SNN rows of the same model (the ANN
  reference row is never ranked); ties are all marked; a model with a single SNN row gets
  no marks.
* The Pareto front (metric higher is better, energy ratio lower is better, at the chosen
  T) is taken over all SNN rows of the task and track.
* Tracks: rows on QCFS-trained ANNs (``track == "qcfs"``) get a table of their own per task,
  with their own ANN reference; they never enter a plain-track ranking, mark or front.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from snnbench.leaderboard.data import Results
from snnbench.leaderboard.rows import Rows, natural_key
from snnbench.leaderboard.ties import group_text, rank_groups

log = logging.getLogger(__name__)

#: task metrics are fractions (the task protocol); tables show percent, like the papers
PERCENT = 100.0
#: "reaches the ANN" threshold of the T-to-accuracy column
REACH_FRACTION = 0.99
_REL_TOL = 1e-9


@dataclass(frozen=True)
class Column:
    """One table column: CSV name, display header, value kind, ranking direction."""

    key: str
    header: str
    kind: str = "text"          # text | pct | count | ratio | int | flag
    better: str | None = None   # "max", "min" or None (not ranked)
    sd_key: str | None = None   # column holding the spread over seeds, shown as "± sd"


@dataclass
class TaskTable:
    """The ranking table of one task and track (``plain`` rows and ``qcfs`` rows are never ranked together)."""

    task: str
    metric_name: str
    chosen_T: int
    T_values: list[int]
    energy_label: str
    columns: list[Column]
    frame: pd.DataFrame                      # display columns + CSV-only columns, one line per row
    best: dict[int, set[str]] = field(default_factory=dict)   # frame index -> best column keys
    track: str = "plain"

    def csv_frame(self) -> pd.DataFrame:
        """The frame as written to ``leaderboard.csv`` (raw values, best columns listed)."""
        out = self.frame.copy()
        out["best"] = [";".join(k for k in (c.key for c in self.columns) if k in self.best.get(i, set()))
                       for i in out.index]
        return out


@dataclass
class AblationTable:
    """Metric at the chosen T against the varied settings of one (task, model)."""

    task: str
    model: str
    metric_name: str
    chosen_T: int
    keys: list[str]
    pivot: pd.DataFrame       # index: setting combination text; columns: method (and last key)
    long: pd.DataFrame        # one line per row: settings, metric, energy ratio


# -- helpers ---------------------------------------------------------------------------
def T_columns(T_maxes: list[int], chosen_T: int | None = None) -> list[int]:
    """Powers of two up to each T_max, each T_max, and the chosen T."""
    values: set[int] = set()
    for T in T_maxes:
        values.update(2 ** k for k in range(int(math.log2(T)) + 1) if 2 ** k <= T)
        values.add(int(T))
    if chosen_T is not None:
        values.add(int(chosen_T))
    return sorted(values)


def default_chosen_T(task_rows: pd.DataFrame) -> int:
    """The largest T every row of the task reached."""
    return int(task_rows["T_max"].min())


def t_to_reach(curve: pd.DataFrame, ann: float, fraction: float = REACH_FRACTION) -> int | None:
    """Smallest t whose metric is at least ``fraction`` x the ANN metric (None if never)."""
    target = fraction * ann
    ok = curve[curve["metric"] >= target - _REL_TOL * max(abs(target), 1.0)]
    return int(ok["t"].min()) if not ok.empty else None


def pareto_mask(metric: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """True where no other point has metric >= and cost <= with one strictly better."""
    front = np.zeros(len(metric), dtype=bool)
    for i in range(len(metric)):
        if not (np.isfinite(metric[i]) and np.isfinite(cost[i])):
            continue
        dominated = ((metric >= metric[i]) & (cost <= cost[i]) & ((metric > metric[i]) | (cost < cost[i])))
        front[i] = not dominated.any()
    return front


def energy_label(task_rows: pd.DataFrame) -> str:
    """``horowitz45nm-v1: E_MAC 4.6 pJ, E_AC 0.9 pJ`` (all models when rows differ)."""
    seen = task_rows[["energy_model", "e_mac_pj", "e_ac_pj"]].drop_duplicates()
    return "; ".join(f"{r.energy_model}: E_MAC {r.e_mac_pj:g} pJ, E_AC {r.e_ac_pj:g} pJ"
                     if r.e_mac_pj is not None and not pd.isna(r.e_mac_pj) else str(r.energy_model)
                     for r in seen.itertuples())


def _fairness(row: pd.Series, T: int) -> dict[str, Any]:
    """Latency in frames at T, levels and max spikes per step (blank for pre-contract records;
    the ANN reference: one frame, no spikes)."""
    if row["reference"]:
        return {"latency": 1, "levels_per_step": math.nan, "max_spikes_per_step": math.nan}
    before = row.get("frames_before_readout")
    missing = before is None or pd.isna(before)
    return {"latency": math.nan if missing else T + int(before),
            "levels_per_step": math.nan if missing else float(row["levels_per_step"]),
            "max_spikes_per_step": math.nan if missing else int(row["max_spikes_per_step"])}


def _at(curve: pd.DataFrame, t: int, column: str) -> float:
    hit = curve.loc[curve["t"] == t, column]
    return float(hit.iloc[0]) if not hit.empty and not pd.isna(hit.iloc[0]) else math.nan


def _has_early_exit(rows: Rows, task_rows: pd.DataFrame, T: int) -> bool:
    """Whether a row of the task stopped samples early (mean steps used at T below T)."""
    for row_id in task_rows["row_id"]:
        steps = _at(rows.curve(row_id), T, "steps_per_sample")
        if not math.isnan(steps) and steps < T - 1e-9:
            return True
    return False


# -- the task table --------------------------------------------------------------------
def task_table(rows: Rows, task: str, chosen_T: int | None = None, track: str = "plain",
               results_dir: str | Path | None = None) -> TaskTable:
    """The ranking table of the ``track`` rows of ``task`` at ``chosen_T`` (default: the largest
    common T). Best marks and the Pareto front are taken within the track only.

    With ``results_dir`` (its ``samples/``), the rows of each model get rank groups at the
    chosen T (:mod:`snnbench.leaderboard.ties`), and the best mark of the chosen-T metric goes
    to every row of group 1 (the rows tied with the best) rather than to the largest value."""
    task_rows = rows.of_task(task, track)
    if task_rows.empty:
        raise ValueError(f"task {task!r} has no successful cell in the {track} track")
    T = int(chosen_T) if chosen_T is not None else default_chosen_T(task_rows)
    if (task_rows["T_max"] < T).any():
        log.warning("task %s: %d row(s) stop before the chosen T=%d; their energy columns are blank",
                    task, int((task_rows["T_max"] < T).sum()), T)
    names = task_rows["metric_name"].unique()
    metric_name = str(names[0])
    if len(names) > 1:
        log.warning("task %s mixes headline metrics %s; the table uses %s", task, list(names), metric_name)
    T_values = T_columns(list(task_rows["T_max"]), T)
    multi_seed = bool((task_rows["seeds"].map(len) > 1).any())
    e_label = energy_label(task_rows)

    columns = [Column("model", "model"), Column("row", "method + settings")]
    if multi_seed:
        columns.append(Column("seeds", "seeds"))
    columns.append(Column("ann_metric_pct", f"ANN {metric_name} (%)", "pct"))
    for t in T_values:
        columns.append(Column(f"metric_pct_T{t}", f"{metric_name} T={t}", "pct", "max",
                              f"metric_pct_T{t}_sd" if multi_seed else None))
    groups = rank_groups(task_rows, results_dir, T)
    has_ci = any(not math.isnan(_at(rows.curve(r), T, "metric_ci95_lo")) for r in task_rows["row_id"])
    if has_ci:
        columns.append(Column("metric_ci95", f"95% CI @T={T}"))
    if groups:
        columns.append(Column("rank_group", f"rank group @T={T}"))
    model_of = dict(zip(task_rows["row_id"].astype(int), task_rows["model"]))
    group_sizes = Counter((model_of[r], g) for r, g in groups.items())
    columns += [Column("t_to_99pct_ann", "T to 99% ANN", "int", "min"),
                # fairness (snnbench.methods.base.Fairness): what one step of the row can carry
                Column("latency", f"latency @T={T} (frames)", "int"),
                Column("levels_per_step", "levels/step (bits)", "ratio"),
                Column("max_spikes_per_step", "max spikes/step", "int"),
                Column("spikes_per_sample", f"spikes/sample @T={T}", "count", "min")]
    if _has_early_exit(rows, task_rows, T):  # adaptive-timestep rows: unit spikes (bursts) and steps used
        columns += [Column("unit_spikes_per_sample", f"unit spikes/sample @T={T}", "count", "min"),
                    Column("steps_per_sample", f"mean steps @T={T}", "count", "min")]
    columns += [
                Column("synops_per_sample", f"SynOps/sample @T={T}", "count", "min"),
                Column("energy_ratio", f"energy ratio @T={T} ({e_label})", "ratio", "min"),
                Column("pareto", "Pareto front", "flag")]

    records = []
    for _, row in task_rows.iterrows():
        curve = rows.curve(row["row_id"])
        rec: dict[str, Any] = {
            "task": task, "metric": metric_name, "model": row["model"], "row": row["label"],
            "method": row["method"],
            "settings": ";".join(f"{k}={row['settings'][k]}" for k in row["varied"] if k in row["settings"]),
            "reference": bool(row["reference"]), "seeds": ", ".join(map(str, row["seeds"])),
            "n_seeds": len(row["seeds"]), "T_max": int(row["T_max"]), "chosen_T": T, "track": track,
            "ann_metric_pct": row["ann"] * PERCENT}
        for t in T_values:
            rec[f"metric_pct_T{t}"] = _at(curve, t, "metric") * PERCENT
            rec[f"metric_pct_T{t}_sd"] = _at(curve, t, "metric_sd") * PERCENT
            rec[f"metric_pct_T{t}_ci95_lo"] = _at(curve, t, "metric_ci95_lo") * PERCENT
            rec[f"metric_pct_T{t}_ci95_hi"] = _at(curve, t, "metric_ci95_hi") * PERCENT
        lo, hi = rec[f"metric_pct_T{T}_ci95_lo"], rec[f"metric_pct_T{T}_ci95_hi"]
        rec["metric_ci95"] = "" if math.isnan(lo) else f"{lo:.2f}–{hi:.2f}"
        group = groups.get(int(row["row_id"]))
        rec["rank_group"] = group_text(group, group_sizes.get((row["model"], group), 0))
        rec["rank_group_number"] = math.nan if group is None else group
        reach = None if row["reference"] else t_to_reach(curve, row["ann"])
        rec["t_to_99pct_ann"] = math.nan if reach is None else reach
        for key in ("spikes_per_sample", "unit_spikes_per_sample", "steps_per_sample", "synops_per_sample",
                    "energy_ratio"):
            rec[key] = _at(curve, T, key)
        rec.update(_fairness(row, T))
        rec.update(energy_model=row["energy_model"], e_mac_pj=row["e_mac_pj"], e_ac_pj=row["e_ac_pj"],
                   cell_keys=";".join(row["cell_keys"]))
        records.append(rec)
    frame = pd.DataFrame(records)
    for key in ("t_to_99pct_ann", "latency", "max_spikes_per_step"):
        frame[key] = pd.to_numeric(frame[key]).astype("Int64")
    measured = ~frame["reference"]
    metric_T = frame[f"metric_pct_T{T}"].to_numpy(dtype=float)
    energy = frame["energy_ratio"].to_numpy(dtype=float)
    front = pareto_mask(np.where(measured, metric_T, np.nan), np.where(measured, energy, np.nan))
    frame["pareto"] = front
    display = [c.key for c in columns] + [c.sd_key for c in columns if c.sd_key]
    extra = [c for c in frame.columns if c not in display]
    frame = frame[[c for c in display if c in frame.columns] + extra]
    table = TaskTable(task=task, metric_name=metric_name, chosen_T=T, T_values=T_values, energy_label=e_label,
                      columns=columns, frame=frame, track=track)
    table.best = best_marks(frame, columns)
    if groups:
        _mark_tied_best(table, frame, task_rows, groups, f"metric_pct_T{T}")
    return table


def _mark_tied_best(table: TaskTable, frame: pd.DataFrame, task_rows: pd.DataFrame, groups: dict[int, int],
                    key: str) -> None:
    """Where a model's rows have rank groups, the chosen-T metric is marked on group 1."""
    grouped_models = {m for m, r in zip(task_rows["model"], task_rows["row_id"]) if int(r) in groups}
    for index, model, group in zip(frame.index, frame["model"], frame["rank_group_number"]):
        if model not in grouped_models:
            continue
        marks = table.best.setdefault(int(index), set())
        if group == 1:
            marks.add(key)
        else:
            marks.discard(key)


def best_marks(frame: pd.DataFrame, columns: list[Column]) -> dict[int, set[str]]:
    """Per frame index, the ranked columns where the row holds its model's best SNN value."""
    marks: dict[int, set[str]] = {}
    for _, block in frame[~frame["reference"]].groupby("model", sort=False):
        if len(block) < 2:
            continue
        for col in columns:
            if col.better is None:
                continue
            values = pd.Series(block[col.key].to_numpy(dtype="float64", na_value=np.nan), index=block.index)
            finite = values[np.isfinite(values)]
            if len(finite) < 2:
                continue
            best = finite.max() if col.better == "max" else finite.min()
            hit = np.isclose(finite, best, rtol=_REL_TOL, atol=0.0)
            for index in finite.index[hit]:
                marks.setdefault(int(index), set()).add(col.key)
    return marks


# -- ablations -------------------------------------------------------------------------
def ablation_tables(rows: Rows, task: str, chosen_T: int, track: str | None = None) -> list[AblationTable]:
    """One pivot per model of ``task`` whose methods were run with several settings.

    With one varied setting the index lists its values and the columns the methods; with
    several, the index lists combinations of all but the last and the columns are
    ``method last=value``. Values: the metric (%) at ``chosen_T``, mean over seeds.
    """
    out = []
    task_rows = rows.of_task(task, track)
    for model, block in task_rows[~task_rows["reference"]].groupby("model", sort=False):
        block = block[block["varied"].map(len) > 0]
        keys: list[str] = []
        for varied in block["varied"]:
            keys += [k for k in varied if k not in keys]
        if not keys:
            continue
        combos = {tuple(s.get(k, "—") for k in keys) for s in block["settings"]}
        if len(combos) < 2:
            continue
        long = []
        for _, row in block.iterrows():
            curve = rows.curve(row["row_id"])
            long.append({"task": task, "model": model, "method": row["method"], "row": row["label"],
                         **{f"setting.{k}": row["settings"].get(k, "—") for k in keys},
                         "chosen_T": chosen_T, "metric": row["metric_name"],
                         "metric_pct": _at(curve, chosen_T, "metric") * PERCENT,
                         "energy_ratio": _at(curve, chosen_T, "energy_ratio"), "n_seeds": len(row["seeds"])})
        long_frame = pd.DataFrame(long)
        lead, last = keys[:-1], keys[-1]
        if lead:
            long_frame["_index"] = long_frame.apply(lambda r: ", ".join(f"{k}={r[f'setting.{k}']}" for k in lead),
                                                    axis=1)
            long_frame["_column"] = long_frame["method"] + " " + last + "=" + long_frame[f"setting.{last}"]
        else:
            long_frame["_index"] = last + "=" + long_frame[f"setting.{last}"]
            long_frame["_column"] = long_frame["method"]
        if long_frame.duplicated(["_index", "_column"]).any():
            # rows that differ in something besides these settings (T_max, sizes): list them by label
            long_frame["_index"], long_frame["_column"] = long_frame["row"], f"{long_frame['metric'].iloc[0]} (%)"
        pivot = long_frame.pivot(index="_index", columns="_column", values="metric_pct")
        pivot = pivot.loc[sorted(pivot.index, key=natural_key), sorted(pivot.columns, key=natural_key)]
        pivot.index.name, pivot.columns.name = ", ".join(lead) if lead else last, None
        out.append(AblationTable(task=task, model=str(model), metric_name=str(block["metric_name"].iloc[0]),
                                 chosen_T=chosen_T, keys=keys, pivot=pivot,
                                 long=long_frame.drop(columns=["_index", "_column"])))
    return out


# -- failed cells ----------------------------------------------------------------------
def failed_table(results: Results) -> pd.DataFrame:
    """Failed cells (latest record failed): what they were and their exception line; never numbers."""
    failed = results.failed
    if failed.empty:
        return pd.DataFrame(columns=["task", "model", "cell", "seed", "T_max", "cell_key", "error"])
    frame = pd.DataFrame({
        "task": failed["task"], "model": failed["model"],
        "cell": [m + (" " + ", ".join(f"{k}={v}" for k, v in s.items()) if s else "")
                 for m, s in zip(failed["method"], failed["settings"])],
        "seed": failed["seed"], "T_max": failed["T_max"], "cell_key": failed["cell_key"],
        "error": failed["error_line"]})
    order = sorted(frame.index, key=lambda i: (str(frame.at[i, "task"]), natural_key(frame.at[i, "model"]),
                                               natural_key(frame.at[i, "cell"]), frame.at[i, "seed"]))
    return frame.loc[order].reset_index(drop=True)
