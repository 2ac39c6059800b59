"""AdamW, the reference every memory-efficient optimizer is compared with.

Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
arXiv:1711.05101. torch's implementation; weight decay defaults to 0 so that it matches
the plain-Adam baselines of the low-rank optimizer papers unless a suite sets it.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark import hookimpl
from benchmark.kinds import MethodSpec


def build_adamw(
    model: nn.Module, *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float
) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay
    )


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="optimizer",
            name="adamw",
            factory=build_adamw,
            defaults={"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
            paper="arXiv:1711.05101",
            description="AdamW (torch), the full-rank reference",
        )
    )
