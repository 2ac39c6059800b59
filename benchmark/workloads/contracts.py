"""What a workload must offer to each kind's protocol.

A ``WorkloadSpec.factory(**options)`` returns one of these. Workloads own their data,
model and quality metric; protocols own measurement. Quality metrics declare their name,
unit and direction so reports never guess.

Splits. "test" is the split a record reports and a leaderboard ranks on. A workload that
can offer a validation split ("val") says so in its ``validation`` attribute (a sentence
saying what the split holds; absent or None: there is none) and serves it through the same
calls (``evaluate(..., split="val")``, ``labelled_batches("val", ...)``,
``test_batches(which, ..., split="val")``). Validation is disjoint from the test split and
from everything the protocols fit, calibrate or fine-tune on (the "train" split, a
detector's ``fit_batches``), so that grids are tuned on validation figures (``val_*``)
and the test figure stays an honest estimate for the winner.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class QualityMetric:
    """Name, unit and direction of a workload's quality figure (e.g. accuracy, fraction).

    ``log_scale``: ratios between qualities (how much of a gap an attacker closes) are
    taken on the logarithm, as for perplexity, where the log is the loss."""

    name: str
    unit: str
    higher_is_better: bool
    log_scale: bool = False

    def oriented(self, value: float) -> float:
        """The value on the scale where higher is better and differences are comparable."""
        v = math.log(max(value, 1e-300)) if self.log_scale else value
        return v if self.higher_is_better else -v


SPLITS = ("test", "val")  # the splits ``evaluate`` and ``test_batches`` may be asked for


def has_validation(workload: Any) -> bool:
    """Whether a workload offers a validation split (its ``validation`` attribute)."""
    return bool(getattr(workload, "validation", None))


def check_split(split: str, workload: Any = None) -> None:
    """Refuse a split other than "test" or "val", and "val" where there is none."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'test' or 'val', not {split!r}")
    if split == "val" and workload is not None and not has_validation(workload):
        raise ValueError(f"{type(workload).__name__} has no validation split")


@dataclass(frozen=True)
class QualityInterval:
    """The 95% interval of a quality figure from the sampling of its evaluation set (the
    test or validation items), not from training randomness; ``n``: the items it averages
    over (examples; documents for perplexity); ``method``: how it was computed."""

    low: float
    high: float
    n: int
    method: str


def proportion_interval(value: float, n: int) -> QualityInterval:
    """Wilson interval of an accuracy over ``n`` items (``value`` = correct / n)."""
    from benchmark.metrics.intervals import wilson

    low, high = wilson(round(value * n), n)
    return QualityInterval(low, high, n, f"Wilson over {n} items")


def proportion_stderr(value: float, n: int) -> float:
    """Binomial standard error of an accuracy over ``n`` items."""
    return math.sqrt(max(value * (1 - value), 0.0) / n)


def perplexity_interval(loglik: Sequence[float], units: Sequence[float]) -> QualityInterval:
    """Interval of a perplexity exp(−Σ loglik / Σ units) over documents (loglik: a
    document's total log-likelihood, units: its words or tokens): the per-unit loss is a
    ratio estimator, whose standard error over the documents comes from the delta method
    (residuals d_i = −loglik_i − L·units_i), with Student's t on n − 1 degrees of freedom
    (few documents); the bounds are exponentiated."""
    from scipy import stats

    a = [-float(v) for v in loglik]
    b = [float(u) for u in units]
    n = len(a)
    if n < 2 or len(b) != n or sum(b) <= 0:
        raise ValueError("a perplexity interval needs 2 or more documents with units")
    loss = sum(a) / sum(b)
    resid = sum((ai - loss * bi) ** 2 for ai, bi in zip(a, b, strict=True))
    se = math.sqrt(n * resid / (n - 1)) / sum(b)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return QualityInterval(
        math.exp(loss - half),
        math.exp(loss + half),
        n,
        f"delta method over {n} documents (t, {n - 1} df), exponentiated",
    )


