"""Threshold rules: from calibration statistics to a base threshold θ per site.

* ``percentile``/``max``: θ = the statistic of the quantised value.
* ``grid``: θ = SNN Calibration's MSE grid-search result.
* ``iteration``: DCGS threshold iteration (paper Algorithm 1; docs/dcgs-official-code.md
  §3.3): with the pre-activation modelled as x ~ N(μ, σ²), find θ minimising the quantisation error
  QE(θ) = E[(Q_N(x; θ) - max(x, 0))²] of the round-to-nearest quantiser with N + 1 levels
  on [0, θ], by the fixed-point update θ <- θ·k1(θ):

      θ_new = [ μ(1 - Σe_i/N) + σ·√(2/π)·Σg_i/N ] / [ 1 - Σ(2i-1)e_i/N² ],
      c_i = (2i-1)θ/(2N),  e_i = erf((c_i - μ)/(√2σ)),  g_i = exp(-(c_i - μ)²/(2σ²)).

  Everything is evaluated in float64 and in complementary form, q_i = 1 - e_i, so that
  1 - Σe_i/N = Σq_i/N and 1 - Σ(2i-1)e_i/N² = Σ(2i-1)q_i/N² carry no cancellation (in
  float32 the direct form is ill-conditioned for mostly dead channels, μ/σ < -2: every
  boundary lies far above μ, e_i is close to 1 and 1 - e_i loses its significant digits).

  Two modes: ``official`` reproduces the released procedure (θ_0 = 1 in absolute units,
  exactly 100 updates, NaN -> 1; far from converged for large N, docs/dcgs-official-code.md
  §3.4), equal to its direct sums evaluated in float64, fallbacks included; ``converged`` finds the fixed
  point itself (float64 bisection on k1(θ) - 1, positive below the unique root and negative
  above it).

Every rule's θ is finally scaled by c (``threshold_scale``) and clamped at >= 0. H-MT's
generalized iteration (levels a..b) is in :mod:`snnbench.methods.snn.generalized_thresholds`.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch

OFFICIAL_STEPS = 100
OFFICIAL_THETA0 = 1.0
#: boundaries processed together in the direct sums (bounds memory at chunk x window values)
CHUNK_ELEMENTS = 1 << 22
#: closed form when σ >= CLOSED_FORM_MIN_SIGMA_STEPS · θ/N (Euler-Maclaurin to h³ is then
#: exact to ~1e-7 relative, tests check); below, direct sums over the unsaturated window of boundaries
CLOSED_FORM_MIN_SIGMA_STEPS = 30.0
#: boundaries with z = (c - μ)/σ below this are saturated in float64: erf = -1, q = 2
#: (exp(-z²/2) < 3e-18 there, negligible beside the window's terms)
_Z_LOW = -9.0
#: above this erfc(z/√2) and exp(-z²/2) underflow to exactly 0 in float64
_Z_HIGH = 39.0
_SQRT2 = math.sqrt(2.0)
_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def iteration_sums(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int,
                   released_rounding: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σq_i, Σg_i and Σ(2i-1)q_i (q_i = 1 - e_i) over the N decision boundaries, float64.

    Per element: the closed form of :func:`iteration_sums_closed_form` where σ spans many
    quantisation steps, the direct sums of :func:`iteration_sums_direct` (cost bounded by the
    unsaturated window, not by N) where it does not. Non-finite or non-positive θ gives NaN
    (the released update is NaN there too). ``released_rounding`` reproduces the released
    code's float64 saturation: q_i = 1 - erf(·), exactly 0 once erf rounds to 1.
    """
    theta, mu, sigma = (t.double() for t in torch.broadcast_tensors(theta, mu, sigma))
    shape = theta.shape
    theta, mu, sigma = theta.reshape(-1), mu.reshape(-1), sigma.reshape(-1)
    valid = torch.isfinite(theta) & (theta > 0) & torch.isfinite(mu) & torch.isfinite(sigma)
    direct = valid & (sigma < CLOSED_FORM_MIN_SIGMA_STEPS * (theta / N))
    out = list(iteration_sums_closed_form(theta, mu, sigma, N, released_rounding=released_rounding))
    if bool(direct.any()):
        idx = direct.nonzero().squeeze(1)
        sums = iteration_sums_direct(theta[idx], mu[idx], sigma[idx], N, released_rounding=released_rounding)
        for o, s in zip(out, sums):
            o[idx] = s
    nan = torch.full((), math.nan, dtype=torch.float64, device=theta.device)
    return tuple(torch.where(valid, o, nan).reshape(shape) for o in out)  # type: ignore[return-value]


