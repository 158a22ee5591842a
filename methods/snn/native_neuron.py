"""One step of a :class:`~snnbench.methods.snn.neurons.SpikingNeuron` in its native C loop.

The neuron's fused path tries this first (one CPU thread, float32, no autograd; module
docstring of :mod:`snnbench.methods.snn.native_steps`): the state is overwritten in place, or,
on the first step from the initial views (``neuron.initial_views``), written fresh from their
rows. With an input map (:mod:`snnbench.methods.snn.input_norm`) the loop reads the
convolution's output through the folded batch norm, plus a residual branch where one was folded.
"""

from __future__ import annotations

import torch

from snnbench.methods.snn import fused, native_layout, native_steps


def run(neuron, signature: fused.StepSignature, x: torch.Tensor, state: tuple, affine: tuple | None = None
        ) -> tuple | None:
    """The neuron's step on ``x`` with its ``state`` ((b, v, Ē_in, Ē_out) or (v, C)) and input map
    ``affine`` (input_norm.pending); returns (s, *new state, counts) as ``SpikingNeuron._run``
    does, or None where the native step does not apply (the caller steps another way)."""
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
    s, counts, hits = native_steps.step(signature, x, b_row, v, e_in, e_out, neuron._row_theta(x, signature.positions),
                                        t, v0, affine)
    neuron.last_hits = hits.view(x.shape[2:]) if hits is not None else None
    return (s, *state[1:], counts) if differential else (s, *state, counts)
