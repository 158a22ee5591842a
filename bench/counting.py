"""Exact spike and operation counting inside forward hooks, with integer counters only.

Per connection layer and frame t:

* effective ops = Σ over non-zero input elements of that element's fan-out (the number of
  outputs it reaches), i.e. the layer run on the binarised input with all weights set to
  one and no bias: NeuroBench's ``Effective_ACs``/``Effective_MACs`` definition. Spike-fed
  layers (declared by the method) count them as ACs, layers fed by real values as MACs.
  A multi-level spike is one event: the level index travels with it. A neuron that sends
  several binary sub-spikes per step on separate channels (H-MT) declares its per-element
  counts (``ConnectionSite.input_events``); each sub-spike then costs the full fan-out.
* dense ops = the same with every input element present (padding excluded); one frame of
  these is the ANN's cost.

Raw counts kept per layer and frame besides, so that every energy convention of
:mod:`snnbench.energy` derives from one simulation (docs/harness-notes.md §1.2):

* ``input_ops``: Σ over non-zero elements *of the layer's own input* of their fan-out. It
  differs from the effective ops only behind an average pool, where the layer sees one
  value per pooled cell (the official DCGS counter's and NeuroBench's view) instead of the
  spikes inside it;
* ``unit_input_ops``: ``input_ops`` of the calls whose whole input lies in {-1, 0, 1}
  (NeuroBench classes a layer's ops as ACs only then);
* ``input_nonzero``: non-zero input elements (AdaFire's density = input_nonzero / numel);
* ``dense_ungrouped``: one frame of C_in·C_out·k·H_out·W_out (AdaFire's MAC formula:
  padding included, groups ignored).

Per spiking module and frame: events (non-zero outputs), unit spikes (|s| / unit
amplitude: a level θ/2^k of an n-level MT neuron is 2^(n-1-k) unit spikes) and neuron
updates (elements updated).

Per-sample early exit (``SpikingModel.active``, methods/base.py): when the model marks
only some samples as computing a frame, every count of that frame (ops, events, unit
spikes, neuron updates, input non-zeros) covers those samples only, and the counter keeps
the steps each sample used (:meth:`OpCounter.add_steps`).

Per connection layer the counter also keeps the raw input non-zeros per frame and the
input elements of one frame, so energy conventions priced on input density
(nnz(input)/numel(input) per step, e.g. AdaFire's released energy model) can be applied to
a result without re-running it.

Counters are device tensors indexed by t, so the time loop never synchronises with the
host; nothing but those counters is kept.

Frames simulated before readout (SRP's pre-simulation, ``CountPlan.readout_offset``) cost
energy like any other: the counts reported at readout step t are cumulative over every
counted frame up to and including frame t + readout_offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from snnbench.fanout import conv_fanout_map, pooled_event_counts, ungrouped_macs
from snnbench.methods.base import ConnectionSite, CountPlan, NeuronSite, SpikingModel

__all__ = ["CountSummary", "OpCounter", "conv_fanout_map"]

@dataclass
class _LayerCounter:
    site: ConnectionSite
    ops: torch.Tensor            # [T + 1] effective ops per frame (summed over samples)
    input_ops: torch.Tensor      # [T + 1] fan-out of the non-zero elements of the layer's own input
    unit_input_ops: torch.Tensor  # [T + 1] input_ops of calls whose input is all in {-1, 0, 1}
    input_nonzero: torch.Tensor  # [T + 1] non-zero input elements
    dense: int = 0               # dense ops summed over counted samples (one frame each)
    dense_ungrouped: int = 0     # AdaFire's C_in·C_out·k·H_out·W_out, summed over counted samples
    input_numel: int = 0         # input elements per frame, summed over counted samples
    fanout: dict[tuple, tuple[torch.Tensor, int]] = field(default_factory=dict)


@dataclass
class _NeuronCounter:
    site: NeuronSite
    events: torch.Tensor         # [T + 1]
    units: torch.Tensor          # [T + 1] float64
    updates: torch.Tensor        # [T + 1]


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


class OpCounter:
    """Context manager that hooks a :class:`SpikingModel`'s declared layers and counts.

    Usage::

        with OpCounter(snn, T) as counter:
            for x, y in batches:
                snn.reset()
                for out in snn.simulate(x, T): ...
                counter.add_samples(len(x))
        summary = counter.summary()
    """

    def __init__(self, model: SpikingModel, T: int, device: torch.device | str | None = None) -> None:
        self.model = model
        self.T = T
        self.plan: CountPlan = model.count_plan()
        self.offset = int(self.plan.readout_offset)
        if self.offset < 0:
            raise ValueError(f"readout_offset must be >= 0, got {self.offset}")
        #: the last frame counted: readout step T
        self.last_frame = T + self.offset
        self.device = torch.device(device) if device is not None else _module_device(model)
        self.samples = 0
        self._handles: list[Any] = []
        self._pool_events: dict[int, torch.Tensor] = {}
        self._pool_event_fns: dict[int, Any] = {}
        zeros = lambda dtype=torch.int64: torch.zeros(self.last_frame + 1, dtype=dtype, device=self.device)  # noqa: E731
        self.layers = [_LayerCounter(site, zeros(), zeros(), zeros(), zeros()) for site in self.plan.connections]
        self.steps = torch.zeros(T + 1, dtype=torch.float64, device=self.device)
        self.step_counts: torch.Tensor | None = None  # [T + 1] samples per number of steps used
        self.neurons = [_NeuronCounter(site, zeros(), zeros(torch.float64), zeros()) for site in self.plan.neurons]

    # -- hooks ---------------------------------------------------------------------------
    def __enter__(self) -> "OpCounter":
        pools = {id(c.site.events_from): c.site.events_from for c in self.layers if c.site.events_from is not None}
        self._pool_event_fns = {id(c.site.events_from): c.site.input_events for c in self.layers
                                if c.site.events_from is not None and c.site.input_events is not None}
        for pool in pools.values():
            self._handles.append(pool.register_forward_hook(self._pool_hook))
        for counter in self.layers:
            self._handles.append(counter.site.module.register_forward_hook(self._layer_hook(counter)))
            if counter.site.op == "product":
                counter.site.module.counting = True
        for counter in self.neurons:
            self._handles.append(counter.site.module.register_forward_hook(self._neuron_hook(counter)))
            if hasattr(counter.site.module, "count_spikes"):  # neurons that can count in their own pass
                counter.site.module.count_spikes = True
        for counter in self.layers:  # convolutions reading a neuron directly: its pass maps the hits too
            source = counter.site.spikes_from
            if counter.site.op == "conv" and source is not None and hasattr(source, "count_positions"):
                source.count_positions = True
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for counter in self.layers:
            if counter.site.op == "product":
                counter.site.module.counting = False
        for counter in self.neurons:
            if hasattr(counter.site.module, "count_spikes"):
                counter.site.module.count_spikes = False
                counter.site.module.last_counts = None
            if hasattr(counter.site.module, "count_positions"):
                counter.site.module.count_positions = False
                counter.site.module.last_hits = None

    def _frame(self) -> int | None:
        frame = self.model.frame
        if frame < self.plan.first_counted_frame or frame > self.last_frame:
            return None
        return frame

    def _layer_hook(self, counter: _LayerCounter):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            t = self._frame()
            if t is None:
                return
            x = args[0]
            effective, dense, own = self._connection_ops(counter, module, x)
            counter.ops[t] += effective
            counter.input_ops[t] += own
            if counter.site.op != "product":
                mask = self._sample_mask(x)
                from_neuron = self._input_counts_from_neuron(counter, mask)
                if from_neuron is None:  # read the input
                    nonzero = torch.count_nonzero(x) if mask is None else ((x != 0) & mask).sum()
                    binary = ((x == 0) | (x.abs() == 1)).all()
                else:
                    nonzero, binary = from_neuron
                counter.unit_input_ops[t] += own * binary
                counter.input_nonzero[t] += nonzero
            if t == self.plan.first_counted_frame:
                counter.dense += dense
                if counter.site.op != "product":
                    counter.input_numel += x.numel()
                    counter.dense_ungrouped += ungrouped_macs(module, output)
        return hook

    @staticmethod
    def _input_counts_from_neuron(counter: _LayerCounter, mask: torch.Tensor | None
                                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(non-zero inputs, whether the input lies in {-1, 0, 1}) of a layer whose input is one
        engine neuron's spikes unchanged, from the counts of the neuron's own pass: its events are
        the non-zero inputs, and when none of its levels is ±1 the input is binary iff it has no
        spike. None (read the input) under a sample mask, behind a pool, or without such counts."""
        source = counter.site.spikes_from
        unit_magnitude = getattr(source, "can_emit_unit_magnitude", None)  # engine neurons (units.py)
        if mask is not None or counter.site.events_from is not None or unit_magnitude is None:
            return None
        counts = getattr(source, "last_counts", None)
        if counts is None or unit_magnitude():
            return None
        events = counts[0]
        return events, events == 0

    def _sample_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The model's active-sample mask shaped to broadcast over ``x`` (None: all active)."""
        active = getattr(self.model, "active", None)
        if active is None:
            return None
        if x.ndim == 0 or x.shape[0] != active.numel():
            raise RuntimeError(f"the model's active mask has {active.numel()} samples but a counted tensor has "
                               f"shape {tuple(x.shape)}: per-sample masks need the batch on dim 0")
        return active.reshape((-1,) + (1,) * (x.ndim - 1))

    def _pool_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        """Spikes per pooled cell (sum-pooling of the event mask) for the layer after the pool."""
        if self._frame() is None:
            return
        events_of = self._pool_event_fns.get(id(module))
        events = events_of(args[0]) if events_of is not None else args[0] != 0  # sub-spikes per element (H-MT)
        mask = self._sample_mask(events)
        self._pool_events[id(module)] = pooled_event_counts(module, events if mask is None else events * mask)

    def _connection_ops(self, counter: _LayerCounter, module: nn.Module, x: torch.Tensor
                        ) -> tuple[torch.Tensor, int, torch.Tensor]:
        """(effective ops, dense ops, ops of the non-zero elements of ``x`` itself)."""
        op = counter.site.op
        pool = counter.site.events_from
        if op == "product":
            active = getattr(self.model, "active", None)
            if active is not None and not bool(active.all()):
                raise RuntimeError(f"product unit {counter.site.name}: its three-term op count cannot honour a "
                                   "per-sample active mask (early exit is for networks without product units)")
            return module.last_ops, module.last_dense, module.last_ops
        mask = self._sample_mask(x)
        # early exit: count the active samples' inputs only (a neuron's own counts cover the whole batch)
        present = None if mask is None else (x != 0) & mask
        if pool is not None:
            events = self._pool_events.pop(id(pool), None)
            if events is None or events.numel() != x.numel():
                raise RuntimeError(f"layer {counter.site.name}: no spike counts from its average pool this frame")
            nonzero = events.reshape(x.shape)  # already masked by the pool hook
        elif counter.site.input_events is not None:  # several sub-spikes per element (H-MT)
            nonzero = counter.site.input_events(x)
        else:
            nonzero = present  # None: read from x only when the feeding neuron did not count (below)
        source = counter.site.spikes_from if mask is None else None
        if op == "linear":
            out_features = module.out_features
            dense = x.numel() * out_features
            counted = getattr(source, "last_counts", None) if pool is None else None
            if counted is not None:  # the neuron counted its events in its own pass: no read of x
                own_events = counted[0]
            else:  # the layer's own view (only the active samples under early exit)
                own_events = torch.count_nonzero(x) if present is None else present.sum()
            events = own_events if nonzero is None else nonzero.sum()
            return events * out_features, dense, own_events * out_features
        if op == "conv":
            spatial = tuple(x.shape[2:])
            cached = counter.fanout.get(spatial)
            if cached is None:  # the map and its host-side total, once per input size (no per-step sync)
                fan = conv_fanout_map(module, spatial, x.device)
                cached = counter.fanout[spatial] = (fan, int(fan.sum()))
            fan, fan_total = cached
            per_input_channel = module.out_channels // module.groups
            counted = getattr(source, "last_hits", None) if pool is None else None
            if counted is None or tuple(counted.shape) != spatial:  # not counted by the neuron: read the input
                counted = None
            if counted is not None:
                own_hits = counted
            else:  # non-zero inputs per position (only the active samples under early exit)
                own_hits = ((x != 0) if present is None else present).sum(dim=(0, 1))
            own = (own_hits * fan).sum() * per_input_channel
            if nonzero is None:
                effective = own
            else:  # behind an average pool every spike of the pooled cell; H-MT sub-spikes; active samples
                effective = (nonzero.sum(dim=(0, 1)) * fan).sum() * per_input_channel
            dense = fan_total * x.shape[0] * x.shape[1] * per_input_channel
            return effective, dense, own
        raise ValueError(f"unknown connection op {op!r} for layer {counter.site.name}")

    def _neuron_hook(self, counter: _NeuronCounter):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            t = self._frame()
            if t is None:
                return
            mask = self._sample_mask(output)
            if mask is not None:  # early exit: count the samples computing this frame only
                output = output * mask
                counter.updates[t] += mask.sum() * (output[0].numel() if output.ndim else 1)
            else:
                counter.updates[t] += output.numel()
            kernel_counts = getattr(module, "last_counts", None) if mask is None else None
            if kernel_counts is not None:  # counted by the fused kernel in its own pass
                counter.events[t] += kernel_counts[0]
                counter.units[t] += kernel_counts[1].to(torch.float64)
                return
            counter.events[t] += torch.count_nonzero(output)
            unit = counter.site.unit() if counter.site.unit is not None else None
            if unit is None:
                counter.units[t] += torch.count_nonzero(output).to(torch.float64)
            else:
                counter.units[t] += (output.abs().to(torch.float64) / unit.to(torch.float64).clamp_min(1e-30)).sum()
        return hook

    def add_samples(self, n: int) -> None:
        self.samples += int(n)

    def add_steps(self, t: int, active: torch.Tensor | None, batch: int) -> None:
        """Record that ``active`` (None: all ``batch`` samples) computed readout step ``t``."""
        if active is None:
            self.steps[t] += batch
        else:
            self.steps[t] += active.sum()

    def add_steps_used(self, used: torch.Tensor) -> None:
        """Record the steps each sample of a batch used (for the histogram)."""
        counts = torch.bincount(used.to(torch.int64).clamp(0, self.T), minlength=self.T + 1)
        self.step_counts = counts if self.step_counts is None else self.step_counts + counts.to(self.step_counts)

    # -- results -------------------------------------------------------------------------
    def summary(self) -> CountSummary:
        """Per-sample counts, cumulative over t; this is where the host sync happens."""
        n = max(self.samples, 1)
        T = self.T
        readout = slice(self.offset, self.offset + T)  # cumulative index of frames 1..t+offset, t = 1..T

        def cumulative(rows: list[torch.Tensor]) -> list[float]:
            if not rows:
                return [0.0] * T
            total = torch.stack([r.to(torch.float64) for r in rows]).sum(0)[1:].cumsum(0)[readout] / n
            return total.tolist()

        acs_rows = [c.ops for c in self.layers if c.site.input_kind == "spike"]
        mac_rows = [c.ops for c in self.layers if c.site.input_kind != "spike"]
        layers = []
        cum = lambda row: (row[1:].to(torch.float64).cumsum(0)[readout] / n).tolist()  # noqa: E731
        for c in self.layers:
            layers.append({"layer": c.site.name, "type": c.site.op, "input": c.site.input_kind,
                           "ops": cum(c.ops), "dense_ops": c.dense / n,
                           "input_ops": cum(c.input_ops), "unit_input_ops": cum(c.unit_input_ops),
                           "input_nonzero": cum(c.input_nonzero), "input_numel": c.input_numel / n,
                           "dense_ungrouped": c.dense_ungrouped / n, "pooled": c.site.events_from is not None})
        for c in self.neurons:
            layers.append({"layer": c.site.name, "type": "neuron", "input": "",
                           "spikes": (c.events[1:].to(torch.float64).cumsum(0)[readout] / n).tolist(),
                           "unit_spikes": (c.units[1:].cumsum(0)[readout] / n).tolist(),
                           "neurons": float(c.updates[self.plan.first_counted_frame]) / n})
        return CountSummary(
            samples=self.samples, T=T,
            acs=cumulative(acs_rows), macs=cumulative(mac_rows),
            events=cumulative([c.events for c in self.neurons]),
            unit_spikes=cumulative([c.units for c in self.neurons]),
            neuron_updates=cumulative([c.updates for c in self.neurons]),
            dense_macs=sum(c.dense for c in self.layers) / n,
            layers=layers,
            steps=(self.steps[1:].cumsum(0) / n).tolist(),
            steps_histogram=None if self.step_counts is None else
            {int(k): int(v) for k, v in enumerate(self.step_counts.tolist()) if v},
        )


def _module_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
