"""A pool of long-lived worker processes on this machine: ``bench sweep --executor pool``.

Each worker is a child process that imports torch and the harness once, sets its threads
once (before torch is imported: bench/threads.py) and then runs one cell at a time in
process (:func:`snnbench.worker.run_here`), keeping what a process pays for once (imports,
the fused neuron steps it compiled) across its cells. ``workers`` cells run side by side,
``threads`` intra-op threads each (default: this process's CPUs shared out evenly); on a
machine whose cells leave cores idle (small convolutions scale poorly past one thread),
that finishes a campaign sooner than the serial executor.

Scheduling (:func:`pick_next`): the cells come longest first (the sweep orders them,
:func:`snnbench.campaigns.longest_first`); an idle worker takes the first waiting cell
whose model is not already running on another worker (cells of one model share the cached
ANN evaluation and calibration statistics, and the second would wait on the first's lock),
else the first waiting cell.

Faults, as in the serial executor with ``--cell-timeout`` (:mod:`snnbench.cell_process`):
a cell that fails inside the runner comes back as a failed result; a worker that dies
mid-cell (killed, out of memory) fails that cell (``CellProcessDied``) and is replaced; a
cell running past ``cell_timeout`` (counted from the moment the worker starts it) is
failed ``"timeout after N s"`` and its worker's process group killed and replaced. The
workers ignore SIGINT, die with the driver (``PR_SET_PDEATHSIG``) and lead their own
process groups; on Ctrl-C the driver kills them and passes the interrupt on.

Protocol: the driver writes one JSON line to a worker's stdin to set it up and then one
JSON line per cell (its spec); the worker answers on a dedicated pipe with ``started``
when it starts a cell and one JSON line (the :class:`~snnbench.record.CellResult`) when it
is done. End of stdin ends the worker.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from typing import Any, Callable

from snnbench.cell import CellSpec
from snnbench.cell_process import CellProcessDied, _child_env, _die_with_parent, _exit_text, _kill_group, \
    timeout_message
from snnbench.record import CellResult

OnStart = Callable[[CellSpec], None]
OnResult = Callable[[CellSpec, CellResult], None]
DEFAULT_WORKERS = 2
_STARTED = b"started"


def cell_group(cell: CellSpec) -> tuple[Any, ...]:
    """What cells share cached work under one lock: the ANN evaluation and calibration of one model."""
    return cell.task, cell.model, cell.weights, cell.data_root


def pick_next(waiting: list[CellSpec], running: list[CellSpec]) -> int:
    """Index in ``waiting`` of the cell an idle worker takes: the first whose group is not running, else 0."""
    busy = {cell_group(c) for c in running}
    return next((i for i, cell in enumerate(waiting) if cell_group(cell) not in busy), 0)


class _Worker:
    """One worker process, the cell it runs and the bytes it has answered so far."""

    def __init__(self, cache_root: str | None, threads: int) -> None:
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-m", "snnbench.pool"], stdin=subprocess.PIPE,
                                     pass_fds=(write_fd,), env=_child_env(), process_group=0)
        os.close(write_fd)
        self.fd = read_fd
        self.buffer = b""
        self.cell: CellSpec | None = None
        self.started: float | None = None
        self._send({"cache_root": cache_root, "threads": threads, "result_fd": write_fd, "parent": os.getpid()})

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def submit(self, cell: CellSpec) -> bool:
        """Hand the worker ``cell``; False if its input is closed (it died after its last answer)."""
        self.cell, self.started = cell, None
        try:
            self._send(cell.to_dict())
        except OSError:  # BrokenPipeError: the worker is gone
            return False
        return True

    def read(self) -> tuple[CellResult | None, bool]:
        """Read what is there: (the finished cell's result or None, whether the worker's pipe closed)."""
        chunk = os.read(self.fd, 1 << 16)
        self.buffer += chunk
        result = None
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line == _STARTED:
                self.started = time.monotonic()
            elif line.strip():
                result = CellResult.from_dict(json.loads(line))
        return result, not chunk

    def kill(self) -> None:
        """Kill the worker's process group and release its pipes."""
        _kill_group(self.proc)
        self.close()

    def close(self, grace_s: float = 0.0) -> None:
        """End of input (the worker exits), waiting up to ``grace_s`` before killing it."""
        try:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PoolExecutor:
    """Runs cells on ``workers`` long-lived local processes; see the module docstring."""

    name = "pool"
    parallel = True

    def __init__(self, cache_root: str | None, workers: int = DEFAULT_WORKERS, threads: int | None = None,
                 cell_timeout: float | None = None) -> None:
        from snnbench.threads import available_cpus

        self.cache_root = cache_root
        self.workers = max(1, workers)
        self.threads = threads if threads else max(1, available_cpus() // self.workers)
        self.cell_timeout = cell_timeout
        self._started: list[_Worker] = []

    def start(self, count: int) -> None:
        """Start the workers for ``count`` cells now, so that they import torch while the driver gets
        ready (opens MLflow); :meth:`run` takes them. Starting is also what :meth:`run` does first."""
        from snnbench.threads import prepare_openmp

        prepare_openmp()  # the workers inherit it and import torch after it is set
        while len(self._started) < min(self.workers, count):
            self._started.append(_Worker(self.cache_root, self.threads))

    def stop(self) -> None:
        """Kill the workers started and not yet used (the sweep failed before running them)."""
        while self._started:
            self._started.pop().kill()

    def run(self, cells: list[CellSpec], on_start: OnStart, on_result: OnResult) -> None:
        waiting = list(cells)
        pool: list[_Worker] = []
        try:
            self.start(len(waiting))
            pool, self._started = self._started, []
            while waiting or any(w.cell is not None for w in pool):
                for worker in [w for w in pool if w.cell is None]:
                    if waiting:
                        cell = waiting.pop(pick_next(waiting, [w.cell for w in pool if w.cell is not None]))
                        on_start(cell)
                        if not worker.submit(cell):  # the worker died idle: a fresh one takes the cell
                            worker.kill()
                            self._replace(pool, worker).submit(cell)
                self._wait(pool, on_result)
        except BaseException:
            self.stop()
            for worker in pool:
                worker.kill()
            raise
        for worker in pool:
            worker.close(grace_s=10.0)

    def _wait(self, pool: list[_Worker], on_result: OnResult) -> None:
        """Wait for the busy workers' next answer or the earliest time limit; hand on what finished."""
        busy = [w for w in pool if w.cell is not None]
        ready, _, _ = select.select([w.fd for w in busy], [], [], self._next_deadline(busy))
        now = time.monotonic()
        for worker in busy:
            assert worker.cell is not None
            cell = worker.cell
            if worker.fd in ready:
                result, closed = worker.read()
                if result is not None:
                    worker.cell = None
                    on_result(cell, result)
                    continue
                if closed:
                    worker.close(grace_s=5.0)  # it is exiting: its exit status names the cause
                    _kill_group(worker.proc)    # and nothing it started outlives it
                    error = CellProcessDied(f"the cell's worker process died while running the cell "
                                            f"({_exit_text(worker.proc)}; out of memory?)")
                    self._replace(pool, worker)
                    on_result(cell, CellResult.failed(cell, f"{type(error).__name__}: {error}",
                                                      now - (worker.started or now)))
                    continue
            if self.cell_timeout and worker.started is not None and now - worker.started >= self.cell_timeout:
                worker.kill()
                self._replace(pool, worker)
                on_result(cell, CellResult.failed(cell, timeout_message(self.cell_timeout), now - worker.started,
                                                  failure="timeout"))

    def _next_deadline(self, busy: list[_Worker]) -> float | None:
        """Seconds until the earliest running cell reaches the time limit (None: no limit)."""
        if not self.cell_timeout:
            return None
        started = [w.started for w in busy if w.started is not None]
        if not started:
            return None  # a worker's "started" wakes the wait
        return max(0.0, min(started) + self.cell_timeout - time.monotonic())

    def _replace(self, pool: list[_Worker], dead: _Worker) -> _Worker:
        """A fresh worker in ``dead``'s place."""
        fresh = _Worker(self.cache_root, self.threads)
        pool[pool.index(dead)] = fresh
        return fresh


def _worker_main() -> None:
    """The worker: set up from the first stdin line, then run a cell per line until end of input."""
    import signal

    setup = json.loads(sys.stdin.readline())
    _die_with_parent(setup["parent"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from snnbench.threads import apply_threads

    threads = apply_threads(setup["threads"])  # before the first torch work in this process
    import snnbench.runner  # noqa: F401 - the heavy imports happen before any cell's clock starts
    from snnbench.worker import run_here

    out = os.fdopen(setup["result_fd"], "wb")
    for line in iter(sys.stdin.readline, ""):
        if not line.strip():
            continue
        out.write(_STARTED + b"\n")
        out.flush()
        result = run_here(json.loads(line), setup["cache_root"], threads)
        out.write(json.dumps(result.to_dict(), default=str).encode() + b"\n")
        out.flush()
    out.close()


if __name__ == "__main__":
    _worker_main()
