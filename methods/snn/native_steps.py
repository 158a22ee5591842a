"""Neuron steps as native C loops for single-threaded CPU runs: one pass over memory per step.

The compiled neuron step of :mod:`fused` (inductor) is the same arithmetic as the eager step,
but on this workload inductor's code leaves speed behind in three places (BENCHMARKS.md §1):

* it needs every operand at full size, so the per-channel threshold θ is expanded to the
  whole activation and read as one more stream per element (and the bias-pass input b, which
  is the same for every sample, is read at batch size);
* the per-position spike counts that a convolution's op count needs are reduced in a second,
  column-order loop over the spikes written by the first;
* each call pays ~30 µs of guard and wrapper code (vit_mini makes 272 neuron calls per run).

Here a step is one C function per :class:`~snnbench.methods.snn.fused.StepSignature`, generated
from the signature's Python values (rule, n, signed, floor, ceiling, rooms, counting) and built
once with the system C compiler into a cache directory; it walks the activation as
``[rows, channels, positions]`` (rows = samples), reads θ and b as one sample's row (row stride
0) when they are the same for every sample (θ once per channel row where it is per channel),
accumulates the counts and the hits per position in
the same pass, and overwrites the state in place. The C expressions are the ones of
:func:`fused.differential_step` / :func:`fused.rate_step` with MT selection by comparisons
(:func:`~snnbench.methods.snn.quantizers.mt_fire_compare`), evaluated in the same order in
float32 with contraction to FMA switched off (``-ffp-contract=off``), so spikes, state, counts
and hits equal the compiled and eager steps bit for bit (tests/test_native_steps.py).

Used by :class:`~snnbench.methods.snn.neurons.SpikingNeuron` on the fused path when the tensors
are contiguous float32 CPU tensors, torch runs one intra-op thread (the loops are serial;
with more threads inductor's parallel kernels are used) and MT neurons have at most
:data:`fused.COMPARE_MAX_LEVELS` levels; ``SNNBENCH_NATIVE=0`` switches it off. A compiler that
is missing or fails costs one warning and the inductor path, never a result.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import torch

from snnbench.methods.snn import native_source, quantizers
from snnbench.methods.snn.fused import COMPARE_MAX_LEVELS, StepSignature
from snnbench.methods.snn.native_source import source

log = logging.getLogger(__name__)

#: set to 0/false/off/no to run the inductor kernels instead
NATIVE_ENV = "SNNBENCH_NATIVE"
#: where built kernels are kept (default ``~/.cache/snnbench/native``)
DIR_ENV = "SNNBENCH_NATIVE_DIR"
_FALSE_WORDS = {"0", "false", "off", "no"}
#: ``-ffp-contract=off``: no a*b+c is fused into an FMA (it would round once where the reference
#: rounds twice); ``-fno-trapping-math``: no FP exception traps (none are enabled), which lets GCC
#: vectorise the IF neurons' selects (without it their loops stayed scalar); neither changes a
#: value: nothing here relaxes IEEE rounding, signed zeros or NaNs (no -ffast-math)
_SAFE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC"]
#: tried first: vectorise for this CPU (AVX-512 where present); dropped if the compiler refuses
_TUNING_FLAGS = ["-march=native", "-mprefer-vector-width=512"]

_P, _I64, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
#: rows, channels, outer, inner, x, its four strides, b, b_stride, v, e_in, e_out (rate: c_out), theta,
#: theta_stride, theta_channel (θ is one value per channel: theta[c]), t, s, counts, hits, and the
#: input's per-channel affine terms alpha, beta (read by the ``affine`` variants only), the skip
#: branch and its own alpha, beta (read by the "<norm>+<skip>" variants only)
_ARGTYPES = [_I64] * 4 + [_P] + [_I64] * 4 + [_P, _I64, _P, _P, _P, _P, _I64, _I64, _F32, _P, _P, _P, _P, _P,
                                            _P, _P, _P]
#: snn_first: the same with v0, v0_stride after b_stride (the state arrays are written only)
_FIRST_ARGTYPES = _ARGTYPES[:11] + [_P, _I64] + _ARGTYPES[11:]

_LOADED: dict[tuple, Callable] = {}
#: the loaded ``snn_first`` of each signature in _LOADED
_FIRST: dict[tuple, Callable] = {}
_FAILED: set[tuple] = set()


def enabled() -> bool:
    """Whether native steps may run (``$SNNBENCH_NATIVE``, default on)."""
    return os.environ.get(NATIVE_ENV, "1").strip().lower() not in _FALSE_WORDS


def supports(signature: StepSignature) -> bool:
    """Whether :func:`source` implements ``signature`` (MT up to COMPARE_MAX_LEVELS levels, IF)."""
    return signature.rule in ("if", "if_le") or (signature.rule == "mt" and 1 <= signature.n <= COMPARE_MAX_LEVELS)


def usable(signature: StepSignature, tensors: list[torch.Tensor | None]) -> bool:
    """Whether the native step can run on ``tensors`` here (module docstring): float32, contiguous,
    CPU, one torch thread, no autograd, a supported signature that has not failed to build."""
    if not enabled() or not supports(signature) or torch.get_num_threads() != 1:
        return False
    if _key(signature) in _FAILED:
        return False
    for a in tensors:
        if a is not None and (a.device.type != "cpu" or a.dtype != torch.float32 or not a.is_contiguous()
                              or a.requires_grad):
            return False
    return True


def reads_in_place(x: torch.Tensor) -> bool:
    """Whether a non-contiguous input ``x`` is read where it lies by the native step rather than
    copied first: native steps enabled on one thread, a float32 CPU tensor of two to four
    dimensions (:func:`index_space`) without autograd, its last dimension dense (q, k, v of
    attention; kᵀ is copied: a gathering read costs more than the copy, BENCHMARKS.md §1)."""
    return (2 <= x.ndim <= 4 and x.stride(-1) == 1 and x.device.type == "cpu" and x.dtype == torch.float32
            and not x.requires_grad and enabled() and torch.get_num_threads() == 1)


def _key(signature: StepSignature, affine: str = "") -> tuple:
    return signature, quantizers.MT_BOUNDARY, affine


def cache_dir() -> Path:
    """Where built kernels are kept: ``$SNNBENCH_NATIVE_DIR`` or ``~/.cache/snnbench/native``."""
    root = os.environ.get(DIR_ENV)
    return Path(root) if root else Path.home() / ".cache" / "snnbench" / "native"


def compiler() -> str | None:
    """The C compiler: ``$CC`` when set (even if missing: then none), else cc, gcc or clang on PATH."""
    if "CC" in os.environ:
        return shutil.which(os.environ["CC"])
    return next((found for name in ("cc", "gcc", "clang") if (found := shutil.which(name))), None)


def _cpu_identity() -> str:
    """What a ``-march=native`` build depends on besides the source: the architecture and the CPU's
    feature flags (a cache directory shared between unlike machines must not hand an AVX-512
    library to a CPU without AVX-512)."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {platform.processor()} {flags.strip()}"


