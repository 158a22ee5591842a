"""Cells -> leaderboard rows: which cells share a row, and what the row is called.

A row is one (task, model, method + resolved settings, T_max, calibration/evaluation
sizes, weights, data root); cells that differ only in their seed share a row, whose
curves are the mean over seeds with the sample standard deviation of the metric as the
spread (``per_seed=True`` gives one row per seed instead).

A row's label is the method, then the settings *varied* for that method in the task:
the ones the user set with ``--set`` (``provenance.spec.settings``) plus any resolved
setting whose value differs between the method's rows; then, in brackets, any of
T_max / calib_size / eval_size / weights / data_root that differ between rows of the
task; then ``seed=N`` in per-seed mode when the task has several seeds. Cells of one
model name loaded from different weights (``weights_sha``: a retrained zoo model, another
checkpoint) never share a row, and their labels say ``weights_sha=...``. Examples:
``dcgs n=4``, ``rate coding=rate, n=8 [eval_size=200]``, ``ann (reference)``. A conversion's
own caveat follows in parentheses: ``srp (SRP mechanism, non-QCFS ANN)``.

Every row carries the ``track`` of its model (``plain`` / ``qcfs``); the tables rank each
track of a task on its own, under its own heading, with its own ANN reference.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from snnbench.leaderboard.data import FAIRNESS_FIELDS, SPEC_FIELDS, Results

log = logging.getLogger(__name__)

ROW_COLUMNS = ["row_id", "task", "model", "method", "label", "reference", "settings", "varied", "seeds", "cell_keys",
               "T_max", "calib_size", "eval_size", "weights", "weights_sha", "data_root", "metric_name", "ann", "energy_model",
               "e_mac_pj", "e_ac_pj", "track", *FAIRNESS_FIELDS, "calib_split", "ann_ci95_lo", "ann_ci95_hi"]
CURVE_COLUMNS = ["row_id", "t", "metric", "metric_sd", "spikes_per_sample", "synops_per_sample", "energy_ratio",
                 "latency", "unit_spikes_per_sample", "steps_per_sample", "metric_ci95_lo", "metric_ci95_hi"]


@dataclass
class Rows:
    """Leaderboard rows and their mean curves (one line per row and t)."""

    rows: pd.DataFrame
    curves: pd.DataFrame

    def of_task(self, task: str, track: str | None = None) -> pd.DataFrame:
        """Rows of ``task`` (of one ``track`` only, when given)."""
        rows = self.rows[self.rows["task"] == task]
        return rows if track is None else rows[rows["track"] == track]

    def tracks(self, task: str) -> list[str]:
        """Tracks present in ``task``, the plain track first."""
        return sorted(self.of_task(task)["track"].unique(), key=lambda t: (t != "plain", t))

    def curve(self, row_id: int) -> pd.DataFrame:
        return self.curves[self.curves["row_id"] == row_id]


def natural_key(text: Any) -> tuple:
    """Sort key that orders ``n=4`` before ``n=16`` and numbers before words."""
    parts = []
    for piece in str(text).replace("=", " = ").replace(",", " , ").split():
        try:
            parts.append((0, float(piece), ""))
        except ValueError:
            parts.append((1, 0.0, piece))
    return tuple(parts)


def varied_settings(cells: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """Per method: the setting names shown in its row labels (see the module docstring)."""
    out: dict[str, tuple[str, ...]] = {}
    for method, group in cells.groupby("method", sort=False):
        keys: list[str] = []
        for user in group["user_keys"]:
            keys += [k for k in user if k not in keys]
        all_keys: list[str] = []
        for settings in group["settings"]:
            all_keys += [k for k in settings if k not in all_keys]
        for k in all_keys:
            if k not in keys and len({s.get(k) for s in group["settings"]}) > 1:
                keys.append(k)
        out[str(method)] = tuple(k for k in keys if k in all_keys)
    return out


def _label(method: str, settings: dict[str, str], varied: tuple[str, ...], extras: list[str],
           seed: int | None, note: str = "", reference: bool = False) -> str:
    if reference:
        text = f"{method} (reference)"
    else:
        parts = ", ".join(f"{k}={settings[k]}" for k in varied if k in settings)
        text = method + (f" {parts}" if parts else "") + (f" ({note})" if note else "")
    if extras:
        text += " [" + ", ".join(extras) + "]"
    if seed is not None:
        text += f" seed={seed}"
    return text


def _value_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    return str(value)


def build_rows(results: Results, per_seed: bool = False) -> Rows:
    """Group successful cells into leaderboard rows (see the module docstring)."""
    cells = results.cells
    rows: list[dict[str, Any]] = []
    curves: list[pd.DataFrame] = []
    row_id = 0
    for task in sorted(cells["task"].unique()):
        task_cells = cells[cells["task"] == task]
        varied = varied_settings(task_cells)
        spec_varied = [f for f in SPEC_FIELDS if task_cells[f].map(_value_text).nunique() > 1]
        several_seeds = task_cells["seed"].nunique() > 1
        for model, group in task_cells.groupby("model"):
            shas = sorted(group["weights_sha"].map(_value_text).unique())
            if len(shas) > 1:
                log.warning("%s/%s: results from %d different weights (sha256 %s); their rows are labelled "
                            "weights_sha=... and compare different networks", task, model, len(shas), ", ".join(shas))

        def group_key(cell: pd.Series) -> tuple:
            key = (cell["track"], cell["model"], cell["method"], tuple(sorted(cell["settings"].items())),
                   *(_value_text(cell[f]) for f in SPEC_FIELDS), _value_text(cell.get("calib_split")))
            return key + ((int(cell["seed"]),) if per_seed else ())

        groups: dict[tuple, list[pd.Series]] = {}
        for _, cell in task_cells.iterrows():
            groups.setdefault(group_key(cell), []).append(cell)
        for members in groups.values():
            first = members[0]
            method = str(first["method"])
            keys = [c["cell_key"] for c in members]
            extras = [f"{f}={_value_text(first[f])}" for f in spec_varied]
            seeds = tuple(sorted(int(c["seed"]) for c in members))
            label = _label(method, first["settings"], varied.get(method, ()), extras,
                           seeds[0] if per_seed and several_seeds else None, str(first["note"] or ""),
                           bool(first["reference"]))
            if first.get("calib_split") == "eval":  # the paper's protocol: statistics on evaluation images
                label += " [calibrated on eval]"
            energy = {str(c["energy_model"]) for c in members}
            if len(energy) > 1:
                log.warning("row %s/%s mixes energy models %s", task, label, sorted(energy))
            rows.append({"row_id": row_id, "task": task, "model": first["model"], "method": method, "label": label,
                         "reference": bool(first["reference"]), "settings": dict(first["settings"]),
                         "varied": varied.get(method, ()), "seeds": seeds, "cell_keys": tuple(keys),
                         **{f: first[f] for f in SPEC_FIELDS}, "metric_name": first["metric_name"],
                         "ann": float(np.mean([c["ann"] for c in members])),
                         "energy_model": first["energy_model"], "e_mac_pj": first["e_mac_pj"],
                         "e_ac_pj": first["e_ac_pj"], "track": first["track"],
                         **{f: first.get(f) for f in FAIRNESS_FIELDS},
                         "calib_split": first.get("calib_split", "train"),
                         **{b: (first.get(b) if len(members) == 1 else None) for b in ("ann_ci95_lo", "ann_ci95_hi")}})
            curves.append(_mean_curve(results.curves[results.curves["cell_key"].isin(keys)], row_id))
            row_id += 1
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    if not frame.empty:
        order = sorted(range(len(frame)), key=lambda i: (frame.at[i, "task"], natural_key(frame.at[i, "model"]),
                                                         not frame.at[i, "reference"],
                                                         natural_key(frame.at[i, "label"])))
        frame = frame.iloc[order].reset_index(drop=True)
    curve_frame = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVE_COLUMNS)
    return Rows(rows=frame, curves=curve_frame)


def _mean_curve(curves: pd.DataFrame, row_id: int) -> pd.DataFrame:
    """Mean over seeds at every t; ``metric_sd`` is the sample standard deviation (NaN for one seed)."""
    grouped = curves.groupby("t", sort=True)
    out = grouped[["metric", "spikes_per_sample", "synops_per_sample", "energy_ratio", "latency",
                   "unit_spikes_per_sample", "steps_per_sample"]].mean()
    out["metric_sd"] = grouped["metric"].std(ddof=1)
    # one cell's 95 % interval; a row over several seeds shows its spread (sd) instead
    several = curves["cell_key"].nunique() > 1
    for bound in ("metric_ci95_lo", "metric_ci95_hi"):
        out[bound] = np.nan if several else grouped[bound].first()
    out = out.reset_index()
    out.insert(0, "row_id", row_id)
    return out[CURVE_COLUMNS]
