"""Caches shared by cells: the ANN evaluation per (task, model) and calibration statistics
per (task, model, statistic kind).

:class:`MemoryCache` lives for one process (``bench run``); :class:`DiskCache` keeps entries
under ``<results>/cache/`` so every cell of a sweep, and every later sweep, reuses them.
Entries are written atomically and read with ``torch.load(weights_only=True)``; an
unreadable entry is treated as missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


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
