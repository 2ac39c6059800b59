"""What every learning attack shares: loading the stolen state, fine-tuning with the
workload's recipe for a number of steps, and keeping the best candidate by the attacker's
own held-out samples.

Why a best-of: fine-tuning can make a stolen model worse (a learning rate the model does
not tolerate, too few samples), and an attacker who can see that on data it holds keeps
what it stole. The choice is made on ``ctx.validation_batches()``, samples disjoint from
the ones it trains on and from the test set the protocol reports, so the reported quality
is not a maximum over candidates taken on the test set.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmark.kinds.workload import LastLayer


def load_stolen(model: nn.Module, state: dict[str, torch.Tensor], device: torch.device) -> None:
    """The stolen tensors over the attacker's starting model. Missing names keep the
    start's values (random initialisation, or the public checkpoint), and so does a weight
    matrix that is empty to rounding (norm below 1e-4 of the start's): a weight moved
    entirely to the trusted side (SLIP's residual of a matrix of rank <= k), for which
    the start's value is a better guess than 0."""
    current = model.state_dict()
    usable = {}
    for k, v in state.items():
        if v.is_floating_point() and v.dim() >= 2 and k in current:
            scale = float(current[k].float().norm())
            if float(v.float().norm()) <= 1e-4 * scale:
                continue
        usable[k] = v.to(device)
    if usable:
        model.load_state_dict(usable, strict=False)


def fine_tune(
    model: nn.Module,
    groups: list[dict[str, Any]],
    ctx: Any,
    n_samples: int,
    steps: int,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
) -> None:
    """AdamW (weight decay and learning rate from the workload's recipe, per group when a
    group sets its own ``lr``) for ``steps`` batches of the attacker's first ``n_samples``
    labelled samples, with the recipe's schedule; ``extra_loss(model)`` is added to every
    step's loss (an attack's other signal). A step budget, not wall clock, so the outcome
    does not depend on how loaded the machine is."""
    recipe = ctx.recipe
    for g in groups:
        g.setdefault("lr", recipe.lr)
    opt = torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "linear":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    elif recipe.schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    else:
        raise ValueError(f"unknown schedule {recipe.schedule!r}: 'constant' or 'linear'")
    labelled = ctx.labelled_batches(n_samples, recipe.batch_size) if n_samples > 0 else []
    batches = itertools.cycle(labelled) if labelled else None
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.zeros((), device=ctx.device)
        if batches is not None:
            inputs, labels = next(batches)
            loss = loss + ctx.loss(model, inputs, labels)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


@torch.no_grad()
def validation_loss(model: nn.Module, ctx: Any) -> float:
    """Mean loss on the attacker's held-out samples (inf when not finite)."""
    model.eval()
    losses = [float(ctx.loss(model, x, y)) for x, y in ctx.validation_batches()]
    value = sum(losses) / max(len(losses), 1)
    return value if math.isfinite(value) else math.inf


def choose(candidates: dict[str, nn.Module], ctx: Any) -> nn.Module:
    """The candidate with the lowest held-out loss; it carries ``attack_choice`` (its name),
    ``attack_scores`` (every candidate's loss) and ``attack_candidates`` (the models: the
    protocol's sanity gate checks the learned ones, not only the choice, since the stolen
    state as it is would hide a broken fine-tune on an unprotected model)."""
    scores = {name: validation_loss(m, ctx) for name, m in candidates.items()}
    best = min(scores, key=lambda k: scores[k])
    model = candidates[best].eval()
    model.attack_choice = best  # type: ignore[assignment]
    model.attack_scores = scores  # type: ignore[assignment]
    model.attack_candidates = candidates  # type: ignore[assignment]
    return model


def parameter_groups(model: nn.Module, ctx: Any, exclude: set[int] = frozenset()) -> list[dict]:  # type: ignore[assignment]
    """Every parameter (but ``exclude``, by id) at the recipe's rate, the task head (the
    model's ``last_layer``, where it has one) at the recipe's ``head_lr``."""
    head_lr = ctx.recipe.head_lr
    head = model.last_layer if head_lr is not None and isinstance(model, LastLayer) else None
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    rest = [p for p in model.parameters() if id(p) not in head_ids and id(p) not in exclude]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": ctx.recipe.lr}]
    if head_ids:
        groups.append({"params": list(head.parameters()), "lr": head_lr})  # type: ignore[union-attr]
    return groups


def tuned_copy(model: nn.Module, ctx: Any, n_samples: int, steps: int) -> nn.Module:
    """A fine-tuned copy of ``model`` (every parameter, the recipe's learning rates)."""
    tuned = copy.deepcopy(model)
    fine_tune(tuned, parameter_groups(tuned, ctx), ctx, n_samples, steps)
    return tuned
