"""Exact spike and operation counting inside forward hooks, with integer counters only.

Per connection layer and frame t:

* effective ops = Σ over non-zero input elements of that element's fan-out (the number of
  outputs it reaches), i.e. the layer run on the binarised input with all weights set to
  one and no bias: NeuroBench's ``Effective_ACs``/``Effective_MACs`` definition. Spike-fed
  layers (declared by the method) count them as ACs, layers fed by real values as MACs.
  A multi-level spike is one event: the level index travels with it.
* dense ops = the same with every input element present (padding excluded); one frame of
  these is the ANN's cost.

Per spiking module and frame: events (non-zero outputs), unit spikes (|s| / unit
amplitude: a level θ/2^k of an n-level MT neuron is 2^(n-1-k) unit spikes) and neuron
updates (elements updated).

Counters are device tensors indexed by t, so the time loop never synchronises with the
host; nothing but those counters is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnbench.methods.base import ConnectionSite, CountPlan, NeuronSite, SpikingModel

_CONV_INPUT_GRAD = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}


def conv_fanout_map(module: nn.Module, spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Per input position, the number of output positions whose window covers it.

    Computed as the adjoint of the convolution (all-ones kernel, one channel) applied to
    an all-ones output, so stride, padding and dilation are exact. Shape ``spatial``.
    """
    dims = len(spatial)
    ones_w = torch.ones((1, 1) + tuple(module.kernel_size), device=device, dtype=torch.float64)
    padding = module.padding
    if isinstance(padding, str):
        padding = _string_padding(padding, module.kernel_size, module.dilation)
    out_spatial = [
        (spatial[i] + 2 * padding[i] - module.dilation[i] * (module.kernel_size[i] - 1) - 1) // module.stride[i] + 1
        for i in range(dims)
    ]
    grad_out = torch.ones([1, 1] + out_spatial, device=device, dtype=torch.float64)
    fan = _CONV_INPUT_GRAD[dims]((1, 1) + tuple(spatial), ones_w, grad_out, stride=module.stride,
                                 padding=padding, dilation=module.dilation)
    return fan[0, 0].round().to(torch.int64)


def _adaptive_window_sizes(size: int, out: int, device: torch.device) -> torch.Tensor:
    """Window lengths of adaptive pooling along one axis (start=floor(i*size/out), end=ceil)."""
    i = torch.arange(out, device=device)
    start = torch.div(i * size, out, rounding_mode="floor")
    end = torch.div((i + 1) * size + out - 1, out, rounding_mode="floor")
    return (end - start).to(torch.int64)


def pooled_event_counts(pool: nn.Module, events: torch.Tensor) -> torch.Tensor:
    """Number of events in each pooling window (sum-pooling of a 0/1 event mask), int64."""
    mask = events.to(torch.float32)
    if isinstance(pool, (nn.AvgPool2d, nn.AvgPool3d)):
        fn = F.avg_pool2d if isinstance(pool, nn.AvgPool2d) else F.avg_pool3d
        sums = fn(mask, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, True, 1)
    elif isinstance(pool, nn.AvgPool1d):
        k = pool.kernel_size[0]
        sums = F.avg_pool1d(mask, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, True) * k
    else:  # adaptive average pooling: mean over windows of varying size
        dims = mask.ndim - 2 if mask.ndim > 2 else 1
        fn = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[dims]
        out_size = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * dims
        out_size = tuple(mask.shape[-dims + i] if o is None else o for i, o in enumerate(out_size))
        means = fn(mask, out_size)
        area = torch.ones((), dtype=torch.int64, device=mask.device)
        for i, (size, out) in enumerate(zip(mask.shape[-dims:], out_size)):
            shape = [1] * dims
            shape[i] = out
            area = area * _adaptive_window_sizes(size, out, mask.device).reshape(shape)
        sums = means * area
    return sums.round().to(torch.int64)


def _string_padding(mode: str, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
    if mode == "valid":
        return tuple(0 for _ in kernel)
    # "same" (stride 1): symmetric when the total padding is even, which nn.Conv requires here
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))


