"""Fault injection: the promises of README's "bench sweep" section under crashes, signals,
concurrent sweeps, timeouts, changed weights and bad flags (issue 16).

Real ``bench sweep`` processes are started with ``python -m snnbench.cli``; where a fault
must hit at an exact instant (mid-append, between the ledger append and the MLflow log),
a small launcher patches one function of the real code to SIGKILL its own process there.
Every process is bounded by a timeout and killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snnbench.ledger import Ledger
from snnbench.tracking import runs_by_cell_key

TESTS_DIR = Path(__file__).parent
CELL = ["--tasks", "digits", "--models", "vgg_small", "--T", "4", "--eval-size", "200", "--calib-size", "100",
        "--no-leaderboard"]
PROCESS_LIMIT_S = 420


def _env(plugin_site: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, SNNBENCH_FUSE="0", PYTHONUNBUFFERED="1")
    paths = [str(TESTS_DIR)] + ([str(plugin_site)] if plugin_site else []) + [p for p in sys.path if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _start(args: list[str], env: dict[str, str], launcher: str | None = None) -> subprocess.Popen:
    """``bench ARGS`` in a new process (through ``launcher`` code that patches a fault in, when given)."""
    code = launcher or "import sys\nfrom snnbench.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, limit: float = PROCESS_LIMIT_S) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=limit)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, out, err


def _kill_launcher(patch: str) -> str:
    """Launcher code: apply ``patch`` (which defines the fault) and run the CLI."""
    return ("import os, signal, sys\n" + patch + "\nfrom snnbench.cli import main\nsys.exit(main(sys.argv[1:]))\n")


def _processes_running(text: str, parent: int | None = None) -> list[int]:
    """PIDs of live processes whose command line contains ``text`` (children of ``parent`` only, when given)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if text in cmdline and fields[0] not in (b"Z", b"X") and (parent is None or int(fields[1]) == parent):
            pids.append(int(entry))
    return pids


