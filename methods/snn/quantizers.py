"""Firing rules: which spike a neuron emits for a membrane potential.

Two families, each with a fast vectorised rule and a slow, readable reference that the
fast one must equal exactly (tests check it on random inputs and boundary ties):

* **Multi-threshold (MT)** (DCGS §4, docs/dcgs-official-code.md §1.2): levels ±θ_k with θ_k = θ/2^k,
  k = 0..n-1; at most one spike per step, the level k chosen as the *smallest* k with
  |m| >= 0.75·θ_k (0.75·θ_k is the midpoint between θ_k and θ_{k+1}, so this is the
  nearest level, saturating at θ_0); nothing in the dead zone |m| < 0.75·θ_{n-1}.
  The fast rule finds k from the binary exponents of |m| and B = fl(0.75·θ) with integer
  arithmetic only (no loop over levels, no n-fold ladder): since 0.75·θ_k = B·2^-k
  exactly in floating point, |m| >= B·2^-k  <=>  k >= k* = e_B - e_m + [f_m < f_B],
  where |m| = f_m·2^e_m and B = f_B·2^e_B with f in [0.5, 1) (``torch.frexp``).
* **Integrate-and-fire (IF)** (Rueckauer et al. 2017): +θ when v >= θ; the signed
  variant also emits -θ when v < 0. With the initial potential θ/2 this is rounding.

Masks keep the decoded output inside the ANN activation's range (docs/dcgs-official-code.md §1.4): a
negative level θ_k is admissible only when ``lower_room >= θ_k`` (lower_room = the
decoded output so far, in sum units, above the floor 0 of a ReLU), and a positive level
only when ``upper_room >= θ_k`` (room below the ceiling 6 of a ReLU6). Because the masks
are monotone in k, the admissible level is found with the same exponent trick, and the
emitted level is the largest admissible one not larger than the nearest level.
"""

from __future__ import annotations

import torch

#: 0.75 = midpoint between θ_k and θ_k / 2 in units of θ_k (docs/dcgs-official-code.md §1.2)
MT_BOUNDARY = 0.75


