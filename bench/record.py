"""The result of one cell: :class:`CellResult`, the one schema of the ledger, MLflow and ``--json``.

A record is frozen; code that adds to it (the executor's thread count, the sweep's record
id) makes a new one with :func:`dataclasses.replace`. Its JSON form (:meth:`CellResult.to_dict`)
is the contract consumed by scripts, the ledger and the leaderboard::

    {"method", "task", "model", "settings": {...}, "T", "metric": "top1",
     "ann": <ANN metric>, "per_t": {"1": {"metric", "spikes_per_sample",
     "synops_per_sample", "energy_ratio", ...}, ...},
     "status": "ok" | "failed", "error": null | "<traceback>", "wall_s"}

plus ``weights_sha256`` and ``reference`` (always), and, when known: ``cell_key``, ``track``
(``plain`` / ``qcfs``: the kind of ANN), ``ann_ci95``, ``ann_metrics`` (every ANN metric),
``ann_macs_per_sample``, ``energy_model(s)``, ``conversion``, ``fairness``, ``eval_ts``,
``layers`` (per-layer counts), ``eval_samples``, ``n_eval`` (samples scored),
``adaptive_timesteps``, ``timings``, ``provenance``, ``warnings``, and what the executor
and the sweep add (``threads``, ``attempts``, ``failure``, ``record_id``, ``sweep``,
``mlflow_run_id``). Keys a record does not know (a ledger line of a later version) are kept
in :attr:`CellResult.extra` and written back unchanged.

A record *is* that JSON object too: a read-only ``dict`` holding :meth:`CellResult.to_dict`,
so ``result["per_t"]["4"]["metric"]`` reads the same from a record as from a ledger line and
``json.dumps(result)`` writes the contract; every mutating ``dict`` method raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from snnbench.cell import CellSpec

#: the keys of the original contract, in order (always present)
CONTRACT_KEYS = ("method", "task", "model", "settings", "T", "metric", "ann", "per_t", "status", "error", "wall_s")
#: keys every per-t row holds
PER_T_KEYS = ("metric", "spikes_per_sample", "synops_per_sample", "energy_ratio")
#: written even when None / False (the rest only when known)
_ALWAYS = frozenset(CONTRACT_KEYS) | {"weights_sha256", "reference"}
#: the method of the reference rows in ledgers written before records carried ``reference``
LEGACY_REFERENCE_METHOD = "ann"


@dataclass(frozen=True, eq=False, repr=False)
class CellResult(dict):
    """One cell's result (see the module docstring for the meaning of every field).

    Equality and ``repr`` are those of the JSON object; change a record with
    :func:`dataclasses.replace`.
    """

    method: str | None
    task: str | None
    model: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    T: int | None = None
    metric: str | None = None
    ann: float | None = None
    #: the ANN metric's 95 % interval [lo, hi] (Wilson, or an image bootstrap: snnbench.samples)
    ann_ci95: list[float] | None = None
    per_t: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "failed"
    error: str | None = None
    wall_s: float = 0.0
    weights_sha256: str | None = None
    cell_key: str | None = None
    track: str | None = None
    #: True for the static ANN reference row (never ranked; energy ratio 1, no spikes)
    reference: bool = False
    ann_metrics: dict[str, float] | None = None
    ann_macs_per_sample: float | None = None
    energy_model: dict[str, Any] | None = None
    energy_models: dict[str, dict[str, Any]] | None = None
    conversion: dict[str, Any] | None = None
    fairness: dict[str, Any] | None = None
    eval_ts: list[int] | None = None
    layers: list[dict[str, Any]] | None = None
    eval_samples: int | None = None
    #: samples the task metric was computed on
    n_eval: int | None = None
    adaptive_timesteps: dict[str, Any] | None = None
    timings: dict[str, float] | None = None
    provenance: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] | None = None
    threads: int | None = None
    attempts: int | None = None
    failure: str | None = None
    record_id: str | None = None
    sweep: dict[str, Any] | None = None
    mlflow_run_id: str | None = None
    #: keys of a ledger line this version does not know, written back as they were
    extra: dict[str, Any] = field(default_factory=dict)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def failed(cls, spec: "CellSpec", error: str, wall_s: float = 0.0, **more: Any) -> "CellResult":
        """The record of a cell that produced no result (an exception, a crash, a timeout, no GPU)."""
        return cls(method=spec.method, task=spec.task, model=spec.model, settings=dict(spec.settings), T=spec.T,
                   status="failed", error=error, wall_s=round(wall_s, 3), cell_key=more.pop("cell_key", spec.key()),
                   provenance=more.pop("provenance", {"spec": spec.to_dict()}), **more)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CellResult":
        """A record from its JSON form (a ledger line, a worker's output); lenient about missing keys.

        Lines written before a field existed read it as absent (``reference``: the method
        name of the old reference row, ``ann``); unknown keys go to :attr:`extra`.
        """
        if isinstance(data, CellResult):
            return data
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        for name in ("method", "task", "model"):
            values.setdefault(name, None)
        if values.get("reference") is None:
            values["reference"] = data.get("method") == LEGACY_REFERENCE_METHOD
        if values.get("settings") is None:
            values["settings"] = {}
        if values.get("per_t") is None:
            values["per_t"] = {}
        return cls(**values, extra=extra)

    def __post_init__(self) -> None:
        dict.update(self, self._json())

    # -- the JSON form -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the contract (see the module docstring), as a plain ``dict``."""
        return dict(self)

    def _json(self) -> dict[str, Any]:
        """Every field in order (optional ones only when not None), then :attr:`extra`."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is not None or f.name in _ALWAYS:
                out[f.name] = value
        out.update(self.extra)
        return out

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def label(self) -> str:
        """``method/model/task``."""
        return f"{self.method}/{self.model}/{self.task}"

    # -- read-only dict ----------------------------------------------------------------
    def _frozen(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a CellResult is frozen: make a new one with dataclasses.replace(result, name=value)")

    __setitem__ = __delitem__ = __ior__ = update = pop = popitem = setdefault = clear = _frozen  # type: ignore

    def __reduce__(self) -> tuple:
        return (CellResult.from_dict, (dict(self),))


def is_reference(record: Mapping[str, Any]) -> bool:
    """Whether a record (or ledger line) is the ANN reference row; old lines: its method name."""
    flag = record.get("reference")
    return bool(flag) if flag is not None else record.get("method") == LEGACY_REFERENCE_METHOD


__all__ = ["CONTRACT_KEYS", "PER_T_KEYS", "CellResult", "is_reference"]
