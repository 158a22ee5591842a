"""Process groups of a server started by ``bench ui``: alive, serving, stopped with SIGTERM then SIGKILL.

Linux ``/proc`` decides what is alive (a zombie answers ``killpg(pgid, 0)`` too, and in a
container whose init does not reap, orphans stay zombies). POSIX only.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType
from typing import Any, Callable

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0


class TerminateRequested(Exception):
    """Raised from the SIGTERM handler so that the wait loop unwinds like on Ctrl-C."""


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def group_serves(pgid: int, root: Path, db_name: str = "mlflow.db") -> bool:
    """True if a live member of process group ``pgid`` is an MLflow server on ``root``'s store."""
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return False
    db = str(root / db_name)
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X") and \
                "mlflow" in cmdline and db in cmdline:
            return True
    return False


def install_signal_handlers() -> Callable[[], None]:
    """Make SIGINT raise KeyboardInterrupt and SIGTERM raise :class:`TerminateRequested`.

    SIGINT is set explicitly because a process started in the background by a
    non-interactive shell inherits SIGINT as *ignored*, and Python then never raises
    KeyboardInterrupt. Returns a function that restores the previous handlers.
    """
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise TerminateRequested()

    previous: list[tuple[int, Any]] = []
    try:
        for signum, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, on_term)):
            previous.append((signum, signal.signal(signum, handler)))
    except ValueError:  # not the main thread: leave signals alone
        pass

    def restore() -> None:
        for signum, handler in previous:
            if handler is not None:  # None: installed outside Python, cannot be restored
                signal.signal(signum, handler)

    return restore


def group_alive(pgid: int) -> bool:
    """True while a process of process group ``pgid`` exists that is not a zombie.

    Zombies answer ``killpg(pgid, 0)`` too (and in a container whose init does not reap,
    orphans stay zombies), so on Linux ``/proc`` decides.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def stop_process_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group led by ``proc``, wait up to ``grace_s``, then SIGKILL it.

    ``proc`` must have been started with ``start_new_session=True`` (its pid is the group
    id). A second Ctrl-C or SIGTERM during the grace period skips straight to SIGKILL.
    """
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    try:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
    except (KeyboardInterrupt, TerminateRequested):
        log.info("second interrupt: killing the server")
    if group_alive(pgid):
        log.warning("MLflow server group %d still alive after %.0f s; sending SIGKILL", pgid, grace_s)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        log.error("MLflow server pid %d did not exit after SIGKILL", proc.pid)


__all__ = ["STOP_GRACE_S", "TerminateRequested", "group_alive", "group_serves", "install_signal_handlers", "pid_alive",
           "stop_process_group"]
