"""Firing rules: the closed-form MT selection equals the comparison ladder and the argmin
definition, including ties at boundaries, the dead zone, saturation and masks."""

from __future__ import annotations

import pytest
import torch

from snnbench.methods.snn.quantizers import (if_fire, mt_fire, mt_fire_argmin, mt_fire_compare, mt_fire_reference,
                                            mt_fire_bits)


def boundary_inputs(theta: float, n: int) -> torch.Tensor:
    """Exact ties at every 0.75·θ_k boundary, just inside/outside, zero, saturation."""
    vals = [0.0, 1.5 * theta, 3 * theta, 100 * theta]
    for k in range(n + 1):
        b = 0.75 * (theta / 2**k)
        vals += [b, torch.nextafter(torch.tensor(b), torch.tensor(0.0)).item(),
                 torch.nextafter(torch.tensor(b), torch.tensor(1e9)).item(), theta / 2**k]
    t = torch.tensor(vals, dtype=torch.float32)
    return torch.cat([t, -t])


@pytest.mark.parametrize("n", [1, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_fast_mt_equals_ladder_on_random_and_tie_inputs(n, signed):
    g = torch.Generator().manual_seed(n)
    theta = torch.rand(1, 64, 1, generator=g) * 3 + 0.01
    theta[0, :3, 0] = torch.tensor([0.0, 1.0, 0.5])  # a dead channel and power-of-two thresholds
    m = torch.randn(50, 64, 33, generator=g) * theta * 1.2
    m[:, :, -1] = 0.0
    assert torch.equal(mt_fire(m, theta, n, signed=signed), mt_fire_reference(m, theta, n, signed=signed))
    for th in (1.0, 0.3, 2.5):
        x = boundary_inputs(th, n)
        assert torch.equal(mt_fire(x, torch.tensor(th), n, signed), mt_fire_reference(x, torch.tensor(th), n, signed))


@pytest.mark.parametrize("n", [1, 4, 8])
def test_fast_mt_equals_ladder_with_masks(n):
    g = torch.Generator().manual_seed(10 + n)
    theta = torch.rand(32, 1, generator=g) + 0.1
    m = torch.randn(32, 500, generator=g) * 2
    lower = torch.rand(32, 500, generator=g) * 2 - 0.2       # some negative rooms: nothing admissible
    upper = torch.rand(32, 500, generator=g) * 2
    lower[:, :20] = (theta / 2 ** torch.randint(0, n, (32, 20), generator=g)).expand(32, 20)  # exact ties
    for lo, hi in ((lower, None), (None, upper), (lower, upper)):
        fast = mt_fire(m, theta, n, signed=True, lower_room=lo, upper_room=hi)
        ref = mt_fire_reference(m, theta, n, signed=True, lower_room=lo, upper_room=hi)
        assert torch.equal(fast, ref)


def equal_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values and equal sign bits (torch.equal alone takes -0.0 == +0.0)."""
    return torch.equal(a, b) and torch.equal(torch.signbit(a), torch.signbit(b))


def compare_cases(n: int) -> list[tuple]:
    """(m, θ, lower room, upper room) cases: random potentials over many magnitudes, ties at every
    boundary, ±0.0, dead and power-of-two thresholds, subnormal levels, rooms with exact ties and
    non-positive rooms."""
    g = torch.Generator().manual_seed(200 + n)
    size = 20000
    m = torch.randn(size, generator=g) * torch.exp(torch.randn(size, generator=g) * 4)
    theta = (torch.rand(size, generator=g) + 0.01) * torch.exp(torch.randn(size, generator=g) * 2)
    theta[:50] = 0.0
    theta[50:100] = 1.0
    theta[100:150] = 2e-38  # levels θ/2^k below the normal range
    m[150:200] = -0.0
    m[200:250] = 0.0
    ties = torch.cat([boundary_inputs(th, n) for th in (1.0, 0.3, 2.5)])
    tie_theta = torch.cat([torch.full_like(boundary_inputs(th, n), th) for th in (1.0, 0.3, 2.5)])
    m, theta = torch.cat([m, ties]), torch.cat([theta, tie_theta])
    k = torch.randint(0, n, m.shape, generator=g)
    lower = torch.where(torch.rand(m.shape, generator=g) < 0.3, theta / 2**k, torch.randn(m.shape, generator=g))
    upper = torch.where(torch.rand(m.shape, generator=g) < 0.3, theta / 2**k, torch.rand(m.shape, generator=g) * 3)
    lower[:300] = -0.0
    return [(m, theta, lo, hi) for lo, hi in ((None, None), (lower, None), (None, upper), (lower, upper))]


@pytest.mark.parametrize("n", [1, 3, 8, 16])
@pytest.mark.parametrize("signed", [True, False])
def test_compare_form_equals_reference_bit_for_bit(n, signed):
    """mt_fire_compare (the compiled kernels' form) is the reference ladder, sign of zero included."""
    for m, theta, lo, hi in compare_cases(n):
        ref = mt_fire_reference(m, theta, n, signed, lo, hi)
        assert equal_bits(mt_fire_compare(m, theta, n, signed, lo, hi), ref)


@pytest.mark.parametrize("n", [1, 8])
def test_compare_form_equals_integer_form_on_normal_levels(n):
    """The eager integer form and the compiled comparison form agree wherever the levels are normal
    floats (the integer form subtracts exponents, which is exact there)."""
    for m, theta, lo, hi in compare_cases(n):
        normal = theta / 2 ** (n - 1) >= torch.finfo(torch.float32).tiny
        m, theta = m[normal], theta[normal]
        lo = lo[normal] if lo is not None else None
        hi = hi[normal] if hi is not None else None
        assert equal_bits(mt_fire_bits(m, theta, n, True, lo, hi), mt_fire_compare(m, theta, n, True, lo, hi))


def test_compiled_fire_takes_the_compare_form_and_equals_eager(monkeypatch):
    """Inside torch.compile, fused.fire selects levels with mt_fire_compare; its spikes equal the
    eager integer form on ties, zeros and rooms."""
    from snnbench.methods.snn import fused

    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return mt_fire_compare(*args, **kwargs)

    m, theta, lo, hi = compare_cases(8)[3]
    normal = theta / 2**7 >= torch.finfo(torch.float32).tiny
    m, theta, lo, hi = m[normal], theta[normal], lo[normal], hi[normal]
    monkeypatch.setattr(fused, "mt_fire_compare", spy)
    step = torch.compile(lambda m, th, lo, hi: fused.fire(m, th, "mt", 8, True, lo, hi), dynamic=True, fullgraph=True)
    compiled = step(m, theta, lo, hi)
    monkeypatch.undo()
    assert calls, "the compiled trace did not go through mt_fire_compare"
    assert equal_bits(compiled, fused.fire(m, theta, "mt", 8, True, lo, hi))
    assert equal_bits(compiled, mt_fire_reference(m, theta, 8, True, lo, hi))


@pytest.mark.parametrize("n", [1, 4, 8])
def test_fast_mt_equals_argmin_definition(n):
    g = torch.Generator().manual_seed(100 + n)
    theta = torch.rand(1, 16, generator=g) * 2 + 0.05
    m = (torch.rand(2000, 16, generator=g) * 2 - 1) * 2 * theta
    assert torch.equal(mt_fire(m, theta, n), mt_fire_argmin(m, theta, n))


def test_mt_hand_values():
    theta = torch.tensor(1.0)
    m = torch.tensor([1.0, 0.75, 0.7499, 0.375, 0.3749, 0.2, 2.0, 1.6, -0.9, 0.0, 0.0058, 0.0059])
    #                θ    tie->θ  θ/2    tie θ/2 θ/4     θ/4  sat  sat   -θ    0  dead(θ/128: 0.00586)
    expected = torch.tensor([1, 1, .5, .5, .25, .25, 1, 1, -1, 0, 0, 1 / 128])
    assert torch.equal(mt_fire(m, theta, 8), expected)
    # n = 1 is a signed IF with boundary 0.75 θ
    assert torch.equal(mt_fire(torch.tensor([0.74, 0.75, -0.8]), theta, 1), torch.tensor([0.0, 1.0, -1.0]))


def test_relu_mask_emits_largest_admissible_negative_level():
    theta = torch.tensor(1.0)
    m = torch.tensor([-1.0, -1.0, -1.0, -0.3])
    room = torch.tensor([2.0, 0.6, 0.1, 1.0])
    # nearest is -1; room 0.6 admits at most 0.5; room 0.1 admits 1/16; -0.3 -> nearest -0.25
    out = mt_fire(m, theta, 8, lower_room=room)
    assert torch.equal(out, torch.tensor([-1.0, -0.5, -0.0625, -0.25]))


def test_if_fire():
    theta = torch.tensor(1.0)
    v = torch.tensor([1.0, 0.99, -0.01, 0.0, 2.5])
    assert torch.equal(if_fire(v, theta), torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0]))
    assert torch.equal(if_fire(v, theta, signed=True), torch.tensor([1.0, 0.0, -1.0, 0.0, 1.0]))
    assert torch.equal(if_fire(v, theta, signed=True, lower_room=torch.tensor([0, 0, 0.5, 0, 0.0])),
                       torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0]))
    assert torch.equal(if_fire(v, torch.tensor(0.0)), torch.zeros(5))
