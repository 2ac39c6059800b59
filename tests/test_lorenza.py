"""LORENZA (AdaZo-SAM): the zeroth-order estimate against the paper's equations, exact
restoration of the weights, and the r-vector form of probes and estimate."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

from benchmark.protocols.optimizer import optimizer_state_bytes
from plugins.optimizers.lorenza import Lorenza, probe_matrix, randomized_svd
from plugins.optimizers.lowrank import param_groups
from tests.test_optimizers import LOWRANK, Block, _rest_numel, _shapes, closure_for, data


def lorenza(model: nn.Module, **options: object) -> Lorenza:
    settings: dict = {"lr": 1e-2, "rank": 4, "update_gap": 5, "probes": 2, "seed": 0}
    settings.update(options)
    return Lorenza(param_groups(model, {}), **settings)


def test_weights_are_restored_bit_for_bit_in_bf16() -> None:
    """With lr 0 a step must leave every weight as it was: the probes and the SAM shift
    are undone exactly (adding and subtracting them in bf16 is not exact)."""
    torch.manual_seed(0)
    model = Block().to(torch.bfloat16)
    opt = lorenza(model, lr=0.0, rho=0.05, mu=1e-2, probes=3)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        opt.step(closure_for(model, 0))
    for (name, p), b in zip(model.named_parameters(), before, strict=True):
        assert torch.equal(p, b), (name, float((p.float() - b.float()).abs().max()))


def reference_estimate(
    model: nn.Module,
    subspaces: dict[str, tuple[torch.Tensor, torch.Tensor]],
    draws: list[dict[str, torch.Tensor]],
    mu: float,
) -> dict[str, torch.Tensor]:
    """Eq. of AdaZo-SAM's ascent estimate, written out with full matrices:
    (1/q) Σ_j [f(W + mu P_j) - f(W - mu P_j)] / (2 mu) · P_j, P_j = Q diag(u_j) R."""
    x, y = (t.double() for t in data(0))
    weights = {n: p.detach().double() for n, p in model.named_parameters()}

    def f(shift: dict[str, torch.Tensor]) -> float:
        moved = {n: w + shift.get(n, 0) for n, w in weights.items()}
        with torch.no_grad():
            return float(nn.functional.mse_loss(functional_call(model.double(), moved, (x,)), y))

    out = {n: torch.zeros_like(weights[n]) for n in subspaces}
    for u in draws:
        probes = {n: q @ torch.diag(u[n]) @ r for n, (q, r) in subspaces.items()}
        plus = f({n: mu * p for n, p in probes.items()})
        minus = f({n: -mu * p for n, p in probes.items()})
        for n, p in probes.items():
            out[n] += (plus - minus) / (2 * mu) * p / len(draws)
    return out


def test_estimate_matches_the_papers_equation() -> None:
    torch.manual_seed(1)
    model = Block().double()
    probes, mu = 3, 1e-3
    opt = lorenza(model, probes=probes, mu=mu, seed=7)
    closure = closure_for(model, 0)
    opt._refresh_subspaces(closure)
    names = {p: n for n, p in model.named_parameters()}
    weights = opt._perturbed()
    # The draws the optimizer is about to make: one host draw of q rounds of an r-vector
    # per weight (q x sum of ranks), split by weight.
    replica = torch.Generator()
    replica.set_state(opt.generator.get_state())
    block = torch.randn(probes, 4 * len(weights), generator=replica).double()
    draws = [
        {names[p]: part for p, part in zip(weights, row.split(4), strict=True)} for row in block
    ]
    subspaces = {names[p]: (opt.state[p]["left"], opt.state[p]["right"]) for p in weights}
    saved = {p: p.detach().clone() for p in weights}
    estimate = opt.zeroth_order_ascent(closure, saved)
    expected = reference_estimate(copy.deepcopy(model), subspaces, draws, mu)
    for p in weights:
        assert estimate[p].shape == (4,)
        torch.testing.assert_close(
            probe_matrix(opt.state[p], estimate[p]).double(),
            expected[names[p]],
            rtol=1e-5,
            atol=1e-7,
        )
        assert torch.equal(p, saved[p])  # left at W


def test_estimate_is_the_truncated_gradient_in_expectation() -> None:
    """With Q, R from G's SVD, E[g_zo] is the rank-r truncation of G (to first order)."""
    torch.manual_seed(10)
    model = Block()
    opt = lorenza(model, probes=3000, mu=1e-4)
    closure = closure_for(model, 0)
    opt._refresh_subspaces(closure)
    w = model.mlp[0].weight
    grad = w.grad.detach().clone()
    saved = {p: p.detach().clone() for p in opt._perturbed()}
    estimate = probe_matrix(opt.state[w], opt.zeroth_order_ascent(closure, saved)[w])
    u, s, vh = torch.linalg.svd(grad)
    truncated = u[:, :4] @ torch.diag(s[:4]) @ vh[:4]
    cosine = float((estimate * truncated).sum() / (estimate.norm() * truncated.norm()))
    assert cosine > 0.95, cosine


