"""ODIN: temperature scaling plus an input perturbation toward higher confidence.

Liang, Li & Srikant, "Enhancing The Reliability of Out-of-distribution Image Detection in
Neural Networks", ICLR 2018, arXiv:1706.02690.

    x̃ = x − ε · sign(−∇ₓ log S_ŷ(x; T)),   S(x; T) = softmax(f(x) / T),   ŷ = argmax f(x)
    score(x) = −max_c S_c(x̃; T)          (higher = more likely OOD)

Defaults T = 1000 and ε = 0.0014 are OpenOOD's ODIN postprocessor settings (the paper
tunes ε per data set on validation OOD data, which a post-hoc benchmark must not do).
The paper's images are normalised and its gradient is divided by the normalisation std;
the workloads here feed [0, 1] pixels, so there is nothing to divide by.

Departure: on discrete inputs (token ids) there is no input gradient. With ``epsilon=0``
the method is temperature scaling only and runs on any model; ``epsilon>0`` on such
inputs raises, so a suite has to ask for the temperature-only variant explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pydantic import NonNegativeFloat, PositiveFloat
from torch import nn

from plugins.detectors.features import is_continuous


class ODIN:
    def __init__(
        self, temperature: PositiveFloat = 1000.0, epsilon: NonNegativeFloat = 0.0014
    ) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        if epsilon < 0:
            raise ValueError("epsilon must be non-negative")
        self.temperature, self.epsilon = temperature, epsilon

    def fit(self, model: nn.Module, in_distribution_batches: Iterable[Any]) -> None:
        """Post-hoc: T and ε are fixed hyperparameters, nothing is estimated."""

    def perturb(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """x̃ = x − ε·sign(∇ₓ CE(f(x)/T, ŷ)), the step that raises the top softmax score."""
        # The protocol scores under inference_mode; this step needs autograd.
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            logits = model(x).float() / self.temperature
            loss = nn.functional.cross_entropy(logits, logits.argmax(-1), reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        return (x - self.epsilon * grad.sign()).detach()

    def score(self, model: nn.Module, batch: Any) -> torch.Tensor:
        if self.epsilon > 0:
            if not is_continuous(batch):
                raise TypeError(
                    "ODIN's input perturbation needs continuous inputs; use epsilon: 0 "
                    "(temperature scaling only) for token inputs"
                )
            batch = self.perturb(model, batch)
        with torch.no_grad():
            logits = model(batch).float() / self.temperature
        return -torch.softmax(logits, dim=-1).amax(dim=-1)
