"""Executors run cells and hand each result to the driver; the same interface for both.

* :class:`SerialExecutor`: in-process, one cell after another (tests, CI, laptops).
* :class:`~snnbench.pool.PoolExecutor` (:mod:`snnbench.pool`): a few long-lived local worker
  processes, cells side by side, longest first (``make demo``).
* :class:`RayExecutor`: Ray tasks on a local instance or a cluster (``--ray-address``).
  Each cell is one task with its own resources (``num_gpus=1`` when it wants CUDA); Ray's
  own retries are off (``max_retries=0``, OOM retries 0 on a local instance) and the
  harness retries a cell whose worker (or the cell's own process) died, up to ``retries``
  times, logging each retry. A cell wanting a GPU on a cluster without one fails at once
  instead of pending forever (docs/harness-notes.md §3.2). Tasks return
  :class:`~snnbench.record.CellResult` records; only the driver writes results.

A cell that fails *inside* :func:`~snnbench.runner.run_cell` comes back as a result with
``status="failed"`` and is not retried (the same input would fail again); infrastructure
failures (worker crash, OOM kill) are retried.

``cell_timeout`` (both executors): each cell runs in a child process killed at the limit
(:mod:`snnbench.cell_process`), counted from the moment the cell starts running (a
queued Ray task is not running), so no library code can swallow it. A cell past the
limit is recorded as failed, ``"timeout after N s"``, and not retried (it would take as
long again); rerunning the sweep retries it like any failed cell. Without a timeout the
serial executor runs cells in-process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from snnbench.cell import CellSpec
from snnbench.record import CellResult
from snnbench.tracebacks import exception_line
from snnbench.worker import run_here

log = logging.getLogger(__name__)

OnStart = Callable[[CellSpec], None]
OnResult = Callable[[CellSpec, CellResult], None]


def wants_gpu(cell: CellSpec) -> bool:
    return cell.device.startswith("cuda")


def run_cell_in_process(spec: dict[str, Any], cache_root: str | None, threads: float | None = None,
                        timeout: float | None = None, progress: bool = False) -> CellResult:
    """Run one cell and return its record (what a Ray task executes).

    With ``timeout`` the cell runs in a child process killed at the limit
    (:func:`snnbench.cell_process.run_cell_with_timeout`); without, in this process
    (:func:`snnbench.worker.run_here`), with the inner progress bar when ``progress``.
    ``threads``: the CPUs the cell was given (bench/threads.py).
    """
    from snnbench.threads import prepare_openmp, resolve_threads

    if timeout:
        from snnbench.cell_process import run_cell_with_timeout

        prepare_openmp()  # the child inherits the environment and imports torch first
        return run_cell_with_timeout(spec, cache_root, resolve_threads(threads), timeout)
    return run_here(spec, cache_root, threads, progress)


class SerialExecutor:
    """Runs cells one after another in this process."""

    name = "serial"
    parallel = False  # the sweep keeps the grid's order

    def __init__(self, cache_root: str | None, cell_timeout: float | None = None, progress: bool = False,
                 threads: int | None = None) -> None:
        self.cache_root = cache_root
        self.cell_timeout = cell_timeout
        self.progress = progress  # the inner per-cell bar (batches x t); terminals only
        self.threads = threads  # None: every CPU available to this process (bench/threads.py)

    def run(self, cells: list[CellSpec], on_start: OnStart, on_result: OnResult) -> None:
        from snnbench.cell_process import CellProcessDied

        for cell in cells:
            on_start(cell)
            try:
                result = run_cell_in_process(cell.to_dict(), self.cache_root, self.threads, timeout=self.cell_timeout,
                                             progress=self.progress)
            except CellProcessDied as err:
                result = CellResult.failed(cell, f"{type(err).__name__}: {err}")
            on_result(cell, result)


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _loopback_only(ray) -> Iterator[None]:
    """Start a local Ray instance whose servers (GCS, raylet, agents, workers) listen on 127.0.0.1 only.

    Ray binds its gRPC servers to every interface unless the node's address is the
    loopback one, and it replaces a loopback ``_node_ip_address`` by the machine's
    reachable IP; the single-machine mode it uses on macOS/Windows (clusters disabled)
    keeps 127.0.0.1. That mode is switched on for the start of the local instance only
    (the environment variable for Ray's own processes, the constant for this one).
    """
    from ray._private import ray_constants

    old_env = os.environ.get(LOOPBACK_ENV)
    old_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = old_env


class RayExecutor:
    """Runs cells as Ray tasks; see the module docstring for the failure policy."""

    name = "ray"
    parallel = True  # the sweep submits the longest cells first

    def __init__(self, cache_root: str | None, address: str = "local", retries: int = 1,
                 cell_timeout: float | None = None, cpus_per_cell: float = 1.0, num_cpus: int | None = None,
                 runtime_env: dict[str, Any] | None = None) -> None:
        self.cache_root = cache_root
        self.address = address
        self.retries = retries
        self.cell_timeout = cell_timeout
        self.cpus_per_cell = cpus_per_cell
        self.num_cpus = num_cpus
        self.runtime_env = runtime_env

    def _init(self):
        try:
            import ray
        except ImportError as err:  # pragma: no cover - ray is a dependency
            raise RuntimeError("the ray executor needs Ray: pip install 'ray[default]'") from err
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local sessions: no token file to manage
        from snnbench.threads import prepare_openmp

        prepare_openmp()  # local workers inherit it (sleeping OpenMP waits; bench/threads.py)
        if not ray.is_initialized():
            if self.address == "local":
                with _loopback_only(ray):
                    ray.init(num_cpus=self.num_cpus, include_dashboard=False, runtime_env=self.runtime_env,
                             log_to_driver=False, _system_config={"task_oom_retries": 0})
            else:
                ray.init(address=self.address, runtime_env=self.runtime_env, log_to_driver=False)
        return ray

    def run(self, cells: list[CellSpec], on_start: OnStart, on_result: OnResult) -> None:
        ray = self._init()
        gpus = ray.cluster_resources().get("GPU", 0)
        remote = ray.remote(max_retries=0, retry_exceptions=False)(run_cell_in_process)
        pending: dict[Any, tuple[CellSpec, int, float]] = {}

        def submit(cell: CellSpec, attempt: int) -> None:
            threads = max(1.0, self.cpus_per_cell)  # capped to the worker's CPUs in bench/threads.py
            ref = remote.options(num_cpus=self.cpus_per_cell, num_gpus=1 if wants_gpu(cell) else 0).remote(
                cell.to_dict(), self.cache_root, threads, self.cell_timeout)  # the limit is enforced in the worker
            pending[ref] = (cell, attempt, time.monotonic())
            on_start(cell)

        for cell in cells:
            if wants_gpu(cell) and gpus < 1:
                on_result(cell, CellResult.failed(cell, f"cell wants device {cell.device!r} but the Ray cluster has no "
                                                          "GPU; add GPU workers (see ray_cluster.yaml) or use --device "
                                                          "cpu"))
                continue
            submit(cell, 1)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                now = time.monotonic()
                for ref in ready:
                    cell, attempt, started = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - worker died, OOM-killed, cancelled ...
                        if attempt <= self.retries:
                            log.warning("cell %s: attempt %d of %d failed (%s); retrying", cell.label(), attempt,
                                        self.retries + 1, exception_line(err))
                            submit(cell, attempt + 1)
                            continue
                        result = CellResult.failed(cell, f"{type(err).__name__} after {attempt} attempt(s):\n"
                                                         f"{''.join(traceback.format_exception_only(err))}",
                                                   now - started)
                    result = dataclasses.replace(CellResult.from_dict(result), attempts=attempt)
                    on_result(cell, result)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
