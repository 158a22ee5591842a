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
