"""Neuron steps as pure functions, optionally compiled into one fused kernel per neuron.

:class:`~snnbench.methods.snn.units.SpikingNeuron` runs its step in eager PyTorch by default: about
twenty element-wise passes over memory per step (DESIGN.md: the neuron, not the
convolution, is where a naive engine spends its time). With ``fuse=True`` the same
arithmetic, written here as side-effect-free functions of the state, goes through
``torch.compile`` (inductor), which emits one loop per neuron step on CPU (C++/OpenMP)
and GPU (Triton). The time-step enters as a 0-dim tensor and shapes are dynamic, so one
compilation serves every t and every layer of the same rank.

The fused and eager paths compute the same expressions in the same order; the tests
check that their spikes and states agree.

``fuse`` is three-valued in the engine settings: true, false, or empty (auto, the
default): compile when inductor can build kernels here (a C++ compiler for CPU tensors;
CUDA tensors take the Triton MT kernel first) unless ``SNNBENCH_FUSE=0``. Whenever
compilation fails, the step falls back to the eager function with one warning, so a
missing toolchain costs speed, never a result.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from typing import Callable

import torch

from snnbench.methods.snn.quantizers import if_fire, mt_fire

log = logging.getLogger(__name__)
#: set SNNBENCH_FUSE=0/1 to force what fuse=auto resolves to (the test suite sets 0)
FUSE_ENV = "SNNBENCH_FUSE"
_FALSE_WORDS = {"0", "false", "off", "no"}


def fire(m: torch.Tensor, theta: torch.Tensor, rule: str, n: int, signed: bool,
         lower: torch.Tensor | None, upper: torch.Tensor | None) -> torch.Tensor:
    if rule == "mt":
        return mt_fire(m, theta, n, signed=signed, lower_room=lower, upper_room=upper)
    return if_fire(m, theta, signed=signed, lower_room=lower, upper_room=upper)


def differential_step(x: torch.Tensor, b: torch.Tensor, v: torch.Tensor, e_in: torch.Tensor, e_out: torch.Tensor,
                      theta: torch.Tensor, t: torch.Tensor, rule: str, n: int, signed: bool, floor: float | None,
                      ceiling: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step t >= 1 of the differential neuron (DCGS Thm 4.4); returns (s, v, e_in, e_out)."""
    d = x - b
    m = (v + d) + (e_in - e_out)
    lower = ((e_out - floor) * t if floor else e_out * t) if floor is not None and signed else None
    upper = (ceiling - e_out) * t if ceiling is not None else None
    s = fire(m, theta, rule, n, signed, lower, upper)
    inv_t = 1.0 / t
    return s, m - s, e_in + d * inv_t, e_out + s * inv_t


def rate_step(x: torch.Tensor, v: torch.Tensor, c_out: torch.Tensor | None, theta: torch.Tensor, t: torch.Tensor,
              rule: str, n: int, signed: bool, floor: float | None, ceiling: float | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One rate-coded step; returns (s, v, c_out)."""
    m = v + x
    lower = c_out - floor * (t - 1) if c_out is not None and floor is not None and signed else None
    upper = ceiling * t - c_out if c_out is not None and ceiling is not None else None
    s = fire(m, theta, rule, n, signed, lower, upper)
    return s, m - s, (c_out + s if c_out is not None else None)


def spike_counts(s: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """``[events, unit spikes]`` (int64) of one step's spikes: Σ 1[s != 0] and Σ |s| / unit.

    For MT and IF neurons |s| / unit is an exact power of two (θ·2^-k over θ·2^-(n-1)), so
    the int32 conversion is exact and the result equals the float64 sum the counter
    would otherwise take, in one read of ``s`` when compiled with the step.
    """
    a = s.abs()
    events = (a > 0).sum()
    units = (a / unit.clamp_min(1e-30)).to(torch.int32).sum()
    return torch.stack([events, units])


def spike_counts_by_position(s: torch.Tensor, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position of the trailing axes, the number of non-zero spikes over the batch and
    channel axes (dims 0 and 1), and the step's unit spikes, in one read of ``s``.

    A convolution fed directly by these spikes counts its effective ops from the map
    (Σ_positions hits·fan-out), so the op counter need not read the spikes again; the
    step's events are the map's sum.
    """
    a = s.abs()
    hits = (a > 0).sum(dim=(0, 1))
    units = (a / unit.clamp_min(1e-30)).to(torch.int32).sum()
    return hits, units


@functools.lru_cache(maxsize=None)
def compiled(name: str) -> Callable:
    """The ``torch.compile``d version of :func:`differential_step`, :func:`rate_step` or
    :func:`spike_counts`."""
    fn = _EAGER[name]
    return torch.compile(fn, dynamic=True, fullgraph=True)


def resolve_fuse(fuse: bool | None) -> bool:
    """What ``fuse`` means here: the explicit value, or for None (auto) whether compiling
    is possible: ``$SNNBENCH_FUSE`` when set, otherwise whether a C++ compiler is on PATH."""
    if fuse is not None:
        return bool(fuse)
    env = os.environ.get(FUSE_ENV)
    if env is not None:
        return env.strip().lower() not in _FALSE_WORDS
    return any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "g++", "clang++"))


_EAGER: dict[str, Callable] = {"differential": differential_step, "rate": rate_step, "counts": spike_counts,
                               "position_counts": spike_counts_by_position}
#: steps whose compilation failed in this process (they run eagerly from then on)
_FAILED: set[str] = set()


def step_function(name: str, fuse: bool) -> Callable:
    """The step of coding ``name``: compiled when ``fuse``, falling back to eager on failure."""
    eager = _EAGER[name]
    if not fuse or name in _FAILED:
        return eager
    fast = compiled(name)

    def step(*args):
        if name in _FAILED:
            return eager(*args)
        try:
            return fast(*args)
        except Exception as exc:  # inductor/toolchain failures; genuine errors re-raise from eager below
            _FAILED.add(name)
            log.warning("torch.compile of the %s neuron step failed (%s: %s); running it eagerly "
                        "(identical results, slower). Set fuse=false to skip compiling.",
                        name, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return eager(*args)

    return step
