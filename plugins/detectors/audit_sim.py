"""Auditing a platform's filtering policy: the ``audit-sim`` workload.

Huleihel & Refael, "Mathematical Framework for Online Social Media Auditing" (JMLR 25,
2024; arXiv:2209.05550). A platform filters the content each user sees; the users'
beliefs move with what they are shown; a regulator allows the filtering to shift the
users' decisions by at most a threshold relative to a natural (unfiltered) feed, and an
auditor tests from data whether the platform stays within it.

The simulator (seeded numpy):
- a user starts with a belief b0 ~ Beta(2, 2): the probability of choosing option A;
- for ``rounds`` rounds the platform shows a feed of ``feed_size`` items, each of stance
  A with probability f (the policy; the natural feed has f = ``natural_rate``), and the
  user moves towards what was shown: b ← (1 − λ) b + λ · (share of A items), λ =
  ``learning_rate``;
- the user then decides: A with probability b. One observation = one user's decision.
A policy's deflection is the change it causes in the probability of deciding A,
E[b_T | f] − E[b_T | natural] = (1 − (1 − λ)^T)(f − natural_rate), linear in f, so the
simulator sets f to give an exact deflection. "in" audit datasets come from a fair policy
within the threshold (deflection ``fair_deflection``, by default exactly ``threshold``:
the least favourable case of the null, where a test of size alpha rejects at rate alpha),
"out" datasets from a shifting policy (deflection ``threshold + shift``). One test input
is one dataset: a row of ``n_samples`` 0/1 decisions.

The model handed to detectors is ``AuditModel``: what the auditor is assumed to know —
the natural-feed decision rate p0 and the threshold, whose sum is the null rate.

Which datasets: by default (``seed: null``) they are drawn from the run's seed, which the
detector protocol hands over through ``bind_run_seed`` before it asks for data, so a
suite's seeds are independent replications of the whole audit (new users, new decisions,
new randomisation) and the spread over seeds is the test's own sampling noise; with the
datasets fixed, the seeds would vary only the p-value randomisation and their spread would
understate the noise of one draw of datasets (measured: ``docs/methods/audit-test.md``).
An integer ``seed`` option fixes the datasets whatever the run's seed (to re-score
one draw); outside a run, with neither, the streams are those of seed 0.

Validation: ``val_datasets`` more audit datasets per policy, simulated from random streams
of their own (the test's streams are unchanged), so they are fresh draws of the same
policies. The auditor fits nothing, so a validation AUROC measures the same test on new
data; it exists so that a grid over the test's options is chosen without the test set.

Where this departs from the paper: its model follows beliefs as a Markov chain over time
and its auditor tests the chain's transition behaviour; here the auditor sees only the
users' final decisions (i.i.d. Bernoulli under either policy), which reduces the audit to
a one-sided test of a Bernoulli rate with the same structure (composite null "deflection
≤ threshold", alternative "≥ threshold + shift").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import numpy as np
import torch
from annotated_types import Interval
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from benchmark.kinds.workload import check_split

BELIEF_PRIOR = (2.0, 2.0)  # Beta parameters of the users' initial beliefs


class AuditModel(nn.Module):
    """The auditor's knowledge: p0 (natural-feed rate of deciding A) and the threshold."""

    def __init__(self, natural_decision_rate: float, threshold: float) -> None:
        super().__init__()
        self.register_buffer("natural_decision_rate", torch.tensor(natural_decision_rate))
        self.register_buffer("threshold", torch.tensor(threshold))

    @property
    def null_rate(self) -> float:
        """The largest decision rate the null ("within the threshold") allows."""
        return float(self.natural_decision_rate + self.threshold)

    def forward(self, decisions: torch.Tensor) -> torch.Tensor:
        """The observed decision rate of each audit dataset (row)."""
        return decisions.float().mean(dim=-1)


class SocialMediaSim:
    """Users, content and filtering policies; see the module docstring."""

    def __init__(
        self,
        *,
        rounds: int = 5,
        feed_size: int = 10,
        learning_rate: float = 0.3,
        natural_rate: float = 0.5,
    ) -> None:
        if not 0.0 < learning_rate <= 1.0 or rounds < 1 or feed_size < 1:
            raise ValueError("need 0 < learning_rate <= 1, rounds >= 1 and feed_size >= 1")
        self.rounds, self.feed_size = rounds, feed_size
        self.learning_rate, self.natural_rate = learning_rate, natural_rate

    @property
    def gain(self) -> float:
        """How much of a shift in the feed's stance rate reaches the decision rate."""
        return 1.0 - (1.0 - self.learning_rate) ** self.rounds

    def decision_rate(self, stance_rate: float) -> float:
        a, b = BELIEF_PRIOR
        keep = (1.0 - self.learning_rate) ** self.rounds
        return keep * a / (a + b) + self.gain * stance_rate

    def policy_for(self, deflection: float) -> float:
        """The stance rate f whose deflection from the natural feed is ``deflection``."""
        f = self.natural_rate + deflection / self.gain
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"deflection {deflection} needs a stance rate {f:.3f} outside [0, 1]")
        return f

    def decisions(self, stance_rate: float, shape: tuple[int, ...], rng: np.random.Generator):  # type: ignore[no-untyped-def]
        """0/1 decisions of independent users (array of ``shape``) under a policy."""
        belief = rng.beta(*BELIEF_PRIOR, size=shape)
        for _ in range(self.rounds):
            shown = rng.binomial(self.feed_size, stance_rate, size=shape) / self.feed_size
            belief = (1.0 - self.learning_rate) * belief + self.learning_rate * shown
        return (rng.random(shape) < belief).astype(np.float32)


