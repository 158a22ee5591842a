"""MLflow logging of a sweep: one experiment per campaign, a parent run per sweep, a child
run per cell. The driver is the only writer (docs/harness-notes.md §2.9); the store is always
``sqlite:///<results>/mlflow.db`` with artifacts in ``<results>/mlartifacts`` (never
``./mlruns``).

Per cell run: params for every setting and the cell's configuration; the metric at every
t logged with ``step=t`` (``top1``, ``energy_ratio``, ``spikes_per_sample``,
``synops_per_sample``) plus flat keys at the usual T (``top1_T4``, ``energy_ratio_T4``)
so ``search_runs`` can sort on them; tags method/task/model/cell_key/reference/git sha/package
versions/status; per-layer counts as a CSV artifact. A failed cell gets status FAILED and
its traceback as an artifact, and no metric.

The store is created once, atomically (:func:`ensure_store`: built under a temporary name,
then renamed), by the sweep holding the results directory's lock. When a sweep starts it
reconciles MLflow with the ledger (:meth:`SweepTracker.reconcile`): runs left RUNNING by a
sweep that died are marked KILLED, and every ledger record without its own finished run
(the sweep died between the ledger append and the MLflow log) is logged now, tagged
``snnbench.backfilled``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from snnbench.common.outcomes import samples_path
from snnbench.record import CellResult

log = logging.getLogger(__name__)

#: the flat summary steps (only those <= T are logged, plus T itself)
SUMMARY_STEPS = (1, 2, 4, 6, 8, 16, 32, 64, 128, 256)
STEP_METRICS = ("metric", "energy_ratio", "spikes_per_sample", "synops_per_sample", "latency", "unit_spikes_per_sample",
                "steps_per_sample")
#: the metric's 95 % interval per t (``metric_ci95`` of a per-t row), logged with step=t
CI_METRICS = ("metric_ci95_lo", "metric_ci95_hi")
#: the ANN metric's 95 % interval (``ann_ci95``)
ANN_CI_METRICS = ("ann_ci95_lo", "ann_ci95_hi")
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
PARAM_VALUE_LIMIT = 6000


def tracking_uri(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def artifact_root(results_dir: str | Path) -> str:
    return (Path(results_dir).resolve() / "mlartifacts").as_uri()


DB_NAME = "mlflow.db"
#: MLflow run statuses of a run that is over
TERMINAL = ("FINISHED", "FAILED", "KILLED")


def ensure_store(results_dir: str | Path) -> Path:
    """Create ``<results>/mlflow.db`` once, atomically: the schema is built (every migration
    run) in a temporary file that is renamed into place only when complete, so no process
    ever opens a half-migrated store. Call it holding the results directory's lock."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    results_dir = Path(results_dir).resolve()
    db = results_dir / DB_NAME
    if db.exists():
        return db
    results_dir.mkdir(parents=True, exist_ok=True)
    tmp = results_dir / f".{DB_NAME}.creating-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    uri = f"sqlite:///{tmp}"
    SqlAlchemyStore(uri, artifact_root(results_dir))
    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()
    os.replace(tmp, db)
    return db


