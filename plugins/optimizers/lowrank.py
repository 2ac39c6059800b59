"""What the low-rank optimizers share: which weights get the low-rank treatment, the SVD
projector of GaLore (reused by SUMO), and the AdamW step for every other parameter.

Which weights: 2-D weights of modules whose name contains one of ``targets`` (by default
"attn" and "mlp", the attention and MLP projections of a transformer block, as in GaLore);
embeddings, the output head, norms and biases get AdamW. Everything an optimizer keeps
between steps lives in ``optimizer.state`` as tensors, so state_dict round trips and the
optimizer-state byte count see all of it (the projector included).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.adamw import adamw as torch_adamw

DEFAULT_TARGETS: tuple[str, ...] = ("attn", "mlp")


def split_params(
    model: nn.Module, targets: Sequence[str] = DEFAULT_TARGETS
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(low-rank candidates, the rest), trainable parameters only."""
    lowrank, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 2 and any(t in name for t in targets):
            lowrank.append(p)
        else:
            rest.append(p)
    return lowrank, rest


def param_groups(
    model: nn.Module,
    lowrank_options: dict[str, Any],
    rest_options: dict[str, Any] | None = None,
    targets: Sequence[str] = DEFAULT_TARGETS,
) -> list[dict[str, Any]]:
    lowrank, rest = split_params(model, targets)
    groups = [{"params": lowrank, "lowrank": True, **lowrank_options}]
    if rest:
        groups.append({"params": rest, "lowrank": False, **(rest_options or {})})
    return groups


# --------------------------------------------------------------------------- SVD projector


def projects_right(shape: torch.Size | Sequence[int]) -> bool:
    """GaLore's rule: project on the right (rank x n) when m >= n, else on the left."""
    return shape[0] >= shape[1]


def svd_projector(grad: torch.Tensor, rank: int) -> torch.Tensor:
    """The top-``rank`` singular vectors of ``grad`` on its smaller side (fp32 SVD).

    m >= n: Vh[:r] (r x n); m < n: U[:, :r] (m x r).
    """
    u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
    if projects_right(grad.shape):
        return vh[:rank].to(grad.dtype).contiguous()
    return u[:, :rank].to(grad.dtype).contiguous()


