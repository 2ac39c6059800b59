"""The auditing test's defining properties on the social-media simulator: its Type-I error
under a fair policy at the threshold is alpha, its power grows with the number of
samples and matches the exact power of the uniformly most powerful binomial test, and
at the sample-complexity bound n*(ε, α, β) it reaches power 1 − β while at n*/4 it
does not. Through the protocol, a suite's seeds draw new audit datasets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

from benchmark.metrics.intervals import wilson
from benchmark.protocols import detector
from benchmark.protocols.base import seed_everything
from benchmark.records import Metric
from plugins.detectors.audit import AuditTest, sample_complexity
from plugins.detectors.audit_sim import AuditWorkload, SocialMediaSim

from .helpers import context

CPU = torch.device("cpu")
ALPHA = 0.05
Z999 = 3.2905  # two-sided 99.9% normal quantile


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


def _exact_power(n: int, p_null: float, p_alt: float, alpha: float) -> float:
    """Power of the randomised UMP level-alpha test of "rate <= p_null" against p_alt,
    from the binomial pmf written out here (not the plugin's scipy calls): reject when
    k > c, and with probability g when k = c, where P0(X > c) <= alpha < P0(X >= c) and
    g = (alpha - P0(X > c)) / P0(X = c)."""

    def pmf(p: float) -> list[float]:
        log_c = [
            math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(n + 1)
        ]
        return [
            math.exp(lc + k * math.log(p) + (n - k) * math.log1p(-p)) for k, lc in enumerate(log_c)
        ]

    f0, f1 = pmf(p_null), pmf(p_alt)
    above = [math.fsum(f0[k + 1 :]) for k in range(n + 1)]  # P0(X > k)
    c = min(k for k in range(n + 1) if above[k] <= alpha)
    g = (alpha - above[c]) / f0[c]
    return math.fsum(f1[c + 1 :]) + g * f1[c]


def test_sample_complexity_is_the_least_n_hoeffding_guarantees() -> None:
    # Hoeffding, written out: the test "k/n - p_null >= t", t = sqrt(ln(1/alpha)/(2n)),
    # has size <= alpha, and against a rate p_null + eps its miss probability is at most
    # exp(-2n(eps - t)^2). n* must be the least n for which that is <= beta.
    def guaranteed(n: int, eps: float, alpha: float, beta: float) -> bool:
        t = math.sqrt(math.log(1 / alpha) / (2 * n))
        return eps > t and math.exp(-2 * n * (eps - t) ** 2) <= beta

    for eps, alpha, beta in [(0.1, 0.05, 0.05), (0.05, 0.01, 0.2), (0.2, 0.1, 0.01)]:
        n_star = sample_complexity(eps, alpha, beta)
        assert guaranteed(n_star, eps, alpha, beta), (eps, alpha, beta, n_star)
        assert not guaranteed(n_star - 1, eps, alpha, beta), (eps, alpha, beta, n_star)
    assert sample_complexity(0.1, ALPHA, 0.05) == 600  # 2 ln 20 / 0.01, rounded up


@pytest.mark.parametrize("fraction", [1, 4])
def test_power_at_n_star_and_at_a_quarter_of_it(fraction: int) -> None:
    """At n* the audit's power over many simulated datasets reaches 1 - beta; at n*/4 it
    is significantly below it; at both it matches the exact binomial power."""
    eps, beta, datasets = 0.1, 0.05, 2000
    n = sample_complexity(eps, ALPHA, beta) // fraction
    # The simulator's natural decision rate: E[b_T] = (1-λ)^T E[b0] + (1-(1-λ)^T) f with
    # E[b0] = 1/2 (Beta(2, 2)) and f = 1/2, so 1/2 whatever λ and T.
    p_null = 0.5 + 0.05  # + threshold (the workload's default)
    reference = _exact_power(n, p_null, p_null + eps, ALPHA)
    assert _exact_power(n, p_null, p_null, ALPHA) == pytest.approx(ALPHA, abs=1e-9)
    wl = AuditWorkload(n_samples=n, n_datasets=datasets, shift=eps, seed=3)
    torch.manual_seed(3)
    test = AuditTest(alpha=ALPHA)
    rejected = int(test.reject(wl.model(CPU), wl.datasets("out")).sum())
    lo, hi = binom.ppf([0.0005, 0.9995], datasets, reference)  # 99.9% band around the exact
    assert lo <= rejected <= hi, (n, rejected / datasets, reference)
    upper = wilson(rejected, datasets, Z999)[1]
    if fraction == 1:
        assert reference >= 1 - beta and upper >= 1 - beta, (rejected / datasets, reference)
    else:
        assert reference < 1 - beta and upper < 1 - beta, (rejected / datasets, reference)


def _run(run_seed: int, options: dict[str, object]) -> dict[str, Metric]:
    ctx = context("detector", "audit-test", "audit-sim", options=options)
    ctx = dataclasses.replace(ctx, spec=ctx.spec.model_copy(update={"seed": run_seed}))
    seed_everything(run_seed)  # as the runner does before a run
    return detector.run(ctx).metrics


def test_datasets_follow_the_run_seed_unless_the_seed_option_fixes_them() -> None:
    options = {"n_samples": 100, "n_datasets": 300, "val_datasets": 0}
    first, second = _run(0, options), _run(1, options)
    # New users and decisions per seed: the AUROC of the (deterministic) statistic moves.
    assert first["auroc"].value != second["auroc"].value
    fixed = [_run(s, {**options, "seed": 5})["auroc"].value for s in (0, 1)]
    assert fixed[0] == fixed[1]  # the option overrides: one draw, re-scored
    for name in ("type1_error_at_alpha", "power_at_alpha"):
        m = first[name]
        assert m.n == 300  # one test per audit dataset
        assert (m.ci_low, m.ci_high) == pytest.approx(wilson(round(m.value * 300), 300))


def test_every_split_of_both_policies_is_redrawn_per_run_seed() -> None:
    """Both policies' datasets (fair: Type-I error; shifting: power), test and validation,
    change with the bound run seed, and none changes when the ``seed`` option fixes them:
    a stream left on seed 0 for one policy would freeze that rate's spread over seeds."""
    from plugins.detectors.audit_sim import AuditWorkload

    def draws(run_seed: int, **options: object) -> dict[tuple[str, str], torch.Tensor]:
        wl = AuditWorkload(n_samples=40, n_datasets=20, val_datasets=10, **options)  # type: ignore[arg-type]
        wl.bind_run_seed(run_seed)
        return {(w, s): wl.datasets(w, s) for w in ("in", "out") for s in ("test", "val")}

    a, b = draws(0), draws(1)
    for key in a:
        assert not torch.equal(a[key], b[key]), key
    fixed_a, fixed_b = draws(0, seed=5), draws(1, seed=5)
    for key in fixed_a:
        assert torch.equal(fixed_a[key], fixed_b[key]), key
