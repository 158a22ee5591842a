"""Real-valued units for the non-spiking operations of a converted network.

:class:`GradedUnit` stands for a non-spiking function f (GELU, LayerNorm, softmax, max-pool,
products of two signals ...): its decoded output is f of its decoded inputs, exactly
(differential: docs/dcgs-official-code.md §2.5; rate: expectation compensation, §2.10).
:class:`ProductUnit` is the bilinear case with its synaptic-operation count, and
:class:`AnalogOp` the stateless stand-in the ANN reference uses.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
from torch import nn

from snnbench.methods.snn import graded_kernels, native_graded, native_layout
from snnbench.methods.snn.fused import can_overwrite
from snnbench.methods.snn.units import Coding, StatefulUnit, step_scalar


class GradedUnit(StatefulUnit):
    """Real-valued unit whose decoded output is ``fn`` of its decoded inputs.

    Args:
        fn: the ANN operation, called as ``fn(*args, **kwargs)``.
        dynamic: positions in ``args`` of the time-varying tensors (the rest are constants).
        coding: ``"rate"`` or ``"differential"``.
        label: what the unit stands for (``"gelu"``, ``"layer_norm"``, ``"matmul"`` ...).
        fuse: run the element-wise parts of the step as compiled in-place kernels
            (:mod:`snnbench.methods.snn.graded_kernels`; CPU tensors, bit-identical to eager).

    Differential (docs/dcgs-official-code.md §2.5): t = 0: b = x_0, E = b, emit 0; t >= 1:
        E += (x_t - b)/t;  now = fn(E);  emit t·(now - last);  last = now,
    so Σ_τ out_τ/τ = fn(E_t). Rate (expectation compensation, ECMT; docs/dcgs-official-code.md §2.10):
        S += x_t;  now = fn(S/t);  emit t·now - (t-1)·last,
    so the running mean of the outputs is fn(running mean of the inputs). With two
    dynamic operands and a bilinear ``fn`` this is the product unit of §2.6-2.7.
    """

    def __init__(self, fn: Callable[..., Any], dynamic: tuple[int, ...] = (0,), coding: Coding = "differential",
                 label: str = "", fuse: bool = False) -> None:
        super().__init__()
        self.fn, self.dynamic, self.coding, self.label = fn, tuple(dynamic), coding, label or getattr(fn, "__name__", "fn")
        self.fuse = fuse
        for name in ("base", "acc", "last"):
            self.register_state(name)
        #: output (shape, dtype, device) of fn per input layout: the bias pass emits zeros of it
        self._output_meta: dict[tuple, tuple] = {}

    def extra_repr(self) -> str:
        return f"{self.label}, dynamic={self.dynamic}, coding={self.coding}"

    def _substituted(self, args: tuple, values: list[torch.Tensor]) -> list:
        args = list(args)
        for pos, value in zip(self.dynamic, values):
            args[pos] = value
        return args

    def _call(self, args: tuple, kwargs: dict, values: list[torch.Tensor]) -> torch.Tensor:
        return self.fn(*self._substituted(args, values), **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.t == 0:
            return self._first_frame(args, kwargs)
        t = self.t + 1 if self.coding == "rate" else self.t
        if self.initial_views:
            out = self._first_step(t, args, kwargs)
            if out is not None:
                return out
            self._materialized()
        if self.fuse:
            out = self._fused_step(t, args, kwargs)
            if out is not None:
                return out
        out, state = self.frame_step(t, self.frame_state(), *args, **kwargs)
        self.advance(state)
        return out

    def _fused_step(self, t: int, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """:meth:`step_with`'s step through the compiled kernels of graded_kernels.py, the state
        updated in place (tensors below graded_kernels.MIN_ELEMENTS: :meth:`_in_place_step`); None
        (step functionally) where neither applies: non-CPU or non-dense tensors, layouts that
        differ between an input and its state, or a state that may not be overwritten (autograd,
        inference tensors outside inference mode)."""
        xs = [args[i] for i in self.dynamic]
        native = native_graded.graded_usable(*([x, a] for x, a in zip(xs, self.acc)))
        if self.coding == "differential":
            native = native and all(native_graded.base_fits(b, x) for b, x in zip(self.base, xs))
            if not native and any(b.shape != a.shape for b, a in zip(self.base, self.acc)):  # b kept as one sample
                self.base = [b.expand(a.shape).contiguous() for b, a in zip(self.base, self.acc)]
        if native or xs[0].numel() < graded_kernels.MIN_ELEMENTS:
            return self._in_place_step(t, args, kwargs, xs, native)
        rate = self.coding == "rate"
        groups = [[x, a] for x, a in zip(xs, self.acc)] if rate else \
            [[x, b, a] for x, b, a in zip(xs, self.base, self.acc)]
        views = [graded_kernels.flat_views(group) for group in groups]
        if any(v is None for v in views) or not can_overwrite((*xs, *self.acc), tuple(range(len(xs), 2 * len(xs)))):
            return None
        t_tensor = step_scalar(t)  # a CPU scalar, as the neuron steps take it
        if rate:
            fn_inputs = []
            for (x, acc), (x_flat, acc_flat) in zip(groups, views):
                fn_inputs.append(graded_kernels.unflat(graded_kernels.run("rate_inputs", x_flat, acc_flat, t_tensor), acc))
            now = self._call(args, kwargs, fn_inputs)
        else:
            for x_flat, b_flat, acc_flat in views:
                graded_kernels.run("differential_inputs", x_flat, b_flat, acc_flat, t_tensor)
            now = self._call(args, kwargs, self.acc)
            if graded_kernels.shares_memory(now, self.acc):  # fn returned a view of E: keep its value
                now = now.clone()
        out = self._output(now, t, t_tensor)
        self.last = now
        self.t += 1
        return out

    def _in_place_step(self, t: int, args: tuple, kwargs: dict, xs: list[torch.Tensor], native: bool
                       ) -> torch.Tensor | None:
        """:meth:`step_with`'s step for tensors below the compiled kernels' size: the same eager
        operations in the same order, the decoded inputs updated in place (E += (x - b)/t as
        d = x - b; d /= t; E += d) and the increment built in one fresh tensor, so a step
        allocates two tensors per unit instead of five and touches less memory (bit-identical:
        each operation rounds as its out-of-place form; tests). None (step functionally) where
        an input's shape or dtype differs from its state's (broadcasting, promotion) or the state
        may not be overwritten. With ``native`` (:func:`native_graded.graded_usable` of the inputs
        and state) the updates run as one-pass C loops, bit-identical."""
        acc = self.acc
        if any(x.shape != a.shape or x.dtype != a.dtype for x, a in zip(xs, acc)) \
                or not can_overwrite((*xs, *acc), tuple(range(len(xs), 2 * len(xs)))):
            return None
        if self.coding == "rate":
            if native:  # S += x and S/t in one pass per operand
                means = [native_graded.rate_inputs(x, a, t) for x, a in zip(xs, acc)]
            else:
                for x, a in zip(xs, acc):
                    a.add_(x)
                means = [a / t for a in acc]
            now = self._call(args, kwargs, means)
            if native and native_graded.graded_usable([now, self.last]):  # one pass: now·t - last·(t - 1)
                out = native_graded.graded_output(now, self.last, t, rate=True)
            else:
                out = torch.mul(now, t)
                out.sub_(torch.mul(self.last, t - 1))
        else:
            for x, b, a in zip(xs, self.base, acc):
                if native:  # one pass over x, b and E instead of three
                    native_graded.differential_inputs(x, b, a, t)
                    continue
                d = torch.sub(x, b)
                d.div_(t)
                a.add_(d)
            now = self._call(args, kwargs, acc)
            if graded_kernels.shares_memory(now, acc):  # fn returned a view of E: keep its value
                now = now.clone()
            if native and native_graded.graded_usable([now, self.last]):
                out = native_graded.graded_output(now, self.last, t, rate=False)
            else:
                out = torch.sub(now, self.last)
                out.mul_(t)
        self.last = now
        self.t += 1
        return out

    def _output(self, now: torch.Tensor, t: int, t_tensor: torch.Tensor) -> torch.Tensor:
        """The step's emitted increment (class docstring), compiled on dense CPU tensors."""
        views = graded_kernels.flat_views([now, self.last]) if now.numel() >= graded_kernels.MIN_ELEMENTS else None
        kernel = "rate_output" if self.coding == "rate" else "differential_output"
        if views is None:  # the same function, eagerly
            return getattr(graded_kernels, kernel)(now, self.last, t)
        return graded_kernels.unflat(graded_kernels.run(kernel, *views, t_tensor), now)

    def _first_frame(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """Rate coding's step 1 (S = x, emit fn(x)) or differential coding's bias pass (b = E = x,
        emit 0): creates the state."""
        xs = [args[i] for i in self.dynamic]
        self.t = 1
        if self.coding == "differential" and self.fuse and native_graded.graded_usable(*([x] for x in xs)):
            zeros = self._start_from_views(args, kwargs, xs)
            if zeros is not None:
                return zeros
        self.acc = [x.clone() for x in xs]
        if self.coding == "rate":
            now = self._call(args, kwargs, [a / 1 for a in self.acc])  # S/t at t = 1 (a copy, as every step)
            self.last = now
            return now
        self.base = [x.clone() for x in xs]
        now = self._call(args, kwargs, self.acc)
        self.last = torch.zeros_like(now)
        return torch.zeros_like(now)

    def _start_from_views(self, args: tuple, kwargs: dict, xs: list[torch.Tensor]) -> torch.Tensor | None:
        """Differential coding's bias pass without copies (native updates on one thread): b kept
        as one sample where every sample's input is the same (:func:`native_layout.bias_input`),
        E = b and last = 0 as broadcast views, and fn(E), whose value the pass does not use, not
        evaluated once its output layout is known for this input layout. Returns the emitted
        zeros, or None (the copying pass) where fn's output is not a contiguous tensor."""
        key = _layout_key(args, kwargs)
        meta = self._output_meta.get(key) if key is not None else None
        if meta is None:
            now = self._call(args, kwargs, xs)
            if not isinstance(now, torch.Tensor) or not now.is_contiguous():
                return None
            meta = (now.shape, now.dtype, now.device)
            if key is not None:
                self._output_meta[key] = meta
        self._set_first_views([native_layout.bias_input(x) for x in xs], xs, meta)
        shape, dtype, device = meta
        return torch.zeros(shape, dtype=dtype, device=device)

    def _set_first_views(self, base: list[torch.Tensor], xs: list[torch.Tensor], meta: tuple) -> None:
        """The bias pass's state as views: b = ``base``, E = b and last = 0 broadcast to the
        inputs ``xs`` and to fn's output layout ``meta`` (shape, dtype, device)."""
        shape, dtype, device = meta
        self.base = base
        self.acc = [b.expand(x.shape) for b, x in zip(base, xs)]
        self.last = torch.zeros((), dtype=dtype, device=device).expand(shape)
        self.initial_views = True

    def replay_first_frame(self, *args: Any, **kwargs: Any) -> None:
        """The bias pass's state as :meth:`_start_from_views` sets it, b derived once per
        recorded input and no zeros formed; the full frame where the views do not apply."""
        xs = [args[i] for i in self.dynamic]
        key = _layout_key(args, kwargs)
        meta = self._output_meta.get(key) if key is not None else None
        if self.coding != "differential" or self.t != 0 or not self.fuse or meta is None \
                or not native_graded.graded_usable(*([x] for x in xs)):
            return super().replay_first_frame(*args, **kwargs)
        self.t = 1
        self._set_first_views(self._recorded(xs, lambda: [native_layout.bias_input(x) for x in xs]), xs, meta)

    def _first_step(self, t: int, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """Step 1 from the views of :meth:`_start_from_views`: E = b + (x - b)/t written fresh
        (:func:`native_graded.first_inputs`), the increment (now - 0)·t as the eager step forms
        it; None where the native updates do not apply (the views are then materialised)."""
        xs = [args[i] for i in self.dynamic]
        if not native_graded.graded_usable(*([x] for x in xs)) or any(x.shape != a.shape for x, a in zip(xs, self.acc)) \
                or not all(native_graded.base_fits(b, x) for b, x in zip(self.base, xs)):
            return None
        self.acc = [native_graded.first_inputs(x, b, t) for x, b in zip(xs, self.base)]
        self.initial_views = False
        now = self._call(args, kwargs, self.acc)
        if graded_kernels.shares_memory(now, self.acc):  # fn returned a view of E: keep its value
            now = now.clone()
        out = torch.sub(now, self.last)
        out.mul_(t)
        self.last = now
        self.t += 1
        return out

    def _materialized(self) -> None:
        """The views of :meth:`_start_from_views` as the full-size tensors they stand for."""
        if self.initial_views:
            self.initial_views = False
            self.base = [b.expand(a.shape).contiguous() for b, a in zip(self.base, self.acc)]
            self.acc = [a.clone(memory_format=torch.contiguous_format) for a in self.acc]
            self.last = self.last.clone(memory_format=torch.contiguous_format)

    # -- the functional step (methods/snn/frame.py) -------------------------------------------
    def frame_state(self) -> tuple[torch.Tensor, ...]:
        self._materialized()
        if self.coding == "rate":
            return (*self.acc, self.last)
        return (*self.base, *self.acc, self.last)

    def frame_step(self, t: torch.Tensor | int, state: tuple[torch.Tensor, ...], /, *args: Any, **kwargs: Any
                   ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Frame t >= 1 (rate: t >= 2), the formulas of the class docstring; state = (S..., last)
        for rate, (b..., E..., last) for differential coding."""
        return self.step_with(self.fn, t, state, args, kwargs)

    def step_with(self, fn: Callable[..., Any], t: torch.Tensor | int, state: tuple[torch.Tensor, ...],
                  args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """:meth:`frame_step` with ``fn`` standing for the unit's function (the compiled frame
        passes it as one opaque call of the kernels eager runs: identical rounding)."""
        call = lambda values: fn(*self._substituted(args, values), **kwargs)  # noqa: E731
        xs = [args[i] for i in self.dynamic]
        k = len(xs)
        if self.coding == "rate":
            acc = [a + x for a, x in zip(state[:k], xs)]
            last = state[k]
            now = call([a / t for a in acc])
            return graded_kernels.rate_output(now, last, t), (*acc, now)
        base, last = state[:k], state[2 * k]
        acc = [graded_kernels.differential_inputs(x, b, a, t) for a, x, b in zip(state[k:2 * k], xs, base)]
        now = call(acc)
        return graded_kernels.differential_output(now, last, t), (*base, *acc, now)

    def advance(self, state: tuple[torch.Tensor, ...]) -> None:
        k = len(self.dynamic)
        if self.coding == "rate":
            self.acc, self.last = list(state[:k]), state[k]
        else:
            self.base, self.acc, self.last = list(state[:k]), list(state[k:2 * k]), state[2 * k]
        self.t += 1


class ProductUnit(GradedUnit):
    """A :class:`GradedUnit` for a bilinear ``fn`` of two signals (q·kᵀ, attn·v, gated products).

    When ``counting`` is on, each step also records its synaptic operations in
    ``last_ops`` (docs/dcgs-official-code.md §5.2, the official three-term count): the increment
    t·(A_t B_t - A_{t-1} B_{t-1}) = a_t B_{t-1} + A_{t-1} b_t + a_t b_t / t needs
    fn(1[a_t≠0], 1[b_t≠0]) + fn(1[a_t≠0], 1[B_{t-1}≠0]) + fn(1[A_{t-1}≠0], 1[b_t≠0])
    accumulates, where A, B are the operands decoded so far. ``last_dense`` is the dense
    cost fn(1, 1) of one frame.
    """

    def __init__(self, fn: Callable[..., Any], dynamic: tuple[int, ...] = (0, 1), coding: Coding = "differential",
                 label: str = "", fuse: bool = False) -> None:
        if len(dynamic) != 2:
            raise ValueError("a product unit takes exactly two time-varying operands")
        super().__init__(fn, dynamic, coding, label, fuse)
        self.counting = False
        self.last_ops: torch.Tensor | None = None
        self.last_dense = 0
        self._dense_cache: dict[tuple, int] = {}

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.counting:
            self._count(args, kwargs)
        return super().forward(*args, **kwargs)

    def _is_matmul(self) -> bool:
        return self.fn in (torch.matmul, operator.matmul, torch.Tensor.matmul, torch.bmm)

    def _count(self, args: tuple, kwargs: dict) -> None:
        a, b = (args[i] for i in self.dynamic)
        ind = lambda x: x != 0  # noqa: E731  (bool: summed directly, no float copy)
        first_step = self.acc is None or (self.coding == "differential" and self.t == 0)
        prev_a, prev_b = (torch.zeros_like(a), torch.zeros_like(b)) if first_step else self.acc
        if self.initial_views:  # E_0 = b as broadcast views: counted on dense copies
            prev_a, prev_b = prev_a.contiguous(), prev_b.contiguous()
        matmul = self._is_matmul() and a.ndim >= 2 and b.ndim >= 2
        if matmul:
            # Σ_ij Σ_k 1[x_ik]·1[y_kj] = Σ_k (non-zeros of column k of x)·(non-zeros of row k of y):
            # O(size) instead of a matmul of indicator matrices
            def pairs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return (x.sum(dim=-2) * y.sum(dim=-1)).sum()
        else:
            def pairs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return self._call(args, kwargs, [x.to(torch.float32), y.to(torch.float32)]).sum()
        if matmul:  # native or compiled: one reduction over the operands (native_graded, graded_kernels)
            ops = native_graded.matmul_pair_ops(a, b, prev_a, prev_b) if self.fuse else None
            if ops is None:
                ops = graded_kernels.run("matmul_pair_ops", a, b, prev_a, prev_b) if self.fuse else \
                    graded_kernels.matmul_pair_ops(a, b, prev_a, prev_b)
        else:
            ia, ib = ind(a), ind(b)
            ops = pairs(ia, ib) + pairs(ia, ind(prev_b)) + pairs(ind(prev_a), ib)
        self.last_ops = ops.round().to(torch.int64)
        key = (tuple(a.shape), tuple(b.shape))
        if key not in self._dense_cache:
            self._dense_cache[key] = int(pairs(torch.ones_like(a), torch.ones_like(b)))
        self.last_dense = self._dense_cache[key]


class AnalogOp(nn.Module):
    """Stateless stand-in for a graph operation (the ANN reference): computes ``fn`` and, for
    products, records the dense multiply-accumulates of the call in ``last_ops``."""

    def __init__(self, fn: Callable[..., Any], dynamic: tuple[int, ...], label: str = "", product: bool = False):
        super().__init__()
        self.fn, self.dynamic, self.label, self.product = fn, tuple(dynamic), label, product
        self.counting = False
        self.last_ops: torch.Tensor | None = None
        self.last_dense = 0

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.fn(*args, **kwargs)
        if self.counting and self.product:
            ones = list(args)
            for i in self.dynamic:
                ones[i] = torch.ones_like(args[i])
            dense = int(self.fn(*ones, **kwargs).sum())
            self.last_dense = dense
            self.last_ops = torch.tensor(dense, dtype=torch.int64, device=out.device)
        return out


def _layout_key(args: tuple, kwargs: dict) -> tuple | None:
    """What fn's output layout depends on: each tensor argument's shape, strides, dtype and
    device and every other argument's value; None when one is not hashable."""
    def part(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("tensor", value.shape, value.stride(), value.dtype, value.device)
        hash(value)
        return value
    try:
        return tuple(part(a) for a in args), tuple((k, part(v)) for k, v in sorted(kwargs.items()))
    except TypeError:
        return None