def _build(code: str) -> Path:
    """Compile ``code`` into the cache (atomically: built under a temporary name, then renamed,
    so concurrent workers never load a half-written library); returns the library's path."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (set CC or install cc/gcc/clang)")
    identity = [code, cc, _cpu_identity(), " ".join(_TUNING_FLAGS + _SAFE_FLAGS)]  # flags too: a new set rebuilds
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:24]
    directory = cache_dir()
    target = directory / f"step_{digest}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as work:
        src = Path(work) / "step.c"
        src.write_text(code)
        built = Path(work) / "step.so"
        errors = ""
        for flags in (_TUNING_FLAGS + _SAFE_FLAGS, _SAFE_FLAGS):
            done = subprocess.run([cc, *flags, "-o", str(built), str(src), "-lm"], capture_output=True, text=True)
            if done.returncode == 0:
                os.replace(built, target)
                return target
            errors = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        raise RuntimeError(f"{cc} failed: {errors}")


def load_library(code: str, argtypes: dict[str, list], what: str, fallback: str) -> ctypes.CDLL | None:
    """``code`` built (:func:`_build`) and loaded, each function in ``argtypes`` given its argument
    types and no result; None where it cannot be built here, after one warning naming ``what``
    and the ``fallback`` that runs instead (the callers cache the result)."""
    try:
        library = ctypes.CDLL(str(_build(code)))
        for name, types in argtypes.items():
            function = getattr(library, name)
            function.argtypes, function.restype = types, None
        return library
    except Exception as exc:  # no compiler, a refused flag set, an unwritable cache
        log.warning("the native %s could not be built (%s); %s. Set %s=0 to skip it.", what, exc, fallback, NATIVE_ENV)
        return None


def kernel(signature: StepSignature, affine: str = "") -> Callable | None:
    """The loaded step of ``signature`` (``affine`` "fma" / "mul_add": the variant that reads its
    input through a per-channel affine map, methods/snn/input_norm.py; "<norm>+<skip>": plus a
    residual branch; native_source.INPUT_MAPS), building it on first use;
    None (and one warning) when it cannot be built here."""
    key = _key(signature, affine)
    fn = _LOADED.get(key)
    if fn is None and affine not in native_source.INPUT_MAPS:
        native_source.input_expression(affine)  # raises, naming the valid maps
    if fn is not None or key in _FAILED:
        return fn
    try:
        library = ctypes.CDLL(str(_build(source(signature, affine))))
    except Exception as exc:  # no compiler, a refused flag set, an unwritable cache: run inductor instead
        log.warning("the native %s neuron step could not be built (%s); using the inductor kernel "
                    "(identical results). Set %s=0 to skip it.", signature.tag(), exc, NATIVE_ENV)
        _FAILED.add(key)
        return None
    fn, first = library.snn_step, library.snn_first
    fn.argtypes, fn.restype = _ARGTYPES, None
    first.argtypes, first.restype = _FIRST_ARGTYPES, None
    _LOADED[key], _FIRST[key] = fn, first
    return fn


def index_space(x: torch.Tensor, positions: bool) -> tuple[list[int], list[int]] | None:
    """The kernel's index space [rows, channels, outer, inner] of ``x`` and x's strides in it
    (the state arrays are contiguous in it); None for a non-contiguous ``x`` of other than two to
    four dimensions (it is copied first). With ``positions`` outer·inner is ``x[0, 0].numel()``."""
    if x.is_contiguous():
        rows = x.shape[0] if x.ndim else 1
        size = x.numel() // rows if rows else 0
        inner = x[0, 0].numel() if positions else max(size, 1)
        channels = size // inner if inner else 0
        return [rows, channels, 1, inner], [size, inner, 0, 1]
    if not 2 <= x.ndim <= 4:
        return None
    shape, strides = list(x.shape), list(x.stride())
    while len(shape) < 4:  # [R, L] -> [R, 1, 1, L]; [R, C, L] -> [R, C, 1, L]
        shape.insert(len(shape) - 1, 1)
        strides.insert(len(strides) - 1, 0)
    return shape, strides


def prepare(signature: StepSignature, x: torch.Tensor, b: tuple[torch.Tensor, int] | None, v: torch.Tensor,
            e_in: torch.Tensor | None, e_out: torch.Tensor | None,
            theta: tuple[torch.Tensor, int] | tuple[torch.Tensor, int, bool], t: float,
            v0: tuple[torch.Tensor, int] | None = None, affine: tuple | None = None) -> tuple:
    """The kernel and argument list of the step of ``signature`` and the fresh tensors it writes:
    (fn, arguments, s, counts or None, hits or None); ``fn(*arguments)`` runs it (:func:`step`).
    The step runs in place (``v``, ``e_in``, ``e_out`` overwritten; rate coding:
    ``e_out`` is C, ``e_in`` None); ``b`` and ``theta`` as
    :func:`~snnbench.methods.snn.native_layout.row_layout` gives them; ``x`` contiguous, or of
    two to four dimensions with any strides (:func:`index_space`), the state contiguous at x's
    shape. With ``v0`` (the initial potential, in the same layout) it is the first step from the
    initial state (v = v0, Ē_in = b, Ē_out = C = 0): ``v``, ``e_in``, ``e_out`` are only
    written. ``theta`` may be (θ per channel, 0, True) for an ``x`` of three or more dimensions
    (:func:`~snnbench.methods.snn.native_layout.channel_layout`): the loop then walks channels
    and reads θ once per channel row. With ``affine`` = (alpha, beta, kind), one float32 value per
    channel each, the step's input is ``fmaf(x, alpha[c], beta[c])`` (kind "fma") or ``x * alpha[c]
    + beta[c]`` ("mul_add") (a BatchNorm folded in,
    methods/snn/input_norm.py; ``x`` contiguous, of three or more dimensions); with ``affine`` =
    (alpha, beta, "<norm>+<skip>", skip, alpha2, beta2) a residual branch ``skip`` (contiguous,
    x's shape) is added to that, as it is ("+x") or through its own terms alpha2, beta2 ("+fma",
    "+mul_add"; native_source.INPUT_MAPS). counts are [events, unit spikes], hits the spikes per
    position; the positions are ``x[0, 0].numel()`` for signatures with ``positions``."""
    affine_kind = affine[2] if affine is not None else ""
    fn = kernel(signature, affine_kind)
    per_channel = len(theta) > 2 and bool(theta[2])
    if (per_channel or affine is not None) and x.ndim < 3:
        raise ValueError("θ per channel and an input affine map need an input of three or more dimensions")
    if affine is not None and not x.is_contiguous():
        raise ValueError("an input affine map needs a contiguous input")
    skip_terms = tuple(affine[3:6]) if affine is not None and "+" in affine_kind else (None, None, None)
    if skip_terms[0] is not None and (skip_terms[0].shape != x.shape or not skip_terms[0].is_contiguous()
                                      or skip_terms[0].dtype != x.dtype):
        raise ValueError("a residual branch must be a contiguous tensor of the input's shape and dtype")
    if "+" in affine_kind and (skip_terms[0] is None or (not affine_kind.endswith("+x") and skip_terms[1] is None)):
        raise ValueError(f"the input map {affine_kind!r} needs a residual branch (and its terms)")
    space = index_space(x, signature.positions or per_channel or affine is not None)
    if fn is None or space is None:
        raise RuntimeError(f"native step {signature.tag()} unavailable for this input")
    shape, strides = space
    s = torch.empty(x.shape, dtype=x.dtype)
    counts = torch.empty(2, dtype=torch.int64) if signature.count else None
    hits = torch.zeros(shape[2] * shape[3], dtype=torch.int64) if signature.positions else None
    pointer = lambda a: a.data_ptr() if a is not None else None  # noqa: E731
    head = [*shape, x.data_ptr(), *strides, pointer(b[0]) if b else None, b[1] if b else 0]
    if v0 is not None:
        fn = _FIRST[_key(signature, affine_kind)]
        head += [v0[0].data_ptr(), v0[1]]
    arguments = [*head, v.data_ptr(), pointer(e_in), pointer(e_out), theta[0].data_ptr(), theta[1], int(per_channel),
                 float(t), s.data_ptr(), pointer(counts), pointer(hits),
                 *(pointer(a) for a in (affine[:2] if affine else (None, None))), *(pointer(a) for a in skip_terms)]
    return fn, arguments, s, counts, hits


#: positions in ``snn_step``'s argument list (:func:`prepare`) of the values that change from one
#: step of a neuron to the next (its state, θ and the affine terms stay where they are)
SLOTS = {"x": 4, "t": 17, "s": 18, "counts": 19, "hits": 20, "skip": 23}


def step(signature: StepSignature, x: torch.Tensor, b: tuple[torch.Tensor, int] | None, v: torch.Tensor,
         e_in: torch.Tensor | None, e_out: torch.Tensor | None, theta: tuple[torch.Tensor, int] | tuple[torch.Tensor, int, bool],
         t: float, v0: tuple[torch.Tensor, int] | None = None,
         affine: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Run the step of ``signature`` (arguments as :func:`prepare` takes them); returns (s, counts
    [events, unit spikes] or None, hits per position or None)."""
    fn, arguments, s, counts, hits = prepare(signature, x, b, v, e_in, e_out, theta, t, v0, affine)
    fn(*arguments)
    return s, counts, hits


def clear() -> None:
    """Forget loaded and failed kernels (tests; the libraries on disk stay)."""
    _LOADED.clear()
    _FIRST.clear()
    _FAILED.clear()
