"""PLUMAGE: probabilistic low-rank unbiased minimum-variance gradient estimation.

Haroush & Soudry, arXiv:2505.18313. No official code was found, and of the paper only the
abstract and introduction could be read here, so what follows is this project's reading,
stated so that it can be checked: GaLore's loop with two changes.

1. The subspace is *sampled*, not truncated. At each refresh (every ``update_gap`` steps)
   the SVD G = Σ σ_i u_i v_i^T of the gradient gives inclusion probabilities
   p_i = min(1, c·σ_i) with Σ p_i = r, the minimum-variance choice for an unbiased rank-r
   estimator (the largest components are kept with certainty, the tail is sampled; Barnes,
   Cameron & Howard, arXiv:2505.09647). Exactly r components are drawn with those
   marginals by systematic sampling and each kept direction carries the weight 1/p_i.
   The basis of the smaller side is complete, so E[P diag(1/p) P^T] = I and the estimate
   Ĝ = P diag(1/p) P^T G of *any* gradient of the interval is unbiased.
2. Moment realignment: when the projection changes, the moments are carried into the new
   coordinates instead of being read in the new basis as if nothing had changed (GaLore).

Where the weights enter. The abstract presents PLUMAGE as a drop-in replacement for the
gradient estimator, so the estimate is what Adam consumes: the moments accumulate the
weighted coordinates c = diag(1/p) P^T G, and the back-projected first moment is an
unbiased estimate of full-rank Adam's (one step from a fresh state it is (1 - b1)·Ĝ, of
mean (1 - b1)·G). The normalised step m̂/(√v̂ + ε) is projected back *without* weights.
Said plainly: Adam normalises each coordinate, so inside an interval the weights cancel
(up to ε) and the *update* is Adam's on the sampled subspace, GaLore-sized, not an
unbiased estimate of the full-rank update; the unbiasedness is the gradient estimate's
and the first moment's. Re-weighting after the normalisation instead (the first version
here) would make the update unbiased but multiply sampled tail directions by up to 1/p_min
and make GaLore's learning rates unstable.

The realignment takes the old draw's weights off the moments, rotates them into the new
basis as GaLore-style realignment does (m <- R m, v <- (R∘R) v with R = P'^T P:
non-negative, exact when the bases agree up to signs and order) and puts the new draw's
weights on, so the carried moments and the weighted gradients that follow share one scale
and a re-picked direction's step stays Adam's size across the refresh.

Devices. The SVD and every tensor of the update live on the parameter's device. The draw
(water-filling over min(m, n) singular values and one uniform number) runs on the host in
float64 from a CPU generator whose state travels with state_dict, so the same singular
values give the same draw on any device; only the picked indices and their weights are
moved to the device, once per refresh, next to an SVD that dominates the cost.

State per m x n weight: projector r·min(m, n), moments 2r·max(m, n), weights r.
Hyperparameters: rank and interval (plus GaLore's lr, scale and eps 1e-6, galore-torch's).
"""

from __future__ import annotations

from typing import Annotated, Any

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

HOST = torch.device("cpu")


def inclusion_probabilities(sigma: torch.Tensor, k: int) -> torch.Tensor:
    """p_i = min(1, c·σ_i) with Σ p_i = k, on the host in float64.

    With σ sorted in decreasing order and j components kept with certainty, the rest get
    (k - j)·σ_i / (their sum); the answer is the smallest j for which that stays <= 1.
    A tail of zeros (a rank-deficient gradient) is filled uniformly: those directions
    contribute nothing to the estimate, whatever their weight.
    """
    s_in = sigma.detach().to(device=HOST, dtype=torch.float64).clamp(min=0)
    n = s_in.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.float64, device=HOST)
    order = torch.argsort(s_in, descending=True)
    s = s_in[order]
    tail_sums = torch.flip(torch.cumsum(torch.flip(s, [0]), 0), [0])  # Σ_{i>=j} s_i
    certain = torch.arange(k, dtype=torch.float64, device=HOST)
    head = (k - certain) * s[:k]
    fits = (tail_sums[:k] > 0) & (head <= tail_sums[:k] * (1 + 1e-12))
    p = torch.zeros(n, dtype=torch.float64, device=HOST)
    if bool(fits.any()):
        j = int(torch.nonzero(fits)[0])
        p[:j] = 1.0
        p[j:] = ((k - j) * s[j:] / tail_sums[j]).clamp(max=1.0)
    else:  # at most k non-zero singular values: keep them all
        nonzero = int((s > 0).sum())
        p[:nonzero] = 1.0
        p[nonzero:] = (k - nonzero) / (n - nonzero)
    out = torch.empty_like(p)
    out[order] = p
    return out


