"""One step of a :class:`~snnbench.methods.snn.neurons.SpikingNeuron` in its native C loop.

The neuron's fused path tries this first (one CPU thread, float32, no autograd; module
docstring of :mod:`snnbench.methods.snn.native_steps`): the state is overwritten in place, or,
on the first step from the initial views (``neuron.initial_views``), written fresh from their
rows. With an input map (:mod:`snnbench.methods.snn.input_norm`) the loop reads the
convolution's output through the folded batch norm, plus a residual branch where one was folded.

**The plan.** After a step from its lasting state, a neuron keeps a :class:`Plan`: the kernel and
its argument list with the state's, θ's and the folded terms' addresses, and what all of these
were made for. The next steps (:func:`fast_step`) check that nothing they depend on changed (the
very state tensors, θ's identity and version, the neuron's rule and counting flags, the input's
shape, strides and dtype, autograd and inference mode, one thread, native steps on, no input
sharing the state's memory) and only write the input's, the spikes', the counts' addresses and
t into the list. Every check the full path makes either is among these or follows from them; a
failed one runs the full path, which makes a new plan. A vit_mini step spent ~60 µs in Python
around a ~60 µs loop before (BENCHMARKS.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from snnbench.methods.snn import fused, input_norm, native_layout, native_steps


@dataclass(eq=False)
class Plan:
    """A neuron's repeated native step (module docstring)."""

    guard: tuple
    shape: torch.Size
    strides: tuple[int, ...]
    state: tuple
    storages: frozenset[int]
    theta: torch.Tensor
    theta_version: int
    terms: tuple
    modes: tuple[bool, bool]
    fn: Callable
    arguments: list
    count: bool
    positions: int | None
    #: the tensors whose addresses the argument list holds besides the state, θ and the terms
    #: (b's and θ's row layouts: views of them, or copies only this plan keeps alive)
    keep: tuple = ()


def _guard(neuron) -> tuple:
    """The neuron's values a plan depends on besides its tensors."""
    return (neuron.coding, neuron.fire_rule, neuron.n, neuron.signed, neuron.floor, neuron.ceiling, neuron.fuse,
            neuron.kernel, neuron.count_spikes, neuron.count_positions, neuron.input_skip, len(neuron.input_norm))


def _state(neuron) -> tuple:
    if neuron.coding == "differential":
        return neuron.b, neuron.v, neuron.e_in, neuron.e_out
    return neuron.v, neuron.c_out


def _version(theta: torch.Tensor) -> int:
    return 0 if theta.is_inference() else theta._version


def _terms(affine: tuple) -> tuple:
    """The folded norms' terms of an input map (alpha, beta, and the skip branch's where it has them)."""
    return (affine[0], affine[1], *affine[4:6])


def _modes() -> tuple[bool, bool]:
    return torch.is_grad_enabled(), torch.is_inference_mode_enabled()


