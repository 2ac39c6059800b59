"""Muon: momentum orthogonalised by Newton-Schulz iterations.

Jordan, Jin, Boza, You, Cesista, Newhouse & Bernstein, "Muon: An optimizer for hidden
layers in neural networks", 2024 (kellerjordan.github.io/posts/muon). Official code:
KellerJordan/Muon.

Hidden 2-D weights: B <- mu·B + (1 - mu)·G; the update is G + mu·(B - G) with Nesterov
(B without), orthogonalised by 5 quintic Newton-Schulz steps in bf16 with coefficients
(3.4445, -4.7750, 2.0315) after normalising by the Frobenius norm, scaled by
sqrt(max(1, m/n)); W <- (1 - lr·wd)·W - lr·update. Everything else (embeddings, head,
norms, biases) gets AdamW with lr 3e-4, betas (0.9, 0.95), eps 1e-10. State: m·n per
hidden weight. Defaults: lr 0.02, momentum 0.95, Nesterov, wd 0.

Checked against the official muon.py: the same buffer update, look-ahead, coefficients,
normalisation and scale. Two small differences: the reference multiplies the bf16 result
by the scale before it meets the fp32 weights, here the result is cast back first (a
rounding difference only); and the auxiliary AdamW here never decays, where the
reference's takes its group's weight_decay (0 by default, so the defaults agree).

Departure: the iteration runs in bf16 on CUDA, as the reference does, but in fp32 on
other devices (``ns_dtype: auto``): CPUs without bf16 matrix units emulate it many times
slower, which would charge Muon for the hardware rather than the method. ``ns_dtype:
bf16`` restores the reference behaviour everywhere.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Interval
from pydantic import NonNegativeFloat, PositiveInt
from torch import nn

from plugins.optimizers.lowrank import HybridOptimizer, param_groups

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(
    g: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    """An approximation of U V^T for G = U S V^T: singular values pushed towards 1."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


def _ns_dtype(group: dict, p: torch.Tensor) -> torch.dtype:
    choice = group["ns_dtype"]
    if choice == "auto":
        return torch.bfloat16 if p.is_cuda else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[choice]


class Muon(HybridOptimizer):
    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,  # type: ignore[no-untyped-def]
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_dtype: str = "auto",
        adam_lr: float = 3e-4,
        adam_betas: tuple[float, float] = (0.9, 0.95),
        adam_eps: float = 1e-10,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "momentum": momentum,
                "nesterov": nesterov,
                "weight_decay": weight_decay,
                "ns_steps": ns_steps,
                "ns_dtype": ns_dtype,
                "adam_lr": adam_lr,
                "adam_betas": adam_betas,
                "adam_eps": adam_eps,
                "lowrank": False,
            },
        )

    def lowrank_step(self, p: torch.Tensor, state: dict, group: dict) -> None:
        grad = p.grad
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
        buf = state["momentum_buffer"]
        buf.lerp_(grad, 1 - group["momentum"])
        update = grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
        update = newton_schulz(update, group["ns_steps"], dtype=_ns_dtype(group, p))
        update *= max(1.0, p.shape[0] / p.shape[1]) ** 0.5
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update, alpha=-group["lr"])


def build_muon(
    model: nn.Module,
    *,
    lr: NonNegativeFloat = 0.02,
    momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.95,
    nesterov: bool = True,
    weight_decay: NonNegativeFloat = 0.0,
    ns_steps: PositiveInt = 5,  # Newton-Schulz iterations
    ns_dtype: Literal["auto", "bf16", "fp32"] = "auto",
    adam_lr: NonNegativeFloat = 0.0003,  # the auxiliary AdamW's, for non-matrix parameters
) -> Muon:
    if ns_dtype not in ("auto", "bf16", "fp32"):
        raise ValueError(f"ns_dtype must be auto, bf16 or fp32, not {ns_dtype!r}")
    # Muon's "hidden weights" are the same 2-D attention/MLP matrices GaLore targets.
    groups = param_groups(model, {})
    return Muon(
        groups,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        ns_steps=ns_steps,
        ns_dtype=ns_dtype,
        adam_lr=adam_lr,
    )
