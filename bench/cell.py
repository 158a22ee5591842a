"""A grid cell: its canonical configuration and its stable ``cell_key``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from snnbench.energy import DEFAULT_ENERGY_MODEL

#: bump when the meaning of a result changes for the same configuration
CELL_SCHEMA_VERSION = "1"
DEFAULT_CALIB_SIZE = 1000
DEFAULT_CALIB_BATCH = 100
DEFAULT_T = 32


@dataclass(frozen=True)
class CellSpec:
    """One (method + settings, task, model) cell, simulated to T.

    ``settings`` holds only what the user set (strings from the CLI are fine); the
    canonical form resolves the method's full settings so that spelling a default
    explicitly gives the same ``cell_key``.
    """

    method: str
    task: str
    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    T: int = DEFAULT_T
    seed: int = 0
    calib_size: int = DEFAULT_CALIB_SIZE
    eval_size: int | None = None
    calib_batch_size: int = DEFAULT_CALIB_BATCH
    #: "train" (default) or "eval": the paper's protocol, statistics on the evaluation
    #: images (only with an explicit flag; rows say "calibrated on eval")
    calib_split: str = "train"
    batch_size: int | None = None
    data_root: str | None = None
    weights: str | None = None
    device: str = "cpu"

    def canonical(self) -> dict[str, Any]:
        """The configuration that defines the result (not where or how fast it runs)."""
        from snnbench.plugins import create_method

        method = create_method(self.method, self.settings)
        return {
            "schema": CELL_SCHEMA_VERSION,
            "method": method.config(),
            "task": self.task,
            "model": self.model,
            "T": self.T,
            "seed": self.seed,
            "calib_size": self.calib_size,
            "calib_batch_size": self.calib_batch_size,
            "eval_size": self.eval_size,
            "data_root": self.data_root,
            "weights": self.weights,
            "energy_model": DEFAULT_ENERGY_MODEL.name,
            # only when not the default, so that existing cell keys stay valid
            **({"calib_split": self.calib_split} if self.calib_split != "train" else {}),
        }

    def key(self) -> str:
        """sha256 of the canonical JSON, first 16 hex digits."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self) -> str:
        """Human name, e.g. ``dcgs/vgg_small/fashion_mnist``."""
        return f"{self.method}/{self.model}/{self.task}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellSpec":
        return cls(**data)
