"""Executors run cells and hand each result to the driver; the same interface for both.

* :class:`SerialExecutor`: in-process, one cell after another (tests, CI, laptops).
* :class:`RayExecutor`: Ray tasks on a local instance or a cluster (``--ray-address``).
  Each cell is one task with its own resources (``num_gpus=1`` when it wants CUDA); Ray's
  own retries are off (``max_retries=0``, OOM retries 0 on a local instance) and the
  harness retries a cell whose worker died, up to ``retries`` times, and fails a cell that
  runs past ``cell_timeout``. A cell wanting a GPU on a cluster without one fails at once
  instead of pending forever (harness.md §3.2). Tasks return plain dicts; only the driver
  writes results.

A cell that fails *inside* :func:`~snnbench.runner.run_cell` comes back as a result with
``status="failed"`` and is not retried (the same input would fail again); infrastructure
failures (worker crash, OOM kill, timeout) are retried.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from snnbench.cell import CellSpec

log = logging.getLogger(__name__)

OnStart = Callable[[CellSpec], None]
OnResult = Callable[[CellSpec, dict[str, Any]], None]


class CellTimeout(Exception):
    """A cell ran past the harness's per-cell timeout."""


def failed_result(cell: CellSpec, error: str, wall_s: float = 0.0) -> dict[str, Any]:
    """A result for a cell that produced none (crash, timeout, missing resources)."""
    return {"method": cell.method, "task": cell.task, "model": cell.model, "settings": dict(cell.settings),
            "T": cell.T, "metric": None, "ann": None, "per_t": {}, "status": "failed", "error": error,
            "wall_s": round(wall_s, 3), "cell_key": cell.key(), "provenance": {"spec": cell.to_dict()}}


def wants_gpu(cell: CellSpec) -> bool:
    return cell.device.startswith("cuda")


@contextmanager
def _alarm(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CellTimeout` in the main thread after ``seconds`` (POSIX)."""
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise CellTimeout(f"cell exceeded the per-cell timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cell_in_process(spec: dict[str, Any], cache_root: str | None, threads: float | None = None,
                        timeout: float | None = None) -> dict[str, Any]:
    """Run one cell here and return its result dict (what a Ray task executes).

    ``threads``: the CPUs the cell was given (None: what the process may use); set before
    any torch work (bench/threads.py) and recorded in ``result["threads"]``.
    """
    from snnbench.threads import apply_threads

    used = apply_threads(threads)
    from snnbench.cache import DiskCache, MemoryCache
    from snnbench.runner import run_cell

    cell = CellSpec.from_dict(spec)
    cache = DiskCache(cache_root) if cache_root else MemoryCache()
    with _alarm(timeout):
        result = run_cell(cell, cache=cache, progress=False)
    result["threads"] = used
    return result


class SerialExecutor:
    """Runs cells one after another in this process."""

    name = "serial"

    def __init__(self, cache_root: str | None, cell_timeout: float | None = None, threads: int | None = None) -> None:
        self.cache_root = cache_root
        self.cell_timeout = cell_timeout
        self.threads = threads  # None: every CPU available to this process (bench/threads.py)

    def run(self, cells: list[CellSpec], on_start: OnStart, on_result: OnResult) -> None:
        for cell in cells:
            on_start(cell)
            on_result(cell, run_cell_in_process(cell.to_dict(), self.cache_root, self.threads,
                                                timeout=self.cell_timeout))


class RayExecutor:
    """Runs cells as Ray tasks; see the module docstring for the failure policy."""

    name = "ray"

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
        if not ray.is_initialized():
            if self.address == "local":
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
                cell.to_dict(), self.cache_root, threads, None)
            pending[ref] = (cell, attempt, time.monotonic())
            on_start(cell)

        for cell in cells:
            if wants_gpu(cell) and gpus < 1:
                on_result(cell, failed_result(cell, f"cell wants device {cell.device!r} but the Ray cluster has no "
                                                    "GPU; add GPU workers (see ray_cluster.yaml) or use --device cpu"))
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
                            log.warning("cell %s: attempt %d failed (%s); retrying", cell.label(), attempt,
                                        type(err).__name__)
                            submit(cell, attempt + 1)
                            continue
                        result = failed_result(cell, f"{type(err).__name__} after {attempt} attempt(s):\n"
                                                     f"{''.join(traceback.format_exception_only(err))}",
                                               now - started)
                    on_result(cell, result)
                if self.cell_timeout:
                    for ref, (cell, attempt, started) in list(pending.items()):
                        if now - started > self.cell_timeout:
                            ray.cancel(ref, force=True)
                            pending.pop(ref)
                            if attempt <= self.retries:
                                submit(cell, attempt + 1)
                            else:
                                on_result(cell, failed_result(
                                    cell, f"cell exceeded the per-cell timeout of {self.cell_timeout:g} s "
                                          f"({attempt} attempt(s))", now - started))
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
