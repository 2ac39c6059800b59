"""Each low-rank optimizer's defining property, its analytic state size, exact resume."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache

import pytest
import torch
from torch import nn

from benchmark.protocols.optimizer import optimizer_state_bytes
from plugins.optimizers.adafactor import build_adafactor
from plugins.optimizers.adamw import build_adamw
from plugins.optimizers.adarankgrad import adaptive_rank, build_adarankgrad, range_finder_projector
from plugins.optimizers.flora import build_flora, compressible
from plugins.optimizers.galore import build_galore
from plugins.optimizers.lorenza import build_lorenza
from plugins.optimizers.lowrank import svd_projector, transport
from plugins.optimizers.muon import build_muon, newton_schulz
from plugins.optimizers.plumage import (
    build_plumage,
)
from plugins.optimizers.sumo import build_sumo, orthogonalise


class Block(nn.Module):
    """Named like a transformer block: 'attn' and 'mlp' weights get the low-rank treatment."""

    def __init__(self, d: int = 24, hidden: int = 40) -> None:
        super().__init__()
        self.embed = nn.Linear(6, d)
        self.attn = nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(d, hidden, bias=False), nn.Tanh(), nn.Linear(hidden, d, bias=False)
        )
        self.head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(x))
        h = h + self.attn(h)
        return self.head(h + self.mlp(h))


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 6, generator=g)
    return x, (x[:, :1] * x[:, 1:2] + torch.sin(x[:, 2:3]))


def backward(model: nn.Module, seed: int = 0) -> float:
    x, y = data(seed)
    loss = nn.functional.mse_loss(model(x), y)
    model.zero_grad()
    loss.backward()
    return float(loss.detach())


def closure_for(model: nn.Module, seed: int, calls: list[str] | None = None):  # type: ignore[no-untyped-def]
    """The protocol's closure contract: backward=False is a forward pass only. Inputs take
    the model's dtype (the bf16 tests)."""
    dtype = next(model.parameters()).dtype
    x, y = (t.to(dtype) for t in data(seed))

    def closure(backward: bool = True) -> torch.Tensor:
        if calls is not None:
            calls.append("grad" if backward else "forward")
        if not backward:
            with torch.no_grad():
                return nn.functional.mse_loss(model(x), y)
        model.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def train_step(opt: torch.optim.Optimizer, model: nn.Module, seed: int) -> None:
    if getattr(opt, "needs_closure", False):
        opt.step(closure_for(model, seed))
    else:
        backward(model, seed)
        opt.step()


BUILDERS = {
    "adamw": lambda m: build_adamw(m, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0),
    "adafactor": lambda m: build_adafactor(
        m, lr=1e-2, beta1=None, weight_decay=0, clip_threshold=1.0
    ),
    "galore": lambda m: build_galore(
        m,
        lr=1e-2,
        rank=4,
        update_gap=5,
        scale=0.25,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
    ),
    "muon": lambda m: build_muon(
        m,
        lr=0.02,
        momentum=0.95,
        nesterov=True,
        weight_decay=0,
        ns_steps=5,
        ns_dtype="auto",
        adam_lr=1e-2,
    ),
    "sumo": lambda m: build_sumo(
        m,
        lr=2e-3,
        rank=4,
        update_gap=5,
        alpha=4.0,
        gamma=1.1,
        momentum=0.95,
        nesterov=True,
        weight_decay=0.0,
        perp_scale=1.0,
        orthogonalizer="svd",
    ),
    "flora": lambda m: build_flora(m, lr=1e-2, rank=4, kappa=5, beta1=0.9, weight_decay=0.0),
    "plumage": lambda m: build_plumage(
        m,
        lr=1e-2,
        rank=4,
        update_gap=5,
        scale=0.25,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        seed=0,
    ),
    "adarankgrad": lambda m: build_adarankgrad(
        m,
        lr=1e-2,
        max_rank=6,
        eta=0.8,
        tol=0.5,
        min_gap=2,
        max_gap=5,
        scale=0.25,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        seed=0,
    ),
    "lorenza": lambda m: build_lorenza(
        m,
        lr=1e-2,
        rank=4,
        update_gap=5,
        rho=0.05,
        mu=1e-3,
        probes=2,
        plus=False,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        seed=0,
    ),
}