def test_ascent_norm_is_the_frobenius_norm_of_the_estimate() -> None:
    torch.manual_seed(2)
    model = Block()
    opt = lorenza(model)
    opt._refresh_subspaces(closure_for(model, 0))
    g = torch.Generator().manual_seed(0)
    estimate = {p: torch.randn(4, generator=g) for p in opt._perturbed()}
    full = torch.cat([probe_matrix(opt.state[p], c).flatten() for p, c in estimate.items()])
    torch.testing.assert_close(opt.ascent_norm(estimate), full.norm(), rtol=1e-5, atol=0)


class LargestNew(TorchDispatchMode):
    """The largest tensor any op allocates (results written into an ``out=`` or in place
    into an existing tensor are not new)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        existing = {id(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in existing:
                self.largest = max(self.largest, t.numel())
        return out


def test_probes_and_estimate_are_r_vectors() -> None:
    """The zeroth-order phase allocates nothing of the weights' size: probes are written
    into the weights from r-vectors, and the estimate is one r-vector per weight."""
    torch.manual_seed(3)
    model = Block()
    opt = lorenza(model, probes=2)
    closure = closure_for(model, 0)
    opt._refresh_subspaces(closure)

    def quiet(backward: bool = True) -> torch.Tensor:  # the forward passes are not measured
        with _disable_current_modes():
            return closure(backward)

    saved = {p: p.detach().clone() for p in opt._perturbed()}
    probe = LargestNew()
    with probe:
        estimate = opt.zeroth_order_ascent(quiet, saved)
    smallest = min(m * n for m, n in _shapes(model, LOWRANK))
    assert 0 < probe.largest < smallest / 2, (probe.largest, smallest)
    assert all(c.shape == (4,) for c in estimate.values())


def test_state_is_q_r_and_the_subspace_moments() -> None:
    torch.manual_seed(0)
    model = Block()
    opt = lorenza(model)
    opt.step(closure_for(model, 0))
    r, expected = 4, 0
    for m, n in _shapes(model, LOWRANK):
        expected += 4 * (m * r + r * n + 2 * r * n)  # Q, R and the r x n moments
    expected += sum(8 * k for k in _rest_numel(model))
    assert optimizer_state_bytes(opt) == expected


def test_step_lies_in_span_q_and_costs_one_gradient() -> None:
    torch.manual_seed(11)
    model = Block()
    opt = lorenza(model)
    opt.step(closure_for(model, 0))  # first step: refresh (one extra gradient)
    w = model.attn.weight
    before = w.detach().clone()
    calls: list[str] = []
    opt.step(closure_for(model, 1, calls))
    assert calls.count("grad") == 1 and calls.count("forward") == 1 + 2 * 2
    delta = w.detach() - before
    q = opt.state[w]["left"]
    assert (delta - q @ (q.T @ delta)).abs().max() < 1e-5 * delta.abs().max() + 1e-12
    assert torch.linalg.matrix_rank(delta) <= 4


def test_moments_carry_over_a_refresh_unchanged() -> None:
    """The documented choice: a refresh replaces Q and R only."""
    torch.manual_seed(4)
    model = Block()
    opt = lorenza(model, update_gap=2)
    w = model.mlp[0].weight
    for step in range(2):
        opt.step(closure_for(model, step))
    moments = opt.state[w]["exp_avg"].clone()
    old_q = opt.state[w]["left"].clone()
    opt._refresh_subspaces(closure_for(model, 5))  # step count 2: due
    assert not torch.equal(opt.state[w]["left"], old_q)
    assert torch.equal(opt.state[w]["exp_avg"], moments)


def test_randomized_svd_matches_the_top_subspace() -> None:
    g = torch.Generator().manual_seed(12)
    u = torch.linalg.qr(torch.randn(30, 6, generator=g))[0]
    v = torch.linalg.qr(torch.randn(20, 6, generator=g))[0]
    grad = u @ torch.diag(torch.tensor([9.0, 7.0, 5.0, 3.0, 0.01, 0.01])) @ v.T
    q, r = randomized_svd(grad, 4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(q @ q.T @ u[:, :4], u[:, :4], atol=1e-4, rtol=0)
    torch.testing.assert_close(r.T @ r @ v[:, :4], v[:, :4], atol=1e-4, rtol=0)
    torch.testing.assert_close(q.T @ q, torch.eye(4), atol=1e-5, rtol=0)
