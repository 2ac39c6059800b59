"""LORENZA: low-rank, zeroth-order-estimated sharpness-aware training (AdaZo-SAM).

Refael, Arbel, Lindenbaum & Tirer, "LORENZA: Enhancing Generalization in Low-Rank
Gradient LLM Training via Efficient Zeroth-Order Adaptive SAM", arXiv:2502.19571 (TMLR
2026). No official code was found; this follows the paper's algorithm as summarised in
the project's method notes.

Sharpness-aware minimisation (SAM) needs the ascent direction at W, which normally costs
a second gradient. AdaZo-SAM estimates it with forward passes only, in the low-rank
subspace of the gradient: with Q (m x r) and R (r x n) from a randomized SVD, probes P_j
= Q diag(u_j) R, u_j ~ N(0, I_r), and the central-difference estimate

    g_zo = (1/q) Σ_j [f(W + mu·P_j) - f(W - mu·P_j)] / (2 mu) · P_j = Q diag(c) R,
    c = (1/q) Σ_j [f(W + mu·P_j) - f(W - mu·P_j)] / (2 mu) · u_j,

whose expectation (to first order in mu) is Q diag(diag(Q^T G R^T)) R: the rank-r
truncation of G when Q and R are G's top singular vectors. Every probe and the estimate
itself are fixed by r numbers, so only the r-vectors u_j and c are kept; an m x n
matrix exists only while a perturbation is written into the weights. The SAM gradient is
the one true gradient of the step, taken at the perturbed point: G_SAM = ∇f(W + rho·g_zo
/ ||g_zo||), with ||g_zo||_F computed from c, Q^T Q and R R^T (r x r). Every perturbation
is written as W_saved + delta from a copy of the weights taken at the start of the step,
and the step ends by copying W_saved back, so W is restored bit for bit in any dtype
(adding and subtracting delta in bf16 leaves an error the size of an Adam step).

LORENZA then runs Adam on g = Q^T G_SAM (r x n) and steps W <- W - lr·Q·m_hat/
(sqrt(v_hat) + eps), the paper's update: the projection is on the left with Q, and there
is no GaLore scale factor. Q and R are refreshed every ``update_gap`` steps from a
randomized SVD of the gradient at W (a range finder with two power iterations, drawn from
the optimizer's own seeded generator, so a resumed run draws what the uninterrupted one
would); a refresh step costs that one extra gradient. LORENZA+ (``plus=True``) also
applies the discarded orthogonal component of G_SAM. The perturbation acts on the
low-rank (attention/MLP) matrices; other parameters take the SAM gradient with AdamW.
Per step: 1 + 2q forward passes and one gradient, and no tensor-to-Python conversion;
the probes' r-vectors for the whole step are one host draw and one copy to the device
(on CUDA a copy from pageable memory waits for the stream: one wait per step). Limit, in
low precision: the probe mu·Q diag(u) R is written into the weights in their dtype, and
in bf16 most of its entries round away on large layers (on a 512 x 512 layer of std 0.02
at mu = 1e-3 only ~9% of the entries change), so the finite difference sees a fraction
of the intended direction; no suite here trains in bf16. Adam's eps is 1e-8 (torch's
AdamW default, not GaLore's 1e-6).
The notes write the estimate with a leading minus; the sign here is the one that makes
g_zo an estimate of +∇f, the ascent direction SAM needs.

Moments at a subspace refresh: the paper's algorithm keeps Adam's r x n moments and
changes only Q (no rotation or reset of m and v is specified), as GaLore does. The same
is done here: m, v and the bias-correction count carry over unchanged and are read in the
new basis from the next step on. AdaRankGrad, by the same first author, rotates them
instead; that is not part of LORENZA and is not done here.
"""

from __future__ import annotations

from collections.abc import Callable
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
)

OVERSAMPLE = 4
POWER_ITERATIONS = 2


