"""``bench ui``: serve the MLflow UI for a results directory.

    bench ui [--results DIR] [--port N] [--host H]

The sweep harness logs to ``sqlite:///<DIR>/mlflow.db`` with artifacts under
``<DIR>/mlartifacts``; this command starts ``mlflow server`` on exactly that store (never
``./mlruns`` or anything else relative to the current directory) and keeps it in the
foreground until Ctrl-C or SIGTERM.

Two details matter on small machines (see the harness notes, section 2.8):

* ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` is set for the server. Otherwise MLflow
  3.x also starts a job-execution runner of seven ``huey`` consumer processes (~1.5 GB in
  all) that outlive a SIGTERM sent to the server.
* The server runs in its own process group (``start_new_session=True``). On shutdown the
  whole group gets SIGTERM, then SIGKILL after a grace period, so no child survives.
* ``bench ui`` killed by SIGKILL cannot stop its server. It records the server in
  ``<DIR>/.ui.json`` (its own PID, the server's process group, host and port); the next
  ``bench ui`` on the same directory finds a server whose ``bench ui`` is gone, checks it
  is an MLflow server on this store, and stops its whole group before starting anew.

POSIX only (process groups).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from snnbench.process_groups import (STOP_GRACE_S, TerminateRequested, group_alive, group_serves,
                                     install_signal_handlers, pid_alive, stop_process_group)

log = logging.getLogger(__name__)

DEFAULT_RESULTS = "results"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"
JOB_EXECUTION_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
# One uvicorn worker: MLflow's default of 4 costs ~1.3 GB and ~25 s to start on 2 cores,
# one worker ~0.5 GB and ~9 s [measured, MLflow 3.17.2]; plenty for one person's browser.
SERVER_WORKERS = 1
POLL_S = 0.5
STATE_NAME = ".ui.json"


# --------------------------------------------------------------------------------------
def add_ui_parser(subparsers: Any) -> None:
    """Add the ``ui`` sub-command to an argparse ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "ui",
        help="serve the MLflow UI for a results directory",
        description="Start an MLflow tracking server (UI + REST API) on the sweep results in "
                    "DIR (sqlite:///DIR/mlflow.db, artifacts in DIR/mlartifacts) and keep it "
                    "running until Ctrl-C. Run `bench sweep --results DIR` first.",
    )
    p.add_argument("--results", default=DEFAULT_RESULTS, metavar="DIR",
                   help=f"results directory written by bench sweep (default {DEFAULT_RESULTS})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}: this machine only). For a "
                        "remote machine forward the port over SSH (ssh -L 5000:127.0.0.1:5000 "
                        "HOST, or ray attach CONFIG -p 5000) rather than binding 0.0.0.0: "
                        "MLflow's host check answers other Host names with 403 anyway")
    p.set_defaults(func=cmd_ui)


def build_server_command(results_dir: str | os.PathLike[str], host: str = DEFAULT_HOST,
                         port: int = DEFAULT_PORT, *,
                         workers: int = SERVER_WORKERS) -> tuple[list[str], dict[str, str]]:
    """The argv and the environment that start ``mlflow server`` on ``results_dir``.

    Pure: nothing is created or started. Paths are made absolute so that the server never
    resolves anything against its working directory.

    Args:
        results_dir: the sweep's results directory (holds ``mlflow.db``).
        host: address to bind.
        port: port to listen on.
        workers: uvicorn worker processes (MLflow's own default is 4).

    Returns:
        ``(argv, env)``: ``argv`` runs ``sys.executable -m mlflow server`` with an absolute
        ``sqlite:///`` backend store and artifact root; ``env`` is a copy of
        ``os.environ`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``.
    """
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(results_dir))))
    db = root / DB_NAME
    artifacts = str(root / ARTIFACTS_NAME)
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{db.as_posix()}",
        "--default-artifact-root", artifacts,
        # Proxied (mlflow-artifacts:/) uploads would otherwise go to ./mlartifacts.
        "--artifacts-destination", artifacts,
        "--host", str(host),
        "--port", str(int(port)),
        "--workers", str(int(workers)),
    ]
    env = dict(os.environ)
    env[JOB_EXECUTION_ENV] = "false"
    return argv, env