@dataclass
class _LayerCounter:
    site: ConnectionSite
    ops: torch.Tensor            # [T + 1] effective ops per frame (summed over samples)
    dense: int = 0               # dense ops summed over counted samples (one frame each)
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
        self.device = torch.device(device) if device is not None else _module_device(model)
        self.samples = 0
        self._handles: list[Any] = []
        self._pool_events: dict[int, torch.Tensor] = {}
        zeros = lambda dtype=torch.int64: torch.zeros(T + 1, dtype=dtype, device=self.device)  # noqa: E731
        self.layers = [_LayerCounter(site, zeros()) for site in self.plan.connections]
        self.neurons = [_NeuronCounter(site, zeros(), zeros(torch.float64), zeros()) for site in self.plan.neurons]

    # -- hooks ---------------------------------------------------------------------------
    def __enter__(self) -> "OpCounter":
        pools = {id(c.site.events_from): c.site.events_from for c in self.layers if c.site.events_from is not None}
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
        if frame < self.plan.first_counted_frame or frame > self.T:
            return None
        return frame

    def _layer_hook(self, counter: _LayerCounter):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            t = self._frame()
            if t is None:
                return
            x = args[0]
            effective, dense = self._connection_ops(counter, module, x)
            counter.ops[t] += effective
            if t == self.plan.first_counted_frame:
                counter.dense += dense
        return hook

    def _pool_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        """Spikes per pooled cell (sum-pooling of the event mask) for the layer after the pool."""
        if self._frame() is None:
            return
        self._pool_events[id(module)] = pooled_event_counts(module, args[0] != 0)

    def _connection_ops(self, counter: _LayerCounter, module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        op = counter.site.op
        pool = counter.site.events_from
        if pool is not None:
            events = self._pool_events.pop(id(pool), None)
            if events is None or events.numel() != x.numel():
                raise RuntimeError(f"layer {counter.site.name}: no spike counts from its average pool this frame")
            nonzero = events.reshape(x.shape)
        else:
            nonzero = None  # read from x only when the feeding neuron did not count (below)
        source = counter.site.spikes_from
        if op == "linear":
            out_features = module.out_features
            dense = x.numel() * out_features
            own = getattr(source, "last_counts", None) if pool is None else None
            if own is not None:  # the neuron counted its events in its own pass: no read of x
                return own[0] * out_features, dense
            return (x != 0 if nonzero is None else nonzero).sum() * out_features, dense
        if op == "conv":
            spatial = tuple(x.shape[2:])
            cached = counter.fanout.get(spatial)
            if cached is None:  # the map and its host-side total, once per input size (no per-step sync)
                fan = conv_fanout_map(module, spatial, x.device)
                cached = counter.fanout[spatial] = (fan, int(fan.sum()))
            fan, fan_total = cached
            per_input_channel = module.out_channels // module.groups
            hits = getattr(source, "last_hits", None) if pool is None else None
            if hits is None or tuple(hits.shape) != spatial:  # not counted by the neuron: read the input
                hits = (x != 0 if nonzero is None else nonzero).sum(dim=(0, 1))  # non-zero inputs per position
            effective = (hits * fan).sum() * per_input_channel
            dense = fan_total * x.shape[0] * x.shape[1] * per_input_channel
            return effective, dense
        if op == "product":  # product units count their own (three-term) ops while counting is on
            return module.last_ops, module.last_dense
        raise ValueError(f"unknown connection op {op!r} for layer {counter.site.name}")

    def _neuron_hook(self, counter: _NeuronCounter):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            t = self._frame()
            if t is None:
                return
            counter.updates[t] += output.numel()
            kernel_counts = getattr(module, "last_counts", None)
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

    # -- results -------------------------------------------------------------------------
    def summary(self) -> CountSummary:
        """Per-sample counts, cumulative over t; this is where the host sync happens."""
        n = max(self.samples, 1)
        T = self.T

        def cumulative(rows: list[torch.Tensor]) -> list[float]:
            if not rows:
                return [0.0] * T
            total = torch.stack([r.to(torch.float64) for r in rows]).sum(0)[1:].cumsum(0) / n
            return total.tolist()

        acs_rows = [c.ops for c in self.layers if c.site.input_kind == "spike"]
        mac_rows = [c.ops for c in self.layers if c.site.input_kind != "spike"]
        layers = []
        for c in self.layers:
            per_t = (c.ops[1:].to(torch.float64).cumsum(0) / n).tolist()
            layers.append({"layer": c.site.name, "type": c.site.op, "input": c.site.input_kind,
                           "ops": per_t, "dense_ops": c.dense / n})
        for c in self.neurons:
            layers.append({"layer": c.site.name, "type": "neuron", "input": "",
                           "spikes": (c.events[1:].to(torch.float64).cumsum(0) / n).tolist(),
                           "unit_spikes": (c.units[1:].cumsum(0) / n).tolist(),
                           "neurons": float(c.updates[self.plan.first_counted_frame]) / n})
        return CountSummary(
            samples=self.samples, T=T,
            acs=cumulative(acs_rows), macs=cumulative(mac_rows),
            events=cumulative([c.events for c in self.neurons]),
            unit_spikes=cumulative([c.units for c in self.neurons]),
            neuron_updates=cumulative([c.updates for c in self.neurons]),
            dense_macs=sum(c.dense for c in self.layers) / n,
            layers=layers,
        )


def _module_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