# The learning rate each method needs on this 150-step problem where BUILDERS' (chosen
# for the other tests) is far from its best: found by a sweep over 1e-3..1e-1.
LOSS_LR = {"adafactor": 3e-2, "flora": 3e-2, "sumo": 1e-2}
# How far above AdamW's final loss a method may end. The sweep's worst is FLORA at about
# 19x (momentum only, through a rank-4 random projection); a no-op step ends near 75x.
LOSS_FACTOR = 25.0


def _tuned(name: str) -> Callable[[nn.Module], torch.optim.Optimizer]:
    def build(model: nn.Module) -> torch.optim.Optimizer:
        opt = BUILDERS[name](model)
        if name in LOSS_LR:
            for group in opt.param_groups:
                group["lr"] = LOSS_LR[name]
        return opt

    return build


def final_loss(build: Callable[[nn.Module], torch.optim.Optimizer]) -> tuple[float, float]:
    """(first, final) mean loss over the four batches, 150 steps of cycling through them."""
    torch.manual_seed(0)
    model = Block()
    opt = build(model)
    first = sum(backward(model, s) for s in range(4)) / 4
    for step in range(150):
        train_step(opt, model, step % 4)
    return first, sum(backward(model, s) for s in range(4)) / 4


def first_step_alignment(
    build: Callable[[nn.Module], torch.optim.Optimizer],
) -> dict[str, tuple[float, float]]:
    """Per parameter: (<delta, G> / (|delta| |G|), |delta|) for the first step, with G the
    gradient at the starting point."""
    torch.manual_seed(0)
    model = Block()
    opt = build(model)
    backward(model)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_step(opt, model, 0)
    out = {}
    for n, p in model.named_parameters():
        delta = p.detach() - before[n]
        norm = float(delta.norm())
        cosine = float((delta * grads[n]).sum()) / (norm * float(grads[n].norm()) + 1e-30)
        out[n] = (cosine, norm)
    return out


@cache
def adamw_final_loss() -> float:
    return final_loss(BUILDERS["adamw"])[1]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_first_step_moves_every_parameter_downhill(name: str) -> None:
    """A sign error anywhere (the low-rank part, the orthogonal part, the AdamW
    fallback) turns some parameter's first step uphill; a dropped update leaves it."""
    for param, (cosine, norm) in first_step_alignment(BUILDERS[name]).items():
        assert norm > 0, f"{name}: {param} did not move"
        assert cosine < -0.05, f"{name}: {param} moved at cosine {cosine:.3f} to the gradient"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_reaches_a_loss_near_adamws(name: str) -> None:
    first, final = final_loss(_tuned(name))
    assert final < 0.5 * first, (first, final)
    assert final < LOSS_FACTOR * adamw_final_loss(), (final, adamw_final_loss())


HYBRIDS = ["adarankgrad", "galore", "lorenza", "muon", "plumage", "sumo"]


@pytest.mark.parametrize("name", HYBRIDS)
def test_the_methods_own_update_trains_its_weights(name: str) -> None:
    """With every parameter but the attention/MLP matrices frozen, only the method's own
    (low-rank, orthogonalised, ...) update moves anything: the AdamW fallback cannot carry
    the loss test for it. 150 steps must take the loss below 0.9 of its start; a low-rank
    update that stops after its first step ends at 0.95-0.99 (measured), a sign error
    climbs. (Reached: galore 0.74, adarankgrad 0.74, plumage 0.68, lorenza 0.20, sumo and
    muon 0.02.)"""
    from plugins.optimizers.lowrank import split_params

    torch.manual_seed(0)
    model = Block()
    for p in split_params(model)[1]:
        p.requires_grad_(False)
    opt = _tuned(name)(model)
    first = sum(backward(model, s) for s in range(4)) / 4
    for step in range(150):
        train_step(opt, model, step % 4)
    final = sum(backward(model, s) for s in range(4)) / 4
    assert final < 0.9 * first, (first, final)


