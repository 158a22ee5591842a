"""The pool executor (``bench sweep --executor pool``, what ``make demo`` runs) and the
longest-first order of parallel sweeps."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pytest

from snnbench.campaigns import EMBEDDED_CAMPAIGN, longest_first
from snnbench.cell import CellSpec
from snnbench.executors import SerialExecutor
from snnbench.grid import GridOptions, expand_grid, parse_sets
from snnbench.ledger import Ledger
from snnbench.pool import PoolExecutor, pick_next
from snnbench.sweep import run_sweep

SMALL = GridOptions(T=3, calib_size=100, eval_size=60)
TESTS_DIR = Path(__file__).parent
ROOT = TESTS_DIR.parent


def _pool_processes() -> list[int]:
    """Live (non-zombie) children of this process that are pool workers."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if "snnbench.pool" in cmdline and fields[0] not in (b"Z", b"X") and int(fields[1]) == os.getpid():
            pids.append(int(entry))
    return pids


# -- order -----------------------------------------------------------------------------
def _embedded_cells() -> list[CellSpec]:
    from snnbench.sweep import add_sweep_parser, grid_from_args

    parser = argparse.ArgumentParser()
    add_sweep_parser(parser.add_subparsers())
    cells, _ = grid_from_args(parser.parse_args(["sweep"]))
    return cells


def test_embedded_campaign_runs_longest_first_when_parallel():
    cells = _embedded_cells()
    ordered = longest_first(cells)
    assert sorted(c.key() for c in ordered) == sorted(c.key() for c in cells)  # the same 18 cells
    assert len(cells) == 18 and all(c.label() in EMBEDDED_CAMPAIGN.expected_s for c in cells)
    labels = [c.label() for c in ordered]
    assert labels[:2] == ["dcgs/fcos_mobilenet_v2/fmnist_det", "rate/fcos_mobilenet_v2/fmnist_det"]
    assert labels.index("ann/vgg_small/fashion_mnist") == 17
    assert labels != [c.label() for c in cells]  # the grid's order is not longest first


def test_unknown_cells_keep_their_order_after_the_known_ones():
    cells = expand_grid(["dcgs", "ann"], ["digits"], ["vgg_small", "resnet_small"], {}, [0], SMALL)
    assert [c.key() for c in longest_first(cells)] == [c.key() for c in cells]


class _Recorder:
    """An executor that records the order it was handed the cells in and runs none."""

    def __init__(self, parallel: bool) -> None:
        self.parallel = parallel
        self.order: list[str] = []

    def run(self, cells, on_start, on_result):
        self.order = [c.label() for c in cells]


@pytest.mark.parametrize("parallel", [True, False])
def test_a_parallel_executor_is_handed_the_longest_cells_first(tmp_path, parallel):
    cells = _embedded_cells()
    recorder = _Recorder(parallel)
    run_sweep(cells, tmp_path, recorder, track=False)
    expected = longest_first(cells) if parallel else cells
    assert recorder.order == [c.label() for c in expected]


def test_an_idle_worker_takes_a_model_that_is_not_running():
    det = expand_grid(["dcgs", "rate"], ["fmnist_det"], ["fcos_mobilenet_v2"], {}, [0], SMALL)
    seg = expand_grid(["rate"], ["fmnist_seg"], ["fcn_mobilenet_v2"], {}, [0], SMALL)
    waiting = [det[1], seg[0]]
    assert pick_next(waiting, running=[det[0]]) == 1   # not the second detection cell beside the first
    assert pick_next(waiting, running=[]) == 0
    assert pick_next([det[1]], running=[det[0]]) == 0  # nothing else waits: the same model it is


