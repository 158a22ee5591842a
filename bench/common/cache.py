"""The one on-disk cache: atomic entries under a lock, plain or sha256-verified.

* :class:`MemoryCache` (one process, ``bench run``) and :class:`DiskCache`
  (``<root>/<namespace>/<key>.pt``) hold what cells share: the ANN evaluation per
  (task, model) and calibration statistics per (task, model, statistic kind). An
  unreadable entry is treated as missing and recomputed.
* Verified entries (:func:`save_entry`, :func:`load_entry`): ``<stem>.pt`` (a state dict)
  plus a ``<stem>.json`` sidecar recording its sha256 and a record (the model zoo's trained
  weights). A file whose hash does not match, that fails to load or holds no state dict
  raises :class:`CorruptCacheError`, so the caller retrains instead of using other weights.

Every entry is written to a temporary file and renamed into place (:func:`atomic_save`),
read with ``torch.load(weights_only=True)``, and computed under :func:`file_lock` when
processes share the directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from snnbench.common.filelock import file_lock
from snnbench.common.hashing import sha256_file, sha256_json

log = logging.getLogger(__name__)


class CorruptCacheError(RuntimeError):
    """A cached weights file is unreadable or does not match its recorded hash."""


def atomic_save(value: Any, path: Path, suffix: str = ".tmp") -> Path:
    """``torch.save`` ``value`` to a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=suffix)
    os.close(fd)
    torch.save(value, tmp)
    os.replace(tmp, path)
    return path


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-able object (cache keys: 20 hex digits of sha256)."""
    return sha256_json(obj, 20)


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
        atomic_save(value, self._path(namespace, key))

    def lock(self, namespace: str, key: str) -> contextlib.AbstractContextManager[int]:
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


# -- sha256-verified entries -----------------------------------------------------------
def entry_paths(directory: Path, stem: str) -> tuple[Path, Path]:
    """The weights file and the sidecar of entry ``stem``."""
    return directory / f"{stem}.pt", directory / f"{stem}.json"


def save_entry(directory: Path, stem: str, state_dict: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
    """Atomically write weights and sidecar; returns the weights path."""
    weights, sidecar = entry_paths(directory, stem)
    atomic_save(state_dict, weights, suffix=".pt.tmp")
    record = dict(record, sha256=sha256_file(weights), file=weights.name,
                  saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    tmp_json = sidecar.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp_json, sidecar)
    return weights


def load_entry(directory: Path, stem: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(state_dict, record) for a cached entry, ``None`` when absent.

    Raises:
        CorruptCacheError: the entry exists but is damaged.
    """
    weights, sidecar = entry_paths(directory, stem)
    if not weights.exists() and not sidecar.exists():
        return None
    if not weights.exists() or not sidecar.exists():
        raise CorruptCacheError(f"zoo entry {stem} is incomplete (weights or sidecar missing) in {directory}")
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError) as err:
        raise CorruptCacheError(f"zoo sidecar {sidecar} is unreadable: {err}") from err
    if record.get("sha256") != sha256_file(weights):
        raise CorruptCacheError(f"zoo weights {weights} do not match the sha256 in {sidecar.name}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means corrupt
        raise CorruptCacheError(f"zoo weights {weights} cannot be loaded: {err}") from err
    if not isinstance(state, dict):
        raise CorruptCacheError(f"zoo weights {weights} do not hold a state dict")
    return state, record


def remove_entry(directory: Path, stem: str) -> None:
    """Delete entry ``stem`` (weights and sidecar; missing files are fine)."""
    for path in entry_paths(directory, stem):
        path.unlink(missing_ok=True)


def list_entries(directory: Path) -> list[dict[str, Any]]:
    """Sidecar records of every cached entry (with a ``status`` field: ok / corrupt)."""
    out: list[dict[str, Any]] = []
    if not directory.is_dir():
        return out
    for sidecar in sorted(directory.glob("*.json")):
        stem = sidecar.stem
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            record = {}
        weights = directory / f"{stem}.pt"
        ok = weights.exists() and record.get("sha256") == sha256_file(weights)
        out.append(dict(record, stem=stem, status="ok" if ok else "corrupt",
                        size_mb=round(weights.stat().st_size / 2**20, 2) if weights.exists() else 0.0))
    return out


__all__ = ["CorruptCacheError", "DiskCache", "MemoryCache", "atomic_save", "digest", "entry_paths",
           "list_entries", "load_entry", "remove_entry", "save_entry"]
