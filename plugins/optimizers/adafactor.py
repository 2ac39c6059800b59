"""Adafactor, the factored-second-moment reference (transformers' implementation).

Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
ICML 2018, arXiv:1804.04235. Run with a fixed learning rate (no relative step, no
parameter scaling) so that a suite's learning-rate grid means the same thing as for the
other optimizers; without beta1 the state is m + n per matrix.
"""

from __future__ import annotations

import torch
from torch import nn


def build_adafactor(
    model: nn.Module, *, lr: float, beta1: float | None, weight_decay: float, clip_threshold: float
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