def _server_url(host: str, port: int) -> str:
    """The URL to open in a browser for a server bound to ``host:port``."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


# --------------------------------------------------------------------------------------
def cmd_ui(args: argparse.Namespace) -> int:
    """Run ``bench ui``: start the server, wait, stop it and all its children.

    Returns 0 after Ctrl-C / SIGTERM, 2 for a usage problem (no ``mlflow.db``, bad or busy
    port), otherwise the server's own exit status if it stops by itself.
    """
    results = getattr(args, "results", DEFAULT_RESULTS) or DEFAULT_RESULTS
    host = getattr(args, "host", DEFAULT_HOST) or DEFAULT_HOST
    port = int(getattr(args, "port", DEFAULT_PORT))
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(results))))
    db = root / DB_NAME

    if not db.is_file():
        print(f"bench ui: error: no sweep has been logged in {root} yet ({db} does not exist); "
              f"run `bench sweep --results {results}` first", file=sys.stderr)
        return 2
    if not 0 < port < 65536:
        print(f"bench ui: error: --port must be between 1 and 65535, not {port}", file=sys.stderr)
        return 2
    _stop_orphaned_server(root)
    busy = _port_problem(host, port)
    if busy:
        print(f"bench ui: error: cannot listen on {host}:{port}: {busy}; "
              "pick another with --port", file=sys.stderr)
        return 2

    argv, env = build_server_command(root, host, port)
    url = _server_url(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: MLflow still refuses requests whose Host is not localhost "
                    "(403 'Invalid Host header'); an SSH port forward is the usual way in", host)
    log.info("starting %s", " ".join(argv))
    restore = install_signal_handlers()
    proc: subprocess.Popen | None = None
    try:
        proc = subprocess.Popen(argv, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
        _write_state(root, proc.pid, host, port)
        print(f"MLflow UI for {root}: {url}  (starting, up to ~30 s on a small machine; Ctrl-C to stop)",
              flush=True)
        rc = _wait(proc, url)
    except (KeyboardInterrupt, TerminateRequested) as why:
        if proc is not None:
            log.info("%s: stopping the MLflow server (process group %d)",
                     "interrupted" if isinstance(why, KeyboardInterrupt) else "SIGTERM", proc.pid)
            print("stopping the MLflow server ...", file=sys.stderr, flush=True)
            stop_process_group(proc)
        return 0
    finally:
        restore()
        _clear_state(root, proc)
    # The server exited by itself: make sure nothing of its group lingers.
    assert proc is not None
    stop_process_group(proc, grace_s=2.0)
    if rc != 0:
        log.warning("the MLflow server exited with status %d", rc)
    return rc if rc >= 0 else 128 - rc


# -- orphans of a killed bench ui ------------------------------------------------------
def _write_state(root: Path, pgid: int, host: str, port: int) -> None:
    import json

    tmp = root / f"{STATE_NAME}.tmp"
    tmp.write_text(json.dumps({"ui_pid": os.getpid(), "server_pgid": pgid, "host": host, "port": port}))
    os.replace(tmp, root / STATE_NAME)


def _clear_state(root: Path, proc: subprocess.Popen | None) -> None:
    import json

    path = root / STATE_NAME
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if proc is not None and state.get("server_pgid") == proc.pid:
        path.unlink(missing_ok=True)


def _stop_orphaned_server(root: Path) -> bool:
    """Stop the server of a ``bench ui`` on ``root`` that died without stopping it; True if one was stopped."""
    import json

    path = root / STATE_NAME
    try:
        state = json.loads(path.read_text())
        ui_pid, pgid = int(state["ui_pid"]), int(state["server_pgid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if pid_alive(ui_pid):
        return False  # its bench ui still runs and owns it
    if not group_serves(pgid, root, DB_NAME):
        path.unlink(missing_ok=True)
        return False
    print(f"bench ui: stopping an orphaned MLflow server on {root} (process group {pgid}, port "
          f"{state.get('port')}) left by a bench ui (PID {ui_pid}) that was killed", file=sys.stderr, flush=True)
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_GRACE_S
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while group_alive(pgid) and time.monotonic() < deadline + 5:
            time.sleep(0.1)
    path.unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------------------
def _wait(proc: subprocess.Popen, url: str) -> int:
    """Wait for ``proc`` to exit, announcing once when ``url/health`` first answers."""
    ready = False
    while True:
        try:
            return proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            pass
        if not ready and _healthy(url):
            ready = True
            print(f"MLflow UI ready: {url}", flush=True)


def _healthy(url: str, timeout: float = 2.0) -> bool:
    """True if ``GET url/health`` answers 200 (ignoring any HTTP proxy settings)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound right now, or None if it can."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        return f"unknown host ({err})"
    family, socktype, proto, _, addr = infos[0]
    with socket.socket(family, socktype, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return "the port is already in use"
            return err.strerror or str(err)
    return None


__all__ = ["add_ui_parser", "build_server_command", "cmd_ui"]
