"""Threshold iteration: the official truncation reproduces dcgs.md §3.4; the converged mode
lands on the minimiser of the quantisation error (checked against scipy)."""

from __future__ import annotations

import math

import numpy as np
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


# --- issue 17: the exact grid. References are independent float64 implementations of the
# released procedure (direct sums over all N boundaries) and of the fixed point (scipy brentq).

GRID_MU = [float(m) for m in np.linspace(-5, 5, 21)]
GRID_VAR = [0.0, 1e-12, 1e-8, 1e-4, 1.0, 100.0]
GRID_N = [16, 256, 257, 1024, 8192, 16384]


def _released_update(theta: np.ndarray, mu: np.ndarray, sigma: np.ndarray, N: int) -> np.ndarray:
    """The released ``calculate_better`` step in float64: θ·k1(θ) with direct sums of erf."""
    from scipy.special import erf

    i = np.arange(1, N + 1, dtype=np.float64)
    with np.errstate(all="ignore"):
        c = ((2 * i - 1) / (2 * N)) * theta[:, None]
        z = (c - mu[:, None]) / (math.sqrt(2) * sigma[:, None])
        e = erf(z)
        term1 = np.sum((1 / N) * e, axis=1)
        term2 = np.sum(((2 * i - 1) / N**2) * e, axis=1)
        g = np.exp(-z * z)
        term3 = np.sum(g, axis=1) / N
        k1 = ((mu / theta) * (1 - term1) + (sigma / (theta * math.sqrt(math.pi / 2))) * term3) / (1 - term2)
        return theta * k1


def _released_procedure(mu: np.ndarray, sigma: np.ndarray, N: int) -> np.ndarray:
    theta = np.ones_like(mu)
    for _ in range(100):
        theta = _released_update(theta, mu, sigma, N)
    return np.where(np.isnan(theta), 1.0, theta)


#: the default run checks a subset (every σ², every regime of μ/σ); ``-m slow`` the full grid
FAST_MU = [-5.0, -2.5, 0.0, 0.5, 2.5, 5.0]
GRID_CASES = [pytest.param(N, GRID_MU, marks=pytest.mark.slow, id=f"full-{N}") for N in GRID_N] + [
    pytest.param(N, FAST_MU, id=f"fast-{N}") for N in (16, 257, 16384)]


def _grid(mus: list[float]) -> tuple[np.ndarray, np.ndarray]:
    mu, var = np.meshgrid(np.array(mus), np.array(GRID_VAR), indexing="ij")
    return mu.ravel(), var.ravel()


@pytest.mark.parametrize("N,mus", GRID_CASES)
def test_official_mode_equals_released_procedure_in_float64(N, mus):
    mu, var = _grid(mus)
    expected = _released_procedure(mu, np.sqrt(var), N)
    got = threshold_iteration(torch.tensor(mu), torch.tensor(var), N, mode="official").double().numpy()
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_issue17_examples():
    # σ = 0, μ = 2: the released procedure in float64 reaches 2 (every boundary below μ)
    assert threshold_iteration(torch.tensor([2.0]), torch.tensor([0.0]), 512, "official").item() == 2.0
    # σ² = 1e-8, μ = 0: the update is 0/0 -> NaN -> the released fallback 1.0
    assert threshold_iteration(torch.tensor([0.0]), torch.tensor([1e-8]), 512, "official").item() == 1.0


def _reference_k1_minus_one(mu: float, sigma: float, N: int):
    """k1(θ) - 1 with float64 direct sums of erfc over all N boundaries (independent of the
    project's closed forms and windows)."""
    from scipy.special import erfc

    odd = 2 * np.arange(1, N + 1, dtype=np.float64) - 1

    def k1_minus_one(theta: float) -> float:
        z = (odd / (2 * N) * theta - mu) / sigma
        q = erfc(z / math.sqrt(2))
        g = np.exp(-0.5 * z * z)
        numer = mu * q.sum() / N + sigma * math.sqrt(2 / math.pi) * g.sum() / N
        with np.errstate(all="ignore"):
            return numer / ((odd * q).sum() / N**2) / theta - 1

    return k1_minus_one


def _fixed_points_reference(mu: float, sigma: float, N: int) -> list[float]:
    """Every root of k1(θ) - 1 that a log scan brackets, each refined by brentq."""
    from scipy.optimize import brentq

    f = _reference_k1_minus_one(mu, sigma, N)
    thetas = max(sigma, abs(mu)) * np.logspace(-3, 2.5, 48)
    values = [f(t) for t in thetas]
    return [brentq(f, a, b, xtol=1e-15 * b, rtol=1e-13)
            for a, b, fa, fb in zip(thetas[:-1], thetas[1:], values[:-1], values[1:]) if fa > 0 and fb <= 0]


@pytest.mark.parametrize("N,mus", GRID_CASES)
def test_converged_mode_equals_fixed_point_on_grid(N, mus):
    """θ is a root of k1 - 1 (a brentq root of the independent reference in a 1e-6 bracket
    around it); where the scan finds exactly one root (unique fixed point, e.g. μ = 0) it is
    that root. For σ ≪ θ/N several θ put a level on μ (all fixed points, QE ≈ σ²); the
    solver picks θ = μ. With no mass above the boundaries in float64, θ = max(μ, 0)."""
    from scipy.optimize import brentq

    mu, var = _grid(mus)
    got = threshold_iteration(torch.tensor(mu), torch.tensor(var), N, mode="converged").double().numpy()
    checked = 0
    for m, v, theta in zip(mu, var, got):
        sigma = math.sqrt(v)
        if sigma <= 1e-12 * (abs(m) + 1):  # σ = 0: a level on μ is exact
            assert theta == pytest.approx(max(m, 0.0), rel=1e-6, abs=1e-30)
            continue
        roots = _fixed_points_reference(m, sigma, N)
        if not roots:
            assert theta == pytest.approx(max(m, 0.0), abs=1e-30), (m, v)
            continue
        f = _reference_k1_minus_one(m, sigma, N)
        a, b = theta * (1 - 1e-6), theta * (1 + 1e-6)
        assert f(a) > 0 >= f(b), (m, v, N, theta, roots)
        assert theta == pytest.approx(brentq(f, a, b, xtol=1e-16 * b), rel=1e-7)
        if len(roots) == 1:
            assert theta == pytest.approx(roots[0], rel=1e-6), (m, v, N)
            checked += 1
    assert checked >= len(mus) * 2


@pytest.mark.parametrize("N", [16, 1024, 16384])
def test_converged_fixed_point_scales_with_sigma_at_zero_mean(N):
    var = torch.tensor([1e-12, 1e-8, 1e-4, 1.0, 100.0], dtype=torch.float64)
    theta = threshold_iteration(torch.zeros(5, dtype=torch.float64), var, N, mode="converged").double()
    ratio = theta / var.sqrt()
    assert torch.allclose(ratio, ratio[3].expand(5), rtol=1e-5)
