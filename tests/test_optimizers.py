"""Each low-rank optimizer's defining property, its analytic state size, exact resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from benchmark.protocols.optimizer import optimizer_state_bytes
from plugins.optimizers.adafactor import build_adafactor
from plugins.optimizers.adamw import build_adamw
from plugins.optimizers.adarankgrad import adaptive_rank, build_adarankgrad, range_finder_projector
from plugins.optimizers.flora import build_flora, compressible, gaussian_projection, up
from plugins.optimizers.galore import build_galore
from plugins.optimizers.lorenza import build_lorenza, randomized_svd
from plugins.optimizers.lowrank import project, svd_projector, transport
from plugins.optimizers.muon import build_muon, newton_schulz
from plugins.optimizers.plumage import (
    build_plumage,
    inclusion_probabilities,
    sample_projector,
    unbiased_estimate,
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
    """The protocol's closure contract: backward=False is a forward pass only."""
    x, y = data(seed)

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


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_drives_the_loss_down(name: str) -> None:
    torch.manual_seed(0)
    model = Block()
    opt = BUILDERS[name](model)
    first = backward(model)
    for step in range(150):
        train_step(opt, model, step % 4)
    assert backward(model) < 0.6 * first


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


@pytest.mark.parametrize("orthogonalizer", ["svd", "newton-schulz"])
def test_sumo_step_is_out_of_subspace_gradient_plus_orthogonal_moment(
    orthogonalizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(2)
    model = Block()
    monkeypatch.setitem(
        BUILDERS,
        "sumo",
        lambda m: build_sumo(
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
            orthogonalizer=orthogonalizer,
        ),
    )
    delta, grad, _ = _weight_step("sumo", model, "mlp.0.weight")  # 40 x 24: right projector
    q = svd_projector(grad, 4)
    lr, alpha = 2e-3, 4.0
    out_of_subspace = grad - (grad @ q.T) @ q
    in_subspace = -delta / (alpha * lr) - out_of_subspace
    # What is left is 0.2·sqrt(max(m, n))·O·Q with O = U V^T of the first moment.
    assert (in_subspace - (in_subspace @ q.T) @ q).abs().max() < 1e-4
    o = (in_subspace @ q.T) / (0.2 * max(grad.shape) ** 0.5)
    singular = torch.linalg.svdvals(o)
    if orthogonalizer == "svd":  # exact: every singular value is 1
        torch.testing.assert_close(singular, torch.ones(4), atol=1e-4, rtol=0)
    else:  # Newton-Schulz: near 1, not on it
        assert float(singular.min()) > 0.6 and float(singular.max()) < 1.25, singular
        assert float((singular - 1).abs().max()) > 1e-3, singular


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


def test_flora_momentum_lives_in_the_random_subspace() -> None:
    torch.manual_seed(5)
    model = Block()
    opt = BUILDERS["flora"](model)
    for step in range(3):
        backward(model, step)
        opt.step()
    w = model.mlp[0].weight  # 40 x 24, aspect 1.7: compressed
    state = opt.state[w]
    assert compressible(w.shape, 4) and state["momentum"].shape == (40, 4)
    a = gaussian_projection(w.shape, 4, state["seed"], w.device, w.dtype)
    full = up(state["momentum"], a, w.shape)
    assert torch.linalg.matrix_rank(full) <= 4
    assert (full - (full @ torch.linalg.pinv(a.T)) @ a.T).abs().max() < 1e-5
    assert not compressible(torch.Size([2048, 64]), 4), "embeddings keep a full momentum"


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


def test_galore_refreshes_every_gap_and_keeps_moments() -> None:
    torch.manual_seed(6)
    model = Block()
    opt = BUILDERS["galore"](model)
    w = model.attn.weight
    seen = []
    for step in range(11):
        backward(model, step)
        opt.step()
        seen.append(opt.state[w]["projector"].clone())
    changed = [i for i in range(1, 11) if not torch.equal(seen[i], seen[i - 1])]
    assert changed == [5, 10]  # steps 6 and 11 (1-based) start a new gap
    assert project(w.grad, seen[-1]).shape == opt.state[w]["exp_avg"].shape


def test_plumage_estimator_is_unbiased() -> None:
    """The mean of many sampled estimates converges to G within its standard error."""
    g = torch.Generator().manual_seed(7)
    grad = torch.randn(12, 30, generator=g, dtype=torch.float64) @ torch.diag(
        torch.linspace(0.1, 2.0, 30, dtype=torch.float64)
    )
    rank, draws = 3, 4000
    total = torch.zeros_like(grad)
    for _ in range(draws):
        proj, weights = sample_projector(grad, rank, g)
        total += unbiased_estimate(grad, proj, weights)
    mean = total / draws
    sigma = torch.linalg.svdvals(grad)
    p = inclusion_probabilities(sigma, rank)
    variance = float((sigma.square() * (1 / p - 1)).sum())  # E||Q - G||_F^2
    error = float((mean - grad).norm())
    assert error < 4 * (variance / draws) ** 0.5, (error, (variance / draws) ** 0.5)
    assert variance > 0, "the tail is sampled, so a single draw is not exact"
    # A single draw is a rank-r matrix.
    proj, weights = sample_projector(grad, rank, g)
    assert torch.linalg.matrix_rank(unbiased_estimate(grad, proj, weights)) == rank


def test_plumage_probabilities_keep_the_top_and_sum_to_r() -> None:
    p = inclusion_probabilities(torch.tensor([5.0, 3.0, 1.0, 0.5, 0.25, 0.1]), 3)
    assert float(p.sum()) == pytest.approx(3.0)
    assert p[0] == 1.0 and p[1] == 1.0 and 0 < p[5] < p[2] < 1


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


def test_adarankgrad_refreshes_and_rotates_moments() -> None:
    torch.manual_seed(9)
    model = Block()
    opt = BUILDERS["adarankgrad"](model)
    w = model.mlp[0].weight
    refreshed = set()
    for step in range(12):
        backward(model, step)
        opt.step()
        refreshed.add(opt.state[w]["refreshed_at"])
        r = opt.state[w]["projector"].shape[0]
        assert opt.state[w]["exp_avg"].shape == (40, r)
    assert len(refreshed) >= 2, "max_gap forces refreshes"


def test_lorenza_zeroth_order_estimate_is_the_truncated_gradient() -> None:
    """With Q, R from G's SVD, E[g_zo] is the rank-r truncation of G (to first order)."""
    torch.manual_seed(10)
    model = Block()
    opt = build_lorenza(
        model,
        lr=1e-2,
        rank=4,
        update_gap=5,
        rho=0.05,
        mu=1e-4,
        probes=3000,
        plus=False,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        seed=0,
    )
    closure = closure_for(model, 0)
    opt._refresh_subspaces(closure)
    w = model.mlp[0].weight
    grad = w.grad.detach().clone()
    estimate = opt.zeroth_order_ascent(closure)[w]
    u, s, vh = torch.linalg.svd(grad)
    truncated = u[:, :4] @ torch.diag(s[:4]) @ vh[:4]
    cosine = float((estimate * truncated).sum() / (estimate.norm() * truncated.norm()))
    assert cosine > 0.95, cosine
    q, r = opt.state[w]["left"], opt.state[w]["right"]
    assert torch.allclose(q.T @ q, torch.eye(4), atol=1e-4) and r.shape == (4, 24)


def test_lorenza_step_lies_in_span_q_and_costs_one_gradient() -> None:
    torch.manual_seed(11)
    model = Block()
    opt = BUILDERS["lorenza"](model)
    train_step(opt, model, 0)  # first step: refresh (one extra gradient)
    w = model.attn.weight
    before = w.detach().clone()
    calls: list[str] = []
    opt.step(closure_for(model, 1, calls))
    assert calls.count("grad") == 1 and calls.count("forward") == 1 + 2 * 2
    delta = w.detach() - before
    q = opt.state[w]["left"]
    assert (delta - q @ (q.T @ delta)).abs().max() < 1e-5 * delta.abs().max() + 1e-12
    assert torch.linalg.matrix_rank(delta) <= 4


def test_lorenza_state_bytes() -> None:
    torch.manual_seed(0)
    model = Block()
    opt = BUILDERS["lorenza"](model)
    train_step(opt, model, 0)
    r, expected = 4, 0
    for m, n in _shapes(model, LOWRANK):
        expected += 4 * (m * r + r * n + 2 * r * n)  # Q, R and the r x n moments
    expected += sum(8 * k for k in _rest_numel(model))
    assert optimizer_state_bytes(opt) == expected


def test_lorenza_randomized_svd_matches_the_top_subspace() -> None:
    g = torch.Generator().manual_seed(12)
    u = torch.linalg.qr(torch.randn(30, 6, generator=g))[0]
    v = torch.linalg.qr(torch.randn(20, 6, generator=g))[0]
    grad = u @ torch.diag(torch.tensor([9.0, 7.0, 5.0, 3.0, 0.01, 0.01])) @ v.T
    q, r = randomized_svd(grad, 4)
    torch.testing.assert_close(q @ q.T @ u[:, :4], u[:, :4], atol=1e-4, rtol=0)
    torch.testing.assert_close(r.T @ r @ v[:, :4], v[:, :4], atol=1e-4, rtol=0)
