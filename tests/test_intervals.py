"""The 95% intervals leaderboards rank with, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from benchmark.metrics.intervals import auroc_interval, mean_interval, overlap, wilson


def test_wilson_matches_the_closed_form_and_stays_in_the_unit_interval() -> None:
    p, n, z = 0.87, 100, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(87, 100) == pytest.approx((centre - half, centre + half))
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35


def test_mean_interval_is_student_t() -> None:
    xs = [4.1, 4.3, 4.2, 4.6]
    half = stats.t.ppf(0.975, 3) * np.std(xs, ddof=1) / 2
    assert mean_interval(xs) == pytest.approx((np.mean(xs) - half, np.mean(xs) + half))
    with pytest.raises(ValueError):
        mean_interval([1.0])


def test_delong_variance_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    neg, pos = rng.normal(0, 1, 40), rng.normal(0.8, 1, 30)
    # DeLong from its definition: psi(x, y) = 1 if y > x, 1/2 on ties.
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    var = psi.mean(axis=1).var(ddof=1) / len(pos) + psi.mean(axis=0).var(ddof=1) / len(neg)
    half = 1.959963984540054 * math.sqrt(var)
    assert auroc_interval(neg, pos) == pytest.approx((auc - half, auc + half))


def test_delong_covers_the_true_auroc_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    true = stats.norm.cdf(1 / math.sqrt(2))  # N(0,1) vs N(1,1)
    hits = 0
    for _ in range(300):
        lo, hi = auroc_interval(rng.normal(0, 1, 80), rng.normal(1, 1, 60))
        hits += lo <= true <= hi
    assert 0.90 <= hits / 300 <= 0.99


def test_perfect_separation_still_has_a_width() -> None:
    lo, hi = auroc_interval(np.arange(20), np.arange(100, 130))
    assert hi == 1.0 and lo < 0.95


def test_overlap() -> None:
    assert overlap((0, 1), (1, 2)) and not overlap((0, 1), (1.01, 2))
