"""One read of a connection layer's input for the op counter (bench/counting.py).

A layer whose input the feeding neuron did not count (the first layer's analog input, a layer
behind an average pool, anything fed through other layers) needs two numbers from it:

* the non-zero elements: per position of the trailing axes for a convolution (Σ over batch and
  channels, priced by the fan-out map), in total for a linear layer;
* how many elements have magnitude exactly 1, which says whether the whole input lies in
  {-1, 0, 1} (NeuroBench classes the layer's ops as ACs only then: binary <=> that count equals
  the non-zero count).

Eagerly these are three or four passes with a bool tensor written in between (1.1 ms for
``count_nonzero`` of 64x16x14x14 floats, 1 thread); :func:`input_census` takes both in one
compiled pass (0.33 ms) for CPU tensors large enough to repay a compiled call's dispatch, and
eagerly otherwise or when compilation fails (one warning). Both give the same integers.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from snnbench.methods.snn.fused import _own_code_copy

log = logging.getLogger(__name__)

#: inputs with fewer elements are counted eagerly (a compiled call costs ~30 µs to dispatch)
MIN_ELEMENTS = 1 << 15


def census_per_position(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(non-zero elements per column of the 2-D ``x`` [lead, positions], int64; elements with |x| == 1)."""
    return (x != 0).sum(dim=0), (x.abs() == 1).sum()


def census_total(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(non-zero elements of ``x``, int64; elements with |x| == 1)."""
    return (x != 0).sum(), (x.abs() == 1).sum()


_COMPILED: dict[str, Callable] = {}
_FAILED: set[str] = set()


def _compiled(name: str, fn: Callable) -> Callable:
    """``fn`` compiled, on a code object of its own (dynamo then caches its variants apart from
    the eager function's, which is called uncompiled too)."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(_own_code_copy(fn, "compiled"), dynamic=True, fullgraph=True)
    return _COMPILED[name]


def input_census(x: torch.Tensor, per_position: bool, compiled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(non-zero elements of ``x``: per position of its trailing axes [shape ``x.shape[2:]``] when
    ``per_position``, else the total; elements with |x| == 1), in one pass when ``compiled``."""
    eager = census_per_position if per_position else census_total
    if per_position:
        positions = 1
        for size in x.shape[2:]:
            positions *= size
        shaped = x.reshape(x.shape[0] * x.shape[1], positions)
    else:
        shaped = x.reshape(-1)
    name = eager.__name__
    use_compiled = (compiled and x.numel() >= MIN_ELEMENTS and name not in _FAILED and x.device.type == "cpu"
                    and not x.requires_grad)
    if use_compiled:
        try:
            hits, ones = _compiled(name, eager)(shaped)
        except Exception as exc:  # inductor/toolchain failures: count eagerly from now on
            log.warning("torch.compile of the op counter's input census failed (%s: %s); counting eagerly "
                        "(identical counts, slower)", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            _FAILED.add(name)
            hits, ones = eager(shaped)
    else:
        hits, ones = eager(shaped)
    return (hits.reshape(x.shape[2:]) if per_position else hits), ones


def clear_compiled() -> None:
    """Forget the compiled census functions (tests)."""
    _COMPILED.clear()
    _FAILED.clear()