class _Flipped(torch.optim.Optimizer):
    """AdamW with a sign error: it climbs."""

    def __init__(self, params) -> None:  # type: ignore[no-untyped-def]
        self.inner = torch.optim.AdamW(params, lr=1e-2, weight_decay=0)
        super().__init__(self.inner.param_groups, {})

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.neg_()
        return self.inner.step()


@pytest.mark.parametrize(
    "broken",
    [
        lambda m: _Flipped(m.parameters()),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.0),  # a step that does nothing
        lambda m: torch.optim.SGD(m.parameters(), lr=1e-5),  # lr ignored, a tiny fixed step
    ],
    ids=["sign-error", "no-op", "tiny-step"],
)
def test_the_checks_reject_broken_optimizers(broken) -> None:  # type: ignore[no-untyped-def]
    alignment = first_step_alignment(broken)
    first, final = final_loss(broken)
    descends = all(norm > 0 and cosine < -0.05 for cosine, norm in alignment.values())
    near_adamw = final < 0.5 * first and final < LOSS_FACTOR * adamw_final_loss()
    assert not (descends and near_adamw)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_state_dict_round_trip_reproduces_the_next_step(name: str) -> None:
    torch.manual_seed(0)
    model = Block()
    opt = BUILDERS[name](model)
    for step in range(7):  # crosses a projector refresh (gap/kappa 5)
        train_step(opt, model, step)
    twin = copy.deepcopy(model)
    twin_opt = BUILDERS[name](twin)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for m, o in ((model, opt), (twin, twin_opt)):
        train_step(o, m, 99)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def _weight_step(
    name: str, shape_model: Block, target: str
) -> tuple[torch.Tensor, torch.Tensor, torch.optim.Optimizer]:
    opt = BUILDERS[name](shape_model)
    backward(shape_model)
    w = dict(shape_model.named_parameters())[target]
    before, grad = w.detach().clone(), w.grad.detach().clone()
    opt.step()
    return w.detach() - before, grad, opt


@pytest.mark.parametrize("target", ["attn.weight", "mlp.0.weight", "mlp.2.weight"])
def test_galore_step_lies_in_the_gradient_subspace(target: str) -> None:
    torch.manual_seed(1)
    model = Block()
    delta, grad, opt = _weight_step("galore", model, target)
    p = opt.state[dict(model.named_parameters())[target]]["projector"]
    torch.testing.assert_close(p @ p.T if p.shape[0] == 4 else p.T @ p, torch.eye(4))
    assert torch.allclose(p.abs(), svd_projector(grad, 4).abs(), atol=1e-5)
    if grad.shape[0] >= grad.shape[1]:
        residual = delta - (delta @ p.T) @ p  # outside the row space of P (r x n)
    else:
        residual = delta - p @ (p.T @ delta)
    assert residual.abs().max() < 1e-4 * delta.abs().max()  # float32 rounding only
    assert torch.linalg.matrix_rank(delta) <= 4


def test_orthogonalisers_push_singular_values_to_one() -> None:
    g = torch.Generator().manual_seed(3)
    for shape in [(32, 32), (64, 16), (16, 48)]:
        k = min(shape)
        u = torch.linalg.qr(torch.randn(shape[0], k, generator=g))[0]
        v = torch.linalg.qr(torch.randn(shape[1], k, generator=g))[0]
        spectrum = torch.linspace(0.1, 3.0, k)  # a 30x spread of singular values
        m = u @ torch.diag(spectrum) @ v.T
        exact = torch.linalg.svdvals(orthogonalise(m))
        torch.testing.assert_close(exact, torch.ones_like(exact), atol=1e-5, rtol=0)
        ns = torch.linalg.svdvals(newton_schulz(m).float())  # bf16, as the reference
        ns32 = torch.linalg.svdvals(newton_schulz(m, dtype=torch.float32))
        assert float(ns32.min()) > 0.6 and float(ns32.max()) < 1.25, ns32
        # Five quintic steps in bf16 land every singular value near 1, not exactly on it
        # (Jordan et al. report roughly 0.7 to 1.2).
        assert float(ns.min()) > 0.6 and float(ns.max()) < 1.25, ns


