"""Reference checkpoints: the zoo's models as trained by the project, shipped and sha256-pinned.

Two users who train ``vgg_small`` on two machines get two different networks (thread
counts, BLAS and library versions change the float sums), so their leaderboards would not
compare. The project therefore ships the checkpoints it trained with its own code
(``bench zoo train NAME --force --reference`` regenerates one) under
``snnbench/tasks/zoo/reference/``: one ``<stem>.pt`` state dict per entry and a
``manifest.json`` pinning each file's sha256 and its training record. The zoo loads a
reference checkpoint whenever one exists for the requested entry (same model, task,
recipe and, for the canvas tasks, the same generated data), before its own cache and
before training; ``SNNBENCH_ZOO_REFERENCE=off`` turns this off (then the zoo trains and
caches as before). A reference file that does not match its pinned hash is an error,
never silently replaced: numbers computed on other weights would not be comparable.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from snnbench.common.cache import CorruptCacheError
from snnbench.common.hashing import sha256_file

ENV_VAR = "SNNBENCH_ZOO_REFERENCE"
_PACKAGE_DIR = Path(__file__).resolve().parent / "reference"


def reference_dir() -> Path:
    """Where the shipped checkpoints live (inside the installed package)."""
    return _PACKAGE_DIR


def enabled() -> bool:
    """False when ``$SNNBENCH_ZOO_REFERENCE`` is ``off``/``0``/``false``/``no``."""
    return os.environ.get(ENV_VAR, "on").strip().lower() not in {"off", "0", "false", "no"}


def manifest(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """``{stem: {"file", "sha256", "size_bytes", "record"}}`` of the shipped checkpoints."""
    path = (directory or reference_dir()) / "manifest.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise CorruptCacheError(f"{path} does not hold a JSON object")
    return data


def load(stem: str, directory: Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(state_dict, record) of the reference checkpoint for ``stem``; ``None`` if none ships.

    The record carries ``sha256`` (the pinned hash, verified against the file), ``path``
    and ``source="reference"``.

    Raises:
        CorruptCacheError: the checkpoint is missing or does not match its pinned sha256.
    """
    directory = directory or reference_dir()
    entry = manifest(directory).get(stem)
    if entry is None:
        return None
    path = directory / entry["file"]
    if not path.is_file():
        raise CorruptCacheError(f"reference checkpoint {path} is listed in manifest.json but missing; "
                                f"reinstall snnbench, or set {ENV_VAR}=off to train the model yourself")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise CorruptCacheError(f"reference checkpoint {path} has sha256 {digest[:12]}..., but manifest.json pins "
                                f"{entry['sha256'][:12]}...; reinstall snnbench, or set {ENV_VAR}=off to train "
                                "the model yourself")
    state = torch.load(path, map_location="cpu", weights_only=True)
    record = dict(entry.get("record", {}), sha256=digest, path=str(path), source="reference")
    return state, record


def publish(stem: str, weights: Path, record: dict[str, Any], directory: Path | None = None) -> Path:
    """Copy a trained checkpoint into the reference directory and pin it in the manifest.

    The maintainers' command (``bench zoo train NAME --force --reference``); the copy
    and the manifest are each replaced atomically.
    """
    directory = directory or reference_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{stem}.pt"
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".pt.tmp")
    os.close(fd)
    shutil.copyfile(weights, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    keep = {k: v for k, v in record.items() if k not in {"path", "cache", "file", "sha256", "saved_at", "source"}}
    entries = manifest(directory)
    entries[stem] = {"file": target.name, "sha256": sha256_file(target), "size_bytes": target.stat().st_size,
                     "published_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "record": keep}
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(dict(sorted(entries.items())), f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, directory / "manifest.json")
    return target


__all__ = ["ENV_VAR", "enabled", "load", "manifest", "publish", "reference_dir"]
