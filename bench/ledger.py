"""The results ledger: one JSON line per finished cell, appended and fsynced by the driver.

The ledger is the source of truth: MLflow is written after it, and the leaderboard can
always be rebuilt from it. A cell can appear several times (a failure, then a retry that
succeeded; a ``--force`` rerun); the latest line of a ``cell_key`` wins. A torn last line
(the process was killed mid-write) is skipped with a warning, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

LEDGER_NAME = "ledger.jsonl"


class Ledger:
    """Append-only JSONL file of cell results."""

    def __init__(self, results_dir: str | os.PathLike) -> None:
        self.path = Path(results_dir) / LEDGER_NAME

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and flush it to disk before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, default=str, separators=(",", ":"))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record, in file order."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s:%d is not valid JSON (interrupted write?); skipped", self.path, number)

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last record of every cell_key."""
        out: dict[str, dict[str, Any]] = {}
        for record in self.records():
            key = record.get("cell_key")
            if key:
                out[key] = record
        return out

    def finished_keys(self) -> set[str]:
        """cell_keys whose latest record succeeded (these are skipped on resume)."""
        return {k for k, r in self.latest().items() if r.get("status") == "ok"}
