"""Threshold rules: from calibration statistics to a base threshold θ per site.

* ``percentile``/``max``: θ = the statistic of the quantised value.
* ``grid``: θ = SNN Calibration's MSE grid-search result.
* ``iteration``: DCGS threshold iteration (paper Algorithm 1; dcgs.md §3.3): with the
  pre-activation modelled as x ~ N(μ, σ²), find θ minimising the quantisation error
  QE(θ) = E[(Q_N(x; θ) - max(x, 0))²] of the round-to-nearest quantiser with N + 1 levels
  on [0, θ], by the fixed-point update θ <- θ·k1(θ):

      θ_new = [ μ(1 - Σe_i/N) + σ·√(2/π)·Σg_i/N ] / [ 1 - Σ(2i-1)e_i/N² ],
      c_i = (2i-1)θ/(2N),  e_i = erf((c_i - μ)/(√2σ)),  g_i = exp(-(c_i - μ)²/(2σ²)).

  Everything is evaluated in float64 and in complementary form, q_i = 1 - e_i, so that
  1 - Σe_i/N = Σq_i/N and 1 - Σ(2i-1)e_i/N² = Σ(2i-1)q_i/N² carry no cancellation (mostly
  dead channels, μ/σ < -2, are ill-conditioned in float32; issue 17 item 1).

  Two modes: ``official`` reproduces the released procedure (θ_0 = 1 in absolute units,
  exactly 100 updates, NaN -> 1; far from converged for large N, dcgs.md §3.4), equal to
  its direct sums evaluated in float64, fallbacks included; ``converged`` finds the fixed
  point itself (float64 bisection on k1(θ) - 1, positive below the unique root and negative
  above it).

Every rule's θ is finally scaled by c (``threshold_scale``) and clamped at >= 0.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch

OFFICIAL_STEPS = 100
OFFICIAL_THETA0 = 1.0
#: boundaries processed together in the direct sums (bounds memory at chunk x window values)
_CHUNK_ELEMENTS = 1 << 22
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
    rows = max(1, _CHUNK_ELEMENTS // W)
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
    """One step θ <- θ·k1(θ) of the threshold iteration (dcgs.md §3.3), float64.

    θ_new = [μ·Σq/N + σ·√(2/π)·Σg/N] / [Σ(2i-1)q/N²]; 0/0 (no mass above the first
    boundary in float64) is NaN and x/0 is inf, as in the released code.
    """
    sum_q, sum_g, sum_w = iteration_sums(theta, mu, sigma, N, released_rounding=released_rounding)
    mu, sigma = mu.double(), sigma.double()
    numer = mu * (sum_q / N) + sigma * _SQRT_2_PI * sum_g / N
    denom = sum_w / N**2
    return numer / denom


def _converged_moments(mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """μ and σ in float64 for the ``converged`` bisections, with σ = 1 where the distribution is
    degenerate (σ = 0 or negligible beside μ; the caller sets θ there itself), and that mask."""
    mu = mean.double()
    sigma = var.double().clamp_min(0).sqrt()
    degenerate = sigma <= 1e-12 * (mu.abs() + 1)
    return mu, torch.where(degenerate, torch.ones_like(sigma), sigma), degenerate


def _bisect_unit_gain(k1_minus_one: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
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
    mu, sigma_safe, degenerate = _converged_moments(mean, var)

    def k1_minus_one(theta: torch.Tensor) -> torch.Tensor:
        return iteration_update(theta, mu, sigma_safe, N) / theta - 1

    lo = torch.full_like(mu, 1e-9) * sigma_safe
    hi = (mu.abs() + 12 * sigma_safe).clamp_min(1e-6)
    theta, undefined = _bisect_unit_gain(k1_minus_one, lo, hi, widen_steps=60, tol=tol)
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
#: level ranges up to this many levels are summed directly; wider ones use the closed form
GENERALIZED_DIRECT_SUM_MAX_LEVELS = 256
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
    mu, sigma_safe, degenerate = _converged_moments(mean, var)

    def k1_minus_one(theta: torch.Tensor) -> torch.Tensor:
        return generalized_iteration_update(theta, mu, sigma_safe, N, a, b) / theta - 1

    span = max(b, -a)
    lo = torch.full_like(mu, 1e-9) * sigma_safe
    hi = ((mu.abs() + 12 * sigma_safe) * N / max(min(b, span), 1)).clamp_min(1e-6)
    theta, _ = _bisect_unit_gain(k1_minus_one, lo, hi, widen_steps=80, tol=tol)
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
