"""The generalized threshold iteration (H-MT, Zhang et al., AAAI-26, §4.2 and Appendix E).

The quantiser f(x; θ, a, b) = (θ/N)·clip(⌊N·x/θ + ½⌋, a, b) (H-MT Eq. 24) has step h = θ/N and the
integer levels a..b (a <= 0 <= b, a < b). Its squared error against y = x under x ~ N(μ, σ²) is
QE(θ, a, b) (Eq. 23); with a = 0 the target max(x, 0) gives the same error up to a constant that does
not depend on θ (f = 0 wherever x < h/2), so one rule serves ReLU and identity sites. The update
θ <- θ·k1(θ) (Eq. 29; Algorithm 1) is the closed-form best rescaling of the levels for fixed decision
boundaries (Lemma 4.4): k1 = E[x·f] / E[f²]. With c_i = (2i-1)h/2, e_i = erf((c_i-μ)/(√2σ)),
g_i = exp(-(c_i-μ)²/(2σ²)) for i = a+1..b:

    E[f²] = (h²/2)·[a² + b² - Σ(2i-1)e_i],   E[x·f] = (h/2)·[μ(a + b - Σe_i) + σ√(2/π)·Σg_i],
    θ_new = N·[μ(a + b - Σe_i) + σ√(2/π)Σg_i] / [a² + b² - Σ(2i-1)e_i]          (Eq. 29 times θ).

With a = 0, b = N this is the DCGS update (:func:`snnbench.methods.snn.thresholds.iteration_update`). H-MT uses N = T and b = T·(2^n - 1) for its Pos
neuron at a ReLU (θ is then λ_min; Eq. 20), a = -b for the full neuron at y = x; the released code
starts at θ = 1 and runs 1500 updates (``OFFICIAL_GENERALIZED_STEPS``).

Shared by the ``hmt`` method and the engine's ``hmt_iteration`` threshold rule; the DCGS
special case (a = 0, b = N) and the bisection both use are in :mod:`snnbench.methods.snn.thresholds`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from snnbench.methods.snn.thresholds import CHUNK_ELEMENTS, OFFICIAL_THETA0, bisect_unit_gain, converged_moments

#: level ranges up to this many levels are summed directly; wider ones use the closed form
GENERALIZED_DIRECT_SUM_MAX_LEVELS = 256
#: updates of the released H-MT code (threshold_getter.py ``get_scale_from_var``)
OFFICIAL_GENERALIZED_STEPS = 1500
#: the released H-MT code adds this to the variance before the square root
OFFICIAL_GENERALIZED_VAR_EPS = 1e-8


def generalized_iteration_sums(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int, a: int, b: int
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σe_i, Σg_i and Σ(2i-1)e_i over the boundaries i = a+1..b (direct for <= 256 terms)."""
    if b - a > GENERALIZED_DIRECT_SUM_MAX_LEVELS:
        return _generalized_sums_closed_form(theta, mu, sigma, N, a, b)
    return _generalized_sums_direct(theta, mu, sigma, N, a, b)


