"""Rebuild ledger-format records from the MLflow store of a results directory.

The sweep logs every cell as a child run of its sweep's parent run
(:mod:`snnbench.tracking`): params ``method``/``task``/``model``/``T``/``metric``/``seed``/...
and ``setting.<name>`` (the resolved settings), tags ``cell_key`` and ``status``, the
headline metric, ``energy_ratio``, ``spikes_per_sample`` and ``synops_per_sample`` with
``step=t``, ``ann_<metric>``, and artifacts ``layers.csv`` (counts at T) and ``error.txt``.
The parent's ``sets`` param (``n=4,8;coding=rate``) names the settings the user varied.

What MLflow does not hold is filled in as follows: the energy model is the default one
(it is part of every ``cell_key``, so a run logged by this code used it); per-layer counts
exist only at T (``layers.csv``), so a layer plot of an MLflow-read cell is drawn at T.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from snnbench.leaderboard.errors import LeaderboardError
from snnbench.record import CellResult
from snnbench.tracking import ANN_CI_METRICS, CI_METRICS

log = logging.getLogger(__name__)

#: per-t metrics the tracker logs with step=t, besides the headline metric
STEP_KEYS = ("energy_ratio", "spikes_per_sample", "synops_per_sample", "latency", "unit_spikes_per_sample",
             "steps_per_sample")
PAGE = 5000


def _client(results_dir: str | Path):
    from snnbench.tracking import tracking_uri

    db = Path(results_dir) / "mlflow.db"
    if not db.is_file():
        raise LeaderboardError(f"no MLflow database at {db}; run `bench sweep --results {results_dir}` with MLflow "
                               "on, or drop --from-mlflow to read the ledger")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(results_dir))


def _all_runs(client, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, max_results=PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _user_keys(client, parent_id: str | None, cache: dict[str, tuple[str, ...] | None]) -> tuple[str, ...] | None:
    """Setting names varied with --set in the parent sweep (None when unknown)."""
    if not parent_id:
        return None
    if parent_id not in cache:
        try:
            sets = client.get_run(parent_id).data.params.get("sets")
        except Exception:  # noqa: BLE001 - a deleted parent only loses the label hint
            sets = None
        cache[parent_id] = None if sets is None else tuple(
            item.partition("=")[0].strip() for item in sets.split(";") if item.strip())
    return cache[parent_id]


def _artifact_text(client, run, path: str) -> str | None:
    """A text artifact of ``run``: read in place from a local artifact store, else downloaded."""
    uri = urlparse(run.info.artifact_uri or "")
    if uri.scheme in ("", "file"):
        local = Path(url2pathname(uri.path)) / path
        return local.read_text(encoding="utf-8") if local.is_file() else None
    old = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"   # no tqdm bar per artifact
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run.info.run_id, path, tmp)).read_text(encoding="utf-8")
    except Exception:  # noqa: BLE001 - a missing artifact is simply absent
        return None
    finally:
        if old is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = old


def _layers(text: str | None, T: int) -> list[dict[str, Any]]:
    """``layers.csv`` (counts at T) as record layers whose per-t lists hold only t = T."""
    if not text:
        return []
    out = []
    for row in csv.DictReader(text.splitlines()):
        def at_T(value: str) -> list[float | None]:
            return [None] * (T - 1) + [float(value)] if value not in ("", None) else []

        layer: dict[str, Any] = {"layer": row["layer"], "type": row["type"]}
        if row["type"] == "neuron":
            layer.update(spikes=at_T(row["spikes_at_T"]), unit_spikes=at_T(row["unit_spikes_at_T"]),
                         neurons=float(row["neurons"]) if row["neurons"] else None)
        else:
            layer.update(input=row["input"], ops=at_T(row["ops_at_T"]),
                         dense_ops=float(row["dense_ops"]) if row["dense_ops"] else None)
        out.append(layer)
    return out


def _json_tag(tags: dict[str, str], name: str) -> Any:
    """A JSON-valued tag logged by snnbench.tracking (None when absent or unreadable)."""
    try:
        return json.loads(tags[name]) if name in tags else None
    except ValueError:
        return None


def _user_settings(tags: dict[str, str], settings: dict[str, str], user_keys: tuple[str, ...] | None) -> dict:
    """The settings the user set: the run's ``user_settings`` tag, else the parent's ``sets`` keys."""
    logged = _json_tag(tags, "user_settings")
    if isinstance(logged, dict):
        return logged
    return {k: v for k, v in settings.items() if user_keys is None or k in user_keys}


def _record(client, run, user_keys: tuple[str, ...] | None) -> dict[str, Any]:
    """One ledger-format record from a child run."""
    from snnbench.energy import DEFAULT_ENERGY_MODEL

    params, tags = run.data.params, run.data.tags
    settings = {k[len("setting."):]: v for k, v in params.items() if k.startswith("setting.")}
    T = int(params["T"])
    spec = {"method": params.get("method"), "task": params.get("task"), "model": params.get("model"), "T": T,
            "seed": params.get("seed", "0"), "calib_size": params.get("calib_size"),
            "eval_size": params.get("eval_size"), "weights": params.get("weights"),
            "data_root": params.get("data_root"),
            "settings": _user_settings(tags, settings, user_keys)}
    record: dict[str, Any] = {
        "method": params.get("method"), "task": params.get("task"), "model": params.get("model"),
        "settings": settings, "T": T, "cell_key": tags.get("cell_key"), "status": tags.get("status", "failed"),
        "weights_sha256": tags.get("weights_sha256") or None,
        "provenance": {"spec": spec, "git": {"sha": tags.get("git.sha") or None}},
        "mlflow_run_id": run.info.run_id, "per_t": {}, "error": None,
        "track": tags.get("track") or "plain", "conversion": {"note": tags.get("note") or ""},
        # runs logged before the tag existed: None, and the reader falls back to the method name
        "reference": {"true": True, "false": False}.get(tags.get("reference", ""))}
    if record["status"] != "ok":
        record["error"] = _artifact_text(client, run, "error.txt") or f"run status {run.info.status}"
        return record
    name = params.get("metric", "")
    if f"ann_{name}" not in run.data.metrics:   # an interrupted log: no numbers to trust
        record.update(status="failed", error=f"MLflow run {run.info.run_id} has status 'ok' but no ann_{name} "
                                             "metric (logging was interrupted?); rerun the cell")
        return record
    ann_bounds = [run.data.metrics.get(key) for key in ANN_CI_METRICS]
    if None not in ann_bounds:
        record["ann_ci95"] = ann_bounds
    record.update(metric=name, ann=run.data.metrics[f"ann_{name}"],
                  energy_model=_json_tag(tags, "energy_model") or DEFAULT_ENERGY_MODEL.to_dict())
    per_t: dict[str, dict[str, Any]] = {}
    for key, field in ((name, "metric"),) + tuple((k, k) for k in STEP_KEYS):
        for m in client.get_metric_history(run.info.run_id, key):
            if m.step >= 1:
                per_t.setdefault(str(m.step), {})[field] = m.value
    bounds = [{m.step: m.value for m in client.get_metric_history(run.info.run_id, key)} for key in CI_METRICS]
    for step in set(bounds[0]) & set(bounds[1]):
        per_t.setdefault(str(step), {})["metric_ci95"] = [bounds[0][step], bounds[1][step]]
    record["per_t"] = dict(sorted(per_t.items(), key=lambda kv: int(kv[0])))
    record["layers"] = _layers(_artifact_text(client, run, "layers.csv"), T)
    return record


def mlflow_records(results_dir: str | Path, experiment: str | None = None) -> tuple[list[CellResult], str]:
    """Records of the latest child run of every cell_key, and a source description.

    Args:
        results_dir: the sweep's results directory (``mlflow.db`` inside).
        experiment: only this experiment (campaign); every experiment when None.

    Raises:
        LeaderboardError: no database, no such experiment, or no cell run in it.
    """
    client = _client(results_dir)
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments()) or "none"
            raise LeaderboardError(f"no MLflow experiment {experiment!r} in {results_dir}/mlflow.db (experiments: "
                                   f"{names})")
        experiments = [found]
    else:
        experiments = list(client.search_experiments())
    # runs still RUNNING or KILLED were cut off mid-log (a sweep died): the next sweep logs
    # the ledger's record again (snnbench.tracking.SweepTracker.reconcile)
    runs = [r for r in _all_runs(client, [e.experiment_id for e in experiments])
            if r.data.tags.get("cell_key") and r.info.status in ("FINISHED", "FAILED")]
    if not runs:
        raise LeaderboardError(f"no cell runs in {results_dir}/mlflow.db; run `bench sweep --results {results_dir}`")
    latest: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.end_time or 0)):
        latest[run.data.tags["cell_key"]] = run  # the latest run of a cell wins, as in the ledger
    parents: dict[str, tuple[str, ...] | None] = {}
    records = [CellResult.from_dict(_record(client, run, _user_keys(client, run.data.tags.get("mlflow.parentRunId"),
                                                                    parents)))
               for run in latest.values()]
    log.debug("read %d cells from MLflow (%d runs)", len(records), len(runs))
    names = ", ".join(e.name for e in experiments)
    return records, f"MLflow {Path(results_dir) / 'mlflow.db'} (experiments: {names})"
