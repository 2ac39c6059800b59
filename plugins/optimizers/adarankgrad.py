"""AdaRankGrad: adaptive gradient-rank and moments for memory-efficient training.

Refael, Svirsky, Shustin, Huleihel & Lindenbaum, ICLR 2025, arXiv:2410.17881. No
official code was found, and only the abstract and third-party summaries of the paper
could be read here; what comes from them and what is this project's reading is marked.

From the paper:
- Layer gradients' stable rank decays towards one during training, so the rank is chosen
  per layer and per refresh: r_t is the smallest rank whose best rank-r approximation
  keeps a fraction ``eta`` of ||G||_F^2, capped at ``max_rank``.
- The subspace comes from a randomized range finder (Gaussian sketch, QR, then the SVD
  of the small projected matrix: Halko, Martinsson & Tropp), cost O(mn·r), not a full
  SVD.
- Adam runs in the subspace (projected back and scaled as GaLore does), and when the
  subspace changes the moments are carried into the new basis, R = Q_t^T Q_{t-1}:
  m <- R m and, for the second moment, v <- (R∘R) v (the diagonal of R diag(v) R^T: it
  stays non-negative, and is exact when the bases agree up to signs and order; the
  summaries write v <- R v, which can go negative). Ranks may differ across a refresh.
- The subspace is refreshed when optimisation *inside* it has converged (a convergence
  criterion within the subspace), not on a fixed gap; ``max_gap`` bounds the wait.

This project's reading of the criterion: the subspace has done its work when the gradient
no longer lives in it, i.e. when the share of the gradient's energy it captures,
f_t = ||Q^T G_t||_F^2 / ||G_t||_F^2, has fallen. The share is scale-free, so the whole
gradient shrinking as training progresses (a fixed subspace still right) does not trigger a
refresh, while a gradient that moves out of the subspace does. Minibatch noise makes one
step's share noisy, so the test is on averages: the mean of f_t over a window of ``min_gap``
steps, against the mean over the first window after the refresh (the refresh step itself,
whose gradient built Q, is left out). The subspace is refreshed when
mean(window) <= ``tol`` · mean(first window), or ``max_gap`` steps after the last refresh.
The window sums stay on the device; the decision reads one scalar on the host once per
window, so the earliest refresh is 2·``min_gap`` + 1 steps after the previous one. The only
other host read is the adaptive rank, once per refresh (it fixes shapes).

Adam's eps is 1e-8 (torch's AdamW default; GaLore's is 1e-6).

Defaults tol 0.5, min_gap 10 and max_gap 200 are this project's choice (the paper's values
could not be read): 0.5 refreshes a subspace once it captures half the share of the
gradient it captured when it was fresh. On tiny-llama every refresh comes from
``max_gap`` (measured: ``docs/methods/low-rank-optimizers.md``): there the method is
adaptive-rank GaLore, and the rule only acts where the gradient leaves its subspace
faster.

State per weight: r_t·min(m, n) (projector) + 2·r_t·max(m, n) (moments) + 2 scalars
(the window's sum of captured shares and the first window's mean), r_t <= max_rank.
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Interval
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

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


def adaptive_rank(
    sigma: torch.Tensor, total_energy: float | torch.Tensor, eta: float, max_rank: int
) -> int:
    """Smallest r with Σ_{i<=r} σ_i² >= eta·||G||², at most max_rank, at least 1.

    The rank fixes the projector's and the moments' shapes, so it must reach the host:
    one read per refresh (the count of prefixes still short of the threshold)."""
    captured = torch.cumsum(sigma.double().square(), 0)
    short = int((captured < eta * total_energy).sum())
    return max(1, min(short + 1, len(sigma), max_rank))


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
    r = adaptive_rank(sigma, a.square().sum(), eta, max_rank)
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
        tol: float = 0.5,
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

    def _refresh(self, grad: torch.Tensor, state: dict, group: dict, max_rank: int) -> None:
        new = range_finder_projector(grad, max_rank, group["eta"], self.generator)
        if "projector" in state:
            rotate_moments(state, state["projector"], new, grad.shape)
        state["projector"], state["refreshed_at"] = new, state["step"]
        state["window_sq"] = torch.zeros((), dtype=torch.float32, device=grad.device)
        state["reference_sq"] = torch.zeros((), dtype=torch.float32, device=grad.device)

    def _due(self, state: dict, group: dict) -> bool:
        """Whether the subspace is refreshed before this step's update; the statistics
        cover the steps up to the previous one."""
        age = state["step"] - state["refreshed_at"]
        if age >= group["max_gap"]:
            return True
        window = group["min_gap"]
        done = age - 1  # steps accumulated since the refresh step
        if done < window or done % window:
            return False
        if done == window:  # the first window is the reference
            state["reference_sq"].copy_(state["window_sq"] / window)
            state["window_sq"].zero_()
            return False
        mean = state["window_sq"] / window
        state["window_sq"].zero_()
        # One host read per window: the refresh changes tensor shapes, so it is a branch.
        return bool(mean <= group["tol"] * state["reference_sq"])

    def lowrank_step(self, p: torch.Tensor, state: dict, group: dict) -> None:
        grad = p.grad
        max_rank = min(group["max_rank"], *grad.shape)
        state["step"] = state.get("step", 0) + 1
        if "projector" not in state or self._due(state, group):
            self._refresh(grad, state, group, max_rank)
        proj = state["projector"]
        low = project(grad, proj)
        if state["step"] > state["refreshed_at"]:
            # The share of this gradient's energy the subspace captures (scale-free).
            inside = torch.linalg.vector_norm(low).float().square()
            total = torch.linalg.vector_norm(grad).float().square()
            state["window_sq"].add_(inside / total.clamp_min(torch.finfo(torch.float32).tiny))
        adam_subspace_step(p, low, state, group, lambda x: project_back(x, proj, grad.shape))


def build_adarankgrad(
    model: nn.Module,
    *,
    lr: NonNegativeFloat = 0.01,
    max_rank: PositiveInt = 128,
    eta: Annotated[float, Interval(gt=0, le=1)] = 0.9,  # fraction of ||G||^2 the rank keeps
    tol: PositiveFloat = 0.5,  # refresh when the windowed RMS falls to this fraction
    min_gap: PositiveInt = 10,
    max_gap: PositiveInt = 200,
    scale: PositiveFloat = 0.25,
    beta1: Annotated[float, Interval(ge=0, lt=1)] = 0.9,
    beta2: Annotated[float, Interval(ge=0, lt=1)] = 0.999,
    eps: PositiveFloat = 1e-08,
    weight_decay: NonNegativeFloat = 0.0,
    seed: int = 0,
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
