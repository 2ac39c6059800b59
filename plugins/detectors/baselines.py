"""Post-hoc output-space baselines: nothing to fit, a score from the logits.

- Maximum softmax probability: Hendrycks & Gimpel, "A Baseline for Detecting Misclassified
  and Out-of-Distribution Examples in Neural Networks", ICLR 2017, arXiv:1610.02136.
  Score = −max_c softmax(logits)_c.
- Energy: Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection",
  NeurIPS 2020, arXiv:2010.03759. Score = −T·logsumexp(logits/T), the free energy, so that
  higher means more likely out-of-distribution.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pydantic import PositiveFloat
from torch import nn


class MaxSoftmax:
    def fit(self, model: nn.Module, in_distribution_batches: Iterable[Any]) -> None:
        """Post-hoc: the trained classifier is the whole detector."""

    def score(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return -torch.softmax(model(batch).float(), dim=-1).amax(dim=-1)


class Energy:
    def __init__(self, temperature: PositiveFloat = 1.0) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = temperature

    def fit(self, model: nn.Module, in_distribution_batches: Iterable[Any]) -> None:
        """Post-hoc: the trained classifier is the whole detector."""

    def score(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return -t * torch.logsumexp(model(batch).float() / t, dim=-1)
