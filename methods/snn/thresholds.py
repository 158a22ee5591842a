"""Threshold rules: from calibration statistics to a base threshold θ per site.

* ``percentile``/``max``: θ = the statistic of the quantised value.
* ``grid``: θ = SNN Calibration's MSE grid-search result.
* ``iteration``: DCGS threshold iteration (paper Algorithm 1; dcgs.md §3.3): with the
  pre-activation modelled as x ~ N(μ, σ²), find θ minimising the quantisation error
  QE(θ) = E[(Q_N(x; θ) - max(x, 0))²] of the round-to-nearest quantiser with N + 1 levels
  on [0, θ], by the fixed-point update θ <- θ·k1(θ):

      θ_new = [ μ(1 - Σe_i/N) + σ·√(2/π)·Σg_i/N ] / [ 1 - Σ(2i-1)e_i/N² ],
      c_i = (2i-1)θ/(2N),  e_i = erf((c_i - μ)/(√2σ)),  g_i = exp(-(c_i - μ)²/(2σ²)).

  Two modes: ``official`` reproduces the released code (θ_0 = 1 in absolute units,
  exactly 100 updates, float32, NaN -> 1; far from converged for large N, dcgs.md §3.4)
  and ``converged`` finds the fixed point itself (float64 bisection on k1(θ) - 1, which is
  positive below the unique root and negative above it).

Every rule's θ is finally scaled by c (``threshold_scale``) and clamped at >= 0.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

OFFICIAL_STEPS = 100
OFFICIAL_THETA0 = 1.0
#: channels processed together in the iteration (bounds memory at chunk x N values)
_CHUNK_ELEMENTS = 1 << 22


#: above this N the boundary sums are evaluated in closed form (exact to ~1e-9 relative)
DIRECT_SUM_MAX_N = 256


def iteration_sums(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σe_i, Σg_i and Σ(2i-1)e_i over the N decision boundaries, per element of ``theta``.

    Direct sums for N <= :data:`DIRECT_SUM_MAX_N`; beyond, the midpoint-rule closed form
    of :func:`iteration_sums_closed_form`, whose cost does not grow with N (the tests check
    the two agree).
    """
    if N > DIRECT_SUM_MAX_N:
        return iteration_sums_closed_form(theta, mu, sigma, N)
    return iteration_sums_direct(theta, mu, sigma, N)


