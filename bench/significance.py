"""Interval estimates and paired significance tests for benchmark metrics.

Pure NumPy/SciPy functions, no harness state:

* :func:`wilson_interval`: the Wilson score interval of a binomial proportion
  (Wilson 1927, *JASA* 22:209), ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``:
  the 95% interval on a classification accuracy.
* :func:`bootstrap_interval`: the percentile bootstrap (Efron & Tibshirani 1993, §13.3)
  of a statistic recomputed on resampled sets of images (mAP, mIoU).
* :func:`mcnemar_exact`: McNemar's exact test of paired binary outcomes (McNemar 1947):
  under H0 the discordant pairs split Binomial(b + c, 1/2); two-sided
  ``p = min(1, 2·P[X <= min(b, c)])``.
* :func:`paired_bootstrap`: a difference of two metrics scored on the same images, its
  percentile interval and a two-sided bootstrap p-value
  ``min(1, 2·min(P*[Δ <= 0], P*[Δ >= 0]))``, the resampled differences being shared
  image draws for both methods.
* :func:`holm`: Holm's step-down adjustment of a family of p-values (Holm 1979,
  *Scand. J. Statist.* 6:65): ``p̃_(i) = max_{j<=i} min(1, (m - j + 1)·p_(j))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from snnbench.common.outcomes import BinaryOutcomes, Outcomes

#: the two-sided 95% normal quantile, Φ⁻¹(0.975)
Z95 = float(stats.norm.ppf(0.975))
#: resamples of an interval on one metric (mAP, mIoU)
INTERVAL_RESAMPLES = 1000
#: resamples of a paired difference (``bench compare``)
PAIRED_RESAMPLES = 10_000
#: the fixed seed of every bootstrap, so an interval is reproducible from the saved outcomes
BOOTSTRAP_SEED = 0


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval ``(lo, hi)`` of ``successes / n`` at normal quantile ``z``."""
    if n <= 0:
        raise ValueError(f"a proportion needs at least one trial, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def resample_weights(n: int, resamples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``[resamples, n]`` multiplicities of a bootstrap over ``n`` items: row b counts how
    often item i is drawn in n draws with replacement (a Multinomial(n, 1/n) vector), so a
    weighted statistic equals the statistic of the resampled set."""
    if n <= 0:
        raise ValueError("cannot resample an empty set")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap replicates."""
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray], n: int,
                       resamples: int = INTERVAL_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``n`` images.

    ``statistic(weights)`` takes ``[B, n]`` image multiplicities and returns the B
    resampled values (vectorised: a weighted mAP or mIoU)."""
    return percentile_interval(statistic(resample_weights(n, resamples, seed)), level)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of paired per-sample outcomes (bool arrays)."""
    a, b = _paired_bool(correct_a, correct_b)
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(min(1.0, 2.0 * stats.binom.cdf(min(only_a, only_b), only_a + only_b, 0.5)))


@dataclass(frozen=True)
class PairedDifference:
    """``metric(A) - metric(B)`` on the same samples, with its bootstrap interval and p-value."""

    delta: float
    delta_ci95: tuple[float, float]
    p_value: float
    test: str

    def to_dict(self) -> dict[str, object]:
        return {"delta": self.delta, "delta_ci95": list(self.delta_ci95), "p_value": self.p_value,
                "test": self.test}


def bootstrap_p_value(deltas: np.ndarray) -> float:
    """Two-sided p-value of H0: Δ = 0 from bootstrap replicates of Δ."""
    deltas = np.asarray(deltas, dtype=np.float64)
    below = float(np.mean(deltas <= 0.0))
    above = float(np.mean(deltas >= 0.0))
    return min(1.0, 2.0 * min(below, above))


def paired_bootstrap(statistic_a: Callable[[np.ndarray], np.ndarray],
                     statistic_b: Callable[[np.ndarray], np.ndarray], n: int,
                     observed: tuple[float, float], resamples: int = PAIRED_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> PairedDifference:
    """Paired bootstrap of ``metric(A) - metric(B)``: both statistics see the same image
    draws (``[B, n]`` weights); ``observed`` is the pair of full-set metrics."""
    weights = resample_weights(n, resamples, seed)
    deltas = statistic_a(weights) - statistic_b(weights)
    return PairedDifference(delta=float(observed[0] - observed[1]), delta_ci95=percentile_interval(deltas),
                            p_value=bootstrap_p_value(deltas), test="paired bootstrap")


def paired_binary(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = PAIRED_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED) -> PairedDifference:
    """Accuracy difference of paired binary outcomes: the paired-bootstrap interval of the
    difference and the exact McNemar p-value."""
    a, b = _paired_bool(correct_a, correct_b)
    diff = a.astype(np.float64) - b.astype(np.float64)
    n = diff.size
    weights = resample_weights(n, resamples, seed)
    deltas = weights @ diff / n
    return PairedDifference(delta=float(diff.mean()), delta_ci95=percentile_interval(deltas),
                            p_value=mcnemar_exact(a, b), test="exact McNemar")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return []
    if np.any((p < 0) | (p > 1) | np.isnan(p)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="mergesort")
    m = p.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def _paired_bool(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a, dtype=bool).reshape(-1)
    b = np.asarray(correct_b, dtype=bool).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same samples: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError("no paired samples to compare")
    return a, b


def outcome_interval(outcomes: Outcomes, k: int) -> tuple[float, float]:
    """The 95% interval of the metric at the k-th scored t of a cell's per-sample outcomes:
    Wilson on binary outcomes (accuracy), the percentile bootstrap over images
    (:data:`INTERVAL_RESAMPLES` resamples, seed :data:`BOOTSTRAP_SEED`) otherwise (mIoU, mAP)."""
    if isinstance(outcomes, BinaryOutcomes):
        return wilson_interval(int(outcomes.correct[k].sum()), outcomes.n)
    return bootstrap_interval(lambda w: outcomes.metric(k, w), outcomes.n)


def paired_outcomes(a: Outcomes, k_a: int, b: Outcomes, k_b: int,
                    resamples: int = PAIRED_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> PairedDifference:
    """``metric(A) - metric(B)`` of two cells scored on the same samples: exact McNemar and
    the paired-bootstrap interval on binary outcomes, the paired bootstrap otherwise."""
    if type(a) is not type(b):
        raise ValueError(f"cannot pair {a.kind} outcomes with {b.kind} outcomes")
    if a.n != b.n:
        raise ValueError(f"paired outcomes need the same samples: {a.n} vs {b.n}")
    if isinstance(a, BinaryOutcomes):
        return paired_binary(a.correct[k_a], b.correct[k_b], resamples, seed)
    observed = (float(a.metric(k_a)[0]), float(b.metric(k_b)[0]))
    return paired_bootstrap(lambda w: a.metric(k_a, w), lambda w: b.metric(k_b, w), a.n, observed, resamples, seed)


__all__ = ["BOOTSTRAP_SEED", "INTERVAL_RESAMPLES", "PAIRED_RESAMPLES", "PairedDifference", "Z95",
           "bootstrap_interval", "bootstrap_p_value", "holm", "mcnemar_exact", "paired_binary",
           "paired_bootstrap", "percentile_interval", "resample_weights", "wilson_interval",
           "outcome_interval", "paired_outcomes"]
