"""PLUMAGE: probabilistic low-rank unbiased minimum-variance gradient estimation.

Haroush & Soudry, arXiv:2505.18313. No official code was found; this follows the paper's
description: GaLore's loop with two changes.

1. The subspace is *sampled*, not truncated. At each refresh (every ``update_gap``
   steps) the SVD of the gradient G = Σ σ_i u_i v_i^T gives inclusion probabilities
   p_i = min(1, c·σ_i) with Σ p_i = r (the minimum-variance choice for an unbiased
   r-sparse estimator: the largest components are kept with certainty, the tail is
   sampled, as in the unbiased minimum-distortion low-rank sampling of Barnes, Cameron &
   Howard, arXiv:2505.09647); exactly r components are drawn with those marginals by
   systematic sampling, and each kept direction is re-weighted by 1/p_i. Because the
   basis on the smaller side is complete, E[P diag(1/p) P^T] = I, so the back-projected
   estimate of *any* gradient in the interval is unbiased: E[P diag(1/p) P^T G] = G.
2. Moment realignment: when the projection changes, Adam's first moment is rotated into
   the new basis (M <- Q_new^T Q_old M) and the second by the squared rotation (the
   diagonal of R diag(v) R^T), instead of GaLore's keeping stale moments.

Adam runs on the plain projection P^T G; the re-weighting is applied to the step when it
is projected back (Adam's per-coordinate normalisation would otherwise cancel it). The
exact realignment formula of the paper could not be checked against a source; the one
here is stated above. Hyperparameters: rank and interval (plus GaLore's lr and scale).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark import hookimpl
from benchmark.kinds import MethodSpec
from plugins.optimizers.lowrank import (
    HybridOptimizer,
    SeededSampling,
    adam_subspace_step,
    param_groups,
    project,
    project_back,
    projects_right,
    rotate_moments,
)


def inclusion_probabilities(sigma: torch.Tensor, k: int) -> torch.Tensor:
    """p_i = min(1, c·σ_i) with Σ p_i = k (water-filling); σ sorted or not."""
    sigma = sigma.double().clamp(min=0)
    n = sigma.numel()
    if k >= n or sigma.sum() == 0:
        return torch.ones(n, dtype=torch.float64) if k >= n else torch.full((n,), k / n).double()
    order = torch.argsort(sigma, descending=True)
    s = sigma[order]
    p = torch.empty(n, dtype=torch.float64)
    for certain in range(k):
        tail = s[certain:]
        scaled = (k - certain) * tail / tail.sum()
        if scaled[0] <= 1.0:
            p[:certain] = 1.0
            p[certain:] = scaled
            break
    else:
        p[:k], p[k:] = 1.0, 0.0
    out = torch.empty_like(p)
    out[order] = p
    return out


def systematic_sample(p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Exactly round(Σp) distinct indices, index i with probability p_i (each p_i <= 1)."""
    k = round(float(p.sum()))
    edges = torch.cumsum(p, 0)
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    points = u + torch.arange(k, dtype=torch.float64)
    return torch.searchsorted(edges, points, right=True).clamp(max=p.numel() - 1)


def sample_projector(
    grad: torch.Tensor, rank: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(projector, weights 1/p) over sampled singular directions of the smaller side."""
    u, sigma, vh = torch.linalg.svd(grad.float(), full_matrices=False)
    p = inclusion_probabilities(sigma, rank)
    picked = systematic_sample(p, generator)
    weights = (1.0 / p[picked]).to(grad.dtype)
    proj = vh[picked] if projects_right(grad.shape) else u[:, picked]
    return proj.to(grad.dtype).contiguous(), weights


def unbiased_estimate(
    grad: torch.Tensor, proj: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """P diag(1/p) P^T G (left) or G P^T diag(1/p) P (right)."""
    low = project(grad, proj)
    scaled = low * weights if projects_right(grad.shape) else low * weights[:, None]
    return project_back(scaled, proj, grad.shape)


class Plumage(SeededSampling, HybridOptimizer):
    def __init__(
        self,
        params,
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),  # type: ignore[no-untyped-def]
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        rank: int = 128,
        update_gap: int = 200,
        scale: float = 0.25,
        seed: int = 0,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "betas": betas,
                "eps": eps,
                "weight_decay": weight_decay,
                "rank": rank,
                "update_gap": update_gap,
                "scale": scale,
                "lowrank": False,
            },
        )
        self.generator = torch.Generator().manual_seed(seed)

    def lowrank_step(self, p: torch.Tensor, state: dict, group: dict) -> None:
        grad = p.grad
        rank = min(group["rank"], *grad.shape)
        state["step"] = state.get("step", 0) + 1
        if "projector" not in state or (state["step"] - 1) % group["update_gap"] == 0:
            proj, weights = sample_projector(grad, rank, self.generator)
            if "projector" in state:
                rotate_moments(state, state["projector"], proj, grad.shape)
            state["projector"], state["weights"] = proj, weights
        proj, weights = state["projector"], state["weights"]
        right = projects_right(grad.shape)

        def back(x: torch.Tensor) -> torch.Tensor:
            scaled = x * weights if right else x * weights[:, None]
            return project_back(scaled, proj, grad.shape)

        adam_subspace_step(p, project(grad, proj), state, group, back)


def build_plumage(
    model: nn.Module,
    *,
    lr: float,
    rank: int,
    update_gap: int,
    scale: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    seed: int,
) -> Plumage:
    return Plumage(
        param_groups(model, {}),
        lr=lr,
        betas=(beta1, beta2),
        eps=eps,
        weight_decay=weight_decay,
        rank=rank,
        update_gap=update_gap,
        scale=scale,
        seed=seed,
    )


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="optimizer",
            name="plumage",
            factory=build_plumage,
            defaults={
                "lr": 0.01,
                "rank": 128,
                "update_gap": 200,
                "scale": 0.25,
                "beta1": 0.9,
                "beta2": 0.999,
                "eps": 1e-8,
                "weight_decay": 0.0,
                "seed": 0,
            },
            paper="arXiv:2505.18313",
            description="GaLore with sampled unbiased minimum-variance subspaces and moment "
            "realignment",
        )
    )
