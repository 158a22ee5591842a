"""The zoo's on-disk cache of trained weights, with integrity checks.

Each entry is ``<name>__<task>__<recipe>.pt`` (a plain state dict saved with
``torch.save``) plus a ``.json`` sidecar recording its sha256, training record and
versions. A file whose hash does not match, that fails to load, or that does not fit the
architecture is reported as corrupt so the caller retrains instead of crashing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

ENV_VAR = "SNNBENCH_ZOO_DIR"


class CorruptCacheError(RuntimeError):
    """A cached weights file is unreadable or does not match its recorded hash."""


def zoo_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``override``, else ``$SNNBENCH_ZOO_DIR``, else ``~/.cache/snnbench/zoo``."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "snnbench" / "zoo"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def entry_paths(directory: Path, stem: str) -> tuple[Path, Path]:
    return directory / f"{stem}.pt", directory / f"{stem}.json"


def save_entry(directory: Path, stem: str, state_dict: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
    """Atomically write weights and sidecar; returns the weights path."""
    directory.mkdir(parents=True, exist_ok=True)
    weights, sidecar = entry_paths(directory, stem)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".pt.tmp")
    os.close(fd)
    torch.save(state_dict, tmp)
    digest = sha256_file(Path(tmp))
    os.replace(tmp, weights)
    record = dict(record, sha256=digest, file=weights.name, saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
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
    for path in entry_paths(directory, stem):
        path.unlink(missing_ok=True)


def list_entries(directory: Path) -> list[dict[str, Any]]:
    """Sidecar records of every cached entry (with a ``status`` field: ok / corrupt)."""
    out = []
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
