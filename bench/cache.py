"""Caches shared by cells: the ANN evaluation per (task, model) and calibration statistics
per (task, model, statistic kind).

:class:`MemoryCache` lives for one process (``bench run``); :class:`DiskCache` keeps entries
under ``<results>/cache/`` so every cell of a sweep, and every later sweep, reuses them.
Entries are written atomically and read with ``torch.load(weights_only=True)``; an
unreadable entry is treated as missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (created with its parents when missing),
    so processes sharing a directory compute or write an entry once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-able object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class MemoryCache:
    """In-process cache."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], Any] = {}

    def get(self, namespace: str, key: str) -> Any | None:
        return self._data.get((namespace, key))

    def put(self, namespace: str, key: str, value: Any) -> None:
        self._data[(namespace, key)] = value

    @contextlib.contextmanager
    def lock(self, namespace: str, key: str) -> Iterator[None]:
        yield

    def get_or_compute(self, namespace: str, key: str, compute: Callable[[], Any]) -> Any:
        found = self.get(namespace, key)
        if found is None:
            found = compute()
            self.put(namespace, key, found)
        return found


class DiskCache:
    """File-per-entry cache under ``root/<namespace>/<key>.pt``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / f"{key}.pt"

    def get(self, namespace: str, key: str) -> Any | None:
        path = self._path(namespace, key)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a damaged entry is recomputed
            log.warning("ignoring unreadable cache entry %s: %s", path, err)
            return None

    def put(self, namespace: str, key: str, value: Any) -> None:
        path = self._path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(value, tmp)
        os.replace(tmp, path)

    def lock(self, namespace: str, key: str) -> contextlib.AbstractContextManager[None]:
        """An exclusive inter-process lock, so parallel cells compute a shared entry once."""
        return file_lock(self.root / namespace / f"{key}.lock")

    def get_or_compute(self, namespace: str, key: str, compute: Callable[[], Any]) -> Any:
        """The entry, computing and storing it under the lock when missing."""
        found = self.get(namespace, key)
        if found is not None:
            return found
        with self.lock(namespace, key):
            found = self.get(namespace, key)
            if found is None:
                found = compute()
                self.put(namespace, key, found)
        return found