def fast_step(neuron, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor | None:
    """The neuron's step on ``x`` through its plan, or None (nothing done) where the plan does not
    hold (module docstring): then the caller takes the full path."""
    plan: Plan = neuron._native_plan
    state = _state(neuron)
    if not neuron.input_norm and x.stride() != plan.strides and not x.is_contiguous() \
            and not native_steps.reads_in_place(x):
        x = x.contiguous()  # as forward copies it (kᵀ of attention: a gathering read costs more)
    if x.shape != plan.shape or x.stride() != plan.strides or x.dtype != torch.float32 or x.device.type != "cpu" \
            or x.requires_grad or neuron.initial_views or neuron.input_bias is not None \
            or (neuron.coding == "differential" and neuron.t == 0) \
            or any(a is not b for a, b in zip(state, plan.state)) or neuron.theta is not plan.theta \
            or _version(neuron.theta) != plan.theta_version or _guard(neuron) != plan.guard or _modes() != plan.modes \
            or torch.get_num_threads() != 1 or not native_steps.enabled() \
            or x.untyped_storage().data_ptr() in plan.storages:
        return None
    arguments = plan.arguments
    if neuron.input_norm:
        affine = input_norm.pending(neuron, x, skip)
        terms = _terms(affine) if affine is not None else None
        if terms is None or len(terms) != len(plan.terms) or any(a is not b for a, b in zip(terms, plan.terms)):
            return None
        if skip is not None:
            if skip.untyped_storage().data_ptr() in plan.storages:
                return None
            arguments[native_steps.SLOTS["skip"]] = skip.data_ptr()
    elif skip is not None:
        return None
    neuron.t += 1
    s = torch.empty(plan.shape, dtype=torch.float32)
    counts = torch.empty(2, dtype=torch.int64) if plan.count else None
    hits = torch.zeros(plan.positions, dtype=torch.int64) if plan.positions is not None else None
    slots = native_steps.SLOTS
    arguments[slots["x"]], arguments[slots["s"]] = x.data_ptr(), s.data_ptr()
    arguments[slots["t"]] = float(neuron.t if neuron.coding == "rate" else neuron.t - 1)
    arguments[slots["counts"]] = counts.data_ptr() if counts is not None else None
    arguments[slots["hits"]] = hits.data_ptr() if hits is not None else None
    plan.fn(*arguments)
    neuron.last_counts = counts
    neuron.last_hits = hits.view(x.shape[2:]) if hits is not None else None
    return s


def _plan(neuron, signature: fused.StepSignature, x: torch.Tensor, affine: tuple | None, fn: Callable,
          arguments: list, state: tuple, keep: tuple) -> Plan:
    storages = frozenset(a.untyped_storage().data_ptr() for a in state if a is not None)
    terms = _terms(affine) if affine is not None else ()
    return Plan(_guard(neuron), x.shape, x.stride(), state, storages, neuron.theta, _version(neuron.theta), terms,
                _modes(), fn, arguments, signature.count, x[0, 0].numel() if signature.positions else None, keep)


def run(neuron, signature: fused.StepSignature, x: torch.Tensor, state: tuple, affine: tuple | None = None,
        plan: bool = False) -> tuple | None:
    """The neuron's step on ``x`` with its ``state`` ((b, v, Ē_in, Ē_out) or (v, C)) and input map
    ``affine`` (input_norm.pending); returns (s, *new state, counts) as ``SpikingNeuron._run``
    does, or None where the native step does not apply (the caller steps another way). With
    ``plan``, a step from the lasting state leaves the neuron a :class:`Plan` for the next."""
    differential = neuron.coding == "differential"
    if differential:
        b, v, e_in, e_out = state
    else:
        (v, e_out), b, e_in = state, None, None
    first = neuron.initial_views  # the state is still the views of the initial state: written, not read
    mutated = () if first else tuple(a for a in (v, e_in, e_out) if a is not None)
    v0 = neuron._initial_v(x) if first else None
    skip = affine[3] if affine is not None and len(affine) > 3 else None  # a folded residual branch
    strided = not x.is_contiguous()  # read in place (forward: native_steps.reads_in_place)
    if not native_steps.usable(signature, [None if strided else x, b, *mutated, v0, skip]) \
            or (strided and not native_steps.reads_in_place(x)) \
            or any(a is not None and a.shape != x.shape for a in (v, e_in, e_out)) \
            or not fused.can_overwrite((x, b, *mutated, *(() if skip is None else (skip,))),
                                       tuple(range(2, 2 + len(mutated)))) \
            or native_steps.kernel(signature, affine[2] if affine is not None else "") is None:
        return None
    b_row = native_layout.row_layout(b, x) if b is not None else None
    t = neuron.t if neuron.coding == "rate" else neuron.t - 1
    if first:
        v0 = native_layout.row_layout(v0, x)
        v, e_in, e_out = (torch.empty(x.shape, dtype=x.dtype) if a is not None else None for a in (v, e_in, e_out))
        state = (b, v, e_in, e_out) if differential else (v, e_out)
        neuron.initial_views = False
    theta_row = neuron._row_theta(x, signature.positions)
    fn, arguments, s, counts, hits = native_steps.prepare(signature, x, b_row, v, e_in, e_out, theta_row, t, v0, affine)
    fn(*arguments)
    keep = (theta_row[0],) + ((b_row[0],) if b_row is not None else ())
    neuron._native_plan = _plan(neuron, signature, x, affine, fn, arguments, state, keep) if plan and not first else None
    neuron.last_hits = hits.view(x.shape[2:]) if hits is not None else None
    return (s, *state[1:], counts) if differential else (s, *state, counts)
