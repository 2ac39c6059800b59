"""Attacks on security splits: what an attacker holding the untrusted device can rebuild.

``finetune``: the attacker loads the stolen untrusted weights into a fresh copy of the
architecture (missing parts stay at random initialisation) and fine-tunes every weight on
the ``n_samples`` labelled samples it has, the model-stealing-by-fine-tuning threat that
SLIP (arXiv:2407.10886) evaluates. ``untrusted-only`` is the same with no samples: the
untrusted part used as it is.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch
from torch import nn

from benchmark import hookimpl
from benchmark.kinds import AttackSpec


class FineTuneAttack:
    def __init__(
        self, n_samples: int = 64, steps: int = 50, lr: float = 1e-3, batch_size: int = 32
    ) -> None:
        self.n_samples, self.steps, self.lr, self.batch_size = n_samples, steps, lr, batch_size

    def __call__(self, untrusted_state: dict[str, torch.Tensor], ctx: Any) -> nn.Module:
        model = ctx.fresh_model(ctx.seed)
        model.load_state_dict(untrusted_state, strict=False)
        if self.n_samples <= 0 or self.steps <= 0:
            return model.eval()
        batches = itertools.cycle(ctx.labelled_batches(self.n_samples, self.batch_size))
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        deadline = None if ctx.budget.time_s is None else time.monotonic() + ctx.budget.time_s
        model.train()
        for _ in range(self.steps):
            inputs, labels = next(batches)
            opt.zero_grad()
            ctx.loss(model, inputs, labels).backward()
            opt.step()
            if deadline is not None and time.monotonic() > deadline:
                break
        return model.eval()


def _untrusted_only() -> FineTuneAttack:
    return FineTuneAttack(n_samples=0)


@hookimpl
def methodbench_register_attacks(register):  # type: ignore[no-untyped-def]
    register(
        AttackSpec(
            name="finetune",
            factory=FineTuneAttack,
            defaults={"n_samples": 64, "steps": 50, "lr": 1e-3, "batch_size": 32},
            paper="arXiv:2407.10886",
            description="fine-tune the stolen untrusted part with n labelled samples",
        )
    )
    register(
        AttackSpec(
            name="untrusted-only",
            factory=_untrusted_only,
            defaults={},
            description="the untrusted part alone, missing parts at random init",
        )
    )