def test_sumo_moment_transport_keeps_the_moment_in_full_space() -> None:
    g = torch.Generator().manual_seed(4)
    grad = torch.randn(40, 24, generator=g)
    old = svd_projector(grad, 6)
    rotation = torch.linalg.qr(torch.randn(6, 6, generator=g))[0]
    new = rotation @ old  # the same subspace, another basis
    moment = torch.randn(40, 6, generator=g)
    moved = transport(moment, old, new, grad.shape)
    torch.testing.assert_close(moved @ new, moment @ old, atol=1e-5, rtol=0)


def _shapes(model: nn.Module, names: list[str]) -> list[tuple[int, int]]:
    params = dict(model.named_parameters())
    return [tuple(params[n].shape) for n in names]


LOWRANK = ["attn.weight", "mlp.0.weight", "mlp.2.weight"]


def _rest_numel(model: nn.Module) -> list[int]:
    return [p.numel() for n, p in model.named_parameters() if n not in LOWRANK]


@pytest.mark.parametrize(
    ("name", "lowrank_bytes", "rest_bytes"),
    [
        ("galore", lambda m, n, r: 4 * (r * min(m, n) + 2 * r * max(m, n)), lambda k: 8 * k),
        ("sumo", lambda m, n, r: 4 * (r * (m + n) + 1), lambda k: 8 * k),
        ("muon", lambda m, n, r: 4 * m * n, lambda k: 8 * k),
        ("plumage", lambda m, n, r: 4 * (r * min(m, n) + 2 * r * max(m, n) + r), lambda k: 8 * k),
    ],
)
def test_state_bytes_match_the_analytic_formula(name, lowrank_bytes, rest_bytes) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = Block()
    opt = BUILDERS[name](model)
    backward(model)
    opt.step()
    r = 4
    expected = sum(lowrank_bytes(m, n, r) for m, n in _shapes(model, LOWRANK))
    # AdamW for the rest: two moments per element (the step counter is a Python int here).
    expected += sum(rest_bytes(k) for k in _rest_numel(model))
    assert optimizer_state_bytes(opt) == expected


def test_flora_state_bytes() -> None:
    torch.manual_seed(0)
    model = Block()
    opt = BUILDERS["flora"](model)
    backward(model)
    opt.step()
    r, expected = 4, 0
    for p in model.parameters():
        if p.ndim == 2:
            m, n = p.shape
            momentum = r * max(m, n) if compressible(p.shape, r) else m * n
            expected += 4 * (momentum + m + n)
        else:
            expected += 4 * (2 * p.numel())  # unfactored second moment and full momentum
    assert optimizer_state_bytes(opt) == expected


def test_adarankgrad_rank_meets_the_energy_threshold() -> None:
    g = torch.Generator().manual_seed(8)
    u = torch.linalg.qr(torch.randn(48, 20, generator=g))[0]
    v = torch.linalg.qr(torch.randn(20, 20, generator=g))[0]
    sigma = torch.tensor([10.0, 6.0, 3.0, 1.0] + [0.05] * 16)
    grad = u @ torch.diag(sigma) @ v.T
    energy = float(sigma.square().sum())
    for eta in (0.5, 0.8, 0.9, 0.99):
        r = adaptive_rank(sigma, energy, eta, max_rank=16)
        kept = float(sigma[:r].square().sum())
        assert kept >= eta * energy and (
            r == 1 or float(sigma[: r - 1].square().sum()) < eta * energy
        )
        proj = range_finder_projector(grad, 16, eta, torch.Generator().manual_seed(0))
        assert proj.shape == (r, 20)  # m >= n: right projector
        captured = float((grad @ proj.T).square().sum())
        assert captured >= eta * energy * 0.999
    assert adaptive_rank(sigma, energy, 0.9999, max_rank=3) == 3
