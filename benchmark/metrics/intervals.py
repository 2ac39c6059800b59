"""95% confidence intervals for the figures a leaderboard ranks.

Two sources of uncertainty, and a figure carries whichever it has: the test set (a
proportion over n items, an AUROC over n_in x n_out pairs, a mean loss over evaluation
sequences), which a single run already measures; and the seed (training randomness),
which needs several runs. Ranking two methods whose intervals overlap is inventing an
order, so the leaderboard marks them tied instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion: unlike the normal approximation it stays
    inside [0, 1] and is not degenerate at 0 or n successes."""
    if n <= 0:
        raise ValueError("a proportion needs n >= 1 items")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of a mean; needs two or more values (one gives no spread)."""
    xs = np.asarray(values, dtype=np.float64)
    if xs.size < 2:
        raise ValueError("an interval of a mean needs at least 2 values")
    mean = float(xs.mean())
    sem = float(xs.std(ddof=1) / math.sqrt(xs.size))
    half = float(stats.t.ppf(0.5 + level / 2, xs.size - 1)) * sem
    return mean - half, mean + half


def auroc_interval(scores_neg: Any, scores_pos: Any, z: float = Z95) -> tuple[float, float]:
    """DeLong's interval of the AUROC (positives should score higher), from the structural
    components of the Mann-Whitney statistic (DeLong, DeLong & Clarke-Pearson 1988), in
    O(n log n) by ranks (Sun & Xu 2014); ties count one half."""
    neg = np.asarray(scores_neg, dtype=np.float64).reshape(-1)
    pos = np.asarray(scores_pos, dtype=np.float64).reshape(-1)
    m, n = pos.size, neg.size
    if m < 2 or n < 2:
        raise ValueError("DeLong's interval needs at least 2 positives and 2 negatives")
    joint = stats.rankdata(np.concatenate([pos, neg]))
    rank_pos, rank_neg = stats.rankdata(pos), stats.rankdata(neg)
    auc = (joint[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (joint[:m] - rank_pos) / n  # per positive: share of negatives it beats
    v01 = 1.0 - (joint[m:] - rank_neg) / m  # per negative: share of positives above it
    var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    if var <= 0.0:
        # Perfect separation (or none): every structural component is equal and DeLong's
        # variance is 0, an interval of one point that would declare the figure exact.
        # Fall back to the Wilson interval of the AUROC as a proportion over the smaller
        # class, which still says "n items can only show so much".
        k = min(m, n)
        return wilson(auc * k, k, z)
    half = z * math.sqrt(var)
    return max(0.0, auc - half), min(1.0, auc + half)


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals share a point."""
    return a[0] <= b[1] and b[0] <= a[1]