def randomized_svd(
    grad: torch.Tensor, rank: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q: m x r, R: r x n), the top-r singular vectors by a randomized range finder
    (Halko, Martinsson & Tropp) in fp32; the sketch comes from ``generator`` (a CPU one)."""
    a = grad.float()
    k = min(rank + OVERSAMPLE, *a.shape)
    sketch = torch.randn(a.shape[1], k, generator=generator, device="cpu").to(a.device)
    basis = torch.linalg.qr(a @ sketch).Q
    for _ in range(POWER_ITERATIONS):
        basis = torch.linalg.qr(a @ torch.linalg.qr(a.T @ basis).Q).Q
    u, _, vh = torch.linalg.svd(basis.T @ a, full_matrices=False)
    left = (basis @ u[:, :rank]).to(grad.dtype).contiguous()
    return left, vh[:rank].to(grad.dtype).contiguous()


def _wide(t: torch.Tensor) -> torch.dtype:
    """At least fp32: loss differences over a small mu vanish in bf16."""
    return torch.promote_types(t.dtype, torch.float32)


def _widen(t: torch.Tensor) -> torch.Tensor:
    return t.to(_wide(t))


def probe_matrix(state: dict, coefficients: torch.Tensor) -> torch.Tensor:
    """Q diag(c) R, at least in fp32: a probe, or the estimate when c is its coefficient
    vector."""
    q, r = _widen(state["left"]), _widen(state["right"])
    return (q * coefficients.to(q.dtype)) @ r.to(q.dtype)


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

    def _perturbed(self) -> list[torch.Tensor]:
        """The low-rank weights that have a subspace (those that ever had a gradient)."""
        return [p for p, _ in self._lowrank() if "left" in self.state[p]]

    @torch.no_grad()
    def _write(self, p: torch.Tensor, saved: torch.Tensor, coefficients: torch.Tensor) -> None:
        """W <- W_saved + Q diag(c) R, rounded once to W's dtype."""
        state = self.state[p]
        q, r = state["left"], state["right"]
        torch.addmm(saved, q * coefficients.to(q.dtype), r, out=p)

    @torch.no_grad()
    def zeroth_order_ascent(
        self, closure: Callable[..., torch.Tensor], saved: dict[torch.Tensor, torch.Tensor]
    ) -> dict[torch.Tensor, torch.Tensor]:
        """The coefficient r-vector c of g_zo = Q diag(c) R for every perturbed weight,
        from 2·probes forward passes; the weights are left at W_saved."""
        weights = self._perturbed()
        estimate = {
            p: torch.zeros(self.state[p]["left"].shape[1], device=p.device, dtype=_wide(p))
            for p in weights
        }
        # Every probe's r-vectors for every weight in one host draw and one copy to the
        # device: on CUDA a copy from pageable host memory waits for the stream, so one
        # copy per step instead of one per weight and probe (the draw stays on the seeded
        # host generator, whose state travels with state_dict).
        sizes = [c.shape[0] for c in estimate.values()]
        device = next(iter(estimate.values())).device if estimate else torch.device("cpu")
        all_draws = torch.randn(self.probes, sum(sizes), generator=self.generator).to(device)
        for probe in range(self.probes):
            parts = all_draws[probe].split(sizes)
            draws = {p: u.to(c.dtype) for (p, c), u in zip(estimate.items(), parts, strict=True)}
            for p, u in draws.items():
                self._write(p, saved[p], u * self.mu)
            f_plus = _widen(closure(backward=False).detach())
            for p, u in draws.items():
                self._write(p, saved[p], u * -self.mu)
            f_minus = _widen(closure(backward=False).detach())
            weight = (f_plus - f_minus) / (2 * self.mu * self.probes)
            for p, u in draws.items():
                estimate[p].add_(u * weight)
        for p in weights:
            p.copy_(saved[p])
        return estimate

    def ascent_norm(self, estimate: dict[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """||g_zo||_F over all perturbed weights, from r x r products only:
        ||Q diag(c) R||_F^2 = c^T ((Q^T Q) ∘ (R R^T)) c, exact for any Q, R."""
        total = None
        for p, c in estimate.items():
            q, r = _widen(self.state[p]["left"]), _widen(self.state[p]["right"])
            c = c.to(q.dtype)
            term = c @ (((q.T @ q) * (r @ r.T)) @ c)
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return total.clamp(min=0).sqrt()

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        if closure is None:
            raise RuntimeError(
                "LORENZA evaluates the loss several times per step: call step(closure)"
            )
        loss = closure(backward=False)
        self._refresh_subspaces(closure)
        saved = {p: p.detach().clone() for p in self._perturbed()}
        estimate = self.zeroth_order_ascent(closure, saved)
        # rho·g_zo/||g_zo|| without a host sync: an all-zero estimate gives a zero shift.
        scale = self.rho / self.ascent_norm(estimate).clamp(min=torch.finfo(torch.float32).tiny)
        for p, c in estimate.items():
            self._write(p, saved[p], c * scale.to(c.device))
        with torch.enable_grad():
            closure(backward=True)  # the one gradient of the step: at the perturbed point
        for p, w in saved.items():
            p.copy_(w)
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
                self.state[p]["left"], self.state[p]["right"] = randomized_svd(
                    p.grad, rank, self.generator
                )

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
    lr: NonNegativeFloat = 0.01,
    rank: PositiveInt = 128,
    update_gap: PositiveInt = 200,
    rho: NonNegativeFloat = 0.05,  # SAM radius
    mu: PositiveFloat = 0.001,  # finite-difference step of the zeroth-order estimate
    probes: PositiveInt = 1,
    plus: bool = False,  # LORENZA+: add the discarded orthogonal gradient
    beta1: Annotated[float, Interval(ge=0, lt=1)] = 0.9,
    beta2: Annotated[float, Interval(ge=0, lt=1)] = 0.999,
    eps: PositiveFloat = 1e-08,
    weight_decay: NonNegativeFloat = 0.0,
    seed: int = 0,
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