def systematic_sample(p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """round(Σp) distinct host indices, index i with probability p_i (each p_i <= 1).

    One uniform offset, then one point per unit along the cumulative sum: a point lands in
    item i with probability p_i, and no item of length <= 1 can hold two points.
    """
    k = round(float(p.sum()))
    edges = torch.cumsum(p, 0)
    u = torch.rand((), generator=generator, dtype=torch.float64, device=HOST)
    points = u + torch.arange(k, dtype=torch.float64, device=HOST)
    # Rounding can leave the last point past the final edge; give it to the last item that
    # can be drawn at all rather than to a zero-probability one.
    last = int(torch.nonzero(p > 0).max())
    return torch.searchsorted(edges, points, right=True).clamp(max=last)


def sample_projector(
    grad: torch.Tensor, rank: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(projector, weights 1/p) over sampled singular directions of the smaller side, both
    on ``grad``'s device; the projector in ``grad``'s dtype, the weights in at least fp32 (in bf16
    1/p would be rounded to ~3 digits and the first moment's unbiasedness with it)."""
    u, sigma, vh = torch.linalg.svd(grad.float(), full_matrices=False)
    p = inclusion_probabilities(sigma, rank)
    picked_host = systematic_sample(p, generator)
    wide = torch.promote_types(grad.dtype, torch.float32)
    weights = (1.0 / p[picked_host]).to(device=grad.device, dtype=wide)
    picked = picked_host.to(grad.device)
    proj = vh[picked] if projects_right(grad.shape) else u[:, picked]
    return proj.to(grad.dtype).contiguous(), weights


def weigh(low: torch.Tensor, weights: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """diag(w) applied on the subspace side of a projected tensor (columns of an m x r
    moment for right projectors, rows of an r x n one otherwise)."""
    out = low * weights if projects_right(shape) else low * weights[:, None]
    return out.to(low.dtype)


def unbiased_estimate(
    grad: torch.Tensor, proj: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """P diag(1/p) P^T G (left) or G P^T diag(1/p) P (right)."""
    return project_back(weigh(project(grad, proj), weights, grad.shape), proj, grad.shape)


def realign(
    state: dict[str, Any],
    proj: torch.Tensor,
    weights: torch.Tensor,
    shape: torch.Size,
) -> None:
    """Carry the moments from the stored basis into (proj, weights): take the old weights
    off (1/p and 1/p² of the old draw), rotate in plain coordinates (shared with the other
    realigning optimizers), then weigh by 1/p' and 1/p'² as the new estimator weighs the
    gradients that follow. Carrying the weighted moments instead would leave a re-picked
    direction's second moment inflated by the old 1/p² for ~1/(1-b2) steps and its steps
    too small by that factor (measured: ``docs/methods/low-rank-optimizers.md``)."""
    old = state["weights"]
    state["exp_avg"] = weigh(state["exp_avg"], old.reciprocal(), shape)
    state["exp_avg_sq"] = weigh(state["exp_avg_sq"], old.square().reciprocal(), shape)
    rotate_moments(state, state["projector"], proj, shape)
    state["exp_avg"] = weigh(state["exp_avg"], weights, shape)
    state["exp_avg_sq"] = weigh(state["exp_avg_sq"], weights.square(), shape)


class Plumage(SeededSampling, HybridOptimizer):
    def __init__(
        self,
        params: Any,
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
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
        # A host generator on purpose: see the module docstring (Devices).
        self.generator = torch.Generator(device=HOST).manual_seed(seed)

    def lowrank_step(self, p: torch.Tensor, state: dict, group: dict) -> None:
        grad = p.grad
        rank = min(group["rank"], *grad.shape)
        state["step"] = state.get("step", 0) + 1
        if "projector" not in state or (state["step"] - 1) % group["update_gap"] == 0:
            proj, weights = sample_projector(grad, rank, self.generator)
            if "exp_avg" in state:
                realign(state, proj, weights, grad.shape)
            state["projector"], state["weights"] = proj, weights
        proj, weights = state["projector"], state["weights"]

        def back(x: torch.Tensor) -> torch.Tensor:
            return project_back(x, proj, grad.shape)

        low = weigh(project(grad, proj), weights, grad.shape)
        adam_subspace_step(p, low, state, group, back)


def build_plumage(
    model: nn.Module,
    *,
    lr: NonNegativeFloat = 0.01,
    rank: PositiveInt = 128,
    update_gap: PositiveInt = 200,
    scale: PositiveFloat = 0.25,
    beta1: Annotated[float, Interval(ge=0, lt=1)] = 0.9,
    beta2: Annotated[float, Interval(ge=0, lt=1)] = 0.999,
    eps: PositiveFloat = 1e-06,
    weight_decay: NonNegativeFloat = 0.0,
    seed: int = 0,
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
