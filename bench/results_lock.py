"""One writer per results directory.

A sweep holds an exclusive ``flock`` on ``<results>/.sweep.lock`` from before the MLflow
store is opened (or created) until it ends, with its PID written in the file. A second
sweep on the same directory does not wait: it stops at once with
:class:`ResultsDirBusy` ("results directory ... in use by PID n"), so two sweeps never run
the same cells twice or race on creating ``mlflow.db``. The kernel drops the lock when the
holder dies, even by SIGKILL, so a crashed sweep never leaves the directory locked.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from snnbench.common.filelock import LockHeld, file_lock

LOCK_NAME = ".sweep.lock"


class ResultsDirBusy(RuntimeError):
    """Another process holds the results directory."""

    def __init__(self, results_dir: Path, pid: int | None) -> None:
        self.results_dir = results_dir
        self.pid = pid
        holder = f"PID {pid}" if pid else "another process"
        super().__init__(f"results directory {results_dir} in use by {holder} (another bench sweep); wait for it "
                         "to finish or pass a different --results")


def _holder_pid(path: Path) -> int | None:
    """The PID the holder wrote (it may still be writing it: retry briefly)."""
    for _ in range(20):
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text.isdigit():
            return int(text)
        time.sleep(0.05)
    return None


@contextlib.contextmanager
def results_lock(results_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<results_dir>/.sweep.lock`` exclusively, or raise :class:`ResultsDirBusy` at once."""
    results_dir = Path(results_dir)
    path = results_dir / LOCK_NAME
    with contextlib.ExitStack() as stack:
        try:
            fd = stack.enter_context(file_lock(path, blocking=False))
        except LockHeld:
            raise ResultsDirBusy(results_dir.resolve(), _holder_pid(path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