@dataclass(frozen=True)
class AttackRecipe:
    """How an attacker fine-tunes this workload's model: a workload knows the learning
    rate its model tolerates (Adam at 1e-3 wrecks a pretrained transformer that was tuned
    at 5e-5), so security attacks take their optimiser settings from here, not from a
    constant that suits one model. ``schedule``: "constant" or "linear" (decay to 0)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    batch_size: int = 32
    # The task head (the model's ``last_layer``) starts untrained for an attacker who
    # starts from a public checkpoint; it learns at this rate (None: ``lr``), as a fresh
    # head is fine-tuned on top of a pretrained encoder (and as the TEE-partition
    # benchmark's stealing attack trains its classifier faster than the rest).
    head_lr: float | None = None


@runtime_checkable
class OptimizerWorkload(Protocol):
    """A model trained from scratch; the optimizer protocol drives the loop.

    Optional attributes: ``loss_unit`` (default "nats": a language model's loss; an
    autoencoder's is an MSE) and ``figure_units`` (name -> unit of further figures
    ``evaluate`` reports, kept as metrics under those names, lower is better).
    """

    target_loss: float | None
    items_unit: str  # what throughput counts, e.g. "tokens"

    def build_model(self, seed: int, device: torch.device) -> nn.Module: ...

    def train_batches(self, seed: int, device: torch.device) -> Iterator[Any]:
        """An endless stream of training batches, deterministic for a seed."""
        ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def items_in(self, batch: Any) -> int:
        """How many items (tokens, samples) a batch holds, for throughput."""
        ...

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Held-out figures; must include 'eval_loss' (in ``loss_unit``) and may add
        'perplexity' and the figures named in ``figure_units``."""
        ...


@runtime_checkable
class ClassifierWorkload(Protocol):
    """A trained model with labelled data: used by compressors and security splits."""

    quality: QualityMetric

    def model(self, device: torch.device) -> nn.Module:
        """The trained reference model (a fresh copy each call, in eval mode)."""
        ...

    def fresh_model(self, seed: int, device: torch.device) -> nn.Module:
        """The same architecture at random initialisation."""
        ...

    def evaluate(self, model: nn.Module, device: torch.device, split: str = "test") -> float:
        """The quality figure on the test split, or on the validation split (``split="val"``,
        where ``validation`` says there is one)."""
        ...

    def example_inputs(self, batch_size: int, device: torch.device) -> Any:
        """A fixed batch of real inputs, for latency, FLOPs and output comparisons."""
        ...

    def labelled_batches(
        self, split: str, n: int, batch_size: int, seed: int, device: torch.device
    ) -> list[tuple[Any, torch.Tensor]]:
        """``n`` labelled samples of a split ("train", "test", or "val" where there is
        one) in batches."""
        ...

    def loss(self, model: nn.Module, inputs: Any, labels: torch.Tensor) -> torch.Tensor: ...


# Optional on a ClassifierWorkload, read by the security protocol with getattr:
# - ``attack_recipe: AttackRecipe`` (default ``AttackRecipe()``);
# - ``attacker_model(seed, device)``: where an attacker starts, the public pretrained
#   checkpoint with a fresh task head for a workload built from one (default
#   ``fresh_model``), and ``attacker_start: str`` saying which;
# - ``quality_stderr(value) -> float | None``: the standard error of the quality figure on
#   the test set (e.g. binomial for accuracy); None where it cannot be had;
# - ``quality_interval(value, split="test") -> QualityInterval | None``: the figure's 95%
#   interval over that split's items (Wilson for an accuracy, ``proportion_interval``;
#   exponentiated delta-method interval over documents for a perplexity,
#   ``perplexity_interval``). ``value`` must be one that ``evaluate`` returned on that
#   split: a workload whose interval needs more than the value (per-document losses)
#   keeps them for its recent evaluations, keyed by the value, and returns None for a
#   value it did not compute. Read by the compressor protocol;
# - ``validation: str | None``: what the validation split holds (None: no such split);
# - ``has_members: bool`` (default True): whether ``labelled_batches("train", ...)`` holds
#   the model's own training data, so that a membership-inference attack means something.
# ``labelled_batches`` must draw the first n samples of one seed's permutation whatever n
# is (a prefix), so the protocol can hand disjoint slices to tuning, selection and the
# membership test.


@runtime_checkable
class DetectorWorkload(Protocol):
    """A trained classifier with an in-distribution and an out-of-distribution test set."""

    in_name: str
    out_name: str

    def model(self, device: torch.device) -> nn.Module: ...

    def fit_batches(self, device: torch.device) -> Iterable[Any]:
        """In-distribution ``(inputs, labels)`` batches to fit on, held apart from the test set."""
        ...

    def test_batches(self, which: str, device: torch.device, split: str = "test") -> Iterable[Any]:
        """Held-out input batches; ``which`` is "in" or "out"; ``split`` "test" (reported)
        or "val" (where ``validation`` says there is one: in and out sets disjoint from the
        test sets and from ``fit_batches``)."""
        ...


# Optional on a DetectorWorkload: ``validation: str | None`` (as for classifiers),
# ``oracle`` (a label oracle whose ``used`` count the protocol reports), and
# ``bind_run_seed(seed: int) -> None`` for workloads whose test data are drawn per run (the
# protocol calls it with the run's seed before anything is drawn, so seeds replicate data).
