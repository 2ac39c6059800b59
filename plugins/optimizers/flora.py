"""FLORA: low-rank adapters are secretly gradient compressors.

Hao, Cao & Mou, ICML 2024, arXiv:2402.03293. Official code: BorealisAI/flora-opt.

Adafactor (Shazeer & Stern 2018) with its first moment kept compressed by a random
projection that is never stored: a Gaussian A with entries N(0, 1/r) is regenerated from
a per-parameter integer seed whenever it is needed. For a weight m x n with m < n, A is
r x m and the compressed momentum A·M is r x n; otherwise A is n x r and M·A is m x r.
Each step, with g the Adafactor-preconditioned gradient:
    update = (1 - b1)·g + b1·up(m_c);   m_c <- b1·m_c + (1 - b1)·down(g)
and the update's RMS is then clipped to ``clip_threshold``, which also bounds the
amplification (about m/r in the subspace) that up(down(·)) applies. Every ``kappa``
steps, after the update is formed, the seed moves on and the momentum is carried into the
new projection, m_c <- down_new(up_old(m_c)), before the new gradient is added.
Compression is used when min(m, n) >= r and max/min <= 4 (the official rule, which
leaves embeddings and the output head with a full momentum); 1-D parameters use an
unfactored second moment.

As in the official code, A is drawn on the parameter's device by a generator seeded
there, so no projection crosses the host link; the seed is a plain int in the state, so a
state_dict round trip regenerates exactly the same A. Devices draw different normals from
one seed (CUDA's also depend on the launch grid, so on the GPU model): a run resumes on
the kind of device it was saved on, or its compressed momentum is read in the wrong
basis. Moments are kept in float32 for half-precision parameters (the official code
computes the whole step in float32 and copies the result back), in the parameter's dtype
otherwise.

With ``scale_parameter`` (the official default) the step is relative, as in Adafactor:
lr·max(eps2, RMS(W)), so a weight of RMS 0.02 moves 50 times less than with a fixed lr.
``eps1`` regularises the squared gradient. The relative-step schedule of Adafactor is not
offered: the learning rate is the suite's. Defaults as in the official code (kappa 1000,
decay_rate -0.8, eps (1e-30, 1e-3), clip threshold 1.0, scale_parameter on), except b1:
0.9 here, where the official default has no momentum, because a benchmark of FLORA's
compression needs the momentum it compresses.

State bytes per weight (s = 4 for float32 and half-precision weights): a compressed
matrix s·(r·max(m, n) + m + n), any other matrix s·(m·n + m + n), a vector s·2·numel.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from annotated_types import Interval
from pydantic import NonNegativeFloat, PositiveInt
from torch import nn

MAX_ASPECT = 4
LOW_PRECISION = (torch.float16, torch.bfloat16)
_MASK64 = (1 << 64) - 1


def compressible(shape: torch.Size, rank: int) -> bool:
    return len(shape) == 2 and min(shape) >= rank and max(shape) / min(shape) <= MAX_ASPECT


def mix_seed(seed: int) -> int:
    """A well-spread 63-bit seed from any int (SplitMix64's finaliser), so that nearby
    run seeds and parameter indices never share a projection."""
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def gaussian_projection(
    shape: torch.Size,
    rank: int,
    seed: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A ~ N(0, 1/r): r x m when m < n, else n x r; drawn on ``device`` from ``seed``."""
    m, n = shape
    size = (rank, m) if m < n else (n, rank)
    generator = torch.Generator(device=device).manual_seed(seed)
    a = torch.randn(size, generator=generator, device=device, dtype=dtype)
    return a.div_(math.sqrt(rank))


def down(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return a @ x if x.shape[0] < x.shape[1] else x @ a


def up(y: torch.Tensor, a: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return a.T @ y if shape[0] < shape[1] else y @ a.T


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.norm() / x.numel() ** 0.5


class Flora(torch.optim.Optimizer):
    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        rank: int = 8,
        kappa: int = 1000,
        beta1: float | None = 0.9,
        decay_rate: float = -0.8,
        eps1: float = 1e-30,
        eps2: float = 1e-3,
        clip_threshold: float = 1.0,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
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
                "eps2": eps2,
                "clip_threshold": clip_threshold,
                "weight_decay": weight_decay,
                "scale_parameter": scale_parameter,
            },
        )
        # One seed per parameter, numbered across groups, fixed at construction as in the
        # official code; an int in the state, so it travels with state_dict.
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                index += 1
                self.state[p]["seed"] = mix_seed(mix_seed(seed) + index)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch casts floating state to each parameter's dtype on load; put back the saved
        tensors, so float32 moments of half-precision weights stay float32 and a resumed
        run takes exactly the step the uninterrupted one would."""
        super().load_state_dict(state_dict)
        saved = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for index, p in zip(saved, params, strict=True):
            for key, value in state_dict["state"].get(index, {}).items():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    self.state[p][key] = value.to(device=p.device, copy=True)

    def _precondition(self, grad: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
        """Adafactor's factored second-moment scaling (clipping comes after the momentum)."""
        beta2 = 1.0 - state["step"] ** group["decay_rate"]
        sq = grad.square().add_(group["eps1"])
        if grad.ndim == 2:
            if "row" not in state:
                state["row"] = grad.new_zeros(grad.shape[0])
                state["col"] = grad.new_zeros(grad.shape[1])
            state["row"].lerp_(sq.mean(dim=1), 1 - beta2)
            state["col"].lerp_(sq.mean(dim=0), 1 - beta2)
            r = (state["row"] / state["row"].mean()).rsqrt().unsqueeze(1)
            c = state["col"].rsqrt().unsqueeze(0)
            return torch.mul(grad, r).mul_(c)  # (grad * r) * c, one temporary
        if "v" not in state:
            state["v"] = torch.zeros_like(grad)
        state["v"].lerp_(sq, 1 - beta2)
        return grad * state["v"].rsqrt()

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, self.state[p], group)
        return loss

    def _update(self, p: torch.Tensor, state: dict, group: dict) -> None:
        low = p.dtype in LOW_PRECISION
        grad = p.grad.float() if low else p.grad
        weight = p.float() if low else p
        state["step"] = state.get("step", 0) + 1
        lr: float | torch.Tensor = group["lr"]
        if group["scale_parameter"]:  # a tensor, so that no step waits on the device
            lr = _rms(weight).clamp(min=group["eps2"]) * group["lr"]
        g = self._precondition(grad, state, group)
        b1 = group["beta1"] or 0.0
        if b1 > 0 and compressible(p.shape, group["rank"]):
            update = self._compressed_momentum(g, state, group)
        elif b1 > 0:
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(g)
            state["exp_avg"].lerp_(g, 1 - b1)
            update = state["exp_avg"]
        else:
            update = g
        # A fresh tensor from here on (the division), so the rest works in place.
        update = update / (_rms(update) / group["clip_threshold"]).clamp(min=1.0)
        if group["weight_decay"]:
            weight.mul_(1 - lr * group["weight_decay"])
        weight.sub_(update.mul_(lr))
        if low:
            p.copy_(weight)

    def _compressed_momentum(self, g: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
        rank, b1, shape = group["rank"], group["beta1"], g.shape

        def projection() -> torch.Tensor:
            return gaussian_projection(shape, rank, state["seed"], g.device, g.dtype)

        a = projection()
        if "momentum" not in state:
            state["momentum"] = torch.zeros_like(down(g, a))
        # (1 - b1)·g + b1·up(m_c), in place on the two temporaries (same roundings).
        update = torch.mul(g, 1 - b1).add_(up(state["momentum"], a, shape).mul_(b1))
        if state["step"] % group["kappa"] == 0:  # carry the momentum to a fresh projection
            restored = up(state["momentum"], a, shape)
            state["seed"] = mix_seed(state["seed"])
            a = projection()
            state["momentum"] = down(restored, a)
        state["momentum"].mul_(b1).add_(down(g, a), alpha=1 - b1)
        return update


def build_flora(
    model: nn.Module,
    *,
    lr: NonNegativeFloat = 0.001,
    rank: PositiveInt = 8,
    kappa: PositiveInt = 1000,  # steps between fresh projections
    beta1: Annotated[float, Interval(ge=0, lt=1)] = 0.9,
    weight_decay: NonNegativeFloat = 0.0,
    scale_parameter: bool = True,
    seed: int = 0,
) -> Flora:
    """``seed`` draws the projections; the protocol passes the run's seed (offset by a
    suite's ``seed``), so seeds of a suite see different projections."""
    params = [p for p in model.parameters() if p.requires_grad]
    return Flora(
        params,
        lr=lr,
        rank=rank,
        kappa=kappa,
        beta1=beta1,
        weight_decay=weight_decay,
        scale_parameter=scale_parameter,
        seed=seed,
    )
