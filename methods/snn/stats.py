"""Calibration statistics, collected in one pass over calibration batches.

A :class:`StatKind` names one statistic at every neuron site of one placement:

* ``percentile``: the p-th percentile of the value a neuron will quantise (the ReLU
  *output* at activation sites, the magnitude |x| of the layer input at input sites, whose
  signed neurons have levels ±θ; the official code takes the upper quantile of the raw
  input, which leaves a channel with only negative values without a threshold), over all values or over
  non-zero values only (``scope``; snn_toolbox uses non-zero, SpikingJelly and DCGS all).
  Per batch ``torch.quantile`` (linear interpolation), combined across batches as the
  batch-size-weighted mean of per-batch quantiles, as the official DCGS code does
  (docs/dcgs-official-code.md §3.2): the result depends on the calibration batch size, which is therefore
  fixed by the harness and part of every cache key.
* ``max``: the largest value (ReLU output / layer input).
* ``moments``: mean and population variance of the *pre-activation* (exact pooled values,
  Chan's parallel formula; docs/dcgs-official-code.md §3.1), the input of threshold iteration.
* ``mse_grid``: SNN Calibration's threshold search (Li et al. 2021; docs/baseline-methods.md §2): per
  batch, candidates θ_i = max·(1 - 0.01·i), i < 95, the one minimising
  mean((a - Q(a))²) with the floor quantiser Q(a) = floor(clip(a/θ·N, 0, N))·θ/N wins;
  batches are combined by an EMA with weight 0.9 on the old value. With ``maxspike`` K > 1
  the quantiser is AdaFire's burst-aware one (Wang et al., AAAI 2025; docs/baseline-methods.md §4):
  Q(a) = floor(clip(a/θ, 0, K)·N)·θ/N, whose range is [0, K·θ].

Granularity: ``layer`` (one value), ``channel`` (the feature axis: dim 1 of conv maps, the
last dim of token tensors) or ``token`` (dim 1, the official code's "channel", which is
the token axis of a ViT). Values are stored shaped to broadcast against the site's tensor
(e.g. ``[1, C, 1, 1]``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Literal

import torch
from torch import nn

from snnbench.methods.snn.graph import NetworkGraph, Site, network_graph

Quantity = Literal["percentile", "max", "moments", "mse_grid"]
Granularity = Literal["layer", "channel", "token"]
#: torch.quantile refuses rows longer than this (ATen check ``sorted.size(-1) <= 2^24``)
QUANTILE_MAX_ROW = 2**24
MSE_GRID_POINTS = 95
MSE_GRID_STEP = 0.01
MSE_EMA_OLD = 0.9
#: moments sum contiguous runs at least this long in place, shorter ones as a [C, L] copy
CONTIGUOUS_RUN_MIN = 16


@dataclass(frozen=True)
class StatKind:
    """One statistic at every site of one placement (hashable; ``key()`` names caches)."""

    quantity: Quantity
    granularity: Granularity = "layer"
    placement: Literal["activations", "inputs"] = "activations"
    p: float = 99.9
    scope: Literal["all", "nonzero"] = "all"
    levels: int = 0
    grid_points: int = MSE_GRID_POINTS
    grid_step: float = MSE_GRID_STEP
    #: at layer-input sites: statistics of |x| (``abs``, default) or of signed x (``signed``)
    input_value: Literal["abs", "signed"] = "abs"
    #: burst cap K of the ``mse_grid`` quantiser (1: SNN Calibration's single-spike grid)
    maxspike: int = 1

    def key(self) -> str:
        d = asdict(self)
        if self.input_value == "abs":  # the default keeps the cache keys of earlier versions
            d.pop("input_value")
        if self.quantity != "percentile":
            d.pop("p"), d.pop("scope")
        if self.quantity != "mse_grid":
            d.pop("levels"), d.pop("grid_points"), d.pop("grid_step")
        if self.quantity != "mse_grid" or self.maxspike == 1:  # keeps the keys cached before bursts existed
            d.pop("maxspike")
        return "stat-v1:" + ",".join(f"{k}={v}" for k, v in d.items())


class Stats:
    """Statistics by kind and site: ``stats.site(kind, name) -> {"value": tensor, ...}``."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, dict[str, torch.Tensor]]] = {}

    def add(self, kind: StatKind, per_site: dict[str, dict[str, torch.Tensor]]) -> None:
        self._data[kind.key()] = per_site

    def has(self, kind: StatKind) -> bool:
        return kind.key() in self._data

    def get_kind(self, kind: StatKind) -> dict[str, dict[str, torch.Tensor]]:
        try:
            return self._data[kind.key()]
        except KeyError:
            raise KeyError(f"statistic {kind.key()} was not collected; have: {sorted(self._data)}") from None

    def site(self, kind: StatKind, name: str) -> dict[str, torch.Tensor]:
        per_site = self.get_kind(kind)
        if name not in per_site:
            raise KeyError(f"no {kind.quantity} statistics for site {name!r}; sites: {sorted(per_site)[:10]} ...")
        return per_site[name]


