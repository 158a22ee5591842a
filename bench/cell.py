"""A grid cell: its canonical configuration and its stable ``cell_key``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from snnbench.common.hashing import sha256_json
from snnbench.energy import DEFAULT_ENERGY_MODEL

#: bump when the meaning of a result changes for the same configuration
CELL_SCHEMA_VERSION = "1"
DEFAULT_CALIB_SIZE = 1000
DEFAULT_CALIB_BATCH = 100
DEFAULT_T = 32
#: ``eval_ts`` spellings besides a comma list of time-steps
EVAL_TS_WORDS = ("auto", "all", "pow2")
EVAL_TS_HELP = ("time-steps whose task metric is computed (counts cover every t): auto (every t, but 1,2,4,...,T "
                "for detection), all, pow2, or a list such as 1,2,4,T (T is always scored)")


def resolve_eval_ts(text: str, T: int, task_default: str = "all") -> list[int]:
    """The time-steps whose task metric a cell computes (spike and op counts cover every t).

    ``all``: 1..T; ``pow2``: 1, 2, 4, ... up to T, and T; ``auto``: the task's default
    (``all`` for classification and segmentation, ``pow2`` for detection, whose COCOeval
    costs seconds per t); or a comma list of integers and ``T``, e.g. ``1,2,4,T``. T itself
    is always included (the headline metric is the one at T).
    """
    text = (text or "auto").strip()
    if text == "auto":
        text = task_default
    if text == "all":
        return list(range(1, T + 1))
    if text == "pow2":
        return sorted({2**k for k in range(T.bit_length()) if 2**k <= T} | {T})
    steps: set[int] = {T}
    for part in text.split(","):
        part = part.strip()
        if part == "T":
            continue
        try:
            t = int(part)
        except ValueError:
            raise ValueError(f"eval_ts: {part!r} is not a time-step; use {', '.join(EVAL_TS_WORDS)} or a comma "
                             f"list of integers and T, e.g. 1,2,4,T") from None
        if not 1 <= t <= T:
            raise ValueError(f"eval_ts: time-step {t} is outside 1..T={T}")
        steps.add(t)
    return sorted(steps)


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
    #: time-steps whose task metric is computed (see :func:`resolve_eval_ts`)
    eval_ts: str = "auto"
    #: where the runner writes the per-sample outcomes ``<cell_key>.npz`` (a sweep's
    #: ``<results>/samples``); like ``device``, not part of the cell's configuration
    samples_dir: str | None = None

    def canonical(self) -> dict[str, Any]:
        """The configuration that defines the result (not where or how fast it runs)."""
        from snnbench.plugins import create_method

        method = create_method(self.method, self.settings)
        extra = {} if self.eval_ts == "auto" else {"eval_ts": self.eval_ts}  # the default keeps old keys
        return {**extra,
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
        return sha256_json(self.canonical(), 16)

    def label(self) -> str:
        """Human name, e.g. ``dcgs/vgg_small/fashion_mnist``."""
        return f"{self.method}/{self.model}/{self.task}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellSpec":
        return cls(**data)
