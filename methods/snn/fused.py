"""Neuron steps as pure functions, optionally compiled into one fused kernel per neuron.

:class:`~snnbench.methods.snn.neurons.SpikingNeuron` runs its step in eager PyTorch by default: about
twenty element-wise passes over memory per step (DESIGN.md: the neuron, not the
convolution, is where a naive engine spends its time). With ``fuse=True`` the same
arithmetic, written here as side-effect-free functions of the state, goes through
``torch.compile`` (inductor), which emits one loop per neuron step on CPU (C++/OpenMP)
and GPU (Triton); the spike counts of the op counter are reduced in the same loop.

**One compilation per step signature, never one per layer.** A compiled function is
specialised on everything Python-valued it sees, and ``torch._dynamo`` gives up on a
function after ``recompile_limit`` (8) variants and runs it eagerly from then on. So:

* the fused path calls the step on *flat* (1-D, contiguous) tensors, with the threshold
  expanded once per input shape (:meth:`SpikingNeuron._flat_theta`): the step is
  element-wise, so every layer, rank, batch size and feature-map size (including the 1x1
  and 2x2 maps of small FPN levels, which would otherwise be specialised as size 0/1
  dimensions) is one dynamic length;
* the Python values of a neuron (rule, n, signed, floor, ceiling, whether rooms and
  counts are kept) form a :class:`StepSignature`, normalised (``ceiling=6`` and ``6.0``
  are the same signature), and each signature gets its *own* function object with its own
  code object (:func:`compiled`), so dynamo's per-code cache holds exactly one entry
  per function and no signature can push another past the recompile limit. (A step that
  also counts spikes per position for the next convolution runs on 2-D views [batch·channels,
  positions] and reduces the hits in the same loop; where either size is below 2, which dynamo
  would specialise, it runs the flat kernel of the signature without positions and reduces the
  hits from the written spikes in a small compiled function of their own.)

The time-step enters as a 0-dim tensor, so one compilation serves every t.

**Compiled MT selection.** Inside the compiled kernels the MT level is chosen by comparing
against each of the n levels (:func:`~snnbench.methods.snn.quantizers.mt_fire_compare`, n <= 16),
not by the integer bit arithmetic the eager step uses: inductor compiles the int/float
reinterpretations of the latter to scalar loops, which made the step compute bound (2.97 ms
where its memory traffic alone takes ~1.1 ms, 802 816 elements, 1 thread); the comparisons
vectorise (1.34 ms). The comparison form is the reference ladder itself; the integer form
equals it wherever the levels θ/2^k are normal floats (θ >= 2^-126·2^(n-1)), i.e. for every
threshold but vanishing ones.

**In place.** The step is memory bound (about ten 4-byte streams per element: x, b, v, Ē_in,
Ē_out and θ in; s, v, Ē_in, Ē_out out), so the compiled kernel (:func:`run_step`) writes the new
state into the state tensors it was given instead of allocating three fresh ones per step
(whose first touch costs page faults on top); only the spikes are new. The per-position hits
come out of the same kernel (as a second, column-order loop: 1.75 ms against 2.37 ms for a
separate reduction at 64x16x28x28). On one CPU thread the neuron runs :mod:`snnbench.methods.snn.native_steps` instead.

The fused and eager paths compute the same expressions in the same order; the tests
check that their spikes, states and counts agree.

``fuse`` is three-valued in the engine settings: true, false, or empty (auto, the
default): compile when inductor can build kernels here (a C++ compiler for CPU tensors;
CUDA tensors take the Triton MT kernel first) unless ``SNNBENCH_FUSE=0``. Whenever
compilation fails, the step falls back to the eager function with one warning, so a
missing toolchain costs speed, never a result.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import types
from dataclasses import dataclass
from typing import Callable

import torch

from snnbench.methods.snn.quantizers import if_fire, mt_fire, mt_fire_compare

log = logging.getLogger(__name__)
#: set SNNBENCH_FUSE=0/1 to force what fuse=auto resolves to (the test suite sets 0)
FUSE_ENV = "SNNBENCH_FUSE"
_FALSE_WORDS = {"0", "false", "off", "no"}
#: compiled MT steps compare against each level up to this many levels (2n vector operations
#: per element); above it the integer form is cheaper (n = 16: 1.9 vs 3.0 ms, n = 32: 3.7 vs
#: 2.9 ms on 802 816 elements, 1 thread)
COMPARE_MAX_LEVELS = 16


def fire(m: torch.Tensor, theta: torch.Tensor, rule: str, n: int, signed: bool,
         lower: torch.Tensor | None, upper: torch.Tensor | None) -> torch.Tensor:
    """``rule``: ``mt``, ``if`` or ``if_le`` (IF whose negative spikes fire at v <= 0).

    MT neurons select their level through :func:`mt_fire_compare` while torch.compile traces
    the step (up to :data:`COMPARE_MAX_LEVELS` levels; its n comparisons fuse into one loop)
    and through the integer form of :func:`mt_fire` when the step runs eagerly (one pass per
    operation); both equal the reference ladder exactly."""
    if rule == "mt":
        if n <= COMPARE_MAX_LEVELS and torch.compiler.is_compiling():
            return mt_fire_compare(m, theta, n, signed=signed, lower_room=lower, upper_room=upper)
        return mt_fire(m, theta, n, signed=signed, lower_room=lower, upper_room=upper)
    return if_fire(m, theta, signed=signed, lower_room=lower, upper_room=upper, negative_at_zero=rule == "if_le")


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


def position_hits(s: torch.Tensor, positions: int) -> torch.Tensor:
    """Per position of the trailing axes (``positions`` of them, the last in memory), the number
    of non-zero spikes over the leading batch and channel axes (int64, flat).

    A convolution fed directly by these spikes counts its effective ops from this map
    (Σ_positions hits·fan-out), so the op counter need not read the spikes again.
    """
    return (s != 0).reshape(-1, positions).sum(dim=0)


def unit_amplitude(theta: torch.Tensor, rule: str, n: int) -> torch.Tensor:
    """Amplitude of one unit spike: θ/2^(n-1) for MT, θ for IF."""
    return theta / 2 ** (n - 1) if rule == "mt" else theta


def differential_step(x: torch.Tensor, b: torch.Tensor, v: torch.Tensor, e_in: torch.Tensor, e_out: torch.Tensor,
                      theta: torch.Tensor, t: torch.Tensor, rule: str, n: int, signed: bool, floor: float | None,
                      ceiling: float | None, count: bool = False, positions: int | None = None
                      ) -> tuple[torch.Tensor, ...]:
    """One step t >= 1 of the differential neuron (DCGS Thm 4.4); returns (s, v, e_in, e_out, counts, hits).

    ``counts`` is :func:`spike_counts` of s when ``count``, else None; ``hits`` is
    :func:`position_hits` when ``count`` and ``positions`` are given, else None.
    """
    d = x - b
    m = (v + d) + (e_in - e_out)
    lower = ((e_out - floor) * t if floor else e_out * t) if floor is not None and signed else None
    upper = (ceiling - e_out) * t if ceiling is not None else None
    s = fire(m, theta, rule, n, signed, lower, upper)
    inv_t = 1.0 / t
    counts = spike_counts(s, unit_amplitude(theta, rule, n)) if count else None
    hits = position_hits(s, positions) if count and positions is not None else None
    return s, m - s, e_in + d * inv_t, e_out + s * inv_t, counts, hits


def rate_step(x: torch.Tensor, v: torch.Tensor, c_out: torch.Tensor | None, theta: torch.Tensor, t: torch.Tensor,
              rule: str, n: int, signed: bool, floor: float | None, ceiling: float | None, count: bool = False,
              positions: int | None = None) -> tuple[torch.Tensor | None, ...]:
    """One rate-coded step; returns (s, v, c_out, counts, hits) (see :func:`differential_step`)."""
    m = v + x
    lower = c_out - floor * (t - 1) if c_out is not None and floor is not None and signed else None
    upper = ceiling * t - c_out if c_out is not None and ceiling is not None else None
    s = fire(m, theta, rule, n, signed, lower, upper)
    counts = spike_counts(s, unit_amplitude(theta, rule, n)) if count else None
    hits = position_hits(s, positions) if count and positions is not None else None
    return s, m - s, (c_out + s if c_out is not None else None), counts, hits


_EAGER: dict[str, Callable] = {"differential": differential_step, "rate": rate_step}


def step_function(coding: str) -> Callable:
    """The (un-compiled) step function of a coding: :func:`differential_step` or :func:`rate_step`."""
    return _EAGER[coding]


@dataclass(frozen=True)
class StepSignature:
    """Everything Python-valued a neuron step depends on (the tensors are dynamic).

    ``floor``/``ceiling`` are normalised to float (or None) so that ``6`` and ``6.0`` are
    one signature; ``rooms`` says whether the rate step gets a ``c_out`` tensor.
    """

    coding: str
    rule: str
    n: int
    signed: bool
    floor: float | None
    ceiling: float | None
    rooms: bool = False
    count: bool = False
    positions: bool = False

    @classmethod
    def of(cls, coding: str, rule: str, n: int, signed: bool, floor: float | None, ceiling: float | None,
           rooms: bool = False, count: bool = False, positions: bool = False) -> "StepSignature":
        as_float = lambda v: None if v is None else float(v)  # noqa: E731
        return cls(coding, rule, int(n), bool(signed), as_float(floor), as_float(ceiling), bool(rooms), bool(count),
                   bool(count and positions))

    def tag(self) -> str:
        """A readable, identifier-safe name (appears in dynamo logs and profiles)."""
        bound = lambda v: "none" if v is None else repr(v).replace(".", "p").replace("-", "m")  # noqa: E731
        return (f"{self.coding}_{self.rule}{self.n}_{'signed' if self.signed else 'unsigned'}_floor_{bound(self.floor)}"
                f"_ceiling_{bound(self.ceiling)}{'_rooms' if self.rooms else ''}{'_counted' if self.count else ''}"
                f"{'_positions' if self.positions else ''}")

    def static_args(self) -> tuple:
        return self.rule, self.n, self.signed, self.floor, self.ceiling, self.count


def _own_code_copy(fn: Callable, suffix: str) -> Callable:
    """``fn`` with a fresh code object named ``<name>__<suffix>``.

    torch._dynamo keeps its compiled variants (and counts recompilations) per code
    object; a copy per :class:`StepSignature` gives each signature its own cache.
    """
    name = f"{fn.__name__}__{suffix}"
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    copy = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__doc__, copy.__module__ = fn.__doc__, fn.__module__
    return copy


def _differential_kernel(x: torch.Tensor, b: torch.Tensor, v: torch.Tensor, e_in: torch.Tensor, e_out: torch.Tensor,
                         theta: torch.Tensor, t: torch.Tensor, rule: str, n: int, signed: bool, floor: float | None,
                         ceiling: float | None, count: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`differential_step` writing the new v, Ē_in, Ē_out into the state tensors (one
    pass over memory that reads the five inputs and writes four outputs); returns (s, counts)."""
    s, v_new, e_in_new, e_out_new, counts, _ = differential_step(x, b, v, e_in, e_out, theta, t, rule, n, signed,
                                                                 floor, ceiling, count)
    v.copy_(v_new)
    e_in.copy_(e_in_new)
    e_out.copy_(e_out_new)
    return s, counts


