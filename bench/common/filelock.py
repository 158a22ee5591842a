"""The one inter-process file lock (``flock``), blocking or not.

Used where processes share a directory: cache entries computed once, the zoo training an
entry once, canvas data generated once, and one sweep per results directory. The kernel
drops an ``flock`` when its holder dies (even by SIGKILL), so a crash never leaves a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator


class LockHeld(BlockingIOError):
    """A non-blocking :func:`file_lock` found the lock held by another process."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (created with its parents when missing).

    Yields the lock file's descriptor (a holder may write into it, e.g. its PID). With
    ``blocking=False`` a held lock raises :class:`LockHeld` at once instead of waiting.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"{path} is locked by another process") from None
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["LockHeld", "file_lock"]