def _erf_diff(u0: torch.Tensor, u1: torch.Tensor, q0: torch.Tensor, q1: torch.Tensor) -> torch.Tensor:
    """erf(u1/√2) - erf(u0/√2) without cancellation in either tail (q = erfc(u/√2))."""
    diff = q0 - q1
    both_low = u1 <= 0  # erfc(u/√2) ~ 2 on both ends: use the mirrored tails
    if bool(both_low.any()):
        lower = torch.erfc(-u1 / _SQRT2) - torch.erfc(-u0 / _SQRT2)
        diff = torch.where(both_low, lower, diff)
    return diff


def iteration_sums_closed_form(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int,
                               released_rounding: bool = False
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The boundary sums as integrals plus the Euler-Maclaurin midpoint corrections.

    With h = θ/N the boundaries c_i = (i - 1/2)h are the midpoints of a grid on [0, θ], so
    Σ f(c_i) = (1/h)∫_0^θ f dx - (h/24)[f'] + (7h³/5760)[f'''] + O(h⁵), [F] = F(θ) - F(0),
    exactly integrable for q = erfc((x-μ)/(√2σ)), g = exp(-(x-μ)²/(2σ²)) and x·q. Accurate
    to ~1e-7 relative once σ >= 30h (the caller's switch). In float64; with
    ``released_rounding`` a channel whose every boundary saturates erf to 1 in float64 gets
    Σq = Σ(2i-1)q = 0, as the released code's direct sums do.
    """
    theta, mu, sigma = (t.double() for t in torch.broadcast_tensors(theta, mu, sigma))
    h = theta / N
    u0, u1 = -mu / sigma, (theta - mu) / sigma
    q0, q1 = torch.erfc(u0 / _SQRT2), torch.erfc(u1 / _SQRT2)
    g0, g1 = torch.exp(-0.5 * u0 * u0), torch.exp(-0.5 * u1 * u1)
    Fc = lambda u, q, g: u * q - _SQRT_2_PI * g  # noqa: E731 - ∫ erfc(u/√2) du
    Gc = lambda u, q, g: 0.5 * (u * u - 1) * q - u * g / math.sqrt(2 * math.pi)  # noqa: E731 - ∫ u·erfc(u/√2) du
    int_q = sigma * (Fc(u1, q1, g1) - Fc(u0, q0, g0))                        # ∫_0^θ q dx
    int_g = sigma * math.sqrt(math.pi / 2) * _erf_diff(u0, u1, q0, q1)             # ∫_0^θ g dx
    int_xq = mu * int_q + sigma**2 * (Gc(u1, q1, g1) - Gc(u0, q0, g0))      # ∫_0^θ x·q dx
    # derivatives in x (u = (x-μ)/σ)
    dq = lambda g: -_SQRT_2_PI * g / sigma  # noqa: E731
    d2q = lambda u, g: _SQRT_2_PI * u * g / sigma**2  # noqa: E731
    d3q = lambda u, g: _SQRT_2_PI * (1 - u * u) * g / sigma**3  # noqa: E731
    dg = lambda u, g: -u * g / sigma  # noqa: E731
    d3g = lambda u, g: (3 * u - u**3) * g / sigma**3  # noqa: E731
    c1, c3 = h / 24, 7 * h**3 / 5760
    sum_q = int_q / h - c1 * (dq(g1) - dq(g0)) + c3 * (d3q(u1, g1) - d3q(u0, g0))
    sum_g = int_g / h - c1 * (dg(u1, g1) - dg(u0, g0)) + c3 * (d3g(u1, g1) - d3g(u0, g0))
    # x·q: (xq)' = q + x q', (xq)''' = 3q'' + x q'''
    d_xq = (q1 + theta * dq(g1)) - q0
    d3_xq = (3 * d2q(u1, g1) + theta * d3q(u1, g1)) - 3 * d2q(u0, g0)
    sum_cq = int_xq / h - c1 * d_xq + c3 * d3_xq                           # Σ c_i q_i
    sum_wq = 2 * sum_cq / h                                                 # Σ (2i-1) q_i
    if released_rounding:
        first = (h / 2 - mu) / sigma
        saturated = torch.erf(first / _SQRT2) == 1.0
        sum_q = torch.where(saturated, torch.zeros_like(sum_q), sum_q)
        sum_wq = torch.where(saturated, torch.zeros_like(sum_wq), sum_wq)
    return sum_q, sum_g, sum_wq


def iteration_sums_direct(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int,
                          released_rounding: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The boundary sums term by term in float64, over the unsaturated window only.

    Boundaries with z = (c_i - μ)/σ < -9 have q_i = 2 and g_i ≈ 0 (< 3e-18), those with
    z > 39 have q_i = g_i = 0 exactly in float64; they are counted in closed form
    (Σ_{i<=m} (2i-1) = m²) and only the window between is summed (its length is bounded by
    48σ/h + 5 <= 1445, by the caller's switch to the closed form, and by N). σ = 0 is exact:
    the window holds the boundaries equal to μ, where the released code divides 0 by 0.
    """
    theta, mu, sigma = (t.double().reshape(-1) for t in torch.broadcast_tensors(theta, mu, sigma))
    h = theta / N
    # window of boundary indices i in [lo, hi] (1-based), with a margin of 2 for rounding
    lo = torch.floor((mu + _Z_LOW * sigma) / h + 0.5) - 2
    hi = torch.ceil((mu + _Z_HIGH * sigma) / h + 0.5) + 2
    lo = lo.clamp(1, N + 1).to(torch.int64)
    hi = hi.clamp(0, N).to(torch.int64)
    width = (hi - lo + 1).clamp_min(0)
    sum_q = 2.0 * (lo - 1).double()
    sum_w = 2.0 * ((lo - 1).double() ** 2)
    sum_g = torch.zeros_like(theta)
    if theta.numel() == 0 or int(width.max()) == 0:
        return sum_q, sum_g, sum_w
    W = int(width.max())
    rows = max(1, CHUNK_ELEMENTS // W)
    offsets = torch.arange(W, device=theta.device)
    parts_q, parts_g, parts_w = [], [], []
    for start in range(0, theta.numel(), rows):
        sl = slice(start, start + rows)
        i = lo[sl, None] + offsets                                   # [rows, W]
        inside = i <= hi[sl, None]
        odd = (2 * i - 1).double()
        c = odd * theta[sl, None] / (2 * N)
        z = (c - mu[sl, None]) / sigma[sl, None]
        q = 1 - torch.erf(z / _SQRT2) if released_rounding else torch.erfc(z / _SQRT2)
        g = torch.exp(-0.5 * z * z)
        zero = torch.zeros((), dtype=torch.float64, device=theta.device)
        parts_q.append(torch.where(inside, q, zero).sum(1))
        parts_g.append(torch.where(inside, g, zero).sum(1))
        parts_w.append(torch.where(inside, odd * q, zero).sum(1))
    return sum_q + torch.cat(parts_q), sum_g + torch.cat(parts_g), sum_w + torch.cat(parts_w)


def iteration_update(theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, N: int,
                     released_rounding: bool = False) -> torch.Tensor:
    """One step θ <- θ·k1(θ) of the threshold iteration (docs/dcgs-official-code.md §3.3), float64.

    θ_new = [μ·Σq/N + σ·√(2/π)·Σg/N] / [Σ(2i-1)q/N²]; 0/0 (no mass above the first
    boundary in float64) is NaN and x/0 is inf, as in the released code.
    """
    sum_q, sum_g, sum_w = iteration_sums(theta, mu, sigma, N, released_rounding=released_rounding)
    mu, sigma = mu.double(), sigma.double()
    numer = mu * (sum_q / N) + sigma * _SQRT_2_PI * sum_g / N
    denom = sum_w / N**2
    return numer / denom


def converged_moments(mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """μ and σ in float64 for the ``converged`` bisections, with σ = 1 where the distribution is
    degenerate (σ = 0 or negligible beside μ; the caller sets θ there itself), and that mask."""
    mu = mean.double()
    sigma = var.double().clamp_min(0).sqrt()
    degenerate = sigma <= 1e-12 * (mu.abs() + 1)
    return mu, torch.where(degenerate, torch.ones_like(sigma), sigma), degenerate


def bisect_unit_gain(k1_minus_one: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
                      widen_steps: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The root of k1(θ) = 1 per element by float64 bisection (``converged`` mode of both iterations).

    k1(θ) - 1 is positive below the unique root and negative above it (DCGS Thm 4.6; H-MT
    Lemma 4.7). ``hi`` is doubled (at most ``widen_steps`` times) until k1(hi) < 1, then
    [lo, hi] is halved until its relative width is below ``tol``. Returns the midpoint and
    the elements where k1(hi) is undefined (NaN: no mass above the boundaries in float64).
    """
    for _ in range(widen_steps):
        bad = k1_minus_one(hi) >= 0
        if not bool(bad.any()):
            break
        hi = torch.where(bad, hi * 2, hi)
    undefined = torch.isnan(k1_minus_one(hi))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = k1_minus_one(mid) > 0  # k1 > 1: the root is above mid
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
        if bool(((hi - lo) <= tol * hi).all()):
            break
    return 0.5 * (lo + hi), undefined


def threshold_iteration(mean: torch.Tensor, var: torch.Tensor, N: int,
                        mode: Literal["official", "converged"] = "official", steps: int = OFFICIAL_STEPS,
                        tol: float = 1e-10) -> torch.Tensor:
    """θ per element of ``mean``/``var`` (pre-activation statistics) for N = T·2^n, float32.

    ``official``: θ_0 = 1, ``steps`` updates, NaN -> 1 (the released code's fallback),
    computed in float64 with the released code's saturation.
    ``converged``: the fixed point, by float64 bisection to relative width ``tol``.
    Degenerate inputs (σ = 0 or negligible beside μ, or no mass above the boundaries in
    float64) give θ = max(μ, 0) in ``converged`` mode (a level then sits on μ).
    """
    if N < 1:
        raise ValueError("threshold iteration needs N >= 1")
    if mode == "official":
        mu = mean.double()
        sigma = var.double().clamp_min(0).sqrt()
        theta = torch.full_like(mu, OFFICIAL_THETA0)
        for _ in range(steps):
            theta = iteration_update(theta, mu, sigma, N, released_rounding=True)
        theta = torch.where(torch.isnan(theta), torch.full_like(theta, OFFICIAL_THETA0), theta)
        return theta.float()
    if mode != "converged":
        raise ValueError(f"iteration mode must be 'official' or 'converged', got {mode!r}")
    mu, sigma_safe, degenerate = converged_moments(mean, var)

    def k1_minus_one(theta: torch.Tensor) -> torch.Tensor:
        return iteration_update(theta, mu, sigma_safe, N) / theta - 1

    lo = torch.full_like(mu, 1e-9) * sigma_safe
    hi = (mu.abs() + 12 * sigma_safe).clamp_min(1e-6)
    theta, undefined = bisect_unit_gain(k1_minus_one, lo, hi, widen_steps=60, tol=tol)
    theta = torch.where(degenerate | undefined, mu.clamp_min(0), theta)
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
