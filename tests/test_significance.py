"""Intervals and paired tests (snnbench.significance) against statsmodels/scipy on known data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from snnbench.significance import (bootstrap_interval, bootstrap_p_value, holm, mcnemar_exact, paired_binary,
                                   paired_bootstrap, resample_weights, wilson_interval)

statsmodels = pytest.importorskip("statsmodels")
from statsmodels.stats.contingency_tables import mcnemar  # noqa: E402
from statsmodels.stats.multitest import multipletests  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (7, 10), (912, 1000), (1, 3), (50, 100)])
def test_wilson_equals_statsmodels(k, n):
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=1e-12)


def test_wilson_hand_value():
    # p = 0.5, n = 100, z = 1.959964: centre 0.5, half = z/(1+z²/n)*sqrt(.25/100 + z²/40000)
    z = 1.959963984540054
    half = z / (1 + z * z / 100) * np.sqrt(0.25 / 100 + z * z / 40000)
    assert wilson_interval(50, 100) == pytest.approx((0.5 - half, 0.5 + half))
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match="at least one"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def _paired(n: int, seed: int, p_a: float, p_b: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(n) < p_a, rng.random(n) < p_b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mcnemar_exact_equals_statsmodels(seed):
    a, b = _paired(200, seed, 0.7, 0.6)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert mcnemar_exact(a, b) == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)


def test_mcnemar_hand_value_and_identical_outcomes():
    # 8 pairs only A right, 2 only B right: p = 2·P[Bin(10, .5) <= 2] = 2·56/1024
    a = np.array([1] * 8 + [0] * 2 + [1] * 5, bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5, bool)
    assert mcnemar_exact(a, b) == pytest.approx(2 * 56 / 1024)
    assert mcnemar_exact(a, a) == 1.0


def test_holm_equals_statsmodels():
    p = [0.01, 0.04, 0.03, 0.2, 0.001, 0.5]
    assert holm(p) == pytest.approx(multipletests(p, alpha=0.05, method="holm")[1].tolist())
    assert holm([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


def test_resample_weights_are_multinomial_draws():
    w = resample_weights(50, 200, seed=3)
    assert w.shape == (200, 50) and np.all(w.sum(axis=1) == 50) and np.all(w == np.round(w))
    assert np.array_equal(w, resample_weights(50, 200, seed=3))  # fixed seed: reproducible


def test_bootstrap_interval_of_a_mean_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=300)
    ours = bootstrap_interval(lambda w: w @ x / x.size, x.size, resamples=4000)
    ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=1).confidence_interval
    # two Monte-Carlo estimates of the same interval: equal to a few % of its width
    width = ref.high - ref.low
    assert ours[0] == pytest.approx(ref.low, abs=0.06 * width) and ours[1] == pytest.approx(ref.high, abs=0.06 * width)
    # and both near the normal-theory interval mean ± 1.96·sd/sqrt(n)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert ours[0] == pytest.approx(x.mean() - 1.96 * se, abs=0.1 * width)


def test_paired_binary_delta_interval_and_p():
    a, b = _paired(400, 5, 0.8, 0.6)
    diff = paired_binary(a, b, resamples=4000)
    assert diff.delta == pytest.approx(a.mean() - b.mean())
    assert diff.delta_ci95[0] < diff.delta < diff.delta_ci95[1]
    assert diff.p_value == mcnemar_exact(a, b) and diff.p_value < 1e-4 and diff.delta_ci95[0] > 0
    same = paired_binary(a, a)
    assert same.delta == 0.0 and same.delta_ci95 == (0.0, 0.0) and same.p_value == 1.0
    with pytest.raises(ValueError, match="same samples"):
        paired_binary(a, b[:-1])


def test_paired_bootstrap_of_a_weighted_statistic():
    rng = np.random.default_rng(2)
    x = rng.normal(0.5, 1.0, 250)
    y = x + rng.normal(0.3, 0.2, 250)  # B better by 0.3 on the same items
    diff = paired_bootstrap(lambda w: w @ x / x.size, lambda w: w @ y / y.size, x.size,
                            observed=(x.mean(), y.mean()), resamples=4000)
    assert diff.delta == pytest.approx(x.mean() - y.mean())
    assert diff.delta_ci95[1] < 0 and diff.p_value < 1e-3 and diff.test == "paired bootstrap"
    # the interval of the paired difference matches scipy's paired bootstrap of the mean difference
    ref = stats.bootstrap((x - y,), np.mean, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    width = ref.high - ref.low
    assert diff.delta_ci95 == pytest.approx((ref.low, ref.high), abs=0.06 * width)


def test_bootstrap_p_value_two_sided():
    assert bootstrap_p_value(np.array([1.0, 2.0, 3.0, -1.0])) == pytest.approx(0.5)
    assert bootstrap_p_value(np.array([1.0, 2.0])) == 0.0
    assert bootstrap_p_value(np.zeros(5)) == 1.0
