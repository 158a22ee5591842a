"""Spikes per average-pooled cell, for the op counter's layers behind an average pool.

A layer fed through an average pool (``ConnectionSite.events_from``) sees each spike through
its pooled cell, so its effective ops are Σ_spikes fan-out(cell) (docs/harness-notes.md §1.2).
What it needs of the pool's input is the number of spikes in each window: for a linear layer
the total, for a convolution the per-cell map summed over batch and channels. Sum-pooling is
linear, so that map is the sum-pooling of the per-position hit map (non-zero spikes over batch
and channels) that an engine neuron computes in its own step when it counts
(``count_positions``, methods/snn/fused.py :func:`position_hits`): a map of H·W values
instead of a second pass over the B·C·H·W spikes.

The pool's input is matched to the neuron that emitted it by identity (the very tensor the
neuron's forward returned, e.g. through identity or dropout modules); the first counted frame
finds that neuron and asks it for its hit map from then on. Everything else — no such neuron,
a per-sample mask (early exit), H-MT's sub-spikes per element, a reshape that regroups batch
and channels before a convolution — pools the per-element event mask, as the counts were
defined. Both give the same integers (tested).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
from torch import nn

from snnbench.fanout import pooled_event_counts
from snnbench.input_census import input_census

_POOL_DIMS = {nn.AvgPool1d: 1, nn.AdaptiveAvgPool1d: 1, nn.AvgPool2d: 2, nn.AdaptiveAvgPool2d: 2,
              nn.AvgPool3d: 3, nn.AdaptiveAvgPool3d: 3}
_UNSEEN = object()


def _pool_dims(pool: nn.Module) -> int:
    """The spatial dimensions of an average pool (its subclasses too, e.g. the native 2-D pool), -1 if none."""
    return next((dims for kind, dims in _POOL_DIMS.items() if isinstance(pool, kind)), -1)


class PoolEvents:
    """The pooled spike counts of one frame, from each pool's forward hook to the layer after it.

    Attributes:
        event_fns: per pool (by id), the ``input_events`` function of a neuron sending several
            sub-spikes per element (H-MT), whose per-element counts are pooled instead.
        active: whether any counted layer sits behind a pool (else nothing is recorded).
        from_hits: take the counts from the emitting neuron's hit map where possible (tests
            turn it off to compare with pooling the event mask).
    """

    from_hits = True
    #: read a pool input's hit map in one compiled pass (the counter sets it when the model's steps compile)
    compiled = False

    def __init__(self, neurons: Callable[[], list[nn.Module]]) -> None:
        self._neurons = neurons
        self.event_fns: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
        self.active = False
        self._emitted: dict[int, weakref.ref] = {}
        self._sources: dict[int, Any] = {}
        self._counts: dict[int, tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]] = {}

    def enter(self) -> None:
        """A counting context opens: the neurons found feeding pools map their hits again."""
        for source in self._sources.values():
            if source is not None:
                source.count_positions = True

    def emitted(self, neuron: nn.Module, spikes: torch.Tensor) -> None:
        """Remember (weakly) the spikes ``neuron`` emitted this frame."""
        if self.active:
            self._emitted[id(neuron)] = weakref.ref(spikes)

    def record(self, pool: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> None:
        """The pool's input ``x`` of this frame (``mask``: the active samples, None for all)."""
        events_of = self.event_fns.get(id(pool))
        hits = None
        if events_of is None and mask is None and self.from_hits:
            hits = self._source_hits(pool, x)
            if hits is None and x.ndim == _pool_dims(pool) + 2:
                # no hit map from a neuron (yet: the first frame finds it): take the map from x in
                # one pass and pool that, instead of sum-pooling the whole per-element mask
                hits = input_census(x, per_position=True, compiled=self.compiled)[0]
        if hits is not None:
            cells = pooled_event_counts(pool, hits.reshape((1, 1) + tuple(hits.shape)), torch.float64)[0, 0]
            self._counts[id(pool)] = (None, cells, x)
            return
        events = events_of(x) if events_of is not None else x != 0  # sub-spikes per element (H-MT)
        self._counts[id(pool)] = (pooled_event_counts(pool, events if mask is None else events * mask), None, None)

    def take(self, pool: nn.Module, x: torch.Tensor, layer: str, per_position: bool
             ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """For the layer ``layer`` with input ``x`` behind ``pool``: (spikes per pooled element shaped
        like ``x``, None) or (None, spikes per pooled cell over batch and channels: shaped like
        ``x``'s trailing axes when ``per_position``, else to be summed)."""
        full, cells, source = self._counts.pop(id(pool), (None, None, None))
        if cells is not None:
            lead = source.shape[0] * source.shape[1]
            if lead * cells.numel() != x.numel():
                raise RuntimeError(f"layer {layer}: no spike counts from its average pool this frame")
            if not per_position:
                return None, cells
            if tuple(x.shape[:2]) == tuple(source.shape[:2]):
                return None, cells.reshape(x.shape[2:])
            full = pooled_event_counts(pool, source != 0)  # batch and channels regrouped: per element
        if full is None or full.numel() != x.numel():
            raise RuntimeError(f"layer {layer}: no spike counts from its average pool this frame")
        return full.reshape(x.shape), None

    def _source_hits(self, pool: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The hit map of the neuron that emitted ``x`` this frame, or None."""
        source = self._sources.get(id(pool), _UNSEEN)
        if source is _UNSEEN:  # first sighting: find the emitting neuron, ask it for hit maps
            source = next((m for m in self._neurons() if self._is_output_of(m, x)), None)
            if source is not None and not hasattr(source, "count_positions"):
                source = None
            self._sources[id(pool)] = source
            if source is not None:
                source.count_positions = True
        if source is None or not self._is_output_of(source, x) or x.ndim != _pool_dims(pool) + 2:
            return None
        hits = getattr(source, "last_hits", None)
        return hits if hits is not None and tuple(hits.shape) == tuple(x.shape[2:]) else None

    def _is_output_of(self, neuron: nn.Module, x: torch.Tensor) -> bool:
        ref = self._emitted.get(id(neuron))
        return ref is not None and ref() is x
