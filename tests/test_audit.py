"""The auditing test's defining properties on the social-media simulator: its Type-I error
under a fair policy at the threshold is alpha, its power grows with the number of
samples, and at the sample-complexity bound n*(ε, α, β) it reaches power 1 − β."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binom

from benchmark.workloads.audit import AuditWorkload, SocialMediaSim
from plugins.detectors.audit import AuditTest, sample_complexity

CPU = torch.device("cpu")
ALPHA = 0.05


def _rejection_rate(n: int, which: str, seed: int = 0, **options: float) -> float:
    wl = AuditWorkload(n_samples=n, n_datasets=400, seed=seed, **options)
    torch.manual_seed(seed)
    test = AuditTest(alpha=ALPHA)
    test.fit(wl.model(CPU), wl.fit_batches(CPU))
    return float(test.reject(wl.model(CPU), wl.datasets(which)).float().mean())


def test_simulator_deflection_matches_the_policy() -> None:
    sim = SocialMediaSim()
    rng = np.random.default_rng(0)
    f = sim.policy_for(0.15)
    natural = sim.decisions(sim.natural_rate, (200_000,), rng).mean()
    shifted = sim.decisions(f, (200_000,), rng).mean()
    assert natural == pytest.approx(sim.decision_rate(sim.natural_rate), abs=0.005)
    assert shifted - natural == pytest.approx(0.15, abs=0.007)


@pytest.mark.parametrize("n", [50, 300])
def test_type1_error_at_alpha_under_a_fair_policy(n: int) -> None:
    rate = _rejection_rate(n, "in")
    lo, hi = binom.ppf([0.0005, 0.9995], 400, ALPHA) / 400  # 99.9% band
    assert lo <= rate <= hi, rate


def test_a_policy_well_inside_the_threshold_is_rarely_flagged() -> None:
    assert _rejection_rate(300, "in", fair_deflection=0.0) <= 0.01


def test_power_grows_with_the_number_of_samples() -> None:
    # Expected power at ε = 0.1: about 0.26, 0.64, 0.88; 400 datasets give SE <= 0.025.
    powers = [_rejection_rate(n, "out") for n in (25, 100, 200)]
    assert powers[0] + 0.15 < powers[1] and powers[1] + 0.1 < powers[2], powers


def test_power_reaches_one_minus_beta_at_the_sample_complexity_bound() -> None:
    eps, beta = 0.1, 0.05
    n_star = sample_complexity(eps, ALPHA, beta)
    assert n_star == 600  # ceil((2·sqrt(ln 20 / 2))² / 0.01) = ceil(2 ln 20 / 0.01)
    assert _rejection_rate(n_star, "out", shift=eps) >= 1 - beta
    # And well below n*, the same test is far from that power: the bound is not vacuous
    # in the direction that matters (more samples are needed at small n).
    assert _rejection_rate(n_star // 20, "out", shift=eps) < 1 - beta
