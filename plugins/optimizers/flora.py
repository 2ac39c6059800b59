"""FLORA: low-rank adapters are secretly gradient compressors.

Hao, Cao & Mou, ICML 2024, arXiv:2402.03293. Official code: BorealisAI/flora-opt.

Adafactor (Shazeer & Stern 2018) with its first moment kept compressed by a random
projection that is never stored: a Gaussian A with entries N(0, 1/r) is regenerated from
a per-parameter seed. For a weight m x n with m < n, A is r x m and the compressed
momentum A·M is r x n; otherwise A is n x r and M·A is m x r, so the state is r·max(m, n)
plus Adafactor's factored second moment (m + n). Each step, with g the Adafactor-
preconditioned gradient:
    update = (1 - b1)·g + b1·up(m_c);   m_c <- b1·m_c + (1 - b1)·down(g)
and the update's RMS is then clipped to ``clip_threshold``, which also bounds the
amplification (about m/r in the subspace) that up(down(·)) applies. Every ``kappa``
steps, after the update is formed, a new seed is drawn and the momentum is moved into
the new projection, m_c <- down_new(up_old(m_c)), before the new gradient is added.
Compression is used when min(m, n) >= r and max/min <= 4 (the official rule, which
leaves embeddings and the output head with a full momentum); 1-D parameters use an
unfactored second moment.

Defaults: rank 8, kappa 1000, b1 0.9 (the official default has no momentum unless b1 is
set; a benchmark of FLORA's compression needs it), decay_rate -0.8, eps (1e-30, 1e-3),
clip threshold 1.0, a fixed learning rate (no relative step).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark import hookimpl
from benchmark.kinds import MethodSpec

MAX_ASPECT = 4


def compressible(shape: torch.Size, rank: int) -> bool:
    return len(shape) == 2 and min(shape) >= rank and max(shape) / min(shape) <= MAX_ASPECT


def gaussian_projection(
    shape: torch.Size, rank: int, seed: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """A ~ N(0, 1/r): r x m when m < n, else n x r; regenerated from ``seed``."""
    m, n = shape
    size = (rank, m) if m < n else (n, rank)
    g = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randn(size, generator=g) / rank**0.5).to(device=device, dtype=dtype)


def down(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return a @ x if x.shape[0] < x.shape[1] else x @ a


def up(y: torch.Tensor, a: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return a.T @ y if shape[0] < shape[1] else y @ a.T


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.norm() / x.numel() ** 0.5


class Flora(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        rank: int = 8,
        kappa: int = 1000,  # type: ignore[no-untyped-def]
        beta1: float = 0.9,
        decay_rate: float = -0.8,
        eps1: float = 1e-30,
        clip_threshold: float = 1.0,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "rank": rank,
                "kappa": kappa,
                "beta1": beta1,
                "decay_rate": decay_rate,
                "eps1": eps1,
                "clip_threshold": clip_threshold,
                "weight_decay": weight_decay,
                "seed": seed,
            },
        )

    def _precondition(self, grad: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
        """Adafactor's factored second-moment scaling (clipping comes after the momentum)."""
        beta2 = 1.0 - state["step"] ** group["decay_rate"]
        sq = grad.square().add_(group["eps1"])
        if grad.ndim == 2:
            if "row" not in state:
                state["row"] = torch.zeros(grad.shape[0], device=grad.device, dtype=grad.dtype)
                state["col"] = torch.zeros(grad.shape[1], device=grad.device, dtype=grad.dtype)
            state["row"].lerp_(sq.mean(dim=1), 1 - beta2)
            state["col"].lerp_(sq.mean(dim=0), 1 - beta2)
            r = (state["row"] / state["row"].mean()).rsqrt().unsqueeze(1)
            c = state["col"].rsqrt().unsqueeze(0)
            g = grad * r * c
        else:
            if "v" not in state:
                state["v"] = torch.zeros_like(grad)
            state["v"].lerp_(sq, 1 - beta2)
            g = grad * state["v"].rsqrt()
        return g

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for index, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                g = self._precondition(p.grad, state, group)
                b1 = group["beta1"]
                if b1 > 0 and compressible(p.shape, group["rank"]):
                    update = self._compressed_momentum(p, g, state, group, index)
                elif b1 > 0:
                    if "exp_avg" not in state:
                        state["exp_avg"] = torch.zeros_like(g)
                    state["exp_avg"].lerp_(g, 1 - b1)
                    update = state["exp_avg"]
                else:
                    update = g
                update = update / (_rms(update) / group["clip_threshold"]).clamp(min=1.0)
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
        return loss

    def _compressed_momentum(
        self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict, index: int
    ) -> torch.Tensor:
        rank, b1, shape = group["rank"], group["beta1"], p.shape
        if "seed" not in state:
            state["seed"] = group["seed"] * 1_000_003 + index * 7919
            a = gaussian_projection(shape, rank, state["seed"], p.device, p.dtype)
            state["momentum"] = torch.zeros_like(down(g, a))
        a = gaussian_projection(shape, rank, state["seed"], p.device, p.dtype)
        update = (1 - b1) * g + b1 * up(state["momentum"], a, shape)
        if state["step"] % group["kappa"] == 0:  # move the momentum to a fresh projection
            restored = up(state["momentum"], a, shape)
            state["seed"] += 1
            a = gaussian_projection(shape, rank, state["seed"], p.device, p.dtype)
            state["momentum"] = down(restored, a)
        state["momentum"].mul_(b1).add_(down(g, a), alpha=1 - b1)
        return update


def build_flora(
    model: nn.Module,
    *,
    lr: float,
    rank: int,
    kappa: int,
    beta1: float,
    weight_decay: float,
    seed: int = 0,
) -> Flora:
    """``seed`` draws the projections; the protocol passes the run's seed (offset by a
    suite's ``seed``), so seeds of a suite see different projections."""
    params = [p for p in model.parameters() if p.requires_grad]
    return Flora(
        params, lr=lr, rank=rank, kappa=kappa, beta1=beta1, weight_decay=weight_decay, seed=seed
    )


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="optimizer",
            name="flora",
            factory=build_flora,
            defaults={
                "lr": 1e-3,
                "rank": 8,
                "kappa": 1000,
                "beta1": 0.9,
                "weight_decay": 0.0,
                "seed": 0,
            },
            paper="arXiv:2402.03293",
            description="Adafactor with momentum compressed by seeded random projections",
        )
    )
