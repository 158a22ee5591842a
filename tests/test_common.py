"""snnbench.common: the sha256 helper keeps persisted digests, the file lock, the registry's
collection entry points."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import pytest

from snnbench.common.cache import DiskCache, digest
from snnbench.common.filelock import LockHeld, file_lock
from snnbench.common.hashing import canonical_json, sha256_file, sha256_json, sha256_text
from snnbench.common.registry import DuplicateNameError, Registry


def test_sha256_helpers_equal_hashlib_on_the_same_text():
    obj = {"b": [1, 2.5, None], "a": {"z": "x"}, "p": object}
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    assert canonical_json(obj) == text
    assert sha256_json(obj, 16) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert digest(obj) == hashlib.sha256(text.encode()).hexdigest()[:20]
    assert sha256_text("a/b.jpg") == hashlib.sha256(b"a/b.jpg").hexdigest()


def test_sha256_file_reads_every_chunk(tmp_path):
    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_nonblocking_file_lock_raises_while_another_process_holds_it(tmp_path):
    path = tmp_path / "sub" / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from snnbench.common.filelock import file_lock
        with file_lock({str(path)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld):
            with file_lock(path, blocking=False):
                pass
    finally:
        holder.kill()
        holder.wait()
    with file_lock(path, blocking=False) as fd:
        assert fd >= 0


def test_disk_cache_computes_an_entry_once(tmp_path):
    cache = DiskCache(tmp_path)
    calls = []
    for _ in range(2):
        assert cache.get_or_compute("ns", "k", lambda: calls.append(1) or {"v": 1}) == {"v": 1}
    assert calls == [1] and (tmp_path / "ns" / "k.pt").is_file()


class _Spec:
    def __init__(self, name: str) -> None:
        self.name = name


SPECS = [_Spec("a"), _Spec("b")]
TWICE = [_Spec("a")]


def test_collection_entry_points_register_each_item_with_its_origin(monkeypatch):
    from importlib import metadata

    eps = [metadata.EntryPoint("many", f"{__name__}:SPECS", "g")]
    monkeypatch.setattr(metadata, "entry_points", lambda group: eps)
    reg = Registry(kind="spec", group="g", base_cls=_Spec, name_of=lambda s: s.name)
    assert reg.names() == ["a", "b"] and reg.get("b") is SPECS[1]
    assert reg.origin("a").endswith(f"({__name__}:SPECS)")
    eps.append(metadata.EntryPoint("again", f"{__name__}:TWICE", "g"))
    with pytest.raises(DuplicateNameError, match="registered twice"):
        reg.discover(force=True)