class SweepTracker:
    """Creates the experiment and the sweep's parent run, and logs each finished cell."""

    def __init__(self, results_dir: str | Path, experiment: str, sweep_params: dict[str, Any],
                 sweep_tags: dict[str, str]) -> None:
        from mlflow import MlflowClient

        for name in ("mlflow", "alembic"):  # quiet the database-migration chatter (after mlflow set it up)
            logging.getLogger(name).setLevel(logging.WARNING)

        self.results_dir = Path(results_dir)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        ensure_store(self.results_dir)
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=tracking_uri(self.results_dir))
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=artifact_root(self.results_dir))
        self._experiment_ids = {experiment: self.experiment_id}
        name = "sweep-" + time.strftime("%Y%m%d-%H%M%S")
        self.parent = self.client.create_run(self.experiment_id, run_name=name, tags=dict(sweep_tags)).info.run_id
        self._log(self.parent, params={k: _param(v) for k, v in sweep_params.items()})

    # -- logging ---------------------------------------------------------------------------
    def _log(self, run_id: str, metrics: list | None = None, params: dict[str, str] | None = None,
             tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import Param, RunTag

        metrics = metrics or []
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
        items = [Param(k, v) for k, v in (params or {}).items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])
        tag_items = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, len(tag_items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=tag_items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_cell(self, result: CellResult | Mapping[str, Any], experiment: str | None = None,
                 extra_tags: dict[str, str] | None = None) -> str:
        """Log one cell result as a child run (of this sweep's parent when in its experiment); returns its run id."""
        r = CellResult.from_dict(result)
        experiment_id = self._experiment_id(experiment or self.experiment)
        parent = {"mlflow.parentRunId": self.parent} if experiment_id == self.experiment_id else {}
        run = self.client.create_run(experiment_id, run_name=r.label(), tags=dict(parent))
        run_id = run.info.run_id
        self._log(run_id, metrics=cell_metrics(r), params=cell_params(r),
                  tags={**parent, **cell_tags(r), **(extra_tags or {})})
        if r.layers:
            self.client.log_text(run_id, layers_csv(r), "layers.csv")
        samples = samples_path(self.results_dir, r.cell_key or "-")
        if r.ok and samples.is_file():  # the per-sample outcomes bench compare pairs
            self.client.log_artifact(run_id, str(samples))
        if not r.ok:
            self.client.log_text(run_id, r.error or "", "error.txt")
        self.client.set_terminated(run_id, status="FINISHED" if r.ok else "FAILED")
        return run_id

    def _experiment_id(self, name: str) -> str:
        if name not in self._experiment_ids:
            found = self.client.get_experiment_by_name(name)
            self._experiment_ids[name] = found.experiment_id if found else self.client.create_experiment(
                name, artifact_location=artifact_root(self.results_dir))
        return self._experiment_ids[name]

    def reconcile(self, latest: dict[str, dict[str, Any]]) -> dict[str, int]:
        """Make MLflow show what the ledger holds (call holding the results lock, so no other sweep is alive).

        * every run still RUNNING (other than this sweep's parent) belongs to a sweep that
          died: it is marked KILLED;
        * every latest ledger record of a cell without a FINISHED/FAILED run of its own
          (same ``ledger.record_id``; for records older than that tag, same cell_key and
          status) is logged now into its experiment, tagged ``snnbench.backfilled``.

        Returns counts: ``killed`` runs and ``backfilled`` records.
        """
        killed = 0
        experiments = list(self.client.search_experiments())
        ids = [e.experiment_id for e in experiments]
        runs = _search_all(self.client, ids) if ids else []
        for run in runs:
            if run.info.status == "RUNNING" and run.info.run_id != self.parent:
                self.client.set_terminated(run.info.run_id, status="KILLED")
                killed += 1
        by_name = {e.experiment_id: e.name for e in experiments}
        logged: set[tuple[str, str, str]] = set()   # (experiment, record id or "", cell_key/status)
        for run in runs:
            if run.info.status not in ("FINISHED", "FAILED"):
                continue
            tags = run.data.tags
            name = by_name.get(run.info.experiment_id, "")
            if tags.get("ledger.record_id"):
                logged.add((name, tags["ledger.record_id"], ""))
            if tags.get("cell_key"):
                logged.add((name, "", f"{tags['cell_key']}/{tags.get('status', '')}"))
        backfilled = 0
        for key, record in latest.items():
            experiment = (record.get("sweep") or {}).get("experiment") or self.experiment
            record_id = record.get("record_id")
            done = ((experiment, record_id, "") in logged if record_id
                    else (experiment, "", f"{key}/{record.get('status', '')}") in logged)
            if done:
                continue
            try:
                self.log_cell(dataclasses.replace(CellResult.from_dict(record), cell_key=key), experiment=experiment,
                              extra_tags={"snnbench.backfilled": "true"})
                backfilled += 1
            except Exception as err:  # noqa: BLE001 - one bad record must not stop the others
                log.warning("could not log ledger record %s of cell %s to MLflow: %s", record_id, key, err)
        if killed or backfilled:
            log.warning("MLflow reconciled with the ledger: %d run(s) of dead sweeps marked KILLED, %d ledger "
                        "record(s) without an MLflow run logged now", killed, backfilled)
        return {"killed": killed, "backfilled": backfilled}

    def log_sweep_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.parent, str(path), artifact_path)

    def finish(self, status: str = "FINISHED", summary: dict[str, Any] | None = None) -> None:
        if summary:
            self._log(self.parent, tags={f"summary.{k}": str(v) for k, v in summary.items()})
        self.client.set_terminated(self.parent, status=status)


