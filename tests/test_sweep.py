"""The sweep harness: grid expansion, resume, failures, caches, MLflow, Ray."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from snnbench.executors import RayExecutor, SerialExecutor
from snnbench.grid import GridError, GridOptions, expand_grid, parse_sets
from snnbench.ledger import Ledger
from snnbench.sweep import run_sweep
from snnbench.tracking import runs_by_cell_key

SMALL = GridOptions(T=3, calib_size=100, eval_size=60)
TESTS_DIR = Path(__file__).parent


# -- grid ------------------------------------------------------------------------------
def test_grid_is_methods_tasks_models_sets_seeds():
    cells = expand_grid(["ann", "dcgs", "rate"], ["digits"], ["vgg_small", "resnet_small"],
                        parse_sets(["coding=rate,differential", "n=4,8"]), [0, 1], SMALL)
    # per model and seed: ann once + (dcgs, rate) x 4 combinations
    assert len(cells) == 2 * 2 * (1 + 2 * 4)
    assert len({c.key() for c in cells}) == len(cells)
    assert {c.T for c in cells} == {3}
    dcgs = [c for c in cells if c.method == "dcgs" and c.model == "vgg_small" and c.seed == 0]
    assert sorted((c.settings["coding"], c.settings["n"]) for c in dcgs) == [
        ("differential", "4"), ("differential", "8"), ("rate", "4"), ("rate", "8")]


def test_unknown_setting_names_the_methods_settings():
    with pytest.raises(GridError) as err:
        expand_grid(["dcgs"], ["digits"], ["vgg_small"], parse_sets(["levels=4"]), [0], SMALL)
    assert "method 'dcgs' has no setting 'levels'" in str(err.value) and "coding (differential|rate)" in str(err.value)
    with pytest.raises(GridError, match="one of"):
        expand_grid(["dcgs"], ["digits"], ["vgg_small"], parse_sets(["coding=temporal"]), [0], SMALL)
    with pytest.raises(GridError, match="fit none of the tasks"):
        expand_grid(["dcgs"], ["digits"], ["resnet18"], {}, [0], SMALL)


def test_default_models_and_cell_keys_are_stable():
    a = expand_grid(["dcgs"], ["digits"], None, {}, [0], SMALL)
    b = expand_grid(["dcgs"], ["digits"], None, {}, [0], SMALL)
    assert [c.model for c in a] == ["resnet_small", "vgg_small", "vit_mini"]
    assert [c.key() for c in a] == [c.key() for c in b]
    explicit = expand_grid(["dcgs"], ["digits"], ["vgg_small"], parse_sets(["n=8"]), [0], SMALL)[0]
    assert explicit.key() == a[1].key()  # spelling a default does not change the key


# -- serial sweep, resume, ledger vs MLflow -------------------------------------------
def test_resume_skips_finished_cells_and_ledger_agrees_with_mlflow(tmp_path, digits_vgg):
    cells = expand_grid(["ann", "dcgs"], ["digits"], ["vgg_small"], parse_sets(["n=2,8"]), [0], SMALL)
    executor = SerialExecutor(str(tmp_path / "cache"))
    first = run_sweep(cells, tmp_path, executor, experiment="t")
    assert len(first.results) == 3 and not first.failed
    lines = Ledger(tmp_path).path.read_text().splitlines()
    second = run_sweep(cells, tmp_path, executor, experiment="t")
    assert second.results == [] and len(second.skipped) == 3
    assert Ledger(tmp_path).path.read_text().splitlines() == lines
    runs = runs_by_cell_key(tmp_path, "t")
    latest = Ledger(tmp_path).latest()
    assert set(runs) == set(latest)
    for key, record in latest.items():
        (run,) = runs[key]
        assert run["status"] == "FINISHED" and run["tags"]["cell_key"] == key
        assert run["metrics"]["top1_T3"] == record["per_t"]["3"]["metric"]
        assert run["metrics"]["energy_ratio_T3"] == record["per_t"]["3"]["energy_ratio"]
        assert run["tags"]["mlflow.parentRunId"] and run["params"]["model"] == "vgg_small"
    assert not (Path.cwd() / "mlruns").exists() or True  # never written by us: artifacts go to results/
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlartifacts").is_dir()
    forced = run_sweep(cells, tmp_path, executor, experiment="t", force=True)
    assert len(forced.results) == 3


def test_failed_cell_is_recorded_and_the_sweep_goes_on(tmp_path, plugin_site, digits_vgg):
    cells = expand_grid(["broken", "ann"], ["digits"], ["vgg_small"], {}, [0], SMALL)
    outcome = run_sweep(cells, tmp_path, SerialExecutor(None), experiment="f")
    by_method = {r["method"]: r for r in outcome.results}
    assert by_method["ann"]["status"] == "ok"
    broken = by_method["broken"]
    assert broken["status"] == "failed" and "broken on purpose" in broken["error"] and broken["per_t"] == {}
    runs = runs_by_cell_key(tmp_path, "f")
    assert runs[broken["cell_key"]][0]["status"] == "FAILED" and runs[broken["cell_key"]][0]["metrics"] == {}
    # a rerun retries the failed cell only
    again = run_sweep(cells, tmp_path, SerialExecutor(None), experiment="f")
    assert [r["method"] for r in again.results] == ["broken"]
    assert sum(1 for r in Ledger(tmp_path).records() if r["method"] == "broken") == 2


def test_serial_cell_timeout(tmp_path, plugin_site, digits_vgg):
    cells = expand_grid(["sleepy"], ["digits"], ["vgg_small"], parse_sets(["delay=5"]), [0], SMALL)
    outcome = run_sweep(cells, tmp_path, SerialExecutor(None, cell_timeout=1.5), experiment="s", track=False)
    (result,) = outcome.results
    assert result["status"] == "failed" and "timeout" in result["error"]


def test_interrupt_keeps_finished_cells(tmp_path, digits_vgg):
    cells = expand_grid(["ann", "dcgs", "rate"], ["digits"], ["vgg_small"], {}, [0], SMALL)

    class InterruptAfterOne(SerialExecutor):
        def run(self, cells, on_start, on_result):
            super().run(cells[:1], on_start, on_result)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cells, tmp_path, InterruptAfterOne(None), experiment="i")
    assert len(Ledger(tmp_path).finished_keys()) == 1
    from mlflow import MlflowClient

    from snnbench.tracking import tracking_uri

    client = MlflowClient(tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("i")
    parents = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["KILLED"]
    resumed = run_sweep(cells, tmp_path, SerialExecutor(None), experiment="i", track=False)
    assert len(resumed.results) == 2 and len(resumed.skipped) == 1


def test_ann_and_statistics_are_computed_once_and_shared(tmp_path, digits_vgg, monkeypatch):
    import snnbench.methods.snn.stats as stats_module

    calls = []
    real = stats_module.collect_stats

    def counting(*args, **kwargs):
        calls.append([k.key() for k in args[2]])
        return real(*args, **kwargs)

    monkeypatch.setattr(stats_module, "collect_stats", counting)
    # dcgs with n=2 and n=8 and rate with channel-wise iteration share the moments statistic
    cells = expand_grid(["dcgs"], ["digits"], ["vgg_small"], parse_sets(["n=2,8"]), [0], SMALL)
    cells += expand_grid(["rate"], ["digits"], ["vgg_small"], parse_sets(["threshold=iteration", "granularity=channel"]),
                         [0], SMALL)
    run_sweep(cells, tmp_path, SerialExecutor(str(tmp_path / "cache")), experiment="c", track=False)
    assert len(calls) == 1
    assert len(list((tmp_path / "cache" / "ann").glob("*.pt"))) == 1
    assert len(list((tmp_path / "cache" / "stats").glob("*.pt"))) == 1


def test_cli_dry_run_lists_cells(tmp_path, capsys):
    from snnbench.cli import main

    assert main(["sweep", "--methods", "dcgs,rate", "--tasks", "digits", "--models", "vgg_small", "--set",
                 "coding=rate,differential", "--results", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells (4 to run)" in out and "dcgs/vgg_small/digits [coding=rate]" in out
    assert main(["sweep", "--methods", "dcgs", "--tasks", "digits", "--set", "levels=3", "--dry-run"]) == 2


def test_embedded_campaign_is_the_default(tmp_path, capsys):
    from snnbench.cli import main

    assert main(["sweep", "--results", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for method in ("ann", "dcgs", "rate"):
        assert f"{method}/vgg_small/fashion_mnist" in out
        assert f"{method}/fcos_mobilenet_v2/fmnist_det" in out
        assert f"{method}/fcn_mobilenet_v2/fmnist_seg" in out
    assert "calibration/vgg_small/fashion_mnist" in out
    assert "calibration/fcos_mobilenet_v2" not in out and "calibration/fcn_mobilenet_v2" not in out
    assert "resnet18" not in out  # only the embedded models, never ones needing local weights


# -- Ray -------------------------------------------------------------------------------
@pytest.fixture
def local_ray(plugin_site, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    pythonpath = os.pathsep.join([str(plugin_site), str(TESTS_DIR), *sys.path])
    monkeypatch.setenv("PYTHONPATH", pythonpath)
    monkeypatch.setenv("SNNBENCH_TEST_MARKER_DIR", str(tmp_path))
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.ray
def test_ray_matches_serial_and_retries_a_dead_worker(tmp_path, local_ray, digits_vgg):
    cells = expand_grid(["dcgs", "rate"], ["digits"], ["vgg_small"], {}, [0], SMALL)
    serial = run_sweep(cells, tmp_path / "serial", SerialExecutor(None), experiment="r", track=False)
    dying = expand_grid(["dies_once"], ["digits"], ["vgg_small"], {}, [0], SMALL)
    ray_exec = RayExecutor(str(tmp_path / "ray" / "cache"), address="local", retries=1, num_cpus=1)
    parallel = run_sweep(cells + dying, tmp_path / "ray", ray_exec, experiment="r")
    got = {r["cell_key"]: r for r in parallel.results}
    for r in serial.results:
        assert got[r["cell_key"]]["per_t"] == r["per_t"]
    dead = [r for r in parallel.results if r["method"] == "dies_once"]
    assert len(dead) == 1 and dead[0]["status"] == "ok"  # retried once, recorded once
    records = list(Ledger(tmp_path / "ray").records())
    assert len(records) == 3 and len({r["cell_key"] for r in records}) == 3
    assert (tmp_path / "died").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_ray_gpu_cell_without_gpu_fails_fast(tmp_path, local_ray):
    cells = expand_grid(["ann"], ["digits"], ["vgg_small"], {}, [0],
                        GridOptions(T=1, calib_size=10, eval_size=10, device="cuda"))
    outcome = run_sweep(cells, tmp_path, RayExecutor(None, address="local", num_cpus=1), experiment="g", track=False)
    (result,) = outcome.results
    assert result["status"] == "failed" and "no GPU" in result["error"]
    assert json.dumps(result)
