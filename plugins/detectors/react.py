"""ReAct: clip penultimate activations at an ID percentile, then score the energy.

Sun, Guo & Li, "ReAct: Out-of-distribution Detection With Rectified Activations",
NeurIPS 2021, arXiv:2111.12797.

    c = the p-th percentile of all penultimate activation values on ID fit data (p = 90)
    h̄(x) = min(h(x), c),   logits = W h̄(x) + b   (the model's last layer)
    score(x) = −logsumexp(logits)                   (the free energy; higher = OOD)

The percentile is taken over every unit of every fit sample pooled together, as in the
paper and OpenOOD. Energy at T = 1 is the paper's default scoring function.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Interval
from torch import nn

from plugins.detectors.features import collect, last_layer, penultimate


class ReAct:
    def __init__(self, percentile: Annotated[float, Interval(gt=0, le=100)] = 90.0) -> None:
        if not 0.0 < percentile <= 100.0:
            raise ValueError("percentile must lie in (0, 100]")
        self.percentile = percentile
        self.threshold: float | None = None

    def fit(self, model: nn.Module, in_distribution_batches: Iterable[Any]) -> None:
        last_layer(model)  # fail at fit time, not at scoring, for a model without one
        feats, _ = collect(model, in_distribution_batches)
        self.threshold = float(np.percentile(feats.cpu().numpy().ravel(), self.percentile))

    def score(self, model: nn.Module, batch: Any) -> torch.Tensor:
        if self.threshold is None:
            raise RuntimeError("fit the detector first")
        with torch.no_grad():
            h = penultimate(model, batch).clamp(max=self.threshold)
            layer = last_layer(model)
            logits = nn.functional.linear(h.to(layer.weight.dtype), layer.weight, layer.bias)
            return -torch.logsumexp(logits.float(), dim=-1)
