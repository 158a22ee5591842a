"""The records of the op counter (bench/counting.py): per-frame rows of each counted layer and
neuron, and the per-sample :class:`CountSummary` it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from snnbench.methods.base import ConnectionSite, NeuronSite


class _Row:
    """Per-frame totals ``[T + 1]``. On a CPU row a step adds its value as a Python number
    (``item()`` of a CPU scalar is no sync, and a Python int or float add costs ~0.1 µs where
    ``values[t].add_(v)`` took two torch ops, ~5 µs: a vit_mini run with counting made ~2 000 of
    them); on another device it adds in place into one preallocated device tensor (no host sync,
    and nothing allocated that outlives the step: a 0-dim tensor kept per frame and counter used
    to pin freed activation memory, so the process grew ~5 MB per frame on vgg_small). Read at the
    end by :meth:`tensor`.

    The values a row receives are integers (ops, events) or, for ``float64`` rows, sums of exact
    powers of two (unit spikes): a value of another dtype is converted exactly before adding, and
    Python ints and doubles add them as exactly as int64 and float64 tensors do.
    """

    __slots__ = ("values", "host", "_number")

    def __init__(self, frames: int, dtype: torch.dtype = torch.int64, device: torch.device | str = "cpu") -> None:
        self.values = torch.zeros(frames, dtype=dtype, device=device)
        self._number = float if dtype.is_floating_point else int
        self.host = [self._number(0)] * frames if self.values.device.type == "cpu" else None

    def add(self, t: int, value: Any) -> None:
        if self.host is not None:
            if not isinstance(value, torch.Tensor):
                self.host[t] += self._number(value)
                return
            if value.device.type == "cpu" and value.numel() == 1:
                self.host[t] += self._number(value.item())
                return
        if isinstance(value, torch.Tensor) and value.dtype != self.values.dtype:
            value = value.to(self.values.dtype)
        self.values.select(0, t).add_(value)  # in place on the element (``values[t] += v`` writes it back too)

    def tensor(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        values = self.values
        if self.host is not None:
            values = values + torch.tensor(self.host, dtype=values.dtype)
        return values.to(device=device, dtype=dtype)


@dataclass
class _LayerCounter:
    site: ConnectionSite
    ops: _Row                    # [T + 1] effective ops per frame (summed over samples)
    input_ops: _Row              # [T + 1] fan-out of the non-zero elements of the layer's own input
    unit_input_ops: _Row         # [T + 1] input_ops of calls whose input is all in {-1, 0, 1}
    input_nonzero: _Row          # [T + 1] non-zero input elements
    dense: int = 0               # dense ops summed over counted samples (one frame each)
    dense_ungrouped: int = 0     # AdaFire's C_in·C_out·k·H_out·W_out, summed over counted samples
    input_numel: int = 0         # input elements per frame, summed over counted samples
    fanout: dict[tuple, tuple[torch.Tensor, int]] = field(default_factory=dict)


@dataclass
class _NeuronCounter:
    site: NeuronSite
    events: _Row                 # [T + 1]
    units: _Row                  # [T + 1] float64
    updates: _Row                # [T + 1]


@dataclass
class CountSummary:
    """Per-sample counts, cumulative over frames 1..t, as plain Python numbers."""

    samples: int
    T: int
    acs: list[float]             # index t-1 -> cumulative ACs per sample
    macs: list[float]
    events: list[float]
    unit_spikes: list[float]
    neuron_updates: list[float]
    dense_macs: float            # one frame of dense ops per sample (the ANN's cost)
    layers: list[dict[str, Any]]
    #: index t-1 -> mean steps computed per sample over frames 1..t (t without early exit)
    steps: list[float] = field(default_factory=list)
    #: steps used -> number of samples (only when the model reported per-sample masks)
    steps_histogram: dict[int, int] | None = None