def _all_lines_are_records(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    return records


# -- item 1: a torn ledger tail ----------------------------------------------------------
SIGKILL_MID_APPEND = _kill_launcher('''
import snnbench.ledger as ledger_module
real_append = ledger_module.Ledger.append
calls = []
def append(self, record):
    calls.append(1)
    if len(calls) == 2:   # the second record: half of it reaches the disk, then the process dies
        import json
        line = json.dumps(record, default=str).encode()
        with open(self.path, "ab") as f:
            f.write(line[: len(line) // 2]); f.flush(); os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real_append(self, record)
ledger_module.Ledger.append = append
''')


def test_sigkill_mid_append_loses_nothing_and_the_fragment_is_set_aside(tmp_path, digits_vgg):
    results = tmp_path / "r"
    args = ["sweep", "--methods", "ann,rate", *CELL, "--results", str(results), "--no-mlflow"]
    code, _, _ = _finish(_start(args, _env(), SIGKILL_MID_APPEND))
    assert code == -signal.SIGKILL
    text = (results / "ledger.jsonl").read_text()
    assert text.count("\n") == 1 and not text.endswith("\n")   # one record, then a torn fragment
    fragment = text.split("\n", 1)[1]

    from snnbench.cli import main

    assert main(args) == 0          # the rerun: repair, then run the cell whose record was torn
    records = _all_lines_are_records(results / "ledger.jsonl")
    assert sorted(r["method"] for r in records) == ["ann", "rate"]
    assert all(r["status"] == "ok" for r in records)
    (torn,) = results.glob("ledger.jsonl.torn-*")
    assert torn.read_text() == fragment


def test_missing_final_newline_keeps_the_record_and_non_objects_are_skipped(tmp_path, caplog):
    ledger = Ledger(tmp_path)
    ledger.append({"cell_key": "a", "status": "ok"})
    ledger.append({"cell_key": "b", "status": "ok"})
    ledger.path.write_bytes(ledger.path.read_bytes().rstrip(b"\n"))   # killed just before the "\n"
    ledger.append({"cell_key": "c", "status": "ok"})
    assert [r["cell_key"] for r in _all_lines_are_records(ledger.path)] == ["a", "b", "c"]
    assert not list(tmp_path.glob("*.torn-*"))
    with open(ledger.path, "a") as f:
        f.write("42\n[1, 2]\n")
    assert [r["cell_key"] for r in ledger.records()] == ["a", "b", "c"]
    assert "is not a JSON object" in caplog.text
    assert ledger.finished_keys() == {"a", "b", "c"}


def test_dry_run_and_leaderboard_survive_a_line_that_is_not_an_object(tmp_path, capsys, digits_vgg):
    from snnbench.cli import main

    args = ["sweep", "--methods", "ann", *CELL, "--results", str(tmp_path), "--no-mlflow"]
    assert main(args) == 0
    with open(tmp_path / "ledger.jsonl", "a") as f:
        f.write("42\n")
    assert main([*args, "--dry-run"]) == 0
    assert "1 cells (0 to run)" in capsys.readouterr().out
    assert main(["leaderboard", "--results", str(tmp_path), "--out", str(tmp_path / "lb")]) == 0


# -- item 2: MLflow catches up with the ledger -------------------------------------------
SIGKILL_AFTER_LEDGER_APPEND = _kill_launcher('''
import snnbench.tracking as tracking
def log_cell(self, result, *args, **kwargs):   # the ledger holds the record; MLflow gets a RUNNING run, then death
    self.client.create_run(self.experiment_id, run_name="half-logged",
                           tags={"mlflow.parentRunId": self.parent, "cell_key": result["cell_key"]})
    os.kill(os.getpid(), signal.SIGKILL)
tracking.SweepTracker.log_cell = log_cell
''')


def test_sigkill_between_ledger_and_mlflow_is_reconciled_on_the_next_start(tmp_path, digits_vgg):
    from mlflow import MlflowClient

    from snnbench.leaderboard.mlflow_source import mlflow_records
    from snnbench.tracking import tracking_uri

    args = ["sweep", "--methods", "ann,rate", *CELL, "--results", str(tmp_path), "--experiment", "e"]
    code, _, _ = _finish(_start(args, _env(), SIGKILL_AFTER_LEDGER_APPEND))
    assert code == -signal.SIGKILL
    (first,) = Ledger(tmp_path).records()
    client = MlflowClient(tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("e")
    before = client.search_runs([exp.experiment_id])
    assert sorted(r.info.status for r in before) == ["RUNNING", "RUNNING"]   # the dead sweep's parent and child

    from snnbench.cli import main

    assert main(args) == 0   # resume: runs the other cell and back-fills the first
    latest = Ledger(tmp_path).latest()
    assert len(latest) == 2 and first["cell_key"] in latest
    runs = runs_by_cell_key(tmp_path, "e")
    for key in latest:
        assert [r["status"] for r in runs[key] if r["status"] == "FINISHED"] == ["FINISHED"]
    statuses = {r.info.run_id: r.info.status for r in client.search_runs([exp.experiment_id])}
    assert "RUNNING" not in statuses.values()
    assert all(statuses[r.info.run_id] == "KILLED" for r in before)
    backfilled = [r for rs in runs.values() for r in rs if r["tags"].get("snnbench.backfilled") == "true"]
    assert [r["tags"]["cell_key"] for r in backfilled] == [first["cell_key"]]
    records, _ = mlflow_records(tmp_path, "e")   # what `leaderboard --from-mlflow` and `bench ui` show
    by_key = {r["cell_key"]: r for r in records}
    assert set(by_key) == set(latest)
    for key, record in latest.items():
        assert by_key[key]["ann"] == pytest.approx(record["ann"])
        assert by_key[key]["per_t"]["4"]["metric"] == pytest.approx(record["per_t"]["4"]["metric"])
    assert main(args) == 0   # a third start finds nothing to reconcile
    assert sum(len(rs) for rs in runs_by_cell_key(tmp_path, "e").values()) == sum(len(rs) for rs in runs.values())


# -- item 3: --cell-timeout --------------------------------------------------------------
def test_timeout_cannot_be_swallowed(tmp_path, plugin_site, digits_vgg):
    from snnbench.executors import SerialExecutor
    from snnbench.grid import GridOptions, expand_grid, parse_sets
    from snnbench.sweep import run_sweep

    small = GridOptions(T=4, calib_size=100, eval_size=200)
    eats = expand_grid(["swallower"], ["digits"], ["vgg_small"], parse_sets(["delay=600"]), [0], small)
    (swallowed,) = run_sweep(eats, tmp_path, SerialExecutor(str(tmp_path / "cache"), cell_timeout=5),
                             experiment="t", track=False).results
    assert swallowed["status"] == "failed" and swallowed["error"].startswith("timeout after 5 s")
    assert 5 <= swallowed["wall_s"] < 15
    assert not _processes_running("snnbench.cell_process", parent=os.getpid())   # the killed child is gone


@pytest.mark.slow
def test_timeout_counts_from_the_cell_start(tmp_path, plugin_site, digits_vgg, monkeypatch):
    from snnbench.executors import SerialExecutor
    from snnbench.grid import GridOptions, expand_grid, parse_sets
    from snnbench.sweep import run_sweep

    # the cell's process starts slowly (a loaded node): 50 s in sitecustomize, before any snnbench code
    slow_start = tmp_path / "slow_start"
    slow_start.mkdir()
    (slow_start / "sitecustomize.py").write_text(
        "import os, time\nif os.environ.get('SNNBENCH_TEST_SLOW_START'):\n"
        "    time.sleep(float(os.environ['SNNBENCH_TEST_SLOW_START']))\n")
    monkeypatch.syspath_prepend(str(slow_start))
    monkeypatch.setenv("SNNBENCH_TEST_SLOW_START", "50")
    small = GridOptions(T=4, calib_size=100, eval_size=200)
    quick = expand_grid(["sleepy"], ["digits"], ["vgg_small"], parse_sets(["delay=0.5"]), [0], small)
    started = time.monotonic()
    (fast,) = run_sweep(quick, tmp_path, SerialExecutor(str(tmp_path / "cache"), cell_timeout=45),
                        experiment="t", track=False).results
    assert time.monotonic() - started > 50       # the process start took longer than the limit ...
    assert fast["status"] == "ok", fast["error"]  # ... and was not counted


def test_default_serial_path_stays_in_process(tmp_path, digits_vgg, monkeypatch):
    import snnbench.cell_process as cell_process
    from snnbench.executors import SerialExecutor
    from snnbench.grid import GridOptions, expand_grid
    from snnbench.sweep import run_sweep

    def no_child(*args, **kwargs):
        raise AssertionError("a child process was started without --cell-timeout")

    monkeypatch.setattr(cell_process, "run_cell_with_timeout", no_child)
    cells = expand_grid(["ann"], ["digits"], ["vgg_small"], {}, [0], GridOptions(T=2, calib_size=50, eval_size=50))
    (result,) = run_sweep(cells, tmp_path, SerialExecutor(None), experiment="d", track=False).results
    assert result["status"] == "ok"


# -- item 4: two sweeps on one results directory -----------------------------------------
def test_two_sweeps_started_together_one_writer(tmp_path, plugin_site, digits_vgg):
    results = tmp_path / "fresh"
    args = ["sweep", "--methods", "sleepy,ann", "--set", "delay=20", *CELL, "--results", str(results),
            "--experiment", "x"]
    env = _env(plugin_site)
    procs = [_start(args, env), _start(args, env)]
    outcomes = [_finish(p) for p in procs]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 2], outcomes
    loser = next(i for i, (code, _, _) in enumerate(outcomes) if code == 2)
    winner_pid = procs[1 - loser].pid
    assert f"in use by PID {winner_pid}" in outcomes[loser][2]
    records = list(Ledger(results).records())
    assert sorted(r["method"] for r in records) == ["ann", "sleepy"]
    runs = runs_by_cell_key(results, "x")
    assert sorted(len(v) for v in runs.values()) == [1, 1]
    assert all(v[0]["status"] == "FINISHED" for v in runs.values())
    assert not list(results.glob(".mlflow.db.creating-*"))


def test_busy_results_directory_stops_a_second_sweep_at_once(tmp_path, capsys):
    from snnbench.cli import main
    from snnbench.results_lock import results_lock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom snnbench.results_lock import results_lock\n"
        f"with results_lock({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n")],
        stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        assert main(["sweep", "--methods", "ann", *CELL, "--results", str(tmp_path)]) == 2
        assert time.monotonic() - started < 30
        assert f"in use by PID {holder.pid}" in capsys.readouterr().err
        assert not (tmp_path / "mlflow.db").exists()     # the lock comes before the store
        holder.send_signal(signal.SIGKILL)               # the kernel frees the lock of a killed holder
        holder.wait(timeout=30)
        with results_lock(tmp_path):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# -- item 5: results tied to the exact weights -------------------------------------------