def _rate_kernel(x: torch.Tensor, v: torch.Tensor, c_out: torch.Tensor | None, theta: torch.Tensor, t: torch.Tensor,
                 rule: str, n: int, signed: bool, floor: float | None, ceiling: float | None, count: bool
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`rate_step` writing the new v (and C) into the state tensors; returns (s, counts)."""
    s, v_new, c_new, counts, _ = rate_step(x, v, c_out, theta, t, rule, n, signed, floor, ceiling, count)
    v.copy_(v_new)
    if c_out is not None:
        c_out.copy_(c_new)
    return s, counts


def _position_hits_kernel(s: torch.Tensor, positions: int) -> torch.Tensor:
    return position_hits(s, positions)


def _row_hits(s: torch.Tensor) -> torch.Tensor:
    """Non-zero spikes per column of the 2-D ``s`` [lead, positions] (int64), accumulated in int32:
    exact while lead < 2^31 (:func:`run_step` checks), and cheaper to accumulate."""
    return (s != 0).to(torch.int32).sum(dim=0, dtype=torch.int32).to(torch.int64)


def _differential_hits_kernel(x: torch.Tensor, b: torch.Tensor, v: torch.Tensor, e_in: torch.Tensor,
                              e_out: torch.Tensor, theta: torch.Tensor, t: torch.Tensor, rule: str, n: int,
                              signed: bool, floor: float | None, ceiling: float | None, count: bool
                              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """:func:`_differential_kernel` on 2-D views [lead, positions] that also returns the hits per
    position (:func:`position_hits`) from the same loop, instead of a second read of the spikes."""
    s, counts = _differential_kernel(x, b, v, e_in, e_out, theta, t, rule, n, signed, floor, ceiling, count)
    return s, counts, _row_hits(s)


def _rate_hits_kernel(x: torch.Tensor, v: torch.Tensor, c_out: torch.Tensor | None, theta: torch.Tensor,
                      t: torch.Tensor, rule: str, n: int, signed: bool, floor: float | None, ceiling: float | None,
                      count: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """:func:`_rate_kernel` on 2-D views that also returns the hits per position (see above)."""
    s, counts = _rate_kernel(x, v, c_out, theta, t, rule, n, signed, floor, ceiling, count)
    return s, counts, _row_hits(s)


#: the in-place kernel of each coding: the function :func:`compiled` compiles per signature
_KERNELS: dict[str, Callable] = {"differential": _differential_kernel, "rate": _rate_kernel}
#: the same with the per-position hits of the spikes reduced in the same loop (signatures with positions)
_HITS_KERNELS: dict[str, Callable] = {"differential": _differential_hits_kernel, "rate": _rate_hits_kernel}
#: state arguments (indices into the tensors of a step) that the kernel of a coding overwrites
_MUTATED: dict[str, tuple[int, ...]] = {"differential": (2, 3, 4), "rate": (1, 2)}

#: the compiled step of each signature seen in this process (the explicit per-signature cache)
_COMPILED: dict[StepSignature, Callable] = {}
_HITS: list[Callable] = []


def compiled(signature: StepSignature) -> Callable:
    """The ``torch.compile``d in-place kernel of one signature (called with flat tensors;
    :func:`run_step` hands back the state tensors it overwrote)."""
    fn = _COMPILED.get(signature)
    if fn is None:
        kernels = _HITS_KERNELS if signature.positions else _KERNELS
        fn = _COMPILED[signature] = torch.compile(_own_code_copy(kernels[signature.coding], signature.tag()),
                                                  dynamic=True, fullgraph=True)
    return fn


def _compiled_hits() -> Callable:
    """The compiled per-position count of non-zero spikes (:func:`position_hits`), run on the
    spikes a kernel wrote: a reduction of its own, so the kernel is not recomputed for it."""
    if not _HITS:
        _HITS.append(torch.compile(_position_hits_kernel, dynamic=True, fullgraph=True))
    return _HITS[0]


def can_overwrite(tensors: tuple[torch.Tensor | None, ...], mutated: tuple[int, ...]) -> bool:
    """Whether the kernel may overwrite the state tensors at ``mutated``: no autograd, no inference
    tensor outside inference mode, and no state sharing memory with another argument."""
    states = [tensors[i] for i in mutated if tensors[i] is not None]
    if torch.is_grad_enabled() and any(a.requires_grad for a in tensors if a is not None):
        return False
    if not torch.is_inference_mode_enabled() and any(a.is_inference() for a in states):
        return False
    pointers = [a.untyped_storage().data_ptr() for a in tensors if a is not None]
    return len(set(pointers)) == len(pointers)


def compiled_signatures() -> list[StepSignature]:
    """The signatures compiled (or being compiled) in this process."""
    return list(_COMPILED)


def compiled_variants(signature: StepSignature) -> int:
    """How many variants torch._dynamo holds for the step of ``signature`` (1 once it has
    run: anything more is a recompilation)."""
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

    return len(_debug_get_cache_entry_list(compiled(signature)._torchdynamo_orig_callable.__code__))


def clear_compiled() -> None:
    """Forget every compiled step (tests; the next call compiles again)."""
    _COMPILED.clear()
    _HITS.clear()
    _FAILED.clear()


def resolve_fuse(fuse: bool | None) -> bool:
    """What ``fuse`` means here: the explicit value, or for None (auto) whether compiling
    is possible: ``$SNNBENCH_FUSE`` when set, otherwise whether a C++ compiler is on PATH."""
    if fuse is not None:
        return bool(fuse)
    env = os.environ.get(FUSE_ENV)
    if env is not None:
        return env.strip().lower() not in _FALSE_WORDS
    return any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "g++", "clang++"))


#: signatures whose compilation failed in this process (they run eagerly from then on)
_FAILED: set[StepSignature] = set()


def run_step(signature: StepSignature, fuse: bool, *tensors: torch.Tensor | None, positions: int | None = None
             ) -> tuple:
    """Run the step of ``signature`` on ``tensors`` (the leading tensor arguments of
    :func:`differential_step` / :func:`rate_step`); returns what that function returns.

    With ``fuse`` the compiled in-place kernel runs (falling back to eager, one warning per
    signature, when compilation fails): it overwrites the state tensors it is given with their
    new values (no allocation per step but the spikes'; the step's memory traffic is the reads
    of its inputs and the writes of s and the state) and they are returned as the new state;
    the per-position hits (signatures with ``positions``; ``positions`` trailing positions)
    are reduced from the written spikes. Eager (``fuse`` off, and wherever the state may not be
    overwritten, see :func:`can_overwrite`) returns new tensors."""
    eager = _EAGER[signature.coding]
    static = signature.static_args()
    hits_of = positions if signature.positions else None
    if not fuse or signature in _FAILED or not can_overwrite(tensors, _MUTATED[signature.coding]):
        return eager(*tensors, *static, hits_of)
    states = tuple(tensors[i] for i in _MUTATED[signature.coding])
    lead = tensors[0].numel() // hits_of if hits_of else 0
    if hits_of is not None and hits_of >= 2 and 2 <= lead < 2**31:
        # [lead, positions] views (dynamo specialises sizes 0 and 1, so those take the flat kernel)
        shaped = [a.view(lead, hits_of) if a is not None and a.ndim == 1 else a for a in tensors]
        try:
            s, counts, hits = compiled(signature)(*shaped, *static)
        except Exception as exc:  # as below
            _warn_fallback(signature.tag(), exc)
            _FAILED.add(signature)
            return eager(*tensors, *static, hits_of)
        return (s.view(-1), *states, counts, hits)
    flat_signature = dataclasses.replace(signature, positions=False) if signature.positions else signature
    try:
        s, counts = compiled(flat_signature)(*tensors, *static)
    except Exception as exc:  # inductor/toolchain failures (before the kernel ran); genuine errors re-raise below
        _warn_fallback(flat_signature.tag(), exc)
        _FAILED.update((signature, flat_signature))
        return eager(*tensors, *static, hits_of)
    return (s, *states, counts, _hits(s, hits_of) if hits_of is not None else None)


def _hits(s: torch.Tensor, positions: int) -> torch.Tensor:
    """:func:`position_hits` of written spikes: compiled, or eager once its compilation failed."""
    if _HITS and _HITS[0] is position_hits:
        return position_hits(s, positions)
    try:
        return _compiled_hits()(s, positions)
    except Exception as exc:  # the state is already advanced: count these spikes eagerly from now on
        _warn_fallback("position_hits", exc)
        _HITS[:] = [position_hits]
        return position_hits(s, positions)


def _warn_fallback(what: str, exc: Exception) -> None:
    log.warning("torch.compile of the %s neuron step failed (%s: %s); running it eagerly "
                "(identical results, slower). Set fuse=false to skip compiling.",
                what, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
