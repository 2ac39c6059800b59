"""LORENZA: low-rank, zeroth-order-estimated sharpness-aware training (AdaZo-SAM).

Refael, Arbel, Lindenbaum & Tirer, "LORENZA: Enhancing Generalization in Low-Rank
Gradient LLM Training via Efficient Zeroth-Order Adaptive SAM", arXiv:2502.19571 (TMLR
2026). No official code was found; this follows the paper's description (summarised in
the project's method notes).

Sharpness-aware minimisation (SAM) needs the ascent direction at W, which normally costs
a second gradient. AdaZo-SAM estimates it with forward passes only, in the low-rank
subspace of the gradient: with Q (m x r) and R (r x n) from a randomized SVD, probes P_j
= Q diag(u_j) R, u_j ~ N(0, I_r), and the central-difference estimate

    g_zo = (1/q) Σ_j [f(W + mu·P_j) - f(W - mu·P_j)] / (2 mu) · P_j,

whose expectation (to first order in mu) is Q diag(diag(Q^T G R^T)) R: the rank-r
truncation of G when Q and R are G's top singular vectors. The SAM gradient is
the one true gradient of the step, taken at the perturbed point: G_SAM = ∇f(W + rho·g_zo
/ ||g_zo||). LORENZA then runs Adam on g = Q^T G_SAM (r x n) and steps W <- W -
lr·Q·m_hat/(sqrt(v_hat) + eps), the paper's update: the projection is on the left with
Q, and there is no GaLore scale factor. Q and R are refreshed every ``update_gap`` steps
from a randomized SVD (``torch.svd_lowrank``). LORENZA+ (``plus=True``) also applies the
discarded orthogonal component of G_SAM. The perturbation acts on the low-rank
(attention/MLP) matrices; other parameters take the SAM gradient with AdamW. A refresh
step costs one extra gradient (at W) to find the subspace. Per step: 1 + 2q forward
passes and one gradient. The notes write the estimate with a leading minus; the sign
here is the one that makes g_zo an estimate of +∇f, the ascent direction SAM needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from benchmark import hookimpl
from benchmark.kinds import MethodSpec
from plugins.optimizers.lowrank import (
    HybridOptimizer,
    SeededSampling,
    adam_subspace_step,
    param_groups,
)

OVERSAMPLE = 4


def randomized_svd(grad: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q: m x r, R: r x n), the top-r singular vectors by torch.svd_lowrank."""
    q = min(rank + OVERSAMPLE, *grad.shape)
    u, _, v = torch.svd_lowrank(grad.float(), q=q, niter=2)
    return u[:, :rank].to(grad.dtype).contiguous(), v[:, :rank].T.to(grad.dtype).contiguous()


class Lorenza(SeededSampling, HybridOptimizer):
    needs_closure = True

    def __init__(
        self,
        params,
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),  # type: ignore[no-untyped-def]
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        rank: int = 128,
        update_gap: int = 200,
        rho: float = 0.05,
        mu: float = 1e-3,
        probes: int = 1,
        plus: bool = False,
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
                "lowrank": False,
            },
        )
        self.rho, self.mu, self.probes, self.plus = rho, mu, probes, plus
        self.generator = torch.Generator().manual_seed(seed)

    def _lowrank(self) -> list[tuple[torch.Tensor, dict]]:
        return [(p, g) for g in self.param_groups if g["lowrank"] for p in g["params"]]

    @torch.no_grad()
    def zeroth_order_ascent(
        self, closure: Callable[..., torch.Tensor]
    ) -> dict[torch.Tensor, torch.Tensor]:
        """g_zo for every low-rank weight, from 2·probes forward passes."""
        estimate = {p: torch.zeros_like(p) for p, _ in self._lowrank()}
        for _ in range(self.probes):
            probe = {}
            for p, _ in self._lowrank():
                q, r = self.state[p]["left"], self.state[p]["right"]
                u = torch.randn(q.shape[1], generator=self.generator).to(q)
                probe[p] = (q * u) @ r
            for p, d in probe.items():
                p.add_(d, alpha=self.mu)
            f_plus = float(closure(backward=False))
            for p, d in probe.items():
                p.add_(d, alpha=-2 * self.mu)
            f_minus = float(closure(backward=False))
            for p, d in probe.items():
                p.add_(d, alpha=self.mu)
                estimate[p].add_(d, alpha=(f_plus - f_minus) / (2 * self.mu * self.probes))
        return estimate

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        if closure is None:
            raise RuntimeError(
                "LORENZA evaluates the loss several times per step: call step(closure)"
            )
        loss = closure(backward=False)
        self._refresh_subspaces(closure)
        ascent = self.zeroth_order_ascent(closure)
        norm = torch.sqrt(sum((e.float().square().sum() for e in ascent.values()), torch.zeros(())))
        shift = {p: e * (self.rho / float(norm)) for p, e in ascent.items()} if norm > 0 else {}
        for p, e in shift.items():
            p.add_(e)
        with torch.enable_grad():
            closure(backward=True)  # the one gradient of the step: at the perturbed point
        for p, e in shift.items():
            p.sub_(e)
        self.apply_updates()
        return loss

    def _refresh_subspaces(self, closure: Callable[..., torch.Tensor]) -> None:
        due = {
            id(p)
            for p, g in self._lowrank()
            if "left" not in self.state[p] or self.state[p].get("step", 0) % g["update_gap"] == 0
        }
        if not due:
            return
        with torch.enable_grad():
            closure(backward=True)  # the gradient at W, only to find the subspaces
        for p, group in self._lowrank():
            if id(p) in due and p.grad is not None:
                rank = min(group["rank"], *p.shape)
                self.state[p]["left"], self.state[p]["right"] = randomized_svd(p.grad, rank)

    def lowrank_step(self, p: torch.Tensor, state: dict, group: dict) -> None:
        grad = p.grad
        state["step"] = state.get("step", 0) + 1
        q = state["left"]
        low = q.T @ grad  # r x n
        adam_subspace_step(p, low, state, {**group, "scale": 1.0}, lambda x: q @ x)
        if self.plus:  # LORENZA+: the discarded component of G_SAM, at plain SGD scale
            p.add_(grad - q @ low, alpha=-group["lr"])


def build_lorenza(
    model: nn.Module,
    *,
    lr: float,
    rank: int,
    update_gap: int,
    rho: float,
    mu: float,
    probes: int,
    plus: bool,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    seed: int,
) -> Lorenza:
    return Lorenza(
        param_groups(model, {}),
        lr=lr,
        betas=(beta1, beta2),
        eps=eps,
        weight_decay=weight_decay,
        rank=rank,
        update_gap=update_gap,
        rho=rho,
        mu=mu,
        probes=probes,
        plus=plus,
        seed=seed,
    )


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="optimizer",
            name="lorenza",
            factory=build_lorenza,
            defaults={
                "lr": 0.01,
                "rank": 128,
                "update_gap": 200,
                "rho": 0.05,
                "mu": 1e-3,
                "probes": 1,
                "plus": False,
                "beta1": 0.9,
                "beta2": 0.999,
                "eps": 1e-8,
                "weight_decay": 0.0,
                "seed": 0,
            },
            paper="arXiv:2502.19571",
            description="low-rank Adam on a SAM gradient whose ascent direction is estimated "
            "by zeroth-order probes in the gradient's subspace",
        )
    )