def test_make_demo_runs_the_pool_executor():
    demo = ROOT.joinpath("Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "bench sweep --results results --executor pool" in demo


# -- the pool ----------------------------------------------------------------------------
def test_pool_runs_cells_side_by_side_with_the_serial_numbers(tmp_path, digits_vgg):
    cells = expand_grid(["ann", "dcgs", "rate"], ["digits"], ["vgg_small"], {}, [0], SMALL)
    serial = run_sweep(cells, tmp_path / "serial", SerialExecutor(None), experiment="p", track=False)
    events: list[str] = []
    pool = PoolExecutor(str(tmp_path / "pool" / "cache"), workers=2, threads=1)
    real_run = pool.run

    def watched(cells, on_start, on_result):
        real_run(cells, lambda c: (events.append("start"), on_start(c)),
                 lambda c, r: (events.append("done"), on_result(c, r)))

    pool.run = watched
    parallel = run_sweep(cells, tmp_path / "pool", pool, experiment="p", track=False)
    assert events[:2] == ["start", "start"]  # two cells running before the first finished
    got = {r["cell_key"]: r for r in parallel.results}
    assert set(got) == {r["cell_key"] for r in serial.results}
    for r in serial.results:
        assert got[r["cell_key"]]["status"] == "ok"
        assert got[r["cell_key"]]["per_t"] == r["per_t"]
        assert got[r["cell_key"]]["threads"] == 1
    assert len(Ledger(tmp_path / "pool").finished_keys()) == 3
    assert not _pool_processes()


def test_pool_faults_are_recorded_and_the_sweep_goes_on(tmp_path, plugin_site, digits_vgg, monkeypatch):
    monkeypatch.setenv("SNNBENCH_TEST_MARKER_DIR", str(tmp_path))
    cells = expand_grid(["broken", "dies_once", "ann"], ["digits"], ["vgg_small"], {}, [0], SMALL)
    cells += expand_grid(["swallower"], ["digits"], ["vgg_small"], parse_sets(["delay=600"]), [0], SMALL)
    started = time.monotonic()
    outcome = run_sweep(cells, tmp_path / "r", PoolExecutor(None, workers=2, threads=1, cell_timeout=8),
                        experiment="f", track=False)
    assert time.monotonic() - started < 120
    by_method = {r["method"]: r for r in outcome.results}
    assert set(by_method) == {"broken", "dies_once", "ann", "swallower"}
    assert by_method["broken"]["status"] == "failed" and "broken on purpose" in by_method["broken"]["error"]
    assert by_method["dies_once"]["status"] == "failed" and "CellProcessDied" in by_method["dies_once"]["error"]
    assert (tmp_path / "died").exists()
    assert by_method["ann"]["status"] == "ok"
    swallowed = by_method["swallower"]
    assert swallowed["status"] == "failed" and swallowed["error"].startswith("timeout after 8 s")
    assert 8 <= swallowed["wall_s"] < 20
    assert len(list(Ledger(tmp_path / "r").records())) == 4
    assert not _pool_processes()  # the killed workers and their replacements are gone
    again = run_sweep(cells[1:2], tmp_path / "r", PoolExecutor(None, workers=2, threads=1), experiment="f",
                      track=False)
    assert [r["status"] for r in again.results] == ["ok"]  # a rerun retries the failed cell


def test_interrupt_kills_the_workers_and_keeps_finished_cells(tmp_path, plugin_site, digits_vgg):
    cells = expand_grid(["ann"], ["digits"], ["vgg_small"], {}, [0], SMALL)
    cells += expand_grid(["sleepy"], ["digits"], ["vgg_small"], parse_sets(["delay=600"]), [0], SMALL)

    class InterruptAfterOne(PoolExecutor):
        def run(self, cells, on_start, on_result):
            def then_interrupt(cell, result):
                on_result(cell, result)
                raise KeyboardInterrupt

            super().run(cells, on_start, then_interrupt)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cells, tmp_path, InterruptAfterOne(None, workers=2, threads=1), experiment="i", track=False)
    assert [r["method"] for r in Ledger(tmp_path).records()] == ["ann"]
    assert not _pool_processes()


def test_workers_start_before_mlflow_opens_and_go_if_it_fails(tmp_path, monkeypatch):
    import snnbench.sweep as sweep

    seen: list[int] = []

    def failing_tracker(*args, **kwargs):
        seen.append(len(_pool_processes()))
        raise RuntimeError("MLflow store unavailable")

    monkeypatch.setattr(sweep, "_open_tracker", failing_tracker)
    cells = expand_grid(["ann"], ["digits"], ["vgg_small"], {}, [0], SMALL)
    with pytest.raises(RuntimeError, match="MLflow store unavailable"):
        run_sweep(cells, tmp_path, PoolExecutor(None, workers=2, threads=1), experiment="m")
    assert seen == [1]  # one cell: one worker, already started while MLflow opened
    assert not _pool_processes()


def test_bad_workers_flag_exits_2(tmp_path, capsys):
    from snnbench.cli import main

    assert main(["sweep", "--executor", "pool", "--workers", "0", "--results", str(tmp_path)]) == 2
    assert "--workers" in capsys.readouterr().err
