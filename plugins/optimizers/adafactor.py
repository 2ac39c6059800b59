"""Adafactor, the factored-second-moment reference (transformers' implementation).

Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
ICML 2018, arXiv:1804.04235. Run with a fixed learning rate (no relative step, no
parameter scaling) so that a suite's learning-rate grid means the same thing as for the
other optimizers; without beta1 the state is m + n per matrix.
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Interval
from pydantic import NonNegativeFloat, PositiveFloat
from torch import nn


def build_adafactor(
    model: nn.Module,
    *,
    lr: NonNegativeFloat = 0.001,
    beta1: Annotated[float, Interval(ge=0, lt=1)] | None = None,  # None: no first moment
    weight_decay: NonNegativeFloat = 0.0,
    clip_threshold: PositiveFloat = 1.0,
) -> torch.optim.Optimizer:
    # Imported here: transformers.optimization pulls in peft and costs every run's process
    # seconds at plugin discovery, when only Adafactor runs need it.
    from transformers.optimization import Adafactor

    params = [p for p in model.parameters() if p.requires_grad]
    return Adafactor(
        params,
        lr=lr,
        beta1=beta1,
        weight_decay=weight_decay,
        clip_threshold=clip_threshold,
        scale_parameter=False,
        relative_step=False,
        warmup_init=False,
    )
