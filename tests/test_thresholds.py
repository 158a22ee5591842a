"""Threshold iteration: the official truncation reproduces dcgs.md §3.4; the converged mode
lands on the minimiser of the quantisation error (checked against scipy)."""

from __future__ import annotations

import pytest
import torch

from snnbench.methods.snn.thresholds import quantisation_error, threshold_iteration


@pytest.mark.parametrize("N,expected", [(16, 2.91), (64, 3.19), (128, 3.21), (1024, 3.22)])
def test_official_mode_reproduces_released_code(N, expected):
    theta = threshold_iteration(torch.zeros(1), torch.ones(1), N, mode="official")
    assert theta.dtype == torch.float32
    assert theta.item() == pytest.approx(expected, abs=0.006)


def test_official_mode_shifted_gaussian_and_nan_rule():
    # dcgs.md §3.4: N = 2048 (n = 8, T = 8), μ = -1, σ = 0.71 -> 1.72 after 100 steps
    theta = threshold_iteration(torch.tensor([-1.0]), torch.tensor([0.71**2]), 2048, mode="official")
    assert theta.item() == pytest.approx(1.72, abs=0.01)
    # σ = 0 makes the update NaN; the released code maps NaN to 1
    assert threshold_iteration(torch.tensor([0.5]), torch.tensor([0.0]), 64, mode="official").item() == 1.0


@pytest.mark.parametrize("N,mu,sigma", [(4, 0.0, 1.0), (16, 0.0, 1.0), (8, 0.3, 0.5), (32, -0.5, 1.2)])
def test_converged_mode_minimises_quantisation_error(N, mu, sigma):
    from scipy.optimize import minimize_scalar

    theta = threshold_iteration(torch.tensor([mu]), torch.tensor([sigma**2]), N, mode="converged").item()
    best = minimize_scalar(lambda th: quantisation_error(th, mu, sigma, N), bounds=(0.05, mu + 10 * sigma),
                           method="bounded", options={"xatol": 1e-7})
    assert theta == pytest.approx(best.x, rel=2e-4)
    assert quantisation_error(theta, mu, sigma, N) <= best.fun * (1 + 1e-6)


def test_converged_beats_official_for_large_N():
    """dcgs.md §3.4: for N >= 64 the 100-step iteration stops well short of the optimum."""
    off = threshold_iteration(torch.zeros(1), torch.ones(1), 1024, mode="official").item()
    conv = threshold_iteration(torch.zeros(1), torch.ones(1), 1024, mode="converged").item()
    assert conv == pytest.approx(4.77, abs=0.03) and off < conv
    assert quantisation_error(conv, 0, 1, 1024) < quantisation_error(off, 0, 1, 1024) / 10


def test_vectorised_over_channels_equals_one_at_a_time():
    mean = torch.tensor([[0.0], [0.5], [-0.3]])
    var = torch.tensor([[1.0], [0.2], [2.0]])
    batch = threshold_iteration(mean, var, 32, mode="converged")
    for i in range(3):
        single = threshold_iteration(mean[i], var[i], 32, mode="converged")
        assert batch[i].item() == pytest.approx(single.item(), rel=1e-6)
    assert batch.shape == (3, 1)


@pytest.mark.parametrize("N", [257, 1024, 8192])
def test_closed_form_boundary_sums_equal_direct_sums(N):
    from snnbench.methods.snn.thresholds import iteration_sums_closed_form, iteration_sums_direct

    torch.manual_seed(N)
    theta = torch.rand(40, dtype=torch.float64) * 4 + 0.1
    mu = torch.randn(40, dtype=torch.float64)
    sigma = torch.rand(40, dtype=torch.float64) + 0.05
    for direct, closed in zip(iteration_sums_direct(theta, mu, sigma, N), iteration_sums_closed_form(theta, mu, sigma, N)):
        assert torch.allclose(closed, direct, rtol=1e-7, atol=1e-6)
