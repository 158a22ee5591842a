"""The results ledger: one JSON line per finished cell, appended and fsynced by the driver.

The ledger is the source of truth: MLflow is written after it (and reconciled with it when
a sweep starts), and the leaderboard can always be rebuilt from it. A cell can appear
several times (a failure, then a retry that succeeded; a ``--force`` rerun); the latest
line of a ``cell_key`` wins.

Crash safety. A process killed in the middle of :meth:`Ledger.append` leaves a last line
without its newline: either a fragment of a record, or a complete record whose ``\\n`` was
not written yet. Before anything is appended the tail is repaired
(:meth:`Ledger.repair_tail`): a complete record gets its newline, a fragment is moved
aside to ``ledger.jsonl.torn-<time>`` (reported with a warning) and cut off, so a new
record is never glued onto an old one and nothing that was complete is lost. Reading
skips (with a warning) any line that is not a JSON object.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from snnbench.record import CellResult

log = logging.getLogger(__name__)

LEDGER_NAME = "ledger.jsonl"
TORN_SUFFIX = ".torn-"


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (best effort on filesystems without dir fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def parse_record(line: str) -> dict[str, Any] | None:
    """The record a ledger line holds, or None when the line is not a JSON object."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Ledger:
    """Append-only JSONL file of cell results (one writer at a time: see :mod:`snnbench.results_lock`)."""

    def __init__(self, results_dir: str | os.PathLike) -> None:
        self.path = Path(results_dir) / LEDGER_NAME

    def repair_tail(self) -> Path | None:
        """Make the file end with a complete line before anything is appended.

        Returns the ``.torn-<time>`` file a torn fragment was moved to, or None when the
        tail was fine (or only lacked its final newline, which is added).
        """
        if not self.path.exists():
            return None
        with open(self.path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return None
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return None
            # find the start of the last line
            block = 1 << 16
            pos = size
            start = 0
            while pos > 0:
                read_from = max(0, pos - block)
                f.seek(read_from)
                chunk = f.read(pos - read_from)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    start = read_from + newline + 1
                    break
                pos = read_from
            f.seek(start)
            tail = f.read()
            if parse_record(tail.decode("utf-8", errors="replace")) is not None:
                f.seek(size)
                f.write(b"\n")       # a whole record whose newline was never written: keep it
                f.flush()
                os.fsync(f.fileno())
                log.warning("%s: the last record lacked its final newline (interrupted write); added it", self.path)
                return None
            torn = self.path.with_name(f"{self.path.name}{TORN_SUFFIX}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            with open(torn, "wb") as out:
                out.write(tail)
                out.flush()
                os.fsync(out.fileno())
            f.truncate(start)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.path.parent)
        log.warning("%s: its last line was a torn fragment of %d bytes (a sweep was killed mid-write); moved it to "
                    "%s and cut it off; the cell it belonged to will be rerun", self.path, len(tail), torn)
        return torn

    def append(self, record: CellResult | Mapping[str, Any]) -> None:
        """Write one record (after repairing a torn tail) and flush it to disk before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repair_tail()
        payload = record.to_dict() if isinstance(record, CellResult) else dict(record)
        line = json.dumps(payload, default=str, separators=(",", ":")) + "\n"
        with open(self.path, "ab") as f:
            f.write(line.encode("utf-8"))   # one write of the whole line
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record, in file order; other lines are skipped with a warning."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                record = parse_record(line)
                if record is None:
                    log.warning("%s:%d is not a JSON object (interrupted write?); skipped", self.path, number)
                    continue
                yield record

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last record of every cell_key."""
        out: dict[str, dict[str, Any]] = {}
        for record in self.records():
            key = record.get("cell_key")
            if key:
                out[key] = record
        return out

    def latest_results(self) -> dict[str, CellResult]:
        """:meth:`latest`, each line read as a :class:`~snnbench.record.CellResult` (old lines too)."""
        return {key: CellResult.from_dict(record) for key, record in self.latest().items()}

    def finished_keys(self) -> set[str]:
        """cell_keys whose latest record succeeded (these are skipped on resume)."""
        return {k for k, r in self.latest().items() if r.get("status") == "ok"}
