"""A fused Triton kernel for one step of the multi-threshold neuron (the paper's "MT neuron on
GPU", docs/dcgs-official-code.md §1.5).

One kernel launch per neuron step reads the input and the neuron state once, chooses the
spike level from the IEEE-754 bits of the membrane potential (integer arithmetic only, as
:func:`snnbench.methods.snn.quantizers.mt_fire_bits`), writes the spike and the updated state once,
and counts the spikes (events and unit spikes) in the same pass with one atomic add per
block. Variants (compile-time constants): differential coding with the ReLU mask, the
signed (unmasked) neuron, rate coding, and an optional ReLU6 ceiling.

It computes exactly the expressions of :mod:`snnbench.methods.snn.fused` in the same order, with
floating-point contraction off, so its spikes, states and counts equal the PyTorch path bit
for bit (tests run it on CPU under ``TRITON_INTERPRET=1``). The engine uses it for CUDA
tensors when Triton is importable (``kernel=auto``) or when forced (``kernel=triton``).
"""

from __future__ import annotations

import os

import torch

try:  # Triton ships with the CUDA torch wheel; the CPU path never needs it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

BLOCK = 1024


def available_on(device: torch.device) -> bool:
    """Whether the kernel can run on ``device`` here (CUDA, or any device under the interpreter)."""
    if triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _mt_step_kernel(x_ptr, b_ptr, v_ptr, ein_ptr, eout_ptr, cout_ptr, s_ptr, theta_ptr, counts_ptr,
                        numel, inner, channels, t, t_minus_one, inv_t, floor_val, ceil_val,
                        N_LEVELS: tl.constexpr, DIFFERENTIAL: tl.constexpr, SIGNED: tl.constexpr,
                        MASKED_LOW: tl.constexpr, FLOOR_ZERO: tl.constexpr, HAS_CEIL: tl.constexpr,
                        HAS_COUT: tl.constexpr,
                        BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        inside = offs < numel
        chan = (offs // inner) % channels
        theta = tl.load(theta_ptr + chan, mask=inside, other=1.0)
        x = tl.load(x_ptr + offs, mask=inside, other=0.0)
        v = tl.load(v_ptr + offs, mask=inside, other=0.0)
        if DIFFERENTIAL:
            b = tl.load(b_ptr + offs, mask=inside, other=0.0)
            e_in = tl.load(ein_ptr + offs, mask=inside, other=0.0)
            e_out = tl.load(eout_ptr + offs, mask=inside, other=0.0)
            d = x - b
            m = (v + d) + (e_in - e_out)
            if FLOOR_ZERO:
                lower = e_out * t
            else:
                lower = (e_out - floor_val) * t
            upper = (ceil_val - e_out) * t
        else:
            m = v + x
            if HAS_COUT:
                c_out = tl.load(cout_ptr + offs, mask=inside, other=0.0)
            else:
                c_out = tl.zeros_like(m)
            lower = c_out - floor_val * t_minus_one
            upper = ceil_val * t - c_out
        # level index from the bit patterns (see quantizers.mt_fire_bits)
        live = theta > 0
        theta_safe = tl.where(live, theta, 1.0)
        theta_bits = theta_safe.to(tl.int32, bitcast=True)
        bound_bits = (0.75 * theta_safe).to(tl.int32, bitcast=True)
        m_bits = m.to(tl.int32, bitcast=True)
        k = ((bound_bits + 8388607) - (m_bits & 0x7FFFFFFF)) >> 23
        negative = m_bits < 0
        if MASKED_LOW:
            low_bits = tl.maximum(lower.to(tl.int32, bitcast=True), 0)
            k_low = ((theta_bits + 8388607) - low_bits) >> 23
            k = tl.where(negative, tl.maximum(k, k_low), k)
        if HAS_CEIL:
            up_bits = tl.maximum(upper.to(tl.int32, bitcast=True), 0)
            k_up = ((theta_bits + 8388607) - up_bits) >> 23
            k = tl.where(negative, k, tl.maximum(k, k_up))
        fire = (k <= N_LEVELS - 1) & live
        if not SIGNED:
            fire = fire & (m > 0)
        k_clamped = tl.minimum(tl.maximum(k, 0), N_LEVELS - 1)
        level_bits = (theta_bits - (k_clamped << 23)) | (m_bits & -2147483648)
        s = tl.where(fire, level_bits.to(tl.float32, bitcast=True), 0.0)
        tl.store(s_ptr + offs, s, mask=inside)
        tl.store(v_ptr + offs, m - s, mask=inside)
        if DIFFERENTIAL:
            tl.store(ein_ptr + offs, e_in + d * inv_t, mask=inside)
            tl.store(eout_ptr + offs, e_out + s * inv_t, mask=inside)
        elif HAS_COUT:
            tl.store(cout_ptr + offs, c_out + s, mask=inside)
        counted = fire & inside
        events = tl.sum(counted.to(tl.int64), axis=0)
        units = tl.sum(tl.where(counted, (1 << (N_LEVELS - 1 - k_clamped)).to(tl.int64), 0), axis=0)
        tl.atomic_add(counts_ptr, events)
        tl.atomic_add(counts_ptr + 1, units)


def _channel_layout(theta: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, int, int]:
    """θ as a flat per-channel vector plus (inner, channels) so that element i uses θ[(i // inner) % channels]."""
    if theta.numel() == 1:
        return theta.reshape(1).float().contiguous(), 1, 1
    full = list(theta.shape)
    full = [1] * (len(shape) - len(full)) + full
    axes = [i for i, size in enumerate(full) if size != 1]
    if len(axes) != 1:
        raise ValueError(f"the Triton MT kernel takes a threshold that varies along one axis; got {tuple(theta.shape)}")
    axis = axes[0]
    inner = 1
    for size in shape[axis + 1:]:
        inner *= int(size)
    return theta.reshape(-1).float().contiguous(), inner, int(full[axis])


def mt_step(x: torch.Tensor, state: dict[str, torch.Tensor | None], theta: torch.Tensor, t: int, n: int,
            coding: str, signed: bool, floor: float | None, ceiling: float | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused MT step. ``state`` holds ``v`` and ``b``/``e_in``/``e_out`` (differential) or
    ``c_out`` (rate, when masked), all contiguous float32 of x's shape; they are updated in
    place. Returns the spikes and ``counts = [events, unit spikes]`` (int64, device)."""
    if triton is None:
        raise RuntimeError("kernel=triton needs Triton (it ships with the CUDA build of torch)")
    x = x.contiguous().float()
    numel = x.numel()
    s = torch.empty_like(x)
    counts = torch.zeros(2, dtype=torch.int64, device=x.device)
    theta_flat, inner, channels = _channel_layout(theta.to(x.device), x.shape)
    tt = torch.tensor(float(t), dtype=torch.float32)
    inv_t = float(1.0 / tt)
    t_minus_one = float(tt - 1)
    differential = coding == "differential"
    dummy = state["v"]
    grid = (triton.cdiv(numel, BLOCK),)
    extra = {} if os.environ.get("TRITON_INTERPRET") == "1" else {"enable_fp_fusion": False}
    _mt_step_kernel[grid](
        x, state.get("b") if differential else dummy, state["v"], state.get("e_in") if differential else dummy,
        state.get("e_out") if differential else dummy, state.get("c_out") if state.get("c_out") is not None else dummy,
        s, theta_flat, counts, numel, inner, channels, float(tt), t_minus_one, inv_t,
        float(floor) if floor is not None else 0.0, float(ceiling) if ceiling is not None else 0.0,
        N_LEVELS=n, DIFFERENTIAL=differential, SIGNED=signed, MASKED_LOW=floor is not None and signed,
        FLOOR_ZERO=floor is not None and floor == 0.0, HAS_CEIL=ceiling is not None,
        HAS_COUT=state.get("c_out") is not None, BLOCK_SIZE=BLOCK, **extra)
    return s, counts


def neuron_step(neuron, x: torch.Tensor, t: int) -> torch.Tensor:
    """Step t of a :class:`~snnbench.methods.snn.neurons.SpikingNeuron` (its state materialised)
    in :func:`mt_step`: the state made contiguous in place first; sets the neuron's counts."""
    state = {"v": neuron.v, "b": neuron.b, "e_in": neuron.e_in, "e_out": neuron.e_out, "c_out": neuron.c_out}
    for name, value in state.items():
        if value is not None and not value.is_contiguous():
            state[name] = value.contiguous()
            setattr(neuron, name, state[name])
    s, neuron.last_counts = mt_step(x, state, neuron.theta, t, neuron.n, neuron.coding, neuron.signed,
                                    neuron.floor, neuron.ceiling)
    return s.view(x.shape)
