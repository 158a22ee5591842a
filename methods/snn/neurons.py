"""The spiking neuron of the engine: IF or multi-threshold, under rate or differential coding.

:class:`SpikingNeuron` is ReLU-masked, clipped (ReLU6) or signed; in differential coding it is
the differential neuron of DCGS Theorem 4.4 with the extra membrane term (Ē_in - Ē_out)
(docs/dcgs-official-code.md §2.3). Its step runs eagerly, fused: in a native C loop on one CPU thread
(:mod:`snnbench.methods.snn.native_steps`), else compiled by inductor (:mod:`snnbench.methods.snn.fused`),
or in the Triton MT kernel (:mod:`snnbench.methods.snn.triton_mt`).
"""

from __future__ import annotations

from typing import Literal

import torch

from snnbench.methods.snn import fused, input_norm, native_layout, native_neuron, native_steps
from snnbench.methods.snn.units import Coding, StatefulUnit, step_scalar


class SpikingNeuron(StatefulUnit):
    """A spiking neuron (IF or multi-threshold) under rate or differential coding.

    Args:
        theta: base threshold θ, broadcastable to the input (e.g. ``[1, C, 1, 1]``).
        rule: ``"mt"`` (levels ±θ/2^k, k < n; DCGS) or ``"if"`` (±θ; Rueckauer 2017).
        n: number of MT levels per sign (ignored for IF).
        coding: ``"rate"`` or ``"differential"``.
        signed: allow negative spikes.
        floor: keep the decoded output >= floor (0 for ReLU: the non-negativity mask of
            docs/dcgs-official-code.md §1.4); ``None`` for a free signed neuron.
        ceiling: keep the decoded output <= ceiling (6 for ReLU6); ``None`` for no cap.
        if_v_init: IF initial potential, ``half`` (θ/2, the default) or ``zero``
            (SpikingJelly's default).
        if_negative: signed IF fires -θ at ``below_zero`` (v < 0, default) or
            ``at_or_below_zero`` (v <= 0, the official DCGS code).

    Rate coding, step t (v_0 = θ/2 for IF, 0 for MT):
        m = v + x;  s = fire(m);  v = m - s;  C += s;  decoded output = C / t.
    The masks use the room C - floor·(t-1) below and ceiling·t - C above.

    Differential coding (DCGS Thm 4.4; docs/dcgs-official-code.md §2.3), step t >= 1:
        d = x - b;  m = v + d + (Ē_in - Ē_out);  s = fire(m);  v = m - s;
        Ē_in += d / t;  Ē_out += s / t;  decoded output = Ē_out.
    The masks use the room t·(Ē_out - floor) below and t·(ceiling - Ē_out) above, i.e. a
    spike is admissible only if the decoded output after it stays inside [floor, ceiling].
    The official code tracks the same room as a running sum (``cumulative_out``); the
    two are equal in exact arithmetic.
    """

    def __init__(self, theta: torch.Tensor, rule: Literal["mt", "if"] = "mt", n: int = 8,
                 coding: Coding = "differential", signed: bool = True, floor: float | None = 0.0,
                 ceiling: float | None = None, fuse: bool = False,
                 kernel: Literal["auto", "torch", "triton"] = "auto", if_v_init: str = "half",
                 if_negative: str = "below_zero") -> None:
        super().__init__()
        if if_v_init not in ("half", "zero") or if_negative not in ("below_zero", "at_or_below_zero"):
            raise ValueError(f"if_v_init must be half|zero and if_negative below_zero|at_or_below_zero, got "
                             f"{if_v_init!r}, {if_negative!r}")
        self.if_v_init, self.if_negative = if_v_init, if_negative
        #: the rule the step functions see: IF with v <= 0 negative firing is ``if_le``
        self.fire_rule = "if_le" if rule == "if" and if_negative == "at_or_below_zero" else rule
        if rule not in ("mt", "if"):
            raise ValueError(f"neuron rule must be 'mt' or 'if', got {rule!r}")
        if coding not in ("rate", "differential"):
            raise ValueError(f"coding must be 'rate' or 'differential', got {coding!r}")
        if rule == "mt" and n < 1:
            raise ValueError("an MT neuron needs n >= 1 levels")
        self.register_buffer("theta", torch.as_tensor(theta, dtype=torch.float32).clamp_min(0))
        self.rule, self.n, self.coding = rule, int(n), coding
        # floats (not ints): the fused step is specialised on these values (fused.StepSignature)
        self.signed = bool(signed)
        self.floor = None if floor is None else float(floor)
        self.ceiling = None if ceiling is None else float(ceiling)
        self.fuse = fuse
        if kernel not in ("auto", "torch", "triton"):
            raise ValueError(f"kernel must be auto, torch or triton; got {kernel!r}")
        if kernel == "triton" and rule != "mt":
            raise ValueError("the Triton kernel implements the MT neuron; use kernel=torch for IF neurons")
        self.kernel = kernel
        #: [events, unit spikes] of the last step, when the neuron counted them itself: set
        #: ``count_spikes`` (the op counter does) and each step fills it, in the Triton
        #: kernel's pass or, with ``fuse``, in one compiled reduction over the spikes
        self.last_counts: torch.Tensor | None = None
        self.count_spikes = False
        #: with ``count_positions`` too (set by the op counter when a convolution reads these
        #: spikes directly), the same pass also leaves the per-position spike counts over
        #: batch and channels in ``last_hits`` (see ``fused.position_hits``)
        self.count_positions = False
        self.last_hits: torch.Tensor | None = None
        self.needs_rooms = floor is not None and signed or ceiling is not None
        #: SNN Calibration's corrections (rate coding): a constant added to the input at
        #: every step (bias correction) and a replacement initial potential (potential correction)
        self.register_buffer("input_bias", None)
        self.register_buffer("v_init", None)
        #: (the BatchNorm2d feeding this neuron,) once input_norm.install folded it in, else ();
        #: (bn, skip's bn) for a residual block whose skip branch has its own batch norm
        self.input_norm: tuple[torch.nn.Module, ...] = ()
        #: a residual block's skip branch folded in too (the ``skip`` argument): "" none, "x" as
        #: it is, "norm" through ``input_norm[1]`` (input_norm.install)
        self.input_skip = ""
        for name in ("v", "b", "e_in", "e_out", "c_out"):
            self.register_state(name)
        self._theta_flat: tuple[tuple, torch.Tensor] | None = None
        self._theta_row: tuple[tuple, tuple[torch.Tensor, int]] | None = None
        #: b at the input's size for the inductor kernel when b is kept as one sample (id of b, full b)
        self._b_full: tuple[int, torch.Tensor] | None = None
        #: the repeated native step (native_neuron.Plan; exactly this class: subclasses step otherwise)
        self._native_plan: native_neuron.Plan | None = None

    def reset(self) -> None:
        self._native_plan = None  # it holds the state tensors
        super().reset()

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        return {**state, "_native_plan": None}  # a loaded kernel is not copied or pickled

    def extra_repr(self) -> str:
        shape = tuple(self.theta.shape)
        return (f"rule={self.rule}, n={self.n}, coding={self.coding}, signed={self.signed}, "
                f"floor={self.floor}, ceiling={self.ceiling}, theta_shape={shape}")

    def unit_amplitude(self) -> torch.Tensor:
        """Amplitude of one unit spike: θ/2^(n-1) for MT, θ for IF."""
        return self.theta / 2 ** (self.n - 1) if self.rule == "mt" else self.theta

    def can_emit_unit_magnitude(self) -> bool:
        """Whether a spike of this neuron can be exactly ±1: its levels are ±θ/2^k (k < n) for MT
        and ±θ for IF, so only when some θ is 2^k (an IF θ of 1). The op counter uses it to know
        that an input of this neuron's spikes lies in {-1, 0, 1} iff it has no spike at all,
        without reading the spikes (cached per θ tensor and version)."""
        key = (id(self.theta), self.theta._version, self.rule, self.n)
        cached = getattr(self, "_unit_magnitude_cache", None)
        if cached is None or cached[0] != key:
            k = torch.arange(self.n if self.rule == "mt" else 1, dtype=torch.float32, device=self.theta.device)
            levels = self.theta.detach().float().reshape(-1, 1) / torch.pow(2.0, k)
            cached = self._unit_magnitude_cache = (key, bool((levels == 1).any()))
        return cached[1]

    def _initial_v(self, like: torch.Tensor) -> torch.Tensor:
        """v_0 broadcastable to ``like``: the calibrated v_init, else θ/2 (IF, half) or 0."""
        if self.v_init is not None:
            return self.v_init.to(like.dtype)
        half = self.rule == "if" and self.if_v_init == "half"
        return self.theta / 2 if half else torch.zeros_like(self.theta)

    def initial_potential(self, like: torch.Tensor) -> torch.Tensor:
        return self._initial_v(like).expand_as(like).clone()

    def _initial_views_apply(self, x: torch.Tensor, copied: bool = False) -> bool:
        """Whether the initial state may be kept as broadcast views for the native first step
        (:meth:`_start_from_views`): the native step may run here and ``x`` is a plain contiguous
        (or, ``copied``, to be made contiguous) float32 CPU tensor."""
        return (self.fuse and x.ndim >= 1 and x.device.type == "cpu" and x.dtype == torch.float32
                and (copied or x.is_contiguous()) and not x.requires_grad and native_steps.enabled()
                and torch.get_num_threads() == 1 and not self._use_triton(x))

    def _start_from_views(self, x: torch.Tensor, e_in: torch.Tensor | None) -> None:
        """The initial state as broadcast views, no copy: v = v_0, Ē_in = b (``e_in``), Ē_out =
        C = 0. The native first step (native_steps.step with v0) reads them as rows and writes
        the state at full size; any other step first materialises them (:meth:`_materialized`),
        so the values every reader sees are those of the copies this replaces."""
        zero = torch.zeros((), dtype=x.dtype, device=x.device).expand(x.shape)
        self.v = self._initial_v(x).expand(x.shape)
        if self.coding == "differential":
            self.e_in, self.e_out = e_in.expand(x.shape), zero
        elif self.needs_rooms:
            self.c_out = zero
        self.initial_views = True

    def _materialized(self) -> None:
        """The initial state views (:meth:`_start_from_views`) as the full-size tensors they stand for."""
        if self.initial_views:
            self.initial_views = False
            for name in ("v", "e_in", "e_out", "c_out"):
                value = getattr(self, name)
                if value is not None:
                    setattr(self, name, value.clone(memory_format=torch.contiguous_format))

    def set_corrections(self, input_bias: torch.Tensor | None = None, v_init: torch.Tensor | None = None) -> None:
        """Install SNN Calibration's bias (added to every input) and/or initial potential."""
        if input_bias is not None:
            self.input_bias = input_bias.detach().float()
        if v_init is not None:
            self.v_init = v_init.detach().float()

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """Step on ``x``; ``skip``: the residual branch input_norm.install folded in (else None)."""
        if self._native_plan is not None and (s := native_neuron.fast_step(self, x, skip)) is not None:
            return s
        affine = input_norm.pending(self, x, skip) if self.input_norm else None  # folded into the native step
        if self.input_norm and affine is None:
            x = input_norm.apply_torch(self, x, skip)
        if self.input_bias is not None:
            x = x + self.input_bias
        if self.fuse and not x.is_contiguous() and not (self.v is not None and native_steps.reads_in_place(x)):
            # the inductor step runs on a flat view: permuted attention views of q, k, v are
            # copied, except where the native step reads them in place (after the first frame)
            x = x.contiguous()
        step = self._rate_step if self.coding == "rate" else self._differential_step
        return step(x) if affine is None else step(x, affine)  # subclasses' steps take no affine (never folded)

    def replay_first_frame(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> None:
        """The bias pass's state as :meth:`_differential_step` sets it from broadcast views, b
        derived once per recorded input; the full frame where the views do not apply."""
        if self.coding != "differential" or self.t != 0 or self.input_bias is not None \
                or torch.is_grad_enabled() or not self._initial_views_apply(x, copied=True):
            return super().replay_first_frame(x, *(() if skip is None else (skip,)))
        inputs = [x] if skip is None else [x, skip]  # at t = 0 never folded: torch's kernels
        mapped = (lambda: input_norm.apply_torch(self, x, skip)) if self.input_norm else (lambda: x)
        self.b = self._recorded(inputs, lambda: [native_layout.bias_input(mapped().contiguous())])[0]
        self.t, self.last_counts, self.last_hits = 1, None, None
        self._start_from_views(x, self.b)

    # -- the functional step (methods/snn/frame.py) -------------------------------------------
    def frame_state(self) -> tuple[torch.Tensor, ...]:
        self._materialized()
        if self.coding == "differential":
            return self.b, self.v, self.e_in, self.e_out
        return (self.v,) if self.c_out is None else (self.v, self.c_out)

    def frame_step(self, t: torch.Tensor | int, state: tuple[torch.Tensor, ...], /, x: torch.Tensor,
                   skip: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """A step t >= 1 (after differential coding's bias pass / rate coding's first step) through
        the same step function of fused.py that :meth:`forward` runs (here on shaped tensors and
        without counts): inside a compiled network frame, inductor fuses it with its neighbours."""
        x = input_norm.apply_torch(self, x, skip) if self.input_norm else x
        if self.input_bias is not None:
            x = x + self.input_bias
        step = fused.step_function(self.coding)
        static = (self.fire_rule, self.n, self.signed, self.floor, self.ceiling)
        if self.coding == "differential":
            b, v, e_in, e_out = state
            s, v, e_in, e_out, _, _ = step(x, b, v, e_in, e_out, self.theta, t, *static)
            return s, (b, v, e_in, e_out)
        c_out = state[1] if len(state) > 1 else None
        s, v, c_out, _, _ = step(x, state[0], c_out, self.theta, t, *static)
        return s, ((v,) if c_out is None else (v, c_out))

    def advance(self, state: tuple[torch.Tensor, ...]) -> None:
        if self.coding == "differential":
            self.b, self.v, self.e_in, self.e_out = state
        else:
            self.v, self.c_out = state[0], (state[1] if len(state) > 1 else None)
        self.t += 1
        self.last_counts = self.last_hits = None

    def _use_triton(self, x: torch.Tensor) -> bool:
        if self.kernel == "torch" or self.rule != "mt" or (self.kernel == "auto" and not x.is_cuda):
            return False
        from snnbench.methods.snn import triton_mt

        if self.kernel == "triton":
            if not triton_mt.available_on(x.device):
                raise RuntimeError("kernel=triton needs a CUDA device (or TRITON_INTERPRET=1 for the CPU interpreter); "
                                   "use kernel=torch or kernel=auto")
            return True
        return x.is_cuda and triton_mt.available_on(x.device)

    def _triton_step(self, x: torch.Tensor, t: int) -> torch.Tensor:
        from snnbench.methods.snn import triton_mt

        self._materialized()
        return triton_mt.neuron_step(self, x, t)

    def _signature(self, positions: bool = False) -> fused.StepSignature:
        return fused.StepSignature.of(self.coding, self.fire_rule, self.n, self.signed, self.floor, self.ceiling,
                                      rooms=self.c_out is not None, count=self.count_spikes, positions=positions)

    def _theta_key(self, x: torch.Tensor) -> tuple:
        """What a cached layout of θ depends on: the input's shape, dtype and device and θ itself
        (identity and version: a threshold rule or a loaded state changes it; an inference tensor
        keeps no version)."""
        theta = self.theta
        return x.shape, x.dtype, x.device, id(theta), 0 if theta.is_inference() else theta._version

    def _flat_theta(self, x: torch.Tensor) -> torch.Tensor:
        """θ expanded to ``x``'s shape and flattened, cached (the inductor step runs on flat
        tensors: one compilation for every layer shape; see fused.py)."""
        key, cached = self._theta_key(x), self._theta_flat
        if cached is None or cached[0] != key:
            flat = self.theta.to(x.dtype).expand(x.shape).reshape(-1).contiguous()
            cached = self._theta_flat = (key, flat)
        return cached[1]

    def _row_theta(self, x: torch.Tensor, positions: bool) -> tuple:
        """θ for the native step: with ``positions`` (the loop walks channel rows anyway) one value
        per channel where θ varies along the channels only (:func:`native_layout.channel_layout`),
        else one sample's row with row stride 0 (θ does not vary over the batch;
        :func:`native_layout.row_layout`), cached like :meth:`_flat_theta`. Without positions
        the flat loop is faster (64x4x24x17: 130 vs 157 µs; BENCHMARKS.md §1)."""
        key, cached = (*self._theta_key(x), x.is_contiguous(), positions), self._theta_row
        if cached is None or cached[0] != key:
            theta = self.theta.to(x.dtype)
            per_channel = native_layout.channel_layout(theta, x) if positions else None
            cached = self._theta_row = (key, per_channel or native_layout.row_layout(theta, x))
        return cached[1]

    def _full_b(self, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """b at ``x``'s size for the inductor kernel (b is kept as one sample when every sample's
        bias-pass input is the same; the expansion is made once per bias pass)."""
        if b.shape == x.shape:
            return b
        cached = self._b_full
        if cached is None or cached[0] != id(b) or cached[1].shape != x.shape:
            cached = self._b_full = (id(b), b.expand(x.shape).contiguous())
        return cached[1]

    def _run(self, x: torch.Tensor, *state: torch.Tensor | None, theta_position: int, affine: tuple | None = None) -> tuple:
        """One step through :func:`fused.run_step`: eager on ``x``-shaped tensors, fused on flat
        views of them; returns (s, *new state, counts), the tensors shaped like ``x``."""
        signature = self._signature(positions=self.count_positions and x.ndim >= 3)
        positions = x[0, 0].numel() if signature.positions else None
        if self.fuse and (native := native_neuron.run(self, signature, x, state, affine,
                                                      plan=type(self) is SpikingNeuron)) is not None:
            return native
        x = input_norm.apply_torch(self, x, affine[3] if len(affine) > 3 else None) if affine is not None else x  # not folded after all
        if self.initial_views:  # the initial views become tensors (this step may overwrite them)
            self._materialized()
            state = (self.b, self.v, self.e_in, self.e_out) if self.coding == "differential" else (self.v, self.c_out)
        if not self.fuse:
            tensors = [x, *state]
            tensors.insert(theta_position, self.theta)
            *out, counts, hits = fused.run_step(signature, False, *tensors, self._t_tensor(), positions=positions)
        else:
            if self.coding == "differential":  # b may be kept as one sample (see _differential_step)
                state = (self._full_b(state[0], x), *state[1:])
            flat_state = [s.reshape(-1) if s is not None else None for s in state]
            flat = [x.reshape(-1), *flat_state]
            flat.insert(theta_position, self._flat_theta(x))
            *out, counts, hits = fused.run_step(signature, True, *flat, self._t_tensor(), positions=positions)
            # a state the kernel overwrote comes back as the flat view of it that it was given:
            # keep the shaped tensor itself instead of a new view
            shaped_of = {id(f): s for f, s in zip(flat_state, state) if f is not None and s.is_contiguous()}
            out = [_shaped(new, shaped_of, x.shape) for new in out]
        self.last_hits = hits.view(x.shape[2:]) if hits is not None else None
        return (*out, counts)

    def _t_tensor(self) -> torch.Tensor:
        t = self.t if self.coding == "rate" else self.t - 1
        return step_scalar(t)  # a CPU scalar: no host-to-device copy (or sync) per step

    def _rate_step(self, x: torch.Tensor, affine: tuple | None = None) -> torch.Tensor:
        self.t += 1
        if self.v is None:
            if self._initial_views_apply(x):
                self._start_from_views(x, None)
            else:
                self.v = self.initial_potential(x)
                if self.needs_rooms:
                    self.c_out = torch.zeros_like(x)
        self.last_counts = self.last_hits = None
        if self._use_triton(x):
            return self._triton_step(x, self.t)
        s, self.v, self.c_out, counts = self._run(x, self.v, self.c_out, theta_position=3, affine=affine)
        self.last_counts = counts
        return s

    def _differential_step(self, x: torch.Tensor, affine: tuple | None = None) -> torch.Tensor:
        t = self.t
        self.t += 1
        if t == 0:  # bias pass: remember the constant part of the input, emit nothing
            self.last_counts = self.last_hits = None
            self.b = native_layout.bias_input(x)
            if self._initial_views_apply(x):
                self._start_from_views(x, self.b)  # Ē_in = b: the bias pass's input, as b keeps it
            else:
                self.e_in = x.clone()
                self.e_out = torch.zeros_like(x)
                self.v = self.initial_potential(x)
            return torch.zeros_like(x)
        self.last_counts = self.last_hits = None
        if self._use_triton(x):
            return self._triton_step(x, t)
        s, self.v, self.e_in, self.e_out, counts = self._run(x, self.b, self.v, self.e_in, self.e_out,
                                                             theta_position=5, affine=affine)
        self.last_counts = counts
        return s


def _shaped(flat: torch.Tensor | None, shaped_of: dict[int, torch.Tensor], shape: torch.Size) -> torch.Tensor | None:
    """A fused step's flat output in the input's shape: the state tensor it is a view of when the
    kernel overwrote that state (``shaped_of``: id of the flat view -> shaped tensor), else a view."""
    if flat is None:
        return None
    shaped = shaped_of.get(id(flat))
    return shaped if shaped is not None else flat.view(shape)
