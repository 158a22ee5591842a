"""Run one cell in a child process that is killed at the per-cell time limit.

``--cell-timeout`` must hold whatever the cell's code does: an exception raised into the
cell (SIGALRM) can be caught and swallowed by library code (torch.compile does), so a
timed cell runs in a child process instead, and at the limit the child and everything it
started (its process group) get SIGKILL. The clock starts when the child reports that it
is ready to run the cell (after its imports), not when the cell was queued or submitted,
so both executors measure the cell's own running time.

Protocol: the parent writes the cell's JSON spec to the child's stdin; the child writes
``started\\n`` and then the JSON result to a dedicated pipe, and closes it. The child dies
with its parent (``PR_SET_PDEATHSIG``), ignores SIGINT (the parent decides), and leads
its own process group.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from snnbench.cell import CellSpec
from snnbench.record import CellResult

log = logging.getLogger(__name__)

_STARTED = b"started\n"


class CellProcessDied(RuntimeError):
    """The cell's child process ended without a result (killed by a signal, out of memory, crash)."""


def timeout_message(limit: float) -> str:
    return (f"timeout after {limit:g} s: the cell ran longer than --cell-timeout {limit:g} and its process was "
            "killed")


def _child_env() -> dict[str, str]:
    """The parent's environment with its ``sys.path`` (plugins added at run time stay importable)."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def _read_until(fd: int, deadline: float | None, want_line: bool) -> tuple[bytes, bool]:
    """Read ``fd`` until a full first line (``want_line``) or EOF, or until ``deadline``.

    Returns ``(data, complete)``; ``complete`` is False when the deadline passed first.
    """
    data = b""
    while True:
        if want_line and b"\n" in data:
            return data, True
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return data, False
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return data, True
        data += chunk


def run_cell_with_timeout(spec: dict[str, Any], cache_root: str | None, threads: int | None,
                          timeout: float) -> CellResult:
    """Run the cell in a child process; a failed result ``"timeout after N s"`` if it runs past ``timeout``.

    Raises:
        CellProcessDied: the child ended without a result (an infrastructure failure the
            Ray executor retries).
        KeyboardInterrupt: passed on after the child was killed.
    """
    read_fd, write_fd = os.pipe()
    payload = json.dumps({"spec": spec, "cache_root": cache_root, "threads": threads, "result_fd": write_fd,
                          "parent": os.getpid()})
    proc = subprocess.Popen([sys.executable, "-m", "snnbench.cell_process"], stdin=subprocess.PIPE,
                            pass_fds=(write_fd,), env=_child_env(), process_group=0)
    os.close(write_fd)
    try:
        assert proc.stdin is not None
        proc.stdin.write(payload.encode())
        proc.stdin.close()
        head, _ = _read_until(read_fd, None, want_line=True)
        if not head.startswith(_STARTED):
            proc.wait()
            raise CellProcessDied(f"the cell's process exited before starting the cell ({_exit_text(proc)})")
        started = time.monotonic()
        body, complete = _read_until(read_fd, started + timeout, want_line=False)
        body = head[len(_STARTED):] + body
        if not complete:
            _kill_group(proc)
            log.warning("cell %s: %s", CellSpec.from_dict(spec).label(), timeout_message(timeout))
            return CellResult.failed(CellSpec.from_dict(spec), timeout_message(timeout), time.monotonic() - started,
                                     failure="timeout")
        proc.wait()
        if not body.strip():
            raise CellProcessDied(f"the cell's process died while running the cell ({_exit_text(proc)}; out of "
                                  "memory?)")
        return CellResult.from_dict(json.loads(body))
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        os.close(read_fd)
        if proc.poll() is None:
            _kill_group(proc)


def _exit_text(proc: subprocess.Popen) -> str:
    code = proc.returncode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux), and check it is still there."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:
        os._exit(1)


def _child_main() -> None:
    request = json.loads(sys.stdin.read())
    _die_with_parent(request["parent"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch  # noqa: F401 - the heavy imports happen before the clock starts

    import snnbench.runner  # noqa: F401
    from snnbench.plugins import create_task
    from snnbench.worker import run_here

    cell = CellSpec.from_dict(request["spec"])
    cell.key()                                        # imports the method's plugin
    create_task(cell.task, data_root=cell.data_root)  # and the task's (no data is read)

    out = os.fdopen(request["result_fd"], "wb")
    out.write(_STARTED)
    out.flush()
    result = run_here(request["spec"], request["cache_root"], request["threads"])
    out.write(json.dumps(result.to_dict(), default=str).encode())
    out.close()


if __name__ == "__main__":
    _child_main()