def cell_tags(r: CellResult) -> dict[str, Any]:
    """Tags of a cell's run: identity, status, provenance, and what the MLflow reader rebuilds a record from."""
    provenance = r.provenance or {}
    spec, git = provenance.get("spec") or {}, provenance.get("git") or {}
    return {"method": r.method, "task": r.task, "model": r.model, "cell_key": r.cell_key or "", "status": r.status,
            "git.sha": git.get("sha") or "", "git.dirty": git.get("dirty"),
            "user_settings": json.dumps(spec.get("settings") or {}, sort_keys=True),
            "energy_model": json.dumps(r.energy_model or {}, sort_keys=True),
            "track": r.track or "plain", "reference": str(r.reference).lower(),
            "note": str((r.conversion or {}).get("note") or ""),
            "ledger.record_id": r.record_id or "",
            "weights_sha256": r.weights_sha256 or "",
            **{f"version.{k}": v for k, v in (provenance.get("versions") or {}).items()}}


def cell_params(r: CellResult) -> dict[str, str]:
    """Params of a cell's run: its configuration and every resolved setting (``setting.NAME``)."""
    spec = (r.provenance or {}).get("spec") or {}
    params = {"method": r.method, "task": r.task, "model": r.model, "T": str(r.T), "metric": str(r.metric)}
    for k in ("seed", "calib_size", "eval_size", "calib_batch_size", "device", "weights", "data_root"):
        if k in spec:
            params[k] = _param(spec[k])
    for k, v in (r.settings or {}).items():
        params[f"setting.{k}"] = _param(v)
    return params


def cell_metrics(r: CellResult) -> list:
    """Metrics of a successful cell's run: per t with ``step=t``, flat ``NAME_T<t>`` at the summary steps."""
    from mlflow.entities import Metric

    if not r.ok:
        return []
    now = int(time.time() * 1000)
    name = r.metric
    metrics = [Metric(f"ann_{name}", float(r.ann), now, 0), Metric("wall_s", float(r.wall_s), now, 0)]
    metrics += [Metric(key, float(value), now, 0) for key, value in zip(ANN_CI_METRICS, r.ann_ci95 or ())]
    for t_str, row in r.per_t.items():
        t = int(t_str)
        for key in STEP_METRICS:
            if row.get(key) is not None:
                metrics.append(Metric(name if key == "metric" else key, float(row[key]), now, t))
        for bound, value in zip(CI_METRICS, row.get("metric_ci95") or ()):
            metrics.append(Metric(bound, float(value), now, t))
    T = int(r.T)
    for t in sorted({s for s in SUMMARY_STEPS if s <= T} | {T}):
        row = r.per_t.get(str(t), {})
        for key, flat in (("metric", name), ("energy_ratio", "energy_ratio"), ("spikes_per_sample", "spikes_per_sample")):
            if row.get(key) is not None:
                metrics.append(Metric(f"{flat}_T{t}", float(row[key]), now, 0))
    return metrics


def layers_csv(result: Mapping[str, Any]) -> str:
    """Per-layer counts at T (and per t for spikes) as CSV text."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["layer", "type", "input", "ops_at_T", "dense_ops", "spikes_at_T", "unit_spikes_at_T", "neurons"])
    for layer in result.get("layers") or []:
        ops = layer.get("ops") or []
        spikes = layer.get("spikes") or []
        units = layer.get("unit_spikes") or []
        writer.writerow([layer.get("layer"), layer.get("type"), layer.get("input"),
                         ops[-1] if ops else "", layer.get("dense_ops", ""), spikes[-1] if spikes else "",
                         units[-1] if units else "", layer.get("neurons", "")])
    return out.getvalue()


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= PARAM_VALUE_LIMIT else text[:PARAM_VALUE_LIMIT - 3] + "..."


def _search_all(client, experiment_ids: list[str]) -> list:
    """Every run of the experiments, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, max_results=5000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def runs_by_cell_key(results_dir: str | Path, experiment: str) -> dict[str, list[dict[str, Any]]]:
    """Child runs of an experiment grouped by cell_key (status, run id, metrics): for tests and resume checks."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(results_dir))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for run in _search_all(client, [exp.experiment_id]):
        key = run.data.tags.get("cell_key")
        if key:
            out.setdefault(key, []).append({"run_id": run.info.run_id, "status": run.info.status,
                                            "metrics": dict(run.data.metrics), "params": dict(run.data.params),
                                            "tags": dict(run.data.tags)})
    return out
