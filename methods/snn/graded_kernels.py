"""The element-wise arithmetic of a graded unit's step, and a product unit's op count, compiled.

A :class:`~snnbench.methods.snn.graded.GradedUnit` step is three parts (docs/dcgs-official-code.md
§2.5 and §2.10): update the decoded inputs, call the unit's function ``fn`` on them, and emit the
increment of the decoded output:

    differential:  E += (x - b)/t;       now = fn(E);    emit t·(now - last)
    rate:          S += x;               now = fn(S/t);  emit t·now - (t-1)·last

Eager, the two element-wise parts are five passes over memory with four fresh tensors per
operand and step. Here each part is one compiled loop (``torch.compile``, inductor: C++ on CPU):
the input update writes E (rate: S, and S/t) **into the state tensor** it was given, and the
output increment reads ``now`` and ``last`` once. The expressions are the eager ones in the same
order (IEEE division, no reassociation), so the results are bit-identical; the tests compare them.

Tensors below :data:`MIN_ELEMENTS` elements step eagerly (the dispatch of a compiled call
outweighs the passes it saves). The kernels run on one flat view of each tensor in its memory
order, so every input layout shares one compilation; this needs the tensors of one call to be
dense with equal strides
(:func:`flat_views`), otherwise the unit steps eagerly. They are used for CPU tensors only: on
CUDA, eager PyTorch divides by a scalar through a reciprocal and Triton's division differs again,
so bit-identity with the eager path holds on CPU alone.

:func:`matmul_pair_ops` is the product unit's three-term synaptic-operation count
(docs/dcgs-official-code.md §5.2); its compiled kernel sums the same integers in another order
(one reduction), exact on any device.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger(__name__)

#: tensors with fewer elements step eagerly, updating the state in place
#: (``GradedUnit._in_place_step``): a compiled call costs ~30-40 µs of dispatch, which the
#: saved passes repay only from about this size on (BENCHMARKS.md §1, 2026-12-07: a whole
#: 64x17x96 LayerNorm step 1.34x slower compiled, a 64x17x384 GELU step 1.01x, a max-pool
#: step on 64x32x28x28 0.93x)
MIN_ELEMENTS = 1 << 19


# -- the arithmetic (also the eager step: graded.GradedUnit.step_with calls these) ---------------
def differential_inputs(x: torch.Tensor, b: torch.Tensor, acc: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E_t = E_{t-1} + (x_t - b)/t (differential coding's running estimate of the input)."""
    return acc + (x - b) / t


