"""`bench ui`: the MLflow server command, the missing-database error, and a real start/stop."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from snnbench.ui import add_ui_parser, build_server_command, cmd_ui

ROOT = Path(__file__).resolve().parents[1]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench")
    add_ui_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    with opener.open(url, timeout=timeout) as resp:
        return resp.status, resp.read()


def _proc_table() -> dict[int, dict]:
    """pid -> {ppid, pgid, state, cmdline} for every process, from /proc (Linux)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        table[int(entry)] = {"state": fields[0].decode(), "ppid": int(fields[1]), "pgid": int(fields[2]),
                             "cmdline": cmdline}
    return table


def _descendants(pid: int, table: dict[int, dict]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, info in table.items() if info["ppid"] == parent]
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    """Running and not a zombie (an unreaped orphan is a zombie, not a leak)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] not in (b"Z", b"X")


# -- pure parts ------------------------------------------------------------------------
def test_parser_defaults():
    args = _parse(["ui"])
    assert (args.results, args.port, args.host) == ("results", 5000, "127.0.0.1")
    args = _parse(["ui", "--results", "out", "--port", "5123", "--host", "0.0.0.0"])
    assert (args.results, args.port, args.host) == ("out", 5123, "0.0.0.0")


def test_build_server_command_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = _parse(["ui"])
    argv, env = build_server_command(args.results, args.host, args.port)
    results = (tmp_path / "results").resolve()
    assert argv[:4] == [sys.executable, "-m", "mlflow", "server"]
    backend = _option(argv, "--backend-store-uri")
    assert backend == f"sqlite:///{results}/mlflow.db"
    assert backend.startswith("sqlite:////")  # three slashes + an absolute path
    assert os.path.isabs(backend[len("sqlite:///"):])
    artifacts = _option(argv, "--default-artifact-root")
    assert artifacts == str(results / "mlartifacts") and os.path.isabs(artifacts)
    assert _option(argv, "--artifacts-destination") == artifacts
    assert _option(argv, "--host") == "127.0.0.1"
    assert _option(argv, "--port") == "5000"
    assert "mlruns" not in " ".join(argv)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_build_server_command_is_pure(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    argv, env = build_server_command(tmp_path / "r", "0.0.0.0", 6001)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"  # caller's env untouched
    assert env["PATH"] == os.environ["PATH"]
    assert _option(argv, "--host") == "0.0.0.0" and _option(argv, "--port") == "6001"
    assert not (tmp_path / "r").exists()


def test_missing_database_is_a_usage_error(tmp_path, capsys):
    results = tmp_path / "nothing-here"
    rc = cmd_ui(argparse.Namespace(results=str(results), port=5000, host="127.0.0.1"))
    assert rc == 2
    err = capsys.readouterr().err
    assert "no sweep has been logged" in err
    assert str(results) in err
    assert f"bench sweep --results {results}" in err
    assert not results.exists()


def test_busy_port_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "mlflow.db").write_bytes(b"")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = cmd_ui(argparse.Namespace(results=str(tmp_path), port=port, host="127.0.0.1"))
    assert rc == 2
    assert "already in use" in capsys.readouterr().err


# -- shutdown ------------------------------------------------------------------------
def test_server_exit_status_is_returned(tmp_path, monkeypatch, capsys):
    import snnbench.ui as ui

    (tmp_path / "mlflow.db").write_bytes(b"")
    monkeypatch.setattr(ui, "build_server_command", lambda results, host, port: (
        [sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ)))
    rc = cmd_ui(argparse.Namespace(results=str(tmp_path), port=_free_port(), host="127.0.0.1"))
    assert rc == 3
    assert "http://127.0.0.1:" in capsys.readouterr().out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_stop_escalates_to_sigkill_for_the_whole_group(tmp_path):
    """A group whose members ignore SIGTERM is killed after the grace period, children too."""
    from snnbench.process_groups import stop_process_group as _stop_process_group

    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    leader_code = (f"import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   f"subprocess.Popen([sys.executable, '-c', {stubborn!r}]); "
                   f"open({str(tmp_path / 'ready')!r}, 'w').close(); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", leader_code], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # let the grandchild install its handler
        members = [p for p, info in _proc_table().items() if info["pgid"] == proc.pid]
        assert len(members) == 2
        start = time.monotonic()
        _stop_process_group(proc, grace_s=1.0)
        assert 0.9 <= time.monotonic() - start < 10
        assert proc.returncode == -signal.SIGKILL
        time.sleep(0.2)
        assert not [p for p in members if _alive(p)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- end to end ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_serves_the_results_and_stops_cleanly_on_sigint(tmp_path):
    mlflow = pytest.importorskip("mlflow")

    results = tmp_path / "results"
    results.mkdir()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    client.create_experiment("snnbench-ui-smoke")

    port = _free_port()
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(f"""
        import argparse, sys
        from snnbench.ui import cmd_ui
        sys.exit(cmd_ui(argparse.Namespace(results={str(results)!r}, port={port}, host="127.0.0.1")))
    """))
    workdir = tmp_path / "cwd"  # nothing may be written relative to the working directory
    workdir.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, str(script)], cwd=workdir, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    server_pids: list[int] = []
    try:
        url = f"http://127.0.0.1:{port}"
        start = time.monotonic()
        status = None
        while time.monotonic() - start < 90:
            assert proc.poll() is None, log_path.read_text()
            try:
                status, _ = _get(f"{url}/health", timeout=2)
            except (urllib.error.URLError, OSError):
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        startup_s = time.monotonic() - start
        assert status == 200, f"no /health after {startup_s:.0f} s\n" + log_path.read_text()
        print(f"MLflow server answered /health after {startup_s:.1f} s")

        # It serves *our* database.
        status, body = _get(f"{url}/api/2.0/mlflow/experiments/get-by-name"
                            "?experiment_name=snnbench-ui-smoke")
        assert status == 200
        assert json.loads(body)["experiment"]["name"] == "snnbench-ui-smoke"

        table = _proc_table()
        server_pids = _descendants(proc.pid, table)
        assert server_pids, "the MLflow server was not started as a child"
        (leader,) = [p for p in server_pids if table[p]["ppid"] == proc.pid]
        pgid = table[leader]["pgid"]
        assert pgid == leader != table[proc.pid]["pgid"]  # its own process group
        assert all(table[p]["pgid"] == pgid for p in server_pids)
        cmdlines = " ".join(table[p]["cmdline"] for p in server_pids)
        assert "mlflow server" in cmdlines
        assert "huey" not in cmdlines  # job execution is off

        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        output = log_path.read_text()
        assert rc == 0, output
        assert f"{url}" in output  # the URL was printed

        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in server_pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in server_pids if _alive(pid)], output
        leftover = [p for p, info in _proc_table().items() if info["pgid"] == pgid and info["state"] not in "ZX"]
        assert not leftover, output
        assert not any((workdir / name).exists() for name in ("mlruns", "mlartifacts", "mlflow.db"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in server_pids:  # never leave a server behind, even when the test fails
            try:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

