"""The auditor's test of a platform's filtering policy (``audit-test``).

Huleihel & Refael, "Mathematical Framework for Online Social Media Auditing", JMLR 25
(2024), arXiv:2209.05550. The null hypothesis is "the policy shifts users' decisions by
at most the allowed threshold"; the alternative "by threshold + ε or more".

One input is one audit dataset of n decisions (0/1) of independent users; k = their sum.
Under the null the decision rate is at most p_τ = p0 + τ (``AuditModel.null_rate``: the
natural-feed rate from the known model plus the threshold), and the least favourable
null is Bin(n, p_τ), so:
- ``score``: the test statistic, the standardised excess z = (k/n − p_τ) / sqrt(p_τ(1 −
  p_τ)/n) (higher = more evidence of a shift beyond the threshold);
- ``pvalue``: the exact one-sided binomial p-value P(X > k) + U·P(X = k), X ~ Bin(n, p_τ),
  with U ~ Uniform(0, 1) when ``randomized`` (uniform under the least favourable null,
  so the protocol's Type-I error at ``alpha`` equals alpha up to sampling noise) or U = 1
  (conservative, valid for every null rate ≤ p_τ).
Nothing is fitted: the calibration is the known model's null rate (``fit`` is a no-op).

Sample complexity. The paper bounds the number of samples its auditor needs for given
error rates; its exact constants could not be read here, so we state and test the bound
of our test: rejecting when k/n − p_τ ≥ sqrt(ln(1/α)/(2n)) has size ≤ α by Hoeffding, and
power ≥ 1 − β against a rate ≥ p_τ + ε once
    n ≥ n*(ε, α, β) = (sqrt(ln(1/α)/2) + sqrt(ln(1/β)/2))² / ε²,
again by Hoeffding. The exact binomial test is the uniformly most powerful level-α test
of this one-sided hypothesis, so it reaches power 1 − β at n* too (``sample_complexity``).
Being UMP, its power at any n is the exact binomial power, which the tests compare with
the power over simulated datasets; at n*/4 (150 for the values above) that is about 0.81,
so power 1 − β is missed there by a wide margin, while at n* it is about 0.9996 (Hoeffding
is loose: the exact test reaches 0.95 from n ≈ 260).

The randomisation U is drawn from torch's global generator, seeded by the run's seed; the
audit datasets (``audit-sim``) are drawn from the run's seed too, so a suite's seeds are
independent replications and the protocol's Type-I error and power, each with its Wilson
interval over the audit datasets, measure the test rather than one draw of data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Interval
from scipy.stats import binom
from torch import nn


def sample_complexity(eps: float, alpha: float, beta: float) -> int:
    """n*(ε, α, β): samples that guarantee size α and power 1 − β (Hoeffding bound)."""
    if eps <= 0 or not 0 < alpha < 1 or not 0 < beta < 1:
        raise ValueError("need eps > 0 and alpha, beta in (0, 1)")
    root = math.sqrt(math.log(1 / alpha) / 2) + math.sqrt(math.log(1 / beta) / 2)
    return math.ceil(root**2 / eps**2)


def _null_rate(model: nn.Module) -> float:
    rate = getattr(model, "null_rate", None)
    if rate is None:
        raise TypeError("audit-test needs the auditor's model (AuditModel with null_rate)")
    return float(rate)


class AuditTest:
    def __init__(
        self, alpha: Annotated[float, Interval(gt=0, lt=1)] = 0.05, randomized: bool = True
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must lie in (0, 1)")
        self.alpha, self.randomized = alpha, randomized

    def fit(self, model: nn.Module, in_distribution_batches: Iterable[Any]) -> None:
        """Nothing to fit: the null rate comes from the known model."""

    def score(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        p, n = _null_rate(model), batch.shape[-1]
        excess = batch.float().mean(-1) - p
        return excess / math.sqrt(p * (1.0 - p) / n)

    def pvalue(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        p, n = _null_rate(model), batch.shape[-1]
        k = batch.float().sum(-1).round().cpu().numpy()
        u = torch.rand(len(k)).numpy() if self.randomized else np.ones(len(k))
        pv = binom.sf(k, n, p) + u * binom.pmf(k, n, p)
        return torch.from_numpy(np.clip(pv, 0.0, 1.0).astype(np.float32))

    def reject(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """The audit's verdict per dataset: True = the policy exceeds the threshold."""
        return self.pvalue(model, batch) < self.alpha