# --------------------------------------------------------------------------------------
def reduction_axis(site: Site, granularity: Granularity, ndim: int) -> int | None:
    """The axis kept by a granularity (None for layer-wise)."""
    if granularity == "layer" or ndim < 2:
        return None
    if granularity == "token":
        return 1
    axis = site.feature_dim
    return axis % ndim


def as_rows(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``[C, L]`` rows: one per kept index (one row for layer-wise)."""
    if axis is None:
        return x.reshape(1, -1)
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


def broadcast_shape(axis: int | None, ndim: int, size: int) -> list[int]:
    if axis is None:
        return []
    shape = [1] * ndim
    shape[axis] = size
    return shape


class _Accumulator:
    """Running combination of one statistic at one site."""

    def __init__(self, kind: StatKind, site: Site) -> None:
        self.kind, self.site = kind, site
        self.axis: int | None = None
        self.ndim = 0
        self.n = 0          # samples (batch items) seen
        self.value: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def observe(self, pre: torch.Tensor, post: torch.Tensor) -> None:
        kind = self.kind
        x = pre if kind.quantity == "moments" else post
        if self.axis is None and self.ndim == 0:
            self.ndim = x.ndim
            self.axis = reduction_axis(self.site, kind.granularity, x.ndim)
        # moments reduce the tensor in place; the other statistics work on [C, L] rows
        rows = None if kind.quantity == "moments" else as_rows(x.detach().float(), self.axis)
        batch = x.shape[0]
        if kind.quantity == "max":
            m = rows.amax(dim=1)
            self.value = m if self.value is None else torch.maximum(self.value, m)
        elif kind.quantity == "percentile":
            q = _row_quantile(rows, kind.p / 100.0, nonzero=kind.scope == "nonzero")
            weight = batch / (self.n + batch)
            self.value = q if self.value is None else (1 - weight) * self.value + weight * q
        elif kind.quantity == "moments":
            mean_b, m2_b, count = batch_moments(x.detach(), self.axis)
            if self.mean is None:
                self.mean, self.m2, self.count = mean_b, m2_b, torch.full_like(mean_b, count)
            else:  # Chan et al. parallel update of mean and sum of squared deviations
                total = self.count + count
                delta = mean_b - self.mean
                self.mean = self.mean + delta * count / total
                self.m2 = self.m2 + m2_b + delta**2 * self.count * count / total
                self.count = total
        elif kind.quantity == "mse_grid":
            best = mse_grid_search(rows, kind.levels, kind.grid_points, kind.grid_step, kind.maxspike)
            self.value = best if self.value is None else MSE_EMA_OLD * self.value + (1 - MSE_EMA_OLD) * best
        else:  # pragma: no cover - StatKind is validated by its Literal
            raise ValueError(kind.quantity)
        self.n += batch

    def result(self) -> dict[str, torch.Tensor]:
        shape = lambda t: t.reshape(broadcast_shape(self.axis, self.ndim, t.numel()))  # noqa: E731
        if self.kind.quantity == "moments":
            var = self.m2 / self.count
            return {"mean": shape(self.mean.float()), "var": shape(var.float()),
                    "count": torch.tensor(float(self.count.min()))}
        value = torch.nan_to_num(self.value, nan=0.0)
        return {"value": shape(value.float()), "samples": torch.tensor(float(self.n))}


def batch_moments(x: torch.Tensor, axis: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One batch's per-row mean and sum of squared deviations (float64) and its value count.

    Two float32 passes over the values, the mean and then Σ (x - mean)², with no float64 copy
    of the activations: each contiguous run of values (a channel's map: the axes after the
    kept one) is summed in float32, where torch's blocked summation keeps the error at
    ~1e-7 relative, and only those partial sums (one per sample and channel) are promoted to
    float64 and summed across the batch. Where runs are short (token features, tiny maps) a
    float32 [C, L] copy is summed instead. Agrees with the float64 two-pass formula within
    1e-6 relative (tested); ``torch.var_mean``'s Welford loop is as exact but several times
    slower on CPU. Batches are pooled in float64 (Chan et al.'s update in
    :meth:`_Accumulator.observe`).
    """
    x = x.float()
    if axis is None or not x.is_contiguous() or math.prod(x.shape[axis + 1:]) < CONTIGUOUS_RUN_MIN:
        x = as_rows(x, axis)  # [C, L], contiguous
        axis = 0
    inner = tuple(range(axis + 1, x.ndim))
    outer = tuple(range(axis))
    count = x.numel() // x.shape[axis]

    def total(t: torch.Tensor) -> torch.Tensor:  # float32 within runs, float64 across them
        t = t.sum(dim=inner).double()
        return t.sum(dim=outer) if outer else t

    mean = total(x) / count
    shape = [1] * x.ndim
    shape[axis] = -1
    m2 = total((x - mean.float().reshape(shape)).square())
    return mean, m2, count


def _row_quantile(rows: torch.Tensor, q: float, nonzero: bool) -> torch.Tensor:
    if rows.shape[1] > QUANTILE_MAX_ROW:  # deterministic subsample, every k-th value
        step = math.ceil(rows.shape[1] / QUANTILE_MAX_ROW)
        rows = rows[:, ::step]
    if nonzero:
        rows = rows.masked_fill(rows == 0, float("nan"))
        return torch.nanquantile(rows, q, dim=1)
    return torch.quantile(rows, q, dim=1)


def burst_floor_quantise(a: torch.Tensor, theta: torch.Tensor, levels: int, maxspike: int = 1) -> torch.Tensor:
    """floor(clip(a/θ, 0, K)·N)·θ/N: what an IF (K = 1) or burst neuron with cap K decodes
    after N steps (AdaFire's ``clip_floor``; docs/baseline-methods.md §4). θ must be positive."""
    return torch.floor((a / theta * levels).clamp(0, levels * maxspike)) * theta / levels


def mse_grid_search(rows: torch.Tensor, levels: int, points: int = MSE_GRID_POINTS,
                    step: float = MSE_GRID_STEP, maxspike: int = 1) -> torch.Tensor:
    """Per row, the candidate θ = max·(1 - step·i), i < points, minimising the MSE between a
    row and its floor quantisation with ``levels`` steps (SNN Calibration's search); with a
    burst cap ``maxspike`` K the quantiser is :func:`burst_floor_quantise` (range K·θ)."""
    if levels < 1:
        raise ValueError("mse_grid needs the number of quantiser levels (>= 1)")
    if maxspike < 1:
        raise ValueError("mse_grid needs a burst cap maxspike >= 1")
    top = rows.amax(dim=1).clamp_min(0)
    best_err = torch.full_like(top, float("inf"))
    best = top.clone()
    for i in range(points):
        theta = top * (1 - step * i)
        safe = theta.clamp_min(1e-12)[:, None]
        quant = burst_floor_quantise(rows, safe, levels, maxspike)
        err = ((rows - quant) ** 2).mean(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, theta, best)
    return best


class StatProbe(nn.Module):
    """Stands in for an activation (or sits in front of a layer) during calibration."""

    def __init__(self, site: Site, accumulators: list[_Accumulator]) -> None:
        super().__init__()
        self.site = site
        self.accumulators = accumulators

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        site = self.site
        if site.kind == "activation":
            post = x.clamp(min=site.floor, max=site.ceiling) if site.ceiling is not None else x.clamp_min(site.floor)
        else:  # a signed neuron's levels are ±θ: its scale statistics are of |x| (or x if asked)
            post = x.abs()
        for acc in self.accumulators:
            signed_input = site.kind != "activation" and acc.kind.input_value == "signed"
            acc.observe(x, x if signed_input else post)
        return post if site.kind == "activation" else x


def collect_stats(model: nn.Module, batches: Iterable[torch.Tensor] | Callable[[], Iterable[torch.Tensor]],
                  kinds: Iterable[StatKind], progress: bool = False, desc: str = "calibrate",
                  graph: NetworkGraph | None = None) -> Stats:
    """Run calibration batches once per placement and return every requested statistic.

    ``batches`` is an iterable (used once; one placement only) or a callable returning a
    fresh iterable (needed when kinds span both placements).
    """
    kinds = list(dict.fromkeys(kinds))
    stats = Stats()
    by_placement: dict[str, list[StatKind]] = {}
    for kind in kinds:
        by_placement.setdefault(kind.placement, []).append(kind)
    if len(by_placement) > 1 and not callable(batches):
        raise ValueError("statistics for several placements need a callable returning fresh batches")
    for placement, group in by_placement.items():
        source = batches() if callable(batches) else batches
        iterator = iter(source)
        try:
            first = next(iterator)
        except StopIteration:
            raise ValueError("no calibration batches") from None
        g = graph if graph is not None and graph.placement == placement else network_graph(model, first, placement)
        accs = {(k.key(), s.name): _Accumulator(k, s) for k in group for s in g.sites}
        probed, _ = g.instantiate(
            site_unit=lambda site: StatProbe(site, [accs[(k.key(), site.name)] for k in group]), graded_unit=None)
        probed.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        probed.to(device)

        def all_batches():
            yield first
            yield from iterator

        loop = all_batches()
        if progress:
            from tqdm.auto import tqdm

            loop = tqdm(loop, desc=desc, leave=False, disable=None)
        with torch.inference_mode():
            for x in loop:
                probed(x.to(device))
        for kind in group:
            stats.add(kind, {s.name: accs[(kind.key(), s.name)].result() for s in g.sites})
    return stats