class AuditWorkload:
    """Implements ``DetectorWorkload``: rows of decisions under a fair vs a shifting policy."""

    def __init__(
        self,
        *,
        n_samples: PositiveInt = 200,  # decisions in one audit dataset (one test input)
        shift: PositiveFloat = 0.1,  # the shifting policy's deflection beyond the threshold
        threshold: NonNegativeFloat = 0.05,  # the deflection the regulator allows
        fair_deflection: float | None = None,  # the fair policy's (None: the threshold)
        n_datasets: PositiveInt = 400,  # test datasets per policy
        val_datasets: NonNegativeInt = 200,  # validation datasets per policy (0: none)
        rounds: PositiveInt = 5,
        feed_size: PositiveInt = 10,
        learning_rate: Annotated[float, Interval(gt=0, le=1)] = 0.3,
        natural_rate: Annotated[float, Interval(ge=0, le=1)] = 0.5,
        seed: NonNegativeInt | None = None,  # None: the run's seed
    ) -> None:
        if shift <= 0 or threshold < 0:
            raise ValueError("need shift > 0 and threshold >= 0")
        self.sim = SocialMediaSim(
            rounds=rounds,
            feed_size=feed_size,
            learning_rate=learning_rate,
            natural_rate=natural_rate,
        )
        fair = threshold if fair_deflection is None else fair_deflection
        if fair > threshold:
            raise ValueError("fair_deflection must be within the threshold")
        self.n_samples, self.n_datasets, self.seed = n_samples, n_datasets, seed
        self.run_seed: int | None = None
        self.val_datasets = val_datasets
        self.validation = (
            f"{val_datasets} audit datasets per policy from random streams of their own, "
            f"independent of the {n_datasets} test datasets"
            if val_datasets > 0
            else None
        )
        self.threshold, self.shift = threshold, shift
        self.stance = {
            "in": self.sim.policy_for(fair),
            "out": self.sim.policy_for(threshold + shift),
        }
        self.in_name = f"fair-policy(deflection={fair:g})"
        self.out_name = f"shifting-policy(deflection={threshold + shift:g})"

    def model(self, device: torch.device) -> nn.Module:
        p0 = self.sim.decision_rate(self.sim.natural_rate)
        return AuditModel(p0, self.threshold).to(device).eval()

    def fit_batches(self, device: torch.device) -> list[torch.Tensor]:
        """Nothing to fit: the auditor calibrates from the known model (``AuditModel``)."""
        return []

    def bind_run_seed(self, seed: int) -> None:
        """Called by the detector protocol with the run's seed before any data is drawn;
        without it the datasets could not change from one seed of a suite to the next."""
        self.run_seed = int(seed)

    @property
    def data_seed(self) -> int:
        """The seed the datasets are drawn from: the ``seed`` option when given (an
        override), else the run's, else 0 (standalone use)."""
        if self.seed is not None:
            return int(self.seed)
        return 0 if self.run_seed is None else self.run_seed

    def stream(self, which: str, split: str = "test") -> list[int]:
        """The seed of a split's random stream for one policy (validation: one more word)."""
        words = [self.data_seed, 0 if which == "in" else 1, self.n_samples]
        return words if split == "test" else [*words, 1]

    def datasets(self, which: str, split: str = "test") -> torch.Tensor:
        if which not in self.stance:
            raise ValueError(f"which must be 'in' or 'out', not {which!r}")
        check_split(split, self)
        rng = np.random.default_rng(self.stream(which, split))
        count = self.n_datasets if split == "test" else self.val_datasets
        rows = self.sim.decisions(self.stance[which], (count, self.n_samples), rng)
        return torch.from_numpy(rows)

    def test_batches(
        self, which: str, device: torch.device, split: str = "test"
    ) -> Iterator[torch.Tensor]:
        x = self.datasets(which, split)
        for i in range(0, len(x), 100):
            yield x[i : i + 100].to(device)