def _first_index_at_least(value: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Smallest integer k (possibly negative) with ``value >= scale * 2**-k``, for value, scale > 0.

    Exact: scaling by a power of two is exact in binary floating point, so the comparison
    reduces to the exponents and mantissas returned by ``frexp``.
    """
    fv, ev = torch.frexp(value)
    fs, es = torch.frexp(scale)
    return es - ev + (fv < fs).to(ev.dtype)


_EXP_ONE = 1 << 23            # one step of the float32 exponent field
_SIGN = -(1 << 31)            # the float32 sign bit as an int32


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


def mt_fire(m: torch.Tensor, theta: torch.Tensor, n: int, signed: bool = True,
            lower_room: torch.Tensor | None = None, upper_room: torch.Tensor | None = None) -> torch.Tensor:
    """Spike of a multi-threshold neuron for pre-spike potential ``m`` (fast, closed form).

    float32 inputs take the integer path (:func:`mt_fire_bits`), others the frexp path
    (:func:`mt_fire_frexp`); both equal :func:`mt_fire_reference` exactly.
    """
    if m.dtype == torch.float32:
        return mt_fire_bits(m, theta, n, signed, lower_room, upper_room)
    return mt_fire_frexp(m, theta, n, signed, lower_room, upper_room)


def mt_fire_bits(m: torch.Tensor, theta: torch.Tensor, n: int, signed: bool = True,
                 lower_room: torch.Tensor | None = None, upper_room: torch.Tensor | None = None) -> torch.Tensor:
    """float32 MT selection with integer arithmetic on IEEE-754 bit patterns (docs/dcgs-official-code.md §1.5).

    For non-negative floats the bit pattern is monotone in the value, and multiplying a
    normal number by 2^-k subtracts k from its exponent field, i.e. k·2^23 from its bits.
    Hence |m| >= B·2^-k  <=>  bits(|m|) >= bits(B) - k·2^23  <=>  k >= k* with
    k* = ceil((bits(B) - bits(|m|)) / 2^23), and the level θ·2^-k has the bits
    bits(θ) - k·2^23, to which the sign bit of m is added. m = 0 gives k* > n - 1 (no
    spike) and a negative room (sign bit set) admits no level, without special cases.
    """
    theta = torch.as_tensor(theta, dtype=torch.float32, device=m.device)
    live = theta > 0
    theta_safe = torch.where(live, theta, torch.ones_like(theta))
    theta_bits = _bits(theta_safe)
    m_bits = _bits(m)
    # k* = ceil((bits(B) - bits(|m|)) / 2^23) as an arithmetic shift of the biased difference
    k = ((_bits(MT_BOUNDARY * theta_safe) + (_EXP_ONE - 1)) - (m_bits & 0x7FFFFFFF)) >> 23
    for room, side in ((lower_room, "neg"), (upper_room, "pos")):
        if room is None:
            continue
        room_bits = _bits(room.to(torch.float32)).clamp_min(0)  # rooms <= 0 (and -0.0) admit nothing
        k_room = ((theta_bits + (_EXP_ONE - 1)) - room_bits) >> 23
        applies = m_bits < 0 if side == "neg" else m_bits >= 0
        k = torch.where(applies, torch.maximum(k, k_room), k)
    fire = (k <= n - 1) & live
    if not signed:
        fire &= m > 0
    level_bits = (theta_bits - (k.clamp(0, n - 1) << 23)) | (m_bits & _SIGN)
    return torch.where(fire, level_bits.view(torch.float32), torch.zeros_like(m))


def mt_fire_compare(m: torch.Tensor, theta: torch.Tensor, n: int, signed: bool = True,
                    lower_room: torch.Tensor | None = None, upper_room: torch.Tensor | None = None) -> torch.Tensor:
    """MT selection by the n threshold comparisons of :func:`mt_fire_reference`, float operations
    only: the form for compiled kernels (docs/dcgs-official-code.md §1.2 and §1.4).

    Per element, with room = upper_room where m > 0 and lower_room where m <= 0 (no room: +inf),
    level k is admissible when |m| >= 0.75·θ_k, room >= θ_k and θ_k > 0 (θ_k = θ / 2^k computed
    as the reference computes it). All three are monotone in k, so the admissible k form an
    upper set and the reference's smallest admissible k is what a ladder from k = n-1 down to
    0 leaves behind; the sign is applied as 0 - level, so that a negative m that fires nothing
    gives +0.0 as the reference does (not -0.0). Equal to
    the reference bit for bit (tests), without the reinterpreting casts of :func:`mt_fire_bits`,
    which inductor compiles to scalar loops: in one compiled differential step of 8 levels on
    802 816 elements this runs 2.2x faster (1.34 vs 2.97 ms, 1 thread), at the cost of the
    step's memory traffic alone; eagerly it would be n passes, so eager code keeps the bits.
    (Unlike the integer form, it also equals the reference where θ/2^k is subnormal.)
    """
    theta = torch.as_tensor(theta, dtype=m.dtype, device=m.device)
    magnitude = m.abs()
    positive = m > 0
    room = None
    if lower_room is not None or upper_room is not None:  # a missing side admits every level
        room = torch.where(positive, float("inf") if upper_room is None else upper_room,
                           float("inf") if lower_room is None else lower_room)
    level = torch.zeros_like(m)
    for k in range(n - 1, -1, -1):
        theta_k = theta / 2**k
        admissible = (magnitude >= MT_BOUNDARY * theta_k) & (theta_k > 0)
        if room is not None:
            admissible = admissible & (room >= theta_k)
        level = torch.where(admissible, theta_k, level)
    if not signed:
        level = torch.where(positive, level, 0.0)
    return torch.where(m < 0, 0.0 - level, level)


def mt_fire_frexp(m: torch.Tensor, theta: torch.Tensor, n: int, signed: bool = True,
                  lower_room: torch.Tensor | None = None, upper_room: torch.Tensor | None = None) -> torch.Tensor:
    """MT selection for any float dtype, from ``torch.frexp`` exponents (see module doc).

    Args:
        m: membrane potential before firing, any shape.
        theta: base threshold θ (>= 0), broadcastable to ``m``.
        n: number of levels per sign.
        signed: allow negative levels.
        lower_room: negative level θ_k admissible only where ``lower_room >= θ_k``.
        upper_room: positive level θ_k admissible only where ``upper_room >= θ_k``.

    Returns:
        s with values in {0, ±θ/2^k}, same shape and dtype as ``m``.
    """
    theta = torch.as_tensor(theta, dtype=m.dtype, device=m.device)
    boundary = MT_BOUNDARY * theta
    mag = m.abs()
    valid = (mag > 0) & (theta > 0)
    safe_mag = torch.where(valid, mag, torch.ones_like(mag))
    safe_boundary = torch.where(theta > 0, boundary, torch.ones_like(boundary))
    k = _first_index_at_least(safe_mag, safe_boundary).clamp_min(0)
    positive = m > 0
    room = None
    if lower_room is not None or upper_room is not None:
        lo = lower_room if lower_room is not None else None
        hi = upper_room if upper_room is not None else None
        if lo is not None and hi is not None:
            room = torch.where(positive, hi, lo)
        elif lo is not None:
            room = torch.where(positive, torch.full_like(lo, float("inf")), lo)
        else:
            room = torch.where(positive, hi, torch.full_like(hi, float("inf")))
    if room is not None:
        room = torch.as_tensor(room, dtype=m.dtype, device=m.device)
        has_room = room > 0
        safe_room = torch.where(has_room & torch.isfinite(room), room, torch.ones_like(room))
        safe_theta = torch.where(theta > 0, theta, torch.ones_like(theta))
        k_room = torch.where(torch.isfinite(room), _first_index_at_least(safe_room, safe_theta),
                             torch.zeros_like(k))
        k = torch.maximum(k, k_room)
        valid = valid & has_room
    if not signed:
        valid = valid & positive
    fire = valid & (k <= n - 1)
    level = torch.ldexp(theta.expand_as(m), -k.clamp_max(n - 1))
    return torch.where(fire, torch.where(positive, level, -level), torch.zeros_like(m))


def mt_fire_reference(m: torch.Tensor, theta: torch.Tensor, n: int, signed: bool = True,
                      lower_room: torch.Tensor | None = None, upper_room: torch.Tensor | None = None) -> torch.Tensor:
    """The comparison ladder of the official code (slow, readable; the definition).

    For each k in 0..n-1 compare against 0.75·θ_k with θ_k = θ / 2^k and take the
    smallest admissible k per sign (docs/dcgs-official-code.md §1.2 and §1.4).
    """
    theta = torch.as_tensor(theta, dtype=m.dtype, device=m.device).expand_as(m)
    out = torch.zeros_like(m)
    pos_done = torch.zeros_like(m, dtype=torch.bool)
    neg_done = torch.zeros_like(m, dtype=torch.bool)
    for k in range(n):
        theta_k = theta / 2**k
        bound = MT_BOUNDARY * theta_k
        pos = (m >= bound) & (theta_k > 0) & ~pos_done
        if upper_room is not None:
            pos &= upper_room >= theta_k
        out = torch.where(pos, theta_k, out)
        pos_done |= pos
        if signed:
            neg = (m <= -bound) & (theta_k > 0) & ~neg_done
            if lower_room is not None:
                neg &= lower_room >= theta_k
            out = torch.where(neg, -theta_k, out)
            neg_done |= neg
    return out


def mt_fire_argmin(m: torch.Tensor, theta: torch.Tensor, n: int) -> torch.Tensor:
    """Nearest level in {±θ/2^k} (ties to the larger level), 0 in the dead zone.

    The argmin definition the paper's reviewers describe; equal to :func:`mt_fire` for
    unmasked signed neurons (ties at the 0.75 boundaries go to the larger level, as the
    ``>=`` comparisons of the official code do).
    """
    theta = torch.as_tensor(theta, dtype=m.dtype, device=m.device).expand_as(m)
    levels = torch.stack([theta / 2**k for k in range(n)])  # [n, ...]
    dist = (m.abs().unsqueeze(0) - levels).abs()
    # strict "<" over increasing k keeps the first (largest) level on ties
    best = dist.argmin(dim=0)
    chosen = torch.gather(levels, 0, best.unsqueeze(0)).squeeze(0)
    dead = m.abs() < MT_BOUNDARY * theta / 2 ** (n - 1)
    return torch.where(dead | (theta <= 0), torch.zeros_like(m), torch.sign(m) * chosen)


def if_fire(v: torch.Tensor, theta: torch.Tensor, signed: bool = False,
            lower_room: torch.Tensor | None = None, upper_room: torch.Tensor | None = None,
            negative_at_zero: bool = False) -> torch.Tensor:
    """Spike of an IF neuron with potential ``v`` (initial potential θ/2 held in ``v``).

    +θ where v >= θ (and ``upper_room >= θ``); if ``signed``, -θ where v < 0 (v <= 0 with
    ``negative_at_zero``, the official DCGS code's rule) and ``lower_room >= θ``. θ = 0
    never fires.
    """
    theta = torch.as_tensor(theta, dtype=v.dtype, device=v.device)
    live = theta > 0
    pos = (v >= theta) & live
    if upper_room is not None:
        pos &= upper_room >= theta
    out = torch.where(pos, theta.expand_as(v), torch.zeros_like(v))
    if signed:
        neg = ((v <= 0) if negative_at_zero else (v < 0)) & live
        if lower_room is not None:
            neg &= lower_room >= theta
        out = torch.where(neg, -theta.expand_as(v), out)
    return out