def iteration_sums_closed_form(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The boundary sums as integrals plus the Euler-Maclaurin midpoint correction.

    With h = θ/N the boundaries c_i = (i - 1/2)h are the midpoints of a grid on [0, θ], so
    Σ f(c_i) = (1/h)∫_0^θ f dx - (h/24)[f'(θ) - f'(0)] + O(h³), exactly integrable for
    f = erf((x-μ)/(√2σ)), exp(-(x-μ)²/(2σ²)) and x·erf(...). Computed in float64.
    """
    out_dtype = theta.dtype
    theta, mu, sigma = (t.double() for t in torch.broadcast_tensors(theta, mu, sigma))
    h = theta / N
    u0, u1 = -mu / sigma, (theta - mu) / sigma
    root2, sqrt_2_pi = math.sqrt(2.0), math.sqrt(2.0 / math.pi)
    erf0, erf1 = torch.erf(u0 / root2), torch.erf(u1 / root2)
    gau0, gau1 = torch.exp(-0.5 * u0 * u0), torch.exp(-0.5 * u1 * u1)
    F = lambda u, e, g: u * e + sqrt_2_pi * g  # noqa: E731 - ∫ erf(u/√2) du
    G = lambda u, e, g: 0.5 * (u * u - 1) * e + u * g / math.sqrt(2 * math.pi)  # noqa: E731 - ∫ u·erf(u/√2) du
    int_e = sigma * (F(u1, erf1, gau1) - F(u0, erf0, gau0))                 # ∫_0^θ erf dx
    int_g = sigma * math.sqrt(math.pi / 2) * (erf1 - erf0)                  # ∫_0^θ gauss dx
    int_xe = mu * int_e + sigma**2 * (G(u1, erf1, gau1) - G(u0, erf0, gau0))  # ∫_0^θ x·erf dx
    de = lambda g: sqrt_2_pi * g / sigma  # noqa: E731 - d/dx erf((x-μ)/(√2σ))
    dg = lambda u, g: -u * g / sigma  # noqa: E731 - d/dx gauss
    sum_e = int_e / h - h / 24 * (de(gau1) - de(gau0))
    sum_g = int_g / h - h / 24 * (dg(u1, gau1) - dg(u0, gau0))
    d_xe1 = erf1 + theta * de(gau1)
    d_xe0 = erf0  # + 0·de at x = 0
    sum_ce = int_xe / h - h / 24 * (d_xe1 - d_xe0)                           # Σ c_i e_i
    sum_w = 2 * sum_ce / h                                                  # Σ (2i-1) e_i
    return sum_e.to(out_dtype), sum_g.to(out_dtype), sum_w.to(out_dtype)


def iteration_sums_direct(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The boundary sums term by term, as the released code computes them."""
    flat_shape = theta.shape
    theta, mu, sigma = (t.reshape(-1) for t in torch.broadcast_tensors(theta, mu, sigma))
    odd = torch.arange(1, 2 * N, 2, dtype=theta.dtype, device=theta.device)  # 2i - 1
    out_e, out_g, out_w = [], [], []
    rows = max(1, _CHUNK_ELEMENTS // max(N, 1))
    for start in range(0, theta.numel(), rows):
        th, m, s = theta[start:start + rows, None], mu[start:start + rows, None], sigma[start:start + rows, None]
        c = odd * th / (2 * N)
        z = (c - m) / s
        e = torch.erf(z / math.sqrt(2))
        g = torch.exp(-0.5 * z * z)
        out_e.append(e.sum(dim=1))
        out_g.append(g.sum(dim=1))
        out_w.append((e * odd).sum(dim=1))
    cat = lambda parts: torch.cat(parts).reshape(flat_shape)  # noqa: E731
    return cat(out_e), cat(out_g), cat(out_w)


def iteration_update(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int) -> torch.Tensor:
    """One step θ <- θ·k1(θ) of the threshold iteration (dcgs.md §3.3)."""
    sum_e, sum_g, sum_w = iteration_sums(theta, mu, sigma, N)
    numer = mu * (1 - sum_e / N) + sigma * math.sqrt(2 / math.pi) * sum_g / N
    denom = 1 - sum_w / N**2
    return numer / denom


def threshold_iteration(mean: torch.Tensor, var: torch.Tensor, N: int,
                        mode: Literal["official", "converged"] = "official", steps: int = OFFICIAL_STEPS,
                        tol: float = 1e-10) -> torch.Tensor:
    """θ per element of ``mean``/``var`` (pre-activation statistics) for N = T·2^n.

    ``official``: θ_0 = 1, ``steps`` float32 updates, NaN -> 1 (the released code).
    ``converged``: the fixed point, by float64 bisection to relative width ``tol``.
    Degenerate inputs (σ = 0, or all mass below the first boundary) give θ = 1 in
    ``official`` mode (its NaN rule) and θ = max(μ, 0) in ``converged`` mode.
    """
    if N < 1:
        raise ValueError("threshold iteration needs N >= 1")
    if mode == "official":
        mu = mean.float()
        sigma = var.float().clamp_min(0).sqrt()
        theta = torch.full_like(mu, OFFICIAL_THETA0)
        for _ in range(steps):
            theta = iteration_update(theta, mu, sigma, N)
        return torch.nan_to_num(theta, nan=OFFICIAL_THETA0)
    if mode != "converged":
        raise ValueError(f"iteration mode must be 'official' or 'converged', got {mode!r}")
    mu = mean.double()
    sigma = var.double().clamp_min(0).sqrt()
    degenerate = sigma <= 1e-12 * (mu.abs() + 1)
    sigma_safe = torch.where(degenerate, torch.ones_like(sigma), sigma)

    def k1_minus_one(theta: torch.Tensor) -> torch.Tensor:
        return iteration_update(theta, mu, sigma_safe, N) / theta - 1

    lo = torch.full_like(mu, 1e-9) * sigma_safe
    hi = (mu.abs() + 12 * sigma_safe).clamp_min(1e-6)
    # widen hi until k1(hi) < 1 (the root lies below it)
    for _ in range(60):
        bad = k1_minus_one(hi) >= 0
        if not bool(bad.any()):
            break
        hi = torch.where(bad, hi * 2, hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = k1_minus_one(mid) > 0  # k1 > 1: the root is above mid
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
        if bool(((hi - lo) <= tol * hi).all()):
            break
    theta = 0.5 * (lo + hi)
    theta = torch.where(degenerate, mu.clamp_min(0), theta)
    return torch.nan_to_num(theta, nan=0.0).float()


def quantisation_error(theta: float, mu: float, sigma: float, N: int) -> float:
    """QE(θ) = ∫ (Q_N(x; θ) - max(x, 0))² φ_{μ,σ}(x) dx by numerical integration (scipy).

    The reference the tests check threshold iteration against.
    """
    from scipy import integrate, stats

    pdf = stats.norm(mu, sigma).pdf
    step = theta / N
    pieces = [(-math.inf, step / 2)]
    pieces += [((2 * i - 1) * step / 2, (2 * i + 1) * step / 2) for i in range(1, N)]
    pieces += [((2 * N - 1) * step / 2, math.inf)]
    total = 0.0
    for i, (a, b) in enumerate(pieces):
        level = min(i, N) * step

        def integrand(x: float, level: float = level) -> float:
            return (level - max(x, 0.0)) ** 2 * pdf(x)

        split = [0.0] if a < 0 < b else None
        total += integrate.quad(integrand, a, b, points=split, limit=200)[0] if split and math.isfinite(a) \
            and math.isfinite(b) else integrate.quad(integrand, a, b, limit=200)[0]
    return total


# -- the generalized threshold iteration (H-MT, Zhang et al., AAAI-26, §4.2 and Appendix E) ----------------
#
# The quantiser f(x; θ, a, b) = (θ/N)·clip(⌊N·x/θ + ½⌋, a, b) (H-MT Eq. 24) has step h = θ/N and the
# integer levels a..b (a <= 0 <= b, a < b). Its squared error against y = x under x ~ N(μ, σ²) is
# QE(θ, a, b) (Eq. 23); with a = 0 the target max(x, 0) gives the same error up to a constant that does
# not depend on θ (f = 0 wherever x < h/2), so one rule serves ReLU and identity sites. The update
# θ <- θ·k1(θ) (Eq. 29; Algorithm 1) is the closed-form best rescaling of the levels for fixed decision
# boundaries (Lemma 4.4): k1 = E[x·f] / E[f²]. With c_i = (2i-1)h/2, e_i = erf((c_i-μ)/(√2σ)),
# g_i = exp(-(c_i-μ)²/(2σ²)) for i = a+1..b:
#
#     E[f²] = (h²/2)·[a² + b² - Σ(2i-1)e_i],   E[x·f] = (h/2)·[μ(a + b - Σe_i) + σ√(2/π)·Σg_i],
#     θ_new = N·[μ(a + b - Σe_i) + σ√(2/π)Σg_i] / [a² + b² - Σ(2i-1)e_i]          (Eq. 29 times θ).
#
# With a = 0, b = N this is the DCGS update above. H-MT uses N = T and b = T·(2^n - 1) for its Pos
# neuron at a ReLU (θ is then λ_min; Eq. 20), a = -b for the full neuron at y = x; the released code
# starts at θ = 1 and runs 1500 updates (``OFFICIAL_GENERALIZED_STEPS``).

#: updates of the released H-MT code (threshold_getter.py ``get_scale_from_var``)
OFFICIAL_GENERALIZED_STEPS = 1500
#: the released H-MT code adds this to the variance before the square root
OFFICIAL_GENERALIZED_VAR_EPS = 1e-8


def generalized_iteration_sums(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int, a: int, b: int
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σe_i, Σg_i and Σ(2i-1)e_i over the boundaries i = a+1..b (direct for <= 256 terms)."""
    if b - a > DIRECT_SUM_MAX_N:
        return _generalized_sums_closed_form(theta, mu, sigma, N, a, b)
    return _generalized_sums_direct(theta, mu, sigma, N, a, b)


def _generalized_sums_direct(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int, a: int, b: int
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    flat_shape = torch.broadcast_shapes(theta.shape, mu.shape, sigma.shape)
    theta, mu, sigma = (t.reshape(-1) for t in torch.broadcast_tensors(theta, mu, sigma))
    odd = 2 * torch.arange(a + 1, b + 1, dtype=theta.dtype, device=theta.device) - 1  # 2i - 1
    out_e, out_g, out_w = [], [], []
    rows = max(1, _CHUNK_ELEMENTS // max(b - a, 1))
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
    """Midpoint-rule closed form on [a·h, b·h] (see :func:`iteration_sums_closed_form`, there a = 0, b = N)."""
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
    mu = mean.double()
    sigma = var.double().clamp_min(0).sqrt()
    degenerate = sigma <= 1e-12 * (mu.abs() + 1)
    sigma_safe = torch.where(degenerate, torch.ones_like(sigma), sigma)

    def k1_minus_one(theta: torch.Tensor) -> torch.Tensor:
        return generalized_iteration_update(theta, mu, sigma_safe, N, a, b) / theta - 1

    span = max(b, -a)
    lo = torch.full_like(mu, 1e-9) * sigma_safe
    hi = ((mu.abs() + 12 * sigma_safe) * N / max(min(b, span), 1)).clamp_min(1e-6)
    for _ in range(80):
        bad = k1_minus_one(hi) >= 0
        if not bool(bad.any()):
            break
        hi = torch.where(bad, hi * 2, hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = k1_minus_one(mid) > 0
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
        if bool(((hi - lo) <= tol * hi).all()):
            break
    theta = 0.5 * (lo + hi)
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
