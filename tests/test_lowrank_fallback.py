"""The low-rank optimizers' shared machinery against independent references: the AdamW
their non-targeted parameters get must be torch's AdamW (the ``adamw`` baseline), and
GaLore's subspace Adam must keep its moments across a projector refresh."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from plugins.optimizers.galore import GaLoreAdamW
from plugins.optimizers.lowrank import HybridOptimizer, split_params
from plugins.optimizers.muon import Muon
from plugins.optimizers.sumo import SUMO


class Block(nn.Module):
    """Named like a transformer block: 'attn' and 'mlp' weights are low-rank targets."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 24)
        self.attn = nn.Linear(24, 24, bias=False)
        self.mlp = nn.Linear(24, 40)
        self.norm = nn.LayerNorm(40)
        self.head = nn.Linear(40, 1)


def _hand_gradients(model: nn.Module, step: int, scale: float) -> None:
    """Gradients drawn by hand, so both sides of a comparison see the same ones whatever
    their weights have become."""
    g = torch.Generator().manual_seed(1000 + step)
    for p in model.parameters():
        p.grad = scale * torch.randn(p.shape, generator=g, dtype=p.dtype)


FALLBACK_CASES: dict[str, tuple[Callable[[list[dict]], HybridOptimizer], dict]] = {
    # Small gradients and a large eps make eps's placement visible (torch adds it after
    # the bias correction; a Hugging Face-style AdamW adds it before).
    "galore": (
        lambda groups: GaLoreAdamW(
            groups, lr=1e-2, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.1, rank=4
        ),
        {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-3, "weight_decay": 0.1},
    ),
    "sumo": (
        lambda groups: SUMO(groups, lr=2e-3, rank=4, adam_betas=(0.8, 0.95), adam_eps=1e-3),
        {"lr": 2e-3, "betas": (0.8, 0.95), "eps": 1e-3, "weight_decay": 0.0},
    ),
    "muon": (
        lambda groups: Muon(groups, adam_lr=3e-3, adam_betas=(0.9, 0.95), adam_eps=1e-3),
        {"lr": 3e-3, "betas": (0.9, 0.95), "eps": 1e-3, "weight_decay": 0.0},
    ),
}


@pytest.mark.parametrize("name", sorted(FALLBACK_CASES))
def test_fallback_is_torch_adamw(name: str) -> None:
    build, torch_options = FALLBACK_CASES[name]
    torch.manual_seed(0)
    model = Block().double()
    twin = copy.deepcopy(model)
    lowrank, rest = split_params(model)
    opt = build([{"params": lowrank, "lowrank": True}, {"params": rest, "lowrank": False}])
    _, twin_rest = split_params(twin)
    reference = torch.optim.AdamW(twin_rest, **torch_options)
    for step in range(6):
        for m, o in ((model, opt), (twin, reference)):
            _hand_gradients(m, step, scale=1e-3)
            o.step()
        for a, b in zip(rest, twin_rest, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for p in rest:  # the step count stays a Python int: two moments per element
        assert isinstance(opt.state[p]["step"], int) and opt.state[p]["step"] == 6


def test_fallback_skips_parameters_without_a_gradient() -> None:
    model = Block().double()
    lowrank, rest = split_params(model)
    opt = FALLBACK_CASES["galore"][0](
        [{"params": lowrank, "lowrank": True}, {"params": rest, "lowrank": False}]
    )
    _hand_gradients(model, 0, scale=1e-3)
    model.head.bias.grad = None
    before = model.head.bias.detach().clone()
    opt.step()
    assert torch.equal(model.head.bias, before) and model.head.bias not in opt.state


# --------------------------------------------------------------------------- GaLore


def _galore_reference(
    weight: torch.Tensor,
    grads: list[torch.Tensor],
    *,
    rank: int,
    gap: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    scale: float,
    weight_decay: float,
) -> list[torch.Tensor]:
    """GaLore (Zhao et al. 2024, Algorithm 2) as galore-torch runs it, written from the
    paper: P from the SVD of G at steps 1, gap + 1, ... (top-r right singular vectors
    when m >= n, left ones otherwise, the SVD taken in fp32); Adam on the projected
    gradient with its moments *kept* across a change of P; the normalised step projected
    back, times scale; decoupled decay after the step."""
    w = weight.clone()
    b1, b2 = betas
    m = v = proj = None
    trajectory = []
    for t, g in enumerate(grads, start=1):
        if (t - 1) % gap == 0:
            u, _, vh = torch.linalg.svd(g.float(), full_matrices=False)
            proj = (vh[:rank] if g.shape[0] >= g.shape[1] else u[:, :rank]).to(g.dtype)
        right = g.shape[0] >= g.shape[1]
        low = g @ proj.T if right else proj.T @ g
        if m is None:
            m, v = torch.zeros_like(low), torch.zeros_like(low)
        m = b1 * m + (1 - b1) * low
        v = b2 * v + (1 - b2) * low * low
        step = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        n = m / (v.sqrt() + eps)
        w = w - step * scale * (n @ proj if right else proj @ n)
        w = w - lr * weight_decay * w
        trajectory.append(w.clone())
    return trajectory


@pytest.mark.parametrize("shape", [(40, 24), (16, 48)])
def test_galore_matches_a_reference_across_refreshes_and_keeps_moments(
    shape: tuple[int, int],
) -> None:
    """Several steps side by side, through two projector refreshes: moments zeroed or
    re-projected at a refresh, a late refresh or a missing scale all change the path."""
    g = torch.Generator().manual_seed(3)
    weight = nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64))
    options = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-6, "scale": 0.25}
    opt = GaLoreAdamW(
        [{"params": [weight], "lowrank": True}],
        **options,
        weight_decay=0.05,
        rank=3,
        update_gap=4,
    )
    # A slowly turning low-rank signal plus noise, so that a refresh changes the basis.
    base = torch.randn(*shape, generator=g, dtype=torch.float64)
    turn = torch.randn(*shape, generator=g, dtype=torch.float64)
    grads = [
        base + 0.3 * t * turn + 0.2 * torch.randn(*shape, generator=g, dtype=torch.float64)
        for t in range(11)
    ]
    expected = _galore_reference(
        weight.detach(), grads, rank=3, gap=4, weight_decay=0.05, **options
    )
    seen_projectors = []
    for grad, want in zip(grads, expected, strict=True):
        weight.grad = grad.clone()
        opt.step()
        seen_projectors.append(opt.state[weight]["projector"].clone())
        torch.testing.assert_close(weight.detach(), want, rtol=0, atol=1e-10)
    changed = [
        i for i in range(1, 11) if not torch.equal(seen_projectors[i], seen_projectors[i - 1])
    ]
    assert changed == [4, 8]  # steps 5 and 9 (1-based) start a new gap
