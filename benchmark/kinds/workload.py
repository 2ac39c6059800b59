"""What every workload shares, and the classifier contract two kinds use.

A ``WorkloadSpec.factory(**options)`` returns the object its kind's workload contract
(``KindDef.workload``) describes. Workloads own their data, model and quality metric;
protocols own measurement. Quality metrics declare their name, unit and direction so
reports never guess.

Splits. "test" is the split a record reports and a leaderboard ranks on. A workload that
can offer a validation split ("val") says so in its ``validation`` attribute (a sentence
saying what the split holds; absent or None: there is none) and serves it through the same
calls (``evaluate(..., split="val")``, ``labelled_batches("val", ...)``,
``test_batches(which, ..., split="val")``). Validation is disjoint from the test split and
from everything the protocols fit, calibrate or fine-tune on (the "train" split, a
detector's ``fit_batches``), so that grids are tuned on validation figures (``val_*``)
and the test figure stays an honest estimate for the winner.

Imports no torch (annotations only): kinds are declared at discovery.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class QualityMetric:
    """Name, unit and direction of a workload's quality figure (e.g. accuracy, fraction).

    ``log_scale``: ratios between qualities (how much of a gap an attacker closes) are
    taken on the logarithm, as for perplexity, where the log is the loss. ``scope``: what
    the figure is computed on when that is only part of the evaluation set the workload
    names (a named lm-eval task cut to ``eval_docs`` documents), so that the metric's
    meter says so (``meter``)."""

    name: str
    unit: str
    higher_is_better: bool
    log_scale: bool = False
    scope: str | None = None

    @property
    def meter(self) -> str:
        """The meter of a figure this metric gives: ``workload <name>`` and its scope."""
        return f"workload {self.name}" + (f" ({self.scope})" if self.scope else "")

    def oriented(self, value: float) -> float:
        """The value on the scale where higher is better and differences are comparable."""
        v = math.log(max(value, 1e-300)) if self.log_scale else value
        return v if self.higher_is_better else -v


SPLITS = ("test", "val")  # the splits ``evaluate`` and ``test_batches`` may be asked for


def has_validation(workload: Any) -> bool:
    """Whether a workload offers a validation split (its ``validation`` attribute)."""
    return isinstance(workload, HasValidation) and bool(workload.validation)


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


def t95(df: int) -> float:
    """The two-sided 95% quantile of Student's t on ``df`` degrees of freedom (a mean
    over few items: 2.45 for 7, not the normal 1.96)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def stderr_interval(
    value: float,
    se: float,
    n: int,
    *,
    log_scale: bool = False,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    source: str = "standard error",
) -> QualityInterval:
    """The 95% interval of a figure averaged over ``n`` items from its standard error
    ``se``: value ± t(n − 1)·se. A figure compared on its log (``log_scale``, a
    perplexity) gets it there, exp(log v ± t·se/v) (delta method: se(log v) ≈ se/v), so
    it stays positive and as skewed as the figure; the bounds are then clipped to the
    figure's range (``bounds``: [0, 1] for an accuracy)."""
    if n < 2 or not se >= 0:
        raise ValueError("an interval from a standard error needs 2 or more items and se >= 0")
    t = t95(n - 1)
    if log_scale:
        if value <= 0:
            raise ValueError(f"a log-scale figure must be positive, not {value!r}")
        low, high = value * math.exp(-t * se / value), value * math.exp(t * se / value)
        how = f"{source} x t ({n - 1} df) on the log scale, exponentiated"
    else:
        low, high = value - t * se, value + t * se
        how = f"{source} x t ({n - 1} df)"
    lo, hi = bounds
    clipped = low < lo or high > hi
    how += f", clipped to [{lo:g}, {hi:g}]" if clipped else ""
    return QualityInterval(max(low, lo), min(high, hi), n, f"{how}, {n} items")


def perplexity_interval(loglik: Sequence[float], units: Sequence[float]) -> QualityInterval:
    """Interval of a perplexity exp(−Σ loglik / Σ units) over documents (loglik: a
    document's total log-likelihood, units: its words or tokens): the per-unit loss is a
    ratio estimator, whose standard error over the documents comes from the delta method
    (residuals d_i = −loglik_i − L·units_i), with Student's t on n − 1 degrees of freedom
    (few documents); the bounds are exponentiated."""
    a = [-float(v) for v in loglik]
    b = [float(u) for u in units]
    n = len(a)
    if n < 2 or len(b) != n or sum(b) <= 0:
        raise ValueError("a perplexity interval needs 2 or more documents with units")
    loss = sum(a) / sum(b)
    resid = sum((ai - loss * bi) ** 2 for ai, bi in zip(a, b, strict=True))
    se = math.sqrt(n * resid / (n - 1)) / sum(b)
    half = t95(n - 1) * se
    return QualityInterval(
        math.exp(loss - half),
        math.exp(loss + half),
        n,
        f"delta method over {n} documents (t, {n - 1} df), exponentiated",
    )


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


@runtime_checkable
class LastLayer(Protocol):
    """Optional on a workload's model: its task head, the layer that maps the penultimate
    features to logits (an ``nn.Linear``). FineGates trains it and never gates it, a
    security attacker trains it at the recipe's ``head_lr``, ReAct reads it. Expose it as
    a property or a plain attribute: from Python 3.12, ``isinstance`` looks attributes up
    statically, and a submodule that ``nn.Module`` keeps in ``_modules`` is not seen."""

    @property
    def last_layer(self) -> nn.Module: ...


@runtime_checkable
class HasValidation(Protocol):
    """Optional on every workload: what its validation split holds (None: no such split)."""

    validation: str | None


@runtime_checkable
class QualityIntervals(Protocol):
    """Optional on a ClassifierWorkload: the quality figure's 95% interval over a split's
    items (Wilson for an accuracy, ``proportion_interval``; exponentiated delta-method
    interval over documents for a perplexity, ``perplexity_interval``). ``value`` must be
    one that ``evaluate`` returned on that split: a workload whose interval needs more than
    the value (per-document losses) keeps them for its recent evaluations, keyed by the
    value, and returns None for a value it did not compute."""

    def quality_interval(self, value: float, split: str = "test") -> QualityInterval | None: ...