def _generalized_sums_direct(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int, a: int, b: int
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    flat_shape = torch.broadcast_shapes(theta.shape, mu.shape, sigma.shape)
    theta, mu, sigma = (t.reshape(-1) for t in torch.broadcast_tensors(theta, mu, sigma))
    odd = 2 * torch.arange(a + 1, b + 1, dtype=theta.dtype, device=theta.device) - 1  # 2i - 1
    out_e, out_g, out_w = [], [], []
    rows = max(1, CHUNK_ELEMENTS // max(b - a, 1))
    for start in range(0, theta.numel(), rows):
        th, m, s = theta[start:start + rows, None], mu[start:start + rows, None], sigma[start:start + rows, None]
        z = (odd * th / (2 * N) - m) / s
        e = torch.erf(z / math.sqrt(2))
        out_e.append(e.sum(dim=1))
        out_g.append(torch.exp(-0.5 * z * z).sum(dim=1))
        out_w.append((e * odd).sum(dim=1))
    cat = lambda parts: torch.cat(parts).reshape(flat_shape)  # noqa: E731
    return cat(out_e), cat(out_g), cat(out_w)


def _generalized_sums_closed_form(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int, a: int,
                                  b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Midpoint-rule closed form on [a·h, b·h] (see :func:`snnbench.methods.snn.thresholds.iteration_sums_closed_form`,
    there a = 0, b = N)."""
    out_dtype = theta.dtype
    theta, mu, sigma = (t.double() for t in torch.broadcast_tensors(theta, mu, sigma))
    h = theta / N
    x0, x1 = a * h, b * h
    u0, u1 = (x0 - mu) / sigma, (x1 - mu) / sigma
    root2, sqrt_2_pi = math.sqrt(2.0), math.sqrt(2.0 / math.pi)
    erf0, erf1 = torch.erf(u0 / root2), torch.erf(u1 / root2)
    gau0, gau1 = torch.exp(-0.5 * u0 * u0), torch.exp(-0.5 * u1 * u1)
    F = lambda u, e, g: u * e + sqrt_2_pi * g  # noqa: E731 - ∫ erf(u/√2) du
    G = lambda u, e, g: 0.5 * (u * u - 1) * e + u * g / math.sqrt(2 * math.pi)  # noqa: E731 - ∫ u·erf(u/√2) du
    int_e = sigma * (F(u1, erf1, gau1) - F(u0, erf0, gau0))
    int_g = sigma * math.sqrt(math.pi / 2) * (erf1 - erf0)
    int_xe = mu * int_e + sigma**2 * (G(u1, erf1, gau1) - G(u0, erf0, gau0))
    de = lambda g: sqrt_2_pi * g / sigma  # noqa: E731
    dg = lambda u, g: -u * g / sigma  # noqa: E731
    sum_e = int_e / h - h / 24 * (de(gau1) - de(gau0))
    sum_g = int_g / h - h / 24 * (dg(u1, gau1) - dg(u0, gau0))
    sum_ce = int_xe / h - h / 24 * ((erf1 + x1 * de(gau1)) - (erf0 + x0 * de(gau0)))
    return sum_e.to(out_dtype), sum_g.to(out_dtype), (2 * sum_ce / h).to(out_dtype)


def generalized_iteration_update(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int, a: int, b: int
                                 ) -> torch.Tensor:
    """One step θ <- θ·k1(θ) of H-MT Algorithm 1 (Eq. 29)."""
    sum_e, sum_g, sum_w = generalized_iteration_sums(theta, mu, sigma, N, a, b)
    numer = mu * (a + b - sum_e) + sigma * math.sqrt(2 / math.pi) * sum_g
    denom = a * a + b * b - sum_w
    return N * numer / denom


def check_level_range(N: int, a: int, b: int) -> None:
    if N < 1:
        raise ValueError(f"the generalized threshold iteration needs N >= 1, got {N}")
    if not (a <= 0 <= b and a < b):
        raise ValueError(f"the generalized threshold iteration needs integers a <= 0 <= b with a < b, got a={a}, b={b}")


def generalized_threshold_iteration(mean: torch.Tensor, var: torch.Tensor, N: int, a: int, b: int,
                                    mode: Literal["official", "converged"] = "official",
                                    steps: int = OFFICIAL_GENERALIZED_STEPS, tol: float = 1e-10) -> torch.Tensor:
    """θ (the step is θ/N) minimising QE(θ, a, b) of H-MT Eq. 23 per element of ``mean``/``var``.

    ``official``: the released H-MT code: θ_0 = 1, ``steps`` float32 updates with σ = √(var + 1e-8),
    NaN -> 1. ``converged``: the unique root of k1(θ) = 1 (Lemma 4.7: k1 > 1 below it, < 1 above it)
    by float64 bisection to relative width ``tol``; σ = 0 (a point mass at μ) puts μ on the outermost
    level of its sign (θ = N·μ/b or N·|μ|/|a|), and θ = 0 when μ < 0 and a = 0 (as DCGS's rule).
    """
    check_level_range(N, a, b)
    if mode == "official":
        mu = mean.float()
        sigma = (var.float().clamp_min(0) + OFFICIAL_GENERALIZED_VAR_EPS).sqrt()
        theta = torch.full_like(mu, OFFICIAL_THETA0)
        for _ in range(steps):
            theta = generalized_iteration_update(theta, mu, sigma, N, a, b)
        return torch.nan_to_num(theta, nan=OFFICIAL_THETA0)
    if mode != "converged":
        raise ValueError(f"iteration mode must be 'official' or 'converged', got {mode!r}")
    mu, sigma_safe, degenerate = converged_moments(mean, var)

    def k1_minus_one(theta: torch.Tensor) -> torch.Tensor:
        return generalized_iteration_update(theta, mu, sigma_safe, N, a, b) / theta - 1

    span = max(b, -a)
    lo = torch.full_like(mu, 1e-9) * sigma_safe
    hi = ((mu.abs() + 12 * sigma_safe) * N / max(min(b, span), 1)).clamp_min(1e-6)
    theta, _ = bisect_unit_gain(k1_minus_one, lo, hi, widen_steps=80, tol=tol)
    # a point mass: put it on the outermost level of its sign; below a ReLU's zero level θ = 0 (silent)
    point = torch.where(mu >= 0, N * mu / b, N * mu.abs() / -a if a < 0 else torch.zeros_like(mu))
    theta = torch.where(degenerate, point, theta)
    return torch.nan_to_num(theta, nan=0.0).float()


def generalized_quantisation_error(theta: float, mu: float, sigma: float, N: int, a: int, b: int) -> float:
    """QE(θ, a, b) = E[(f(x; θ, a, b) - x)²] for x ~ N(μ, σ²), exactly, bin by bin (H-MT Eq. 23-24).

    Each bin [c_j, c_{j+1}) with level L = j·h contributes L²·P - 2L·E[x; bin] + E[x²; bin], with the
    Gaussian partial moments from the normal cdf/pdf (float64 NumPy/SciPy, vectorised over the bins).
    The brute-force reference of the tests.
    """
    import numpy as np
    from scipy.special import ndtr

    h = theta / N
    inner = (2 * np.arange(a + 1, b + 1, dtype=np.float64) - 1) * h / 2
    z = np.concatenate([[-np.inf], (inner - mu) / sigma, [np.inf]])
    pdf = np.where(np.isfinite(z), np.exp(-0.5 * np.square(np.where(np.isfinite(z), z, 0.0))) / math.sqrt(2 * math.pi),
                   0.0)
    z_pdf = np.where(np.isfinite(z), z, 0.0) * pdf
    cdf = ndtr(z)
    p = np.diff(cdf)
    d_pdf = pdf[:-1] - pdf[1:]
    e_x = mu * p + sigma * d_pdf                                                     # E[x; bin]
    e_x2 = (mu * mu + sigma * sigma) * p + 2 * mu * sigma * d_pdf + sigma * sigma * (z_pdf[:-1] - z_pdf[1:])
    level = np.arange(a, b + 1, dtype=np.float64) * h
    return float(np.sum(level * level * p - 2 * level * e_x + e_x2))
