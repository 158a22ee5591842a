"""Hand-computed traces of the neurons, and exact decoding of graded and product units."""

from __future__ import annotations

import pytest
import torch

from snnbench.methods.snn.graded import GradedUnit
from snnbench.methods.snn.neurons import SpikingNeuron
from snnbench.methods.snn.units import reset_units


def run(unit, frames):
    return [unit(torch.tensor([x])).item() for x in frames]


def test_differential_mt_neuron_trace():
    """θ=1, n=2 (levels ±1, ±0.5), ReLU mask. Frame 0 is the bias pass (b = 0.25).

    t=1: d=1,  m = 0 + 1 + (0.25 - 0)    = 1.25 -> +1;   v = 0.25, Ē_in = 1.25, Ē_out = 1
    t=2: d=0,  m = 0.25 + 0 + (1.25 - 1) = 0.5  -> +0.5; v = 0,    Ē_out = 1 + 0.5/2 = 1.25
    t=3: d=-1, m = 0 - 1 + 0             = -1   -> -1 (room 3·1.25 >= 1); Ē_out = 1.25 - 1/3
    t=4: d=0,  m = 0                            -> 0
    """
    n = SpikingNeuron(torch.tensor(1.0), rule="mt", n=2, coding="differential", signed=True, floor=0.0)
    spikes = run(n, [0.25, 1.25, 0.25, -0.75, 0.25])
    assert spikes == [0.0, 1.0, 0.5, -1.0, 0.0]
    assert n.e_out.item() == pytest.approx(1.25 - 1 / 3) and n.e_in.item() == pytest.approx(1.25 - 1 / 3)
    assert n.v.item() == pytest.approx(0.0)


def test_relu_mask_keeps_decoded_output_non_negative():
    """b=0; t=1: m=0.5 -> +0.5; t=2: d=-2, m=-2 -> -1 (room 2·0.5 = 1 admits θ);
    t=3: m = -1 + 0 + (-0.5 - 0) = -1.5 wants -1 but room 3·0 = 0 -> 0."""
    n = SpikingNeuron(torch.tensor(1.0), rule="mt", n=2, coding="differential", signed=True, floor=0.0)
    assert run(n, [0.0, 0.5, -2.0, 0.0]) == [0.0, 0.5, -1.0, 0.0]
    assert n.e_out.item() == 0.0 and n.v.item() == pytest.approx(-1.5)
    free = SpikingNeuron(torch.tensor(1.0), rule="mt", n=2, coding="differential", signed=True, floor=None)
    assert run(free, [0.0, 0.5, -2.0, 0.0]) == [0.0, 0.5, -1.0, -1.0]


def test_relu6_ceiling_caps_decoded_output():
    """θ=4, n=1, ceiling 6: t=1 +4 (room 6); t=2 +4 (room 2·(6-4)=4) -> Ē_out = 6; then silent."""
    n = SpikingNeuron(torch.tensor(4.0), rule="mt", n=1, coding="differential", signed=True, floor=0.0, ceiling=6.0)
    assert run(n, [0.0, 100.0, 0.0, 0.0, 0.0]) == [0.0, 4.0, 4.0, 0.0, 0.0]
    assert n.e_out.item() == 6.0


def test_rate_if_neuron_trace():
    """v0 = θ/2 = 0.5, x = 0.25: v = 0.75, 1.0 -> spike (0), 0.25, 0.5, 0.75, 1.0 -> spike."""
    n = SpikingNeuron(torch.tensor(1.0), rule="if", coding="rate", signed=False, floor=0.0)
    assert run(n, [0.25] * 6) == [0, 1, 0, 0, 0, 1]


def test_rate_mt_with_negative_spikes_trace():
    """MTH_with_neg: -θ_k only while the cumulative output C >= θ_k."""
    n = SpikingNeuron(torch.tensor(1.0), rule="mt", n=2, coding="rate", signed=True, floor=0.0)
    assert run(n, [1.0, -1.0, -1.0]) == [1.0, -1.0, 0.0]


def test_reset_restarts_state():
    n = SpikingNeuron(torch.tensor(1.0), rule="mt", n=2, coding="differential")
    first = run(n, [0.25, 1.25, 0.25])
    reset_units(torch.nn.Sequential(n))
    assert run(n, [0.25, 1.25, 0.25]) == first


def test_differential_error_shrinks_like_one_over_t():
    """v_t = t·(Ē_in - Ē_out) (dcgs.md §2.3): decoded error |v|/t falls as O(1/t)."""
    torch.manual_seed(0)
    x = torch.rand(1000) * 3
    n = SpikingNeuron(torch.tensor(2.0), rule="mt", n=8, coding="differential")
    n(torch.zeros(1000))
    for t in range(1, 33):
        n(x if t == 1 else torch.zeros(1000))
        assert torch.allclose(n.v, t * (n.e_in - n.e_out), atol=1e-4)
    assert (n.e_out - x).abs().max() < 2.0 / 128 / 32 * 1.5 + 1e-5