def test_retrained_weights_never_reuse_cached_numbers_and_rows_stay_apart(tmp_path, digits_vgg, monkeypatch):
    import shutil

    import torch

    from snnbench.executors import SerialExecutor
    from snnbench.grid import GridOptions, expand_grid
    from snnbench.leaderboard.data import load_ledger
    from snnbench.leaderboard.rows import build_rows
    from snnbench.sweep import run_sweep
    from snnbench.common import cache as zoo_cache
    from snnbench.tasks.zoo.weights import file_sha256

    zoo = tmp_path / "zoo"
    shutil.copytree(os.environ["SNNBENCH_ZOO_DIR"], zoo)
    monkeypatch.setenv("SNNBENCH_ZOO_DIR", str(zoo))
    monkeypatch.setenv("SNNBENCH_ZOO_REFERENCE", "off")   # the user's own zoo cache, not shipped checkpoints
    (weights_file,) = [p for p in zoo.glob("vgg_small__digits__*.pt")]
    cells = expand_grid(["ann"], ["digits"], ["vgg_small"], {}, [0], GridOptions(T=2, calib_size=50, eval_size=200))
    results = tmp_path / "r"
    (old,) = run_sweep(cells, results, SerialExecutor(str(results / "cache")), experiment="w", track=False).results
    assert old["weights_sha256"] == file_sha256(weights_file)

    # "retrain": other weights in the same zoo entry (valid sidecar), same cell_key
    stem = weights_file.stem
    state, record = zoo_cache.load_entry(zoo, stem)
    torch.manual_seed(1)
    state = {k: (v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v) for k, v in state.items()}
    zoo_cache.save_entry(zoo, stem, state, record)
    (new,) = run_sweep(cells, results, SerialExecutor(str(results / "cache")), experiment="w", force=True,
                       track=False).results
    assert new["cell_key"] == old["cell_key"] and new["weights_sha256"] == file_sha256(weights_file)
    assert new["weights_sha256"] != old["weights_sha256"]
    assert new["ann"] != old["ann"]                       # measured anew, not the cached old number
    assert len(list((results / "cache" / "ann").glob("*.pt"))) == 2

    # seeds of one row, but run on different weights: never one row, and the labels say so
    extra = expand_grid(["ann"], ["digits"], ["vgg_small"], {}, [1], GridOptions(T=2, calib_size=50, eval_size=200))
    state2 = {k: (v * 1.01 if v.is_floating_point() else v) for k, v in state.items()}
    zoo_cache.save_entry(zoo, stem, state2, record)
    run_sweep(extra, results, SerialExecutor(str(results / "cache")), experiment="w", track=False)
    rows = build_rows(load_ledger(results)).rows
    digits_rows = rows[rows["task"] == "digits"]
    assert len(digits_rows) == 2
    assert all("weights_sha=" in label for label in digits_rows["label"])
    assert digits_rows["weights_sha"].nunique() == 2


