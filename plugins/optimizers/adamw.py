"""AdamW, the reference every memory-efficient optimizer is compared with.

Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
arXiv:1711.05101. torch's implementation; weight decay defaults to 0 so that it matches
the plain-Adam baselines of the low-rank optimizer papers unless a suite sets it.
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Interval
from pydantic import NonNegativeFloat, PositiveFloat
from torch import nn


def build_adamw(
    model: nn.Module,
    *,
    lr: NonNegativeFloat = 0.001,
    beta1: Annotated[float, Interval(ge=0, lt=1)] = 0.9,
    beta2: Annotated[float, Interval(ge=0, lt=1)] = 0.999,
    eps: PositiveFloat = 1e-08,
    weight_decay: NonNegativeFloat = 0.0,
) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay
    )
