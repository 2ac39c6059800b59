"""GaLore: memory-efficient training by gradient low-rank projection.

Zhao, Zhang, Chen, Wang, Anandkumar & Tian, ICML 2024, arXiv:2403.03507. Official code:
jiaweizzhao/GaLore (galore-torch).

For each targeted weight G (m x n), every ``update_gap`` steps a projector P is taken
from the SVD of the current gradient (top-r right singular vectors when m >= n, left
ones otherwise). Adam runs on the projected gradient (m x r or r x n); its normalised
step is projected back, multiplied by ``scale`` (alpha) and applied with Adam's bias
correction; weight decay is decoupled. As in the paper and the official code, the Adam
moments are kept when P changes (not re-projected). State per weight:
r·min(m, n) (projector) + 2·r·max(m, n) (moments). Other parameters: AdamW.

Defaults: rank 128, gap 200, scale 0.25, lr 0.01 (the paper's C4 pre-training settings);
the rank is capped at min(m, n). eps is 1e-6, galore-torch's default, which its C4
pre-training script does not override (torch's AdamW, the ``adamw`` baseline, uses
1e-8). As in galore-torch, the subspace Adam adds eps to sqrt(v) before the bias
correction (step lr·sqrt(1 - b2^t)/(1 - b1^t)). The other parameters get torch's AdamW
with the same lr, betas, eps and weight decay (galore-torch runs them through its own
AdamW, whose eps placement is the one above: the two differ only while sqrt(v) is
comparable to eps); decay is decoupled in both, applied before the step here and after
it in galore-torch.
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Interval
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from plugins.optimizers.lowrank import (
    HybridOptimizer,
    adam_subspace_step,
    param_groups,
    project,
    project_back,
    svd_projector,
)


class GaLoreAdamW(HybridOptimizer):
    def __init__(
        self,
        params,
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),  # type: ignore[no-untyped-def]
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        rank: int = 128,
        update_gap: int = 200,
        scale: float = 0.25,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "rank": rank,
            "update_gap": update_gap,
            "scale": scale,
            "lowrank": False,
        }
        super().__init__(params, defaults)

    def lowrank_step(self, p: torch.Tensor, state: dict, group: dict) -> None:
        grad = p.grad
        rank = min(group["rank"], *grad.shape)
        step = state.get("step", 0) + 1
        state["step"] = step
        if "projector" not in state or (step - 1) % group["update_gap"] == 0:
            state["projector"] = svd_projector(grad, rank)
        low = project(grad, state["projector"])
        adam_subspace_step(
            p, low, state, group, lambda x: project_back(x, state["projector"], grad.shape)
        )


def build_galore(
    model: nn.Module,
    *,
    lr: NonNegativeFloat = 0.01,
    rank: PositiveInt = 128,
    update_gap: PositiveInt = 200,  # steps between SVDs of the gradient
    scale: PositiveFloat = 0.25,
    beta1: Annotated[float, Interval(ge=0, lt=1)] = 0.9,
    beta2: Annotated[float, Interval(ge=0, lt=1)] = 0.999,
    eps: PositiveFloat = 1e-06,
    weight_decay: NonNegativeFloat = 0.0,
) -> GaLoreAdamW:
    groups = param_groups(model, {"rank": rank, "update_gap": update_gap, "scale": scale})
    return GaLoreAdamW(
        groups,
        lr=lr,
        betas=(beta1, beta2),
        eps=eps,
        weight_decay=weight_decay,
        rank=rank,
        update_gap=update_gap,
        scale=scale,
    )