# -- item 6: no silent flag rewriting ----------------------------------------------------
@pytest.mark.parametrize("flags, named", [
    (["--calib-size", "0"], "--calib-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--eval-size", "0"], "--eval-size"),
    (["--seeds", "a"], "--seeds"),
    (["--device", "tpu"], "--device"),
    (["--T", "0"], "--T"),
    (["--cell-timeout", "0"], "--cell-timeout"),
    (["--retries", "-1"], "--retries"),
])
def test_bad_sweep_flags_exit_2_naming_the_flag(tmp_path, capsys, flags, named):
    from snnbench.cli import main

    args = ["sweep", "--methods", "ann", "--tasks", "digits", "--models", "vgg_small", "--results", str(tmp_path)]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench sweep: error: ") and named in err and "Traceback" not in err
    assert not (tmp_path / "ledger.jsonl").exists()


def test_bench_run_and_sweep_share_the_validation(capsys):
    from snnbench.cli import main

    assert main(["run", "--method", "ann", "--task", "digits", "--device", "tpu"]) == 2
    assert "--device must be cpu, cuda, cuda:N or auto" in capsys.readouterr().err


def test_calib_size_is_taken_as_given(tmp_path, capsys):
    from snnbench.cli import main

    base = ["sweep", "--methods", "rate", "--tasks", "digits", "--models", "vgg_small", "--results", str(tmp_path),
            "--dry-run"]
    assert main([*base, "--calib-size", "1"]) == 0
    one = capsys.readouterr().out.split()[0]
    assert main([*base, "--calib-size", "1000"]) == 0
    assert capsys.readouterr().out.split()[0] != one   # different cells, different keys


