"""The one training loop compressors use: cycle the context's fine-tuning batches.

Pruning fine-tunes, WGSEF alternates SGD steps with its prox, gates add a sparsity term:
all are "a step on the workload loss, then something", under the run's time budget.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def deadline_of(ctx: Any) -> float | None:
    """The monotonic time at which the run's ``budget.time_s`` is spent (None: no limit)."""
    return None if ctx.budget.time_s is None else time.monotonic() + ctx.budget.time_s


def train_steps(
    model: nn.Module,
    ctx: Any,
    opt: torch.optim.Optimizer,
    steps: int,
    *,
    deadline: float | None = None,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
) -> int:
    """Up to ``steps`` optimizer steps on ``ctx.loss`` (+ ``extra_loss()``), calling
    ``after_step()`` after each; stops early at ``deadline``. Leaves the model in eval
    mode and returns the number of steps taken."""
    batches = itertools.cycle(ctx.finetune_batches)
    model.train()
    taken = 0
    for _ in range(steps):
        if deadline is not None and time.monotonic() > deadline:
            break
        inputs, labels = next(batches)
        opt.zero_grad()
        loss = ctx.loss(model, inputs, labels)
        if extra_loss is not None:
            loss = loss + extra_loss()
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        taken += 1
    model.eval()
    return taken


def finetune_all(
    model: nn.Module, ctx: Any, steps: int, lr: float, deadline: float | None = None
) -> int:
    """Recovery fine-tune: Adam on every parameter of ``model`` for up to ``steps`` steps;
    each parameter's ``requires_grad`` is restored after. Returns the steps taken."""
    params = list(model.parameters())
    trainable = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        opt = torch.optim.Adam(params, lr=lr)
        return train_steps(model, ctx, opt, steps, deadline=deadline)
    finally:
        for p, flag in zip(params, trainable, strict=True):
            p.requires_grad_(flag)