def differential_output(now: torch.Tensor, last: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """t·(fn(E_t) - fn(E_{t-1})): the output spike whose weighted sum Σ out_τ/τ decodes to fn(E_t)."""
    return t * (now - last)


def rate_output(now: torch.Tensor, last: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """t·fn(S_t/t) - (t-1)·fn(S_{t-1}/(t-1)): expectation compensation (the running mean of the
    outputs is fn of the running mean of the inputs)."""
    return t * now - (t - 1) * last


# -- in-place kernels ------------------------------------------------------------------------------
def _differential_inputs_kernel(x: torch.Tensor, b: torch.Tensor, acc: torch.Tensor, t: torch.Tensor) -> None:
    acc.copy_(differential_inputs(x, b, acc, t))


def _rate_inputs_kernel(x: torch.Tensor, acc: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """S += x in place; returns S/t (the argument of fn)."""
    total = acc + x
    acc.copy_(total)
    return total / t


def _matmul_pair_ops_kernel(a: torch.Tensor, b: torch.Tensor, prev_a: torch.Tensor, prev_b: torch.Tensor
                            ) -> torch.Tensor:
    """:func:`matmul_pair_ops` as Σ_kj col_a[k]·(1[b_kj] + 1[B_kj]) + col_A[k]·1[b_kj]: the column
    counts of the left operands broadcast over the right ones and one full reduction (the row sums
    of :func:`matmul_pair_ops` are short inner reductions that compile to slow loops)."""
    col_a = (a != 0).sum(dim=-2).unsqueeze(-1)
    col_prev_a = (prev_a != 0).sum(dim=-2).unsqueeze(-1)
    ind_b = (b != 0).to(torch.int64)
    return (col_a * (ind_b + (prev_b != 0).to(torch.int64)) + col_prev_a * ind_b).sum()


def matmul_pair_ops(a: torch.Tensor, b: torch.Tensor, prev_a: torch.Tensor, prev_b: torch.Tensor) -> torch.Tensor:
    """Σ_ij Σ_k of 1[a_ik]1[b_kj] + 1[a_ik]1[B_kj] + 1[A_ik]1[b_kj] for a product a @ b with the
    operands decoded so far A, B (int64): per k, (non-zeros of column k of a)·(non-zeros of row k
    of b), so O(size) instead of a matmul of indicator matrices. The eager reference of the
    compiled kernel, which sums the same integers in another order."""
    col_a, col_prev_a = (a != 0).sum(dim=-2), (prev_a != 0).sum(dim=-2)
    row_b, row_prev_b = (b != 0).sum(dim=-1), (prev_b != 0).sum(dim=-1)
    return (col_a * row_b).sum() + (col_a * row_prev_b).sum() + (col_prev_a * row_b).sum()


_KERNELS: dict[str, Callable] = {
    "differential_inputs": _differential_inputs_kernel,
    "rate_inputs": _rate_inputs_kernel,
    "differential_output": differential_output,
    "rate_output": rate_output,
    "matmul_pair_ops": _matmul_pair_ops_kernel,
}
_COMPILED: dict[str, Callable] = {}
_FAILED: set[str] = set()


def run(name: str, *tensors: torch.Tensor) -> torch.Tensor | None:
    """The compiled kernel ``name`` on ``tensors``, or its eager function once compiling it failed
    in this process (one warning: a missing toolchain costs speed, never a result)."""
    kernel = _KERNELS[name]
    if name in _FAILED:
        return kernel(*tensors)
    compiled = _COMPILED.get(name)
    if compiled is None:
        compiled = _COMPILED[name] = torch.compile(kernel, dynamic=True, fullgraph=True)
    try:
        return compiled(*tensors)
    except Exception as exc:  # inductor/toolchain failures; the kernels mutate only after compiling
        log.warning("torch.compile of the graded-unit kernel %s failed (%s: %s); running it eagerly "
                    "(identical results, slower). Set fuse=false to skip compiling.",
                    name, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        _FAILED.add(name)
        return kernel(*tensors)


def clear_compiled() -> None:
    """Forget every compiled kernel (tests)."""
    _COMPILED.clear()
    _FAILED.clear()


def flat_views(tensors: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """One 1-D view of each tensor over its elements in memory order, or None unless all are CPU
    float tensors of one shape and strides, each dense (its elements fill one contiguous block,
    in any order of the axes: a transposed view qualifies, a slice does not)."""
    first = tensors[0]
    shape, strides = first.shape, first.stride()
    for tensor in tensors:
        if tensor.device.type != "cpu" or not tensor.is_floating_point() or tensor.shape != shape \
                or tensor.stride() != strides:
            return None
    if first.is_contiguous():
        return [tensor.view(-1) for tensor in tensors]
    order = sorted(range(first.ndim), key=lambda dim: strides[dim], reverse=True)
    if not first.permute(order).is_contiguous():
        return None
    n = first.numel()
    return [tensor.as_strided((n,), (1,), tensor.storage_offset()) for tensor in tensors]


def unflat(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A kernel's fresh 1-D output in ``like``'s shape and layout (the inverse of :func:`flat_views`)."""
    return flat.view(like.shape) if like.is_contiguous() else flat.as_strided(like.shape, like.stride())


def shares_memory(tensor: torch.Tensor, others: list[torch.Tensor]) -> bool:
    """Whether ``tensor`` lives in the storage of one of ``others`` (e.g. fn returned a view of E)."""
    pointer = tensor.untyped_storage().data_ptr()
    return any(other.untyped_storage().data_ptr() == pointer for other in others)
