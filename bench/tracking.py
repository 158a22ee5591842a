"""MLflow logging of a sweep: one experiment per campaign, a parent run per sweep, a child
run per cell. The driver is the only writer (harness.md §2.9); the store is always
``sqlite:///<results>/mlflow.db`` with artifacts in ``<results>/mlartifacts`` (never
``./mlruns``).

Per cell run: params for every setting and the cell's configuration; the metric at every
t logged with ``step=t`` (``top1``, ``energy_ratio``, ``spikes_per_sample``,
``synops_per_sample``) plus flat keys at the usual T (``top1_T4``, ``energy_ratio_T4``)
so ``search_runs`` can sort on them; tags method/task/model/cell_key/git sha/package
versions/status; per-layer counts as a CSV artifact. A failed cell gets status FAILED and
its traceback as an artifact, and no metric.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the flat summary steps (only those <= T are logged, plus T itself)
SUMMARY_STEPS = (1, 2, 4, 6, 8, 16, 32, 64, 128, 256)
STEP_METRICS = ("metric", "energy_ratio", "spikes_per_sample", "synops_per_sample", "unit_spikes_per_sample",
                "steps_per_sample")
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
PARAM_VALUE_LIMIT = 6000


def tracking_uri(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def artifact_root(results_dir: str | Path) -> str:
    return (Path(results_dir).resolve() / "mlartifacts").as_uri()


class SweepTracker:
    """Creates the experiment and the sweep's parent run, and logs each finished cell."""

    def __init__(self, results_dir: str | Path, experiment: str, sweep_params: dict[str, Any],
                 sweep_tags: dict[str, str]) -> None:
        from mlflow import MlflowClient

        for name in ("mlflow", "alembic"):  # quiet the database-migration chatter (after mlflow set it up)
            logging.getLogger(name).setLevel(logging.WARNING)

        self.results_dir = Path(results_dir)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=tracking_uri(self.results_dir))
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=artifact_root(self.results_dir))
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

    def log_cell(self, result: dict[str, Any]) -> str:
        """Log one cell result as a child run; returns its run id."""
        from mlflow.entities import Metric

        spec = result.get("provenance", {}).get("spec", {})
        label = f"{result['method']}/{result['model']}/{result['task']}"
        git = result.get("provenance", {}).get("git", {})
        versions = result.get("provenance", {}).get("versions", {})
        tags = {"mlflow.parentRunId": self.parent, "method": result["method"], "task": result["task"],
                "model": result["model"], "cell_key": result.get("cell_key", ""), "status": result["status"],
                "git.sha": git.get("sha") or "", "git.dirty": git.get("dirty"),
                "user_settings": json.dumps(spec.get("settings") or {}, sort_keys=True),
                "energy_model": json.dumps(result.get("energy_model") or {}, sort_keys=True),
                **{f"version.{k}": v for k, v in versions.items()}}
        run = self.client.create_run(self.experiment_id, run_name=label, tags={"mlflow.parentRunId": self.parent})
        run_id = run.info.run_id
        params = {"method": result["method"], "task": result["task"], "model": result["model"],
                  "T": str(result["T"]), "metric": str(result.get("metric"))}
        for k in ("seed", "calib_size", "eval_size", "calib_batch_size", "device", "weights", "data_root"):
            if k in spec:
                params[k] = _param(spec[k])
        for k, v in (result.get("settings") or {}).items():
            params[f"setting.{k}"] = _param(v)
        now = int(time.time() * 1000)
        metrics: list = []
        if result["status"] == "ok":
            name = result["metric"]
            metrics.append(Metric(f"ann_{name}", float(result["ann"]), now, 0))
            metrics.append(Metric("wall_s", float(result["wall_s"]), now, 0))
            per_t = result["per_t"]
            T = int(result["T"])
            for t_str, row in per_t.items():
                t = int(t_str)
                for key in STEP_METRICS:
                    if row.get(key) is not None:
                        metrics.append(Metric(name if key == "metric" else key, float(row[key]), now, t))
            for t in sorted({s for s in SUMMARY_STEPS if s <= T} | {T}):
                row = per_t.get(str(t), {})
                for key, flat in (("metric", name), ("energy_ratio", "energy_ratio"),
                                  ("spikes_per_sample", "spikes_per_sample")):
                    if row.get(key) is not None:
                        metrics.append(Metric(f"{flat}_T{t}", float(row[key]), now, 0))
        self._log(run_id, metrics=metrics, params=params, tags=tags)
        if result.get("layers"):
            self.client.log_text(run_id, layers_csv(result), "layers.csv")
        if result["status"] != "ok":
            self.client.log_text(run_id, result.get("error") or "", "error.txt")
        self.client.set_terminated(run_id, status="FINISHED" if result["status"] == "ok" else "FAILED")
        return run_id

    def log_sweep_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.parent, str(path), artifact_path)

    def finish(self, status: str = "FINISHED", summary: dict[str, Any] | None = None) -> None:
        if summary:
            self._log(self.parent, tags={f"summary.{k}": str(v) for k, v in summary.items()})
        self.client.set_terminated(self.parent, status=status)


def layers_csv(result: dict[str, Any]) -> str:
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


def runs_by_cell_key(results_dir: str | Path, experiment: str) -> dict[str, list[dict[str, Any]]]:
    """Child runs of an experiment grouped by cell_key (status, run id, metrics): for tests and resume checks."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(results_dir))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for run in client.search_runs([exp.experiment_id], max_results=50000):
        key = run.data.tags.get("cell_key")
        if key:
            out.setdefault(key, []).append({"run_id": run.info.run_id, "status": run.info.status,
                                            "metrics": dict(run.data.metrics), "params": dict(run.data.params),
                                            "tags": dict(run.data.tags)})
    return out
