"""What a workload must offer to each kind's protocol.

A ``WorkloadSpec.factory(**options)`` returns one of these. Workloads own their data,
model and quality metric; protocols own measurement. Quality metrics declare their name,
unit and direction so reports never guess.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
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
    """A model trained from scratch; the optimizer protocol drives the loop."""

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
        """Held-out figures; must include 'eval_loss' (nats) and may add 'perplexity'."""
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

    def evaluate(self, model: nn.Module, device: torch.device) -> float: ...

    def example_inputs(self, batch_size: int, device: torch.device) -> Any:
        """A fixed batch of real inputs, for latency, FLOPs and output comparisons."""
        ...

    def labelled_batches(
        self, split: str, n: int, batch_size: int, seed: int, device: torch.device
    ) -> list[tuple[Any, torch.Tensor]]:
        """``n`` labelled samples of a split ("train" or "test") in batches."""
        ...

    def loss(self, model: nn.Module, inputs: Any, labels: torch.Tensor) -> torch.Tensor: ...


# Optional on a ClassifierWorkload, read by the security protocol with getattr:
# - ``attack_recipe: AttackRecipe`` (default ``AttackRecipe()``);
# - ``attacker_model(seed, device)``: where an attacker starts, the public pretrained
#   checkpoint with a fresh task head for a workload built from one (default
#   ``fresh_model``), and ``attacker_start: str`` saying which;
# - ``quality_stderr(value) -> float | None``: the standard error of the quality figure on
#   the test set (e.g. binomial for accuracy); None where it cannot be had;
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

    def test_batches(self, which: str, device: torch.device) -> Iterable[Any]:
        """Held-out input batches; ``which`` is "in" or "out"."""
        ...
