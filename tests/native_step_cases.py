"""A helper shared by the input-map tests (test_input_norm.py, test_residual_fold.py): one native
step from a fixed random state, so that a folded input map and torch's own map can be compared."""

from __future__ import annotations

import torch

from snnbench.methods.snn import fused, native_steps


def step_from_fixed_state(signature: fused.StepSignature, x: torch.Tensor, theta: torch.Tensor, coding: str,
                          first: bool, affine: tuple | None) -> list[torch.Tensor]:
    """``native_steps.step`` at t = 3 on ``x`` (N, C, H, W) from a state seeded the same way on
    every call (b one sample; with ``first`` the initial views, v_0 = 0.25); returns the spikes and
    every state tensor the step wrote."""
    n, c, h, w = x.shape
    state = [torch.randn(x.shape, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    b = (torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(5)), 0) if coding == "differential" else None
    v0 = (torch.full((c * h * w,), 0.25), 0) if first else None
    v, e_in, e_out = state[0], state[1] if coding == "differential" else None, state[2]
    s, _, _ = native_steps.step(signature, x, b, v, e_in, e_out, (theta[0].contiguous(), 0), 3.0, v0, affine)
    return [s, v, e_out] + ([e_in] if e_in is not None else [])