@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_graded_unit_decodes_to_function_of_decoded_input(coding):
    torch.manual_seed(1)
    fn = torch.nn.LayerNorm(6)
    unit = GradedUnit(fn, (0,), coding=coding)
    frames = [torch.randn(3, 6) for _ in range(7)]
    out_sum = torch.zeros(3, 6)
    with torch.no_grad():
        if coding == "differential":
            b = frames[0]
            unit(b)
            e_in = b.clone()
            for t, x in enumerate(frames[1:], start=1):
                out_sum += unit(x) / t
                e_in += (x - b) / t
                assert torch.allclose(out_sum, fn(e_in), atol=1e-5)
        else:
            acc = torch.zeros(3, 6)
            for t, x in enumerate(frames, start=1):
                out_sum += unit(x)
                acc += x
                assert torch.allclose(out_sum / t, fn(acc / t), atol=1e-5)


@pytest.mark.parametrize("coding", ["differential", "rate"])
def test_product_unit_decodes_to_product_of_decoded_operands(coding):
    torch.manual_seed(2)
    unit = GradedUnit(torch.matmul, (0, 1), coding=coding, label="matmul")
    a_frames = [torch.randn(2, 3, 4) for _ in range(6)]
    b_frames = [torch.randn(2, 4, 5) for _ in range(6)]
    if coding == "differential":  # spiking operands are zero at the bias pass
        a_frames[0].zero_()
        b_frames[0].zero_()
    out = torch.zeros(2, 3, 5)
    ea, eb = torch.zeros(2, 3, 4), torch.zeros(2, 4, 5)
    for t, (a, b) in enumerate(zip(a_frames, b_frames)):
        y = unit(a, b)
        if coding == "differential":
            if t == 0:
                assert torch.count_nonzero(y) == 0
                continue
            out += y / t
            ea += a / t
            eb += b / t
            assert torch.allclose(out, ea @ eb, atol=1e-4)
        else:
            out += y
            ea += a
            eb += b
            k = t + 1
            assert torch.allclose(out / k, (ea / k) @ (eb / k), atol=1e-4)


def test_state_assignment_shortcut_matches_module_semantics():
    """StatefulUnit.__setattr__ writes state and per-step attributes straight into the instance
    (no registry checks), and still hands parameters, modules and registered names to nn.Module."""
    unit = SpikingNeuron(torch.tensor(1.0), rule="mt", n=2, coding="differential")
    state = torch.ones(3)
    unit.v = state
    unit.t = 5
    assert unit.__dict__["v"] is state and unit.t == 5
    assert "v" not in unit._buffers and "v" not in dict(unit.named_parameters())
    unit.v = torch.nn.Parameter(torch.zeros(2))  # not a plain type: the normal path registers it
    assert "v" in unit._parameters and "v" not in unit.__dict__
    with pytest.raises(TypeError):
        unit.v = torch.ones(2)  # as nn.Module: a plain tensor cannot replace a parameter
    unit.theta = torch.tensor(2.0)  # a registered buffer keeps being a buffer
    assert unit._buffers["theta"].item() == 2.0 and "theta" not in unit.__dict__
    unit.reset()
    assert unit.t == 0


def test_step_scalar_is_one_tensor_per_value_and_mode():
    from snnbench.methods.snn.units import step_scalar

    a, b = step_scalar(3), step_scalar(3.0)
    assert a is b and a.dtype == torch.get_default_dtype() and a.dim() == 0 and a.item() == 3.0
    assert not a.is_inference()
    with torch.inference_mode():
        c = step_scalar(3)
        assert c is not a and c.is_inference() and c.item() == 3.0
    assert step_scalar(4).item() == 4.0


def test_fused_step_keeps_its_state_tensors(monkeypatch):
    """The compiled step overwrites v, Ē_in, Ē_out in place; the neuron keeps those very tensors
    (not new views of them) and its values equal the eager neuron's."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(2, 3, 4, generator=g) for _ in range(5)]
    theta = torch.full((1, 3, 1), 0.8)
    monkeypatch.setenv("SNNBENCH_NATIVE", "0")  # the inductor step (the native one: test_native_steps.py)
    fast = SpikingNeuron(theta, rule="mt", n=4, coding="differential", fuse=True)
    slow = SpikingNeuron(theta, rule="mt", n=4, coding="differential", fuse=False)
    with torch.inference_mode():
        fast(xs[0]), slow(xs[0])
        state = (fast.v, fast.e_in, fast.e_out)
        for x in xs[1:]:
            assert torch.equal(fast(x), slow(x))
        assert all(a is b for a, b in zip((fast.v, fast.e_in, fast.e_out), state))
        for name in ("v", "e_in", "e_out", "b"):
            assert torch.equal(getattr(fast, name), getattr(slow, name)) and getattr(fast, name).shape == xs[0].shape
