"""Results (ledger or MLflow) -> tidy pandas frames, the one input of every table and plot.

Both sources go through :func:`results_from_records`: the MLflow reader rebuilds ledger-like
records from the runs (see :mod:`snnbench.leaderboard.mlflow_source`), so a leaderboard rendered
from either source is the same table.

Frames of :class:`Results`:

* ``cells``: one row per successful cell (the latest record of its ``cell_key``): task,
  model, method, ``weights_sha`` (the first digits of the sha256 of the weights loaded), resolved ``settings`` (values as strings, so both sources compare
  equal), ``user_keys`` (the settings the user set with ``--set``), seed, T_max, calib and
  eval sizes, ANN value of the headline metric, energy model, ``track`` (``plain`` /
  ``qcfs``: the kind of ANN; rows of different tracks are never ranked together) and
  ``note`` (the conversion's own caveat, e.g. "SRP mechanism, non-QCFS ANN").
* ``curves``: one row per (cell, t): headline metric, spikes, synaptic ops and energy
  ratio per sample, cumulative over 1..t (as the runner records them), and ``latency``:
  the frames simulated up to readout step t (t itself for records without it).
* ``failed``: one row per failed cell: what it was and the exception line of its error.

Metrics stay in the task's own units (fractions); tables and plots convert to percent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from snnbench.leaderboard.errors import LeaderboardError
from snnbench.record import is_reference
from snnbench.tracebacks import error_line

log = logging.getLogger(__name__)

#: result["fairness"] keys carried to every row (snnbench.methods.base.Fairness)
FAIRNESS_FIELDS = ("frames_before_readout", "levels_per_step", "max_spikes_per_step")

#: spec fields that, when they differ between rows of a task, are shown in row labels
SPEC_FIELDS = ("T_max", "calib_size", "eval_size", "weights", "weights_sha", "data_root")
#: hex digits of a weights sha256 shown in row labels
WEIGHTS_SHA_DIGITS = 12

CELL_COLUMNS = ["cell_key", "task", "model", "method", "reference", "metric_name", "ann", "T_max", "seed", "calib_size",
                "eval_size", "weights", "weights_sha", "data_root", "settings", "user_keys", "energy_model", "e_mac_pj", "e_ac_pj",
                "git_sha", "finished_at", "track", "note", *FAIRNESS_FIELDS, "calib_split", "ann_ci95_lo", "ann_ci95_hi"]
CURVE_COLUMNS = ["cell_key", "t", "metric", "spikes_per_sample", "synops_per_sample", "energy_ratio", "latency",
                 "unit_spikes_per_sample", "steps_per_sample", "metric_ci95_lo", "metric_ci95_hi"]
#: the track of records written before tracks existed
DEFAULT_TRACK = "plain"
FAILED_COLUMNS = ["cell_key", "task", "model", "method", "settings", "seed", "T_max", "error_line", "error"]


@dataclass
class Results:
    """Tidy frames of one results directory (see the module docstring)."""

    cells: pd.DataFrame
    curves: pd.DataFrame
    failed: pd.DataFrame
    layers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    source: str = ""


# -- helpers ---------------------------------------------------------------------------
def settings_text(value: Any) -> str:
    """A setting value as text: ``str`` is what the tracker logs as an MLflow param."""
    return str(value)


def _none_if_text_none(value: Any) -> Any:
    return None if value in ("None", "") else value


def _int_or_none(value: Any) -> int | None:
    value = _none_if_text_none(value)
    return None if value is None else int(value)


# -- records -> frames -----------------------------------------------------------------
def results_from_records(records: Iterable[dict[str, Any]], source: str = "",
                         energy_model: str | None = None) -> Results:
    """Frames from ledger-format records (one per cell_key, already de-duplicated).

    ``energy_model`` (default ``horowitz45nm-v1``) picks the convention of the
    ``energy_ratio`` curve: ``per_t[t]["energy_ratio@NAME"]`` (blank for records written
    before that convention existed); unknown names are an error listing the valid ones.
    """
    from snnbench.energy import DEFAULT_ENERGY_MODEL, get_energy_model, ratio_key

    try:
        chosen = get_energy_model(energy_model or DEFAULT_ENERGY_MODEL.name)
    except ValueError as err:
        raise LeaderboardError(str(err)) from None
    chosen_key = ratio_key(chosen.name)
    cells, curves, failed = [], [], []
    layers: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        spec = (record.get("provenance") or {}).get("spec") or {}
        key = record.get("cell_key") or spec.get("cell_key") or ""
        user_settings = spec.get("settings") or {}
        base = {"cell_key": key, "task": record.get("task") or spec.get("task"),
                "model": record.get("model") or spec.get("model"),
                "method": record.get("method") or spec.get("method"),
                "seed": _int_or_none(spec.get("seed", 0)) or 0,
                "T_max": _int_or_none(record.get("T", spec.get("T")))}
        if record.get("status") != "ok" or not record.get("per_t"):
            failed.append({**base, "settings": {k: settings_text(v) for k, v in user_settings.items()},
                           "error_line": error_line(record.get("error")), "error": record.get("error") or ""})
            continue
        energy = record.get("energy_model") or {}
        if chosen.name != energy.get("name", DEFAULT_ENERGY_MODEL.name) or any(
                chosen_key in row for row in record["per_t"].values()):
            energy = chosen.to_dict()
        fairness = record.get("fairness") or {}
        cells.append({
            **base, "reference": is_reference(record), "metric_name": record.get("metric"),
            "ann": float(record["ann"]),
            "calib_size": _int_or_none(spec.get("calib_size")), "eval_size": _int_or_none(spec.get("eval_size")),
            "weights": _none_if_text_none(spec.get("weights")),
            "weights_sha": (_none_if_text_none(record.get("weights_sha256")) or "")[:WEIGHTS_SHA_DIGITS] or None,
            "data_root": _none_if_text_none(spec.get("data_root")),
            "settings": {k: settings_text(v) for k, v in (record.get("settings") or {}).items()},
            "user_keys": tuple(user_settings), "energy_model": energy.get("name", "unknown"),
            "e_mac_pj": energy.get("e_mac_pj"), "e_ac_pj": energy.get("e_ac_pj"),
            "git_sha": ((record.get("provenance") or {}).get("git") or {}).get("sha"),
            "finished_at": (record.get("sweep") or {}).get("finished_at"),
            "track": record.get("track") or DEFAULT_TRACK,
            "note": str((record.get("conversion") or {}).get("note") or ""),
            **{f: fairness.get(f) for f in FAIRNESS_FIELDS},
            "calib_split": spec.get("calib_split") or "train",
            **_bounds("ann_ci95", record.get("ann_ci95"))})
        for t_text, row in record["per_t"].items():
            curves.append({"cell_key": key, "t": int(t_text), "metric": _float(row.get("metric")),
                           "spikes_per_sample": _float(row.get("spikes_per_sample")),
                           "synops_per_sample": _float(row.get("synops_per_sample")),
                           "energy_ratio": _float(row.get(chosen_key, row.get("energy_ratio")
                                                          if chosen is DEFAULT_ENERGY_MODEL else None)),
                           "latency": _float(row.get("latency", int(t_text))),
                           "unit_spikes_per_sample": _float(row.get("unit_spikes_per_sample")),
                           # results without per-sample early exit computed every step
                           "steps_per_sample": _float(row.get("steps_per_sample", int(t_text))),
                           **_bounds("metric_ci95", row.get("metric_ci95"))})
        if record.get("layers"):
            layers[key] = record["layers"]
    curves_frame = pd.DataFrame(curves, columns=CURVE_COLUMNS)
    numeric = CURVE_COLUMNS[2:]
    curves_frame[numeric] = curves_frame[numeric].astype(float)
    if not curves_frame.empty:
        curves_frame = curves_frame.sort_values(["cell_key", "t"], kind="stable").reset_index(drop=True)
    return Results(cells=pd.DataFrame(cells, columns=CELL_COLUMNS), curves=curves_frame,
                   failed=pd.DataFrame(failed, columns=FAILED_COLUMNS), layers=layers, source=source)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _bounds(name: str, interval: Any) -> dict[str, float | None]:
    """``{name_lo, name_hi}`` of a ``[lo, hi]`` interval (None for records without one)."""
    lo, hi = interval if interval else (None, None)
    return {f"{name}_lo": _float(lo), f"{name}_hi": _float(hi)}


# -- sources ---------------------------------------------------------------------------
def load_ledger(results_dir: str | Path, energy_model: str | None = None) -> Results:
    """Latest record of every cell in ``<results_dir>/ledger.jsonl``.

    Raises:
        LeaderboardError: there is no ledger or it holds no record.
    """
    from snnbench.ledger import Ledger

    ledger = Ledger(results_dir)
    if not ledger.path.is_file():
        raise LeaderboardError(f"no ledger at {ledger.path}; run `bench sweep --results {results_dir}` first "
                               "(or pass the --results directory of an earlier sweep)")
    records = list(ledger.latest_results().values())
    if not records:
        raise LeaderboardError(f"the ledger {ledger.path} holds no cell result yet")
    log.debug("read %d cells from %s", len(records), ledger.path)
    return results_from_records(records, source=f"ledger {ledger.path}", energy_model=energy_model)


def load_results(results_dir: str | Path, from_mlflow: bool = False, experiment: str | None = None,
                 energy_model: str | None = None) -> Results:
    """Results from the ledger (default) or from ``sqlite:///<results_dir>/mlflow.db``."""
    if from_mlflow:
        from snnbench.leaderboard.mlflow_source import mlflow_records

        records, source = mlflow_records(results_dir, experiment)
        return results_from_records(records, source=source, energy_model=energy_model)
    return load_ledger(results_dir, energy_model=energy_model)