def project(grad: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    return grad @ proj.T if projects_right(grad.shape) else proj.T @ grad


def project_back(low: torch.Tensor, proj: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return low @ proj if projects_right(shape) else proj @ low


def transport(
    moment: torch.Tensor, old: torch.Tensor, new: torch.Tensor, shape: torch.Size
) -> torch.Tensor:
    """Express a subspace moment in a new basis: M <- (Q_new^T Q_old) M (left) or the
    transposed rotation on the right."""
    if projects_right(shape):
        return moment @ (old @ new.T)  # (m x r)(r x r)
    return (new.T @ old) @ moment  # (r x r)(r x n)


def rotate_moments(
    state: dict[str, Any], old: torch.Tensor, new: torch.Tensor, shape: torch.Size
) -> None:
    """Carry Adam's subspace moments into a new basis (ranks may differ).

    First moment: M <- R M with R = Q_new^T Q_old (on the right for right projectors).
    Second moment: the diagonal of R diag(v) R^T, i.e. v <- (R∘R) v, which keeps it
    non-negative and exact when the bases agree up to signs and order.
    """
    if projects_right(shape):
        rot = old @ new.T  # (r_old x r_new), acting on the right of (m x r) moments
        state["exp_avg"] = state["exp_avg"] @ rot
        state["exp_avg_sq"] = state["exp_avg_sq"] @ rot.square()
    else:
        rot = new.T @ old  # (r_new x r_old), acting on the left of (r x n) moments
        state["exp_avg"] = rot @ state["exp_avg"]
        state["exp_avg_sq"] = rot.square() @ state["exp_avg_sq"]


def adam_subspace_step(
    p: torch.Tensor, low: torch.Tensor, state: dict[str, Any], group: dict[str, Any], back: Any
) -> None:
    """Adam on the projected gradient ``low``; ``back`` maps the normalised step to p's
    shape. Bias correction uses the subspace step count, decay is decoupled."""
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(low)
        state["exp_avg_sq"] = torch.zeros_like(low)
    step = state["step"]
    b1, b2 = group["betas"]
    state["exp_avg"].lerp_(low, 1 - b1)
    state["exp_avg_sq"].mul_(b2).addcmul_(low, low, value=1 - b2)
    step_size = group["lr"] * math.sqrt(1 - b2**step) / (1 - b1**step)
    normalised = state["exp_avg"] / state["exp_avg_sq"].sqrt().add_(group["eps"])
    if group["scale"] != 1.0:
        # Scaled in the subspace (m x r or r x n) instead of after the projection back
        # (m x n): the same product with one full-size pass and allocation fewer per step;
        # bit-exact for power-of-two scales (GaLore's 0.25), float rounding otherwise.
        normalised.mul_(group["scale"])
    p.add_(back(normalised), alpha=-step_size)
    if group["weight_decay"]:
        p.add_(p, alpha=-group["lr"] * group["weight_decay"])


# --------------------------------------------------------------------------- AdamW fallback


def fallback_adamw(
    params: list[torch.Tensor],
    states: list[dict[str, Any]],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> None:
    """One AdamW step on every tensor of ``params`` through torch's own kernels.

    The ``adamw`` baseline is ``torch.optim.AdamW``, which runs foreach (multi-tensor)
    kernels on CUDA; a per-tensor Python loop here would charge the low-rank methods for
    launch overhead on parameters they treat exactly like the baseline does. So this calls
    the functional ``torch.optim.adamw.adamw`` with ``foreach=None``, which lets torch make
    the same kernel choice the baseline makes.

    The step count stays a Python int in ``state`` (the functional wants tensors, so they
    are made per call on the CPU, where reading them costs no device sync): the state
    layout, and so the analytic optimizer-state size, is two moments per element.
    """
    grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
    for p, state in zip(params, states, strict=True):
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        grads.append(p.grad)
        exp_avgs.append(state["exp_avg"])
        exp_avg_sqs.append(state["exp_avg_sq"])
        steps.append(torch.tensor(float(state["step"]), dtype=torch.float32))
        state["step"] += 1
    torch_adamw(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],
        steps,
        foreach=None,
        amsgrad=False,
        beta1=betas[0],
        beta2=betas[1],
        lr=lr,
        weight_decay=weight_decay,
        eps=eps,
        maximize=False,
    )


# --------------------------------------------------------------------------- shared skeleton


class HybridOptimizer(torch.optim.Optimizer):
    """Parameters in groups flagged ``lowrank`` take the method's own step
    (``lowrank_step``); every other parameter takes torch's AdamW with
    ``fallback_options``."""

    def lowrank_step(self, p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise TypeError(f"{type(self).__name__} must define lowrank_step")

    def fallback_options(self, group: dict[str, Any]) -> dict[str, Any]:
        """The method's own Adam settings, or its separate ``adam_*`` ones when it has them
        (Muon and SUMO run their auxiliary AdamW without weight decay)."""
        if "adam_lr" in group:
            return {
                "lr": group["adam_lr"],
                "betas": group["adam_betas"],
                "eps": group["adam_eps"],
                "weight_decay": 0.0,
            }
        return {
            "lr": group["lr"],
            "betas": group["betas"],
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
        }

    def apply_updates(self) -> None:
        """One update of every parameter from its current ``.grad``."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["lowrank"]:
                for p in params:
                    self.lowrank_step(p, self.state[p], group)
            else:
                states = [self.state[p] for p in params]
                fallback_adamw(params, states, **self.fallback_options(group))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.apply_updates()
        return loss


class SeededSampling:
    """For optimizers that draw random numbers: the generator's state travels with
    ``state_dict`` so a resumed run draws exactly what the uninterrupted one would."""

    generator: torch.Generator

    def state_dict(self):  # type: ignore[no-untyped-def]
        out = super().state_dict()  # type: ignore[misc]
        out["sampler"] = self.generator.get_state()
        return out

    def load_state_dict(self, state_dict):  # type: ignore[no-untyped-def]
        state_dict = dict(state_dict)
        sampler = state_dict.pop("sampler", None)
        super().load_state_dict(state_dict)  # type: ignore[misc]
        if sampler is not None:
            self.generator.set_state(sampler)
