"""SUMO: subspace-aware moment orthogonalisation.

Refael, Smorodinsky, Tirer & Lindenbaum, NeurIPS 2025, arXiv:2505.24749. Official code:
RandalW7/SUMO_optimizer (optimizers_torch/sumo_optimizer.py).

Per targeted weight G (m x n): the GaLore SVD projector Q, computed at the first step
and refreshed at steps K, 2K, 3K, ... (1-based, K = ``update_gap``), the official
cadence; a first moment in the subspace, M <- mu·M + Q^T G (no (1 - mu) factor), with
Nesterov's look-ahead Q^T G + mu·M; the moment orthogonalised *exactly* by an SVD of
the small r x max(m, n) matrix, O = U V^T (norm-induced steepest descent, instead of
Muon's Newton-Schulz approximation); a norm-growth limiter (if ||O||_F grows by more
than gamma over the previous step, it is rescaled to gamma·||O_prev||_F); and the weight
update W <- W - alpha·lr·[G - Q(s_perp·Q^T G - 0.2·sqrt(max(m, n))·O)], the gradient's
component outside the subspace plus the orthogonalised moment, then decoupled weight
decay. State per weight: r·(m + n) (moment and projector) plus one scalar.

``orthogonalizer: newton-schulz`` swaps the exact SVD for Muon's five quintic
Newton-Schulz iterations (fp32), everything else equal: the comparison the paper makes to
argue that in a rank-r subspace the exact SVD is both affordable and better. The
norm-growth limiter only matters for that variant: with the exact SVD every singular
value of O is 1, so ||O||_F = sqrt(rank of the moment), which is sqrt(r) at every step
once the moment has full rank r; the ratio is then 1 <= gamma and the limiter never
acts (as in the official code, which applies it after the exact SVD too). Newton-Schulz
leaves the singular values near 1 but not on it, so ||O||_F moves and the limiter can
clip it.

Where the paper and the official code differ, this follows the paper and says so:
- On a subspace refresh the moment is transported into the new basis,
  M <- Q_new^T Q_old M (the paper's moment transformation; the official file has only an
  unused flag for it).
- Nesterov keeps the momentum buffer and uses the look-ahead only for the update (the
  official file overwrites the buffer with the look-ahead).

Non-matrix and non-targeted parameters get AdamW, torch's implementation (the same
kernels as the ``adamw`` baseline), with betas (0.9, 0.999), eps 1e-6 and no weight decay
(the official class defaults) and lr = the method's lr (as the official FineWeb script
sets it; the class default lr_adam is 1e-5, which the official GLUE script leaves fixed).
The official file's AdamW adds eps to sqrt(v) before the bias correction (the Hugging
Face form) where torch adds it after: the two differ only while sqrt(v) is comparable
to eps. The official FineWeb script also gives that AdamW betas (0.9, 0.95), eps 1e-8 and
the method's weight decay; the class defaults are kept here.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import torch
from annotated_types import Interval
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from plugins.optimizers.lowrank import (
    HybridOptimizer,
    param_groups,
    project,
    project_back,
    svd_projector,
    transport,
)
from plugins.optimizers.muon import newton_schulz

Orthogonalizer = Literal["svd", "newton-schulz"]
ORTHOGONALIZERS: tuple[str, ...] = get_args(Orthogonalizer)


def orthogonalise(m: torch.Tensor) -> torch.Tensor:
    """U V^T from the exact thin SVD (fp32)."""
    u, _, vh = torch.linalg.svd(m.float(), full_matrices=False)
    return (u @ vh).to(m.dtype)


def _orthogonalise_with(name: str, m: torch.Tensor) -> torch.Tensor:
    if name == "svd":
        return orthogonalise(m)
    return newton_schulz(m, dtype=torch.float32)


class SUMO(HybridOptimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        rank: int = 8,
        update_gap: int = 200,  # type: ignore[no-untyped-def]
        alpha: float = 4.0,
        gamma: float = 1.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 1e-2,
        perp_scale: float = 1.0,
        orthogonalizer: str = "svd",
        adam_lr: float | None = None,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-6,
    ) -> None:
        if orthogonalizer not in ORTHOGONALIZERS:
            raise ValueError(
                f"orthogonalizer must be one of {ORTHOGONALIZERS}, not {orthogonalizer!r}"
            )
        super().__init__(
            params,
            {
                "lr": lr,
                "rank": rank,
                "update_gap": update_gap,
                "alpha": alpha,
                "gamma": gamma,
                "momentum": momentum,
                "nesterov": nesterov,
                "weight_decay": weight_decay,
                "perp_scale": perp_scale,
                "orthogonalizer": orthogonalizer,
                "adam_lr": lr if adam_lr is None else adam_lr,
                "adam_betas": adam_betas,
                "adam_eps": adam_eps,
                "lowrank": False,
            },
        )

    def lowrank_step(self, p: torch.Tensor, state: dict, group: dict) -> None:
        grad = p.grad
        rank = min(group["rank"], *grad.shape)
        step = state.get("step", 0) + 1
        state["step"] = step
        if "projector" not in state:
            state["projector"] = svd_projector(grad, rank)
        elif step % group["update_gap"] == 0:
            new = svd_projector(grad, rank)
            state["moment"] = transport(state["moment"], state["projector"], new, grad.shape)
            state["projector"] = new
        q = state["projector"]
        low = project(grad, q)
        if "moment" not in state:
            state["moment"] = torch.zeros_like(low)
        moment = state["moment"]
        moment.mul_(group["momentum"]).add_(low)
        direction = low + group["momentum"] * moment if group["nesterov"] else moment
        o = _orthogonalise_with(group["orthogonalizer"], direction)
        norm = o.norm()
        prev = state.get("o_norm")
        if prev is not None:  # a tensor select, not a branch: no host sync
            limited = group["gamma"] * prev / (norm + 1e-8)
            factor = torch.where(norm / (prev + 1e-8) > group["gamma"], limited, 1.0)
            o = o * factor
            norm = norm * factor
        state["o_norm"] = norm.detach().clone()
        shape_scale = 0.2 * max(grad.shape) ** 0.5
        update = grad - project_back(group["perp_scale"] * low - shape_scale * o, q, grad.shape)
        p.add_(update, alpha=-group["alpha"] * group["lr"])
        if group["weight_decay"]:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])


def build_sumo(
    model: nn.Module,
    *,
    lr: NonNegativeFloat = 0.001,
    rank: PositiveInt = 8,
    update_gap: PositiveInt = 200,
    alpha: PositiveFloat = 4.0,
    gamma: PositiveFloat = 1.1,  # norm-growth limit between steps
    momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.95,
    nesterov: bool = True,
    weight_decay: NonNegativeFloat = 0.01,
    perp_scale: NonNegativeFloat = 1.0,  # weight of the out-of-subspace gradient
    orthogonalizer: Orthogonalizer = "svd",
) -> SUMO:
    return SUMO(
        param_groups(model, {}),
        lr=lr,
        rank=rank,
        update_gap=update_gap,
        alpha=alpha,
        gamma=gamma,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        perp_scale=perp_scale,
        orthogonalizer=orthogonalizer,
    )
