"""The one sha256 helper: of text, of canonical JSON and of a file's bytes.

Every digest snnbench persists goes through here (cell keys, cache keys, canvas data tags,
weight hashes), so a key computed today equals the one in an older ledger: the same input
string gives the same hex digest, truncated to the same length.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

#: bytes read per chunk when hashing a file
_CHUNK = 1 << 20


def sha256_text(text: str, length: int | None = None) -> str:
    """Hex sha256 of ``text`` (UTF-8), optionally its first ``length`` digits."""
    hexdigest = hashlib.sha256(text.encode()).hexdigest()
    return hexdigest if length is None else hexdigest[:length]


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys (non-JSON values as ``str``): the text cell and cache keys hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_json(obj: Any, length: int | None = None) -> str:
    """:func:`sha256_text` of :func:`canonical_json` of ``obj``."""
    return sha256_text(canonical_json(obj), length)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["canonical_json", "sha256_file", "sha256_json", "sha256_text"]
