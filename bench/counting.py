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

from typing import Any

import torch
from torch import nn

from snnbench.count_records import CountSummary, _LayerCounter, _NeuronCounter, _Row
from snnbench.fanout import conv_fanout_map, ungrouped_macs
from snnbench.input_census import input_census
from snnbench.methods.base import CountPlan, SpikingModel
from snnbench.pool_events import PoolEvents

__all__ = ["CountSummary", "OpCounter", "conv_fanout_map"]

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
        self._blind_before: int | None = None
        rows = lambda dtype=torch.int64: _Row(self.last_frame + 1, dtype, self.device)  # noqa: E731
        self.layers = [_LayerCounter(site, rows(), rows(), rows(), rows()) for site in self.plan.connections]
        self.steps = torch.zeros(T + 1, dtype=torch.float64, device=self.device)
        self.step_counts: torch.Tensor | None = None  # [T + 1] samples per number of steps used
        self.neurons = [_NeuronCounter(site, rows(), rows(torch.float64), rows()) for site in self.plan.neurons]
        self.pools = PoolEvents(lambda: [c.site.module for c in self.neurons])
        #: read layer inputs in one compiled pass (bench/input_census.py) when the model's neurons
        #: run compiled steps (fuse): a method run eagerly is counted eagerly too
        self.compiled_census = any(getattr(c.site.module, "fuse", False) is True for c in self.neurons)
        self.pools.compiled = self.compiled_census

    # -- hooks ---------------------------------------------------------------------------
    def __enter__(self) -> "OpCounter":
        pools = {id(c.site.events_from): c.site.events_from for c in self.layers if c.site.events_from is not None}
        self.pools.event_fns = {id(c.site.events_from): c.site.input_events for c in self.layers
                                if c.site.events_from is not None and c.site.input_events is not None}
        self.pools.active = bool(pools)
        self.pools.enter()
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
        # these hooks ignore the frames before the first counted one: declared, so that the
        # network may replay its bias pass (methods/snn/bias_pass.py)
        self._blind_before = getattr(self.model, "frame_zero_blind_hooks", None)
        if self._blind_before is not None and self.plan.first_counted_frame >= 1:
            self.model.frame_zero_blind_hooks = self._blind_before + len(self._handles)
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._blind_before is not None:
            self.model.frame_zero_blind_hooks = self._blind_before
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
            effective, dense, own, own_nonzero, ones = self._connection_ops(counter, module, x)
            counter.ops.add(t, effective)
            counter.input_ops.add(t, own)
            if counter.site.op != "product":
                mask = self._sample_mask(x)
                from_neuron = self._input_counts_from_neuron(counter, mask)
                if from_neuron is None:  # read the input
                    if own_nonzero is not None:  # Σ of the layer's per-position map of non-zero inputs
                        nonzero = own_nonzero
                    else:
                        nonzero = torch.count_nonzero(x) if mask is None else ((x != 0) & mask).sum()
                    # all of x in {-1, 0, 1} <=> as many elements of magnitude 1 as non-zero elements
                    total = own_nonzero if own_nonzero is not None and mask is None else torch.count_nonzero(x)
                    binary = (ones if ones is not None else (x.abs() == 1).sum()) == total
                else:
                    nonzero, binary = from_neuron
                counter.unit_input_ops.add(t, own * binary)
                counter.input_nonzero.add(t, nonzero)
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
        events = count_values(counts)[0]
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
        """Spikes per pooled cell for the layer after the pool (see :class:`PoolEvents`)."""
        if self._frame() is not None:
            self.pools.record(module, args[0], self._sample_mask(args[0]))

    def _connection_ops(self, counter: _LayerCounter, module: nn.Module, x: torch.Tensor
                        ) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(effective ops, dense ops, ops of the non-zero elements of ``x`` itself, and when this
        counted them from ``x``, the number of non-zero elements of ``x`` (else None) and, when it
        read ``x`` whole, the number of its elements of magnitude 1 (else None))."""
        op = counter.site.op
        pool = counter.site.events_from
        if op == "product":
            active = getattr(self.model, "active", None)
            if active is not None and not bool(active.all()):
                raise RuntimeError(f"product unit {counter.site.name}: its three-term op count cannot honour a "
                                   "per-sample active mask (early exit is for networks without product units)")
            return module.last_ops, module.last_dense, module.last_ops, None, None
        mask = self._sample_mask(x)
        # early exit: count the active samples' inputs only (a neuron's own counts cover the whole batch)
        present = None if mask is None else (x != 0) & mask
        cells = None  # behind a pool: spikes per pooled position over batch and channels (PoolEvents)
        if pool is not None:
            nonzero, cells = self.pools.take(pool, x, counter.site.name, per_position=op == "conv")
        elif counter.site.input_events is not None:  # several sub-spikes per element (H-MT)
            nonzero = counter.site.input_events(x)
        else:
            nonzero = present  # None: read from x only when the feeding neuron did not count (below)
        source = counter.site.spikes_from if mask is None else None
        if op == "linear":
            out_features = module.out_features
            dense = x.numel() * out_features
            counted = getattr(source, "last_counts", None) if pool is None else None
            ones = None
            if counted is not None:  # the neuron counted its events in its own pass: no read of x
                own_events = count_values(counted)[0]
            elif present is None:  # non-zero and unit-magnitude elements in one read
                own_events, ones = input_census(x, per_position=False, compiled=self.compiled_census)
            else:  # the layer's own view (only the active samples under early exit)
                own_events = present.sum()
            events = cells.sum() if cells is not None else own_events if nonzero is None else nonzero.sum()
            own_nonzero = own_events if counted is None else None
            return events * out_features, dense, own_events * out_features, own_nonzero, ones
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
            ones = None
            if counted is not None:
                own_hits = counted
            elif present is None:  # non-zero inputs per position and unit-magnitude elements, one read
                own_hits, ones = input_census(x, per_position=True, compiled=self.compiled_census)
            else:  # non-zero inputs per position of the active samples (early exit)
                own_hits = present.sum(dim=(0, 1))
            own = (own_hits * fan).sum() * per_input_channel
            if cells is not None:  # behind an average pool every spike of the pooled cell
                effective = (cells * fan).sum() * per_input_channel
            elif nonzero is None:
                effective = own
            else:  # behind an average pool (per element); H-MT sub-spikes; active samples
                effective = (nonzero.sum(dim=(0, 1)) * fan).sum() * per_input_channel
            dense = fan_total * x.shape[0] * x.shape[1] * per_input_channel
            return effective, dense, own, own_hits.sum() if counted is None else None, ones
        raise ValueError(f"unknown connection op {op!r} for layer {counter.site.name}")

    def _neuron_hook(self, counter: _NeuronCounter):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            t = self._frame()
            if t is None:
                return
            self.pools.emitted(module, output)
            mask = self._sample_mask(output)
            if mask is not None:  # early exit: count the samples computing this frame only
                output = output * mask
                counter.updates.add(t, mask.sum() * (output[0].numel() if output.ndim else 1))
            else:
                counter.updates.add(t, output.numel())
            kernel_counts = getattr(module, "last_counts", None) if mask is None else None
            if kernel_counts is not None:  # counted by the fused kernel in its own pass
                events, units = count_values(kernel_counts)
                counter.events.add(t, events)
                counter.units.add(t, units)  # the float64 row converts it exactly
                return
            counter.events.add(t, torch.count_nonzero(output))
            unit = counter.site.unit() if counter.site.unit is not None else None
            if unit is None:
                counter.units.add(t, torch.count_nonzero(output).to(torch.float64))
            else:
                counter.units.add(t, (output.abs().to(torch.float64) / unit.to(torch.float64).clamp_min(1e-30)).sum())
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

        row = lambda r, dtype=torch.int64: r.tensor(dtype, self.device)  # noqa: E731
        acs_rows = [row(c.ops) for c in self.layers if c.site.input_kind == "spike"]
        mac_rows = [row(c.ops) for c in self.layers if c.site.input_kind != "spike"]
        layers = []
        cum = lambda r: (row(r)[1:].to(torch.float64).cumsum(0)[readout] / n).tolist()  # noqa: E731
        for c in self.layers:
            layers.append({"layer": c.site.name, "type": c.site.op, "input": c.site.input_kind,
                           "ops": cum(c.ops), "dense_ops": c.dense / n,
                           "input_ops": cum(c.input_ops), "unit_input_ops": cum(c.unit_input_ops),
                           "input_nonzero": cum(c.input_nonzero), "input_numel": c.input_numel / n,
                           "dense_ungrouped": c.dense_ungrouped / n, "pooled": c.site.events_from is not None})
        for c in self.neurons:
            layers.append({"layer": c.site.name, "type": "neuron", "input": "",
                           "spikes": cum(c.events),
                           "unit_spikes": (row(c.units, torch.float64)[1:].cumsum(0)[readout] / n).tolist(),
                           "neurons": float(row(c.updates)[self.plan.first_counted_frame]) / n})
        return CountSummary(
            samples=self.samples, T=T,
            acs=cumulative(acs_rows), macs=cumulative(mac_rows),
            events=cumulative([row(c.events) for c in self.neurons]),
            unit_spikes=cumulative([row(c.units, torch.float64) for c in self.neurons]),
            neuron_updates=cumulative([row(c.updates) for c in self.neurons]),
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


def count_values(counts: torch.Tensor) -> tuple[Any, Any]:
    """(events, unit spikes) of a neuron's own ``[events, units]`` counts: Python ints for a CPU
    tensor (one read, where indexing and converting took a torch op per value, ~3 µs each, a few
    thousand per counted vit_mini run), the 0-dim elements on another device (no host sync)."""
    if counts.device.type == "cpu":
        events, units = counts.tolist()
        return events, units
    return counts[0], counts[1]
