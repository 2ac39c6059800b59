"""AdaRankGrad: adaptive gradient-rank and moments for memory-efficient training.

Refael, Svirsky, Shustin, Huleihel & Lindenbaum, ICLR 2025, arXiv:2410.17881. No
official code was found; this follows the paper's description (summarised in the
project's method notes):

- The paper proves that layer gradients' stable rank decays towards one during training,
  so the rank is chosen per layer and per refresh: r_t is the smallest rank whose best
  rank-r approximation keeps a fraction ``eta`` of ||G||_F^2, capped at ``max_rank``.
- The subspace comes from a randomized range finder (Gaussian sketch, QR, then the SVD
  of the small projected matrix: Halko, Martinsson & Tropp), cost O(mn·r), not a full
  SVD.
- Adam runs in the subspace (projected back and scaled as GaLore does), and when the
  subspace changes the moments are carried into the new basis, R = Q_t^T Q_{t-1}:
  m <- R m, v <- (R∘R) v (ranks may differ).
- The subspace is refreshed when optimisation *inside* it has converged, not on a fixed
  gap. The exact test could not be checked against a source; here it fires when the
  projected gradient's relative change between consecutive steps falls below ``tol``
  (the in-subspace iterates have settled), with ``min_gap`` and ``max_gap`` bounds.
State per weight: r_t·min(m, n) + 2·r_t·max(m, n), with r_t <= max_rank.
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

OVERSAMPLE = 8


def adaptive_rank(sigma: torch.Tensor, total_energy: float, eta: float, max_rank: int) -> int:
    """Smallest r with Σ_{i<=r} σ_i² >= eta·||G||², at most max_rank, at least 1."""
    captured = torch.cumsum(sigma.double().square(), 0)
    enough = torch.nonzero(captured >= eta * total_energy)
    r = int(enough[0]) + 1 if len(enough) else len(sigma)
    return max(1, min(r, max_rank))


def range_finder_projector(
    grad: torch.Tensor, max_rank: int, eta: float, generator: torch.Generator
) -> torch.Tensor:
    """Projector on the smaller side, of adaptive rank, from a randomized range finder."""
    g = grad.float()
    a = g if not projects_right(g.shape) else g.T  # (small x large): find its range
    sketch = min(max_rank + OVERSAMPLE, *a.shape)
    omega = torch.randn(a.shape[1], sketch, generator=generator).to(a)
    q, _ = torch.linalg.qr(a @ omega)  # small x sketch, orthonormal
    u_small, sigma, _ = torch.linalg.svd(q.T @ a, full_matrices=False)
    r = adaptive_rank(sigma, float(a.square().sum()), eta, max_rank)
    basis = q @ u_small[:, :r]  # small x r
    return (basis.T if projects_right(g.shape) else basis).to(grad.dtype).contiguous()


class AdaRankGrad(SeededSampling, HybridOptimizer):
    def __init__(
        self,
        params,
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),  # type: ignore[no-untyped-def]
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_rank: int = 128,
        eta: float = 0.9,
        tol: float = 1e-2,
        min_gap: int = 10,
        max_gap: int = 200,
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
                "max_rank": max_rank,
                "eta": eta,
                "tol": tol,
                "min_gap": min_gap,
                "max_gap": max_gap,
                "scale": scale,
                "lowrank": False,
            },
        )
        self.generator = torch.Generator().manual_seed(seed)

    def _converged(self, low: torch.Tensor, state: dict, group: dict) -> bool:
        age = state["step"] - state["refreshed_at"]
        prev = state.get("prev_low")
        if age >= group["max_gap"]:
            return True
        if prev is None or age < group["min_gap"] or prev.shape != low.shape:
            return False
        change = (low - prev).norm() / prev.norm().clamp(min=1e-30)
        return bool(change < group["tol"])

    def lowrank_step(self, p: torch.Tensor, state: dict, group: dict) -> None:
        grad = p.grad
        max_rank = min(group["max_rank"], *grad.shape)
        state["step"] = state.get("step", 0) + 1
        if "projector" not in state:
            state["projector"] = range_finder_projector(
                grad, max_rank, group["eta"], self.generator
            )
            state["refreshed_at"] = state["step"]
        elif self._converged(project(grad, state["projector"]), state, group):
            new = range_finder_projector(grad, max_rank, group["eta"], self.generator)
            rotate_moments(state, state["projector"], new, grad.shape)
            state["projector"], state["refreshed_at"] = new, state["step"]
            state.pop("prev_low", None)
        proj = state["projector"]
        low = project(grad, proj)
        state["prev_low"] = low.clone()
        adam_subspace_step(p, low, state, group, lambda x: project_back(x, proj, grad.shape))


def build_adarankgrad(
    model: nn.Module,
    *,
    lr: float,
    max_rank: int,
    eta: float,
    tol: float,
    min_gap: int,
    max_gap: int,
    scale: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    seed: int,
) -> AdaRankGrad:
    return AdaRankGrad(
        param_groups(model, {}),
        lr=lr,
        betas=(beta1, beta2),
        eps=eps,
        weight_decay=weight_decay,
        max_rank=max_rank,
        eta=eta,
        tol=tol,
        min_gap=min_gap,
        max_gap=max_gap,
        scale=scale,
        seed=seed,
    )


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="optimizer",
            name="adarankgrad",
            factory=build_adarankgrad,
            defaults={
                "lr": 0.01,
                "max_rank": 128,
                "eta": 0.9,
                "tol": 1e-2,
                "min_gap": 10,
                "max_gap": 200,
                "scale": 0.25,
                "beta1": 0.9,
                "beta2": 0.999,
                "eps": 1e-8,
                "weight_decay": 0.0,
                "seed": 0,
            },
            paper="arXiv:2410.17881",
            description="adaptive-rank subspace by randomized range finder, refreshed when "
            "in-subspace optimisation converges, moments rotated",
        )
    )