# -- item 8: smaller ones ----------------------------------------------------------------
def test_error_column_shows_the_real_cause_of_a_wrapped_exception():
    import traceback

    from snnbench.tracebacks import error_line

    class CellTimeoutError(Exception):
        pass

    class BackendCompilerFailed(Exception):
        pass

    try:
        try:
            raise CellTimeoutError("timeout after 4 s")
        except CellTimeoutError as cause:
            raise BackendCompilerFailed(None) from cause
    except BackendCompilerFailed:
        text = traceback.format_exc()
    assert text.rstrip().endswith("None")
    assert error_line(text).endswith("CellTimeoutError: timeout after 4 s")
    assert error_line("timeout after 6 s: the cell ran longer\nmore") == "timeout after 6 s: the cell ran longer"


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_weights_file_with_code_is_refused_without_the_unsafe_advice(tmp_path):
    import torch

    from snnbench.tasks.zoo.weights import WeightsRefusedError, load_state_dict_file

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Payload()}, path)
    with pytest.raises(WeightsRefusedError) as info:
        load_state_dict_file(path)
    message = str(info.value)
    assert "holds pickled Python code" in message and "refused" in message
    assert "weights_only=False" not in message


@pytest.mark.slow
def test_next_bench_ui_stops_the_orphan_of_a_killed_one(tmp_path):
    from snnbench.tracking import ensure_store
    from snnbench.process_groups import group_alive as _group_alive
    from snnbench.ui import STATE_NAME, _port_problem, _stop_orphaned_server

    ensure_store(tmp_path)
    port = next(p for p in range(5600, 5700) if _port_problem("127.0.0.1", p) is None)
    ui = subprocess.Popen([sys.executable, "-m", "snnbench.cli", "ui", "--results", str(tmp_path), "--port",
                           str(port)], stdout=subprocess.PIPE, text=True, env=_env())
    pgid = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "ready" not in (ui.stdout.readline() or "ready"):
            pass
        pgid = json.loads((tmp_path / STATE_NAME).read_text())["server_pgid"]
        ui.send_signal(signal.SIGKILL)
        ui.wait(timeout=30)
        assert _group_alive(pgid)                       # the orphan still serves
        assert _stop_orphaned_server(tmp_path) is True  # what the next `bench ui` does first
        assert not _group_alive(pgid)
        assert not (tmp_path / STATE_NAME).exists()
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
        if pgid is not None and _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


# -- item 7 and item 3 on Ray --------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.ray
def test_ray_local_is_loopback_only_and_queued_cells_do_not_time_out(tmp_path, plugin_site, digits_vgg,
                                                                      monkeypatch):
    import ipaddress
    import shutil

    ray = pytest.importorskip("ray")
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to list listening sockets")
    from snnbench.executors import RayExecutor
    from snnbench.grid import GridOptions, expand_grid, parse_sets
    from snnbench.sweep import run_sweep

    monkeypatch.setenv("PYTHONPATH", _env(plugin_site)["PYTHONPATH"])
    small = GridOptions(T=4, calib_size=100, eval_size=200)
    queued = expand_grid(["sleepy"], ["digits"], ["vgg_small"], parse_sets(["delay=25,25.1,25.2"]), [0], small)
    eats = expand_grid(["swallower"], ["digits"], ["vgg_small"], parse_sets(["delay=120"]), [0], small)
    executor = RayExecutor(str(tmp_path / "cache"), address="local", retries=1, cell_timeout=45, num_cpus=1)
    try:
        outcome = run_sweep(queued + eats, tmp_path, executor, experiment="q", track=False)
        sockets = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    finally:
        ray.shutdown()
    listening = [line.split()[3].rsplit(":", 1)[0].strip("[]").replace("*", "0.0.0.0") for line in sockets.splitlines()
                 if any(name in line for name in ('"raylet"', '"gcs_server"', '"ray::'))]
    by_method = {}
    for r in outcome.results:
        by_method.setdefault(r["method"], []).append(r)
    # one CPU: the last sleepy cell waits > 50 s in the queue, longer than the limit, and still passes
    assert [r["status"] for r in by_method["sleepy"]] == ["ok"] * 3
    (eaten,) = by_method["swallower"]
    assert eaten["status"] == "failed" and eaten["error"].startswith("timeout after 45 s")
    assert listening, "no Ray listener found"
    for ip in listening:
        address = ipaddress.ip_address(ip)
        address = getattr(address, "ipv4_mapped", None) or address
        assert address.is_loopback, f"Ray listens on {ip}"
