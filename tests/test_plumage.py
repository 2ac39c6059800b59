"""PLUMAGE: the minimum-variance inclusion probabilities and their sampler, the
unbiasedness of the gradient estimate Adam's moments accumulate, the size of the step it
applies, and several steps side by side with a reference written from the equations of
the module docstring (sampled SVD basis, weights 1/p before the moments, realignment)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from plugins.optimizers.plumage import Plumage, inclusion_probabilities, systematic_sample

from .helpers import implicit_device_calls

BETAS, EPS, LR, SCALE = (0.9, 0.999), 1e-8, 0.01, 0.25


def reference_probabilities(sigma: torch.Tensor, k: int) -> torch.Tensor:
    """p_i = min(1, c·σ_i) with Σ p_i = k, c found by bisection."""
    lo, hi = 0.0, 1.0
    while float(torch.clamp(hi * sigma, max=1).sum()) < k:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(torch.clamp(mid * sigma, max=1).sum()) < k else (lo, mid)
    return torch.clamp(hi * sigma, max=1)


def spectrum_matrix(shape: tuple[int, int], sigma: list[float], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = min(shape)
    u = torch.linalg.qr(torch.randn(shape[0], k, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(shape[1], k, generator=g, dtype=torch.float64))[0]
    return u @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ v.T


SIGMA = [3.0, 2.0, 1.5, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]


def test_probabilities_are_the_water_filling_solution() -> None:
    g = torch.Generator().manual_seed(0)
    cases = [torch.tensor([5.0, 3.0, 1.0, 0.5, 0.25, 0.1], dtype=torch.float64)]
    cases += [torch.rand(n, generator=g, dtype=torch.float64) ** 4 for n in (8, 24, 64)]
    cases.append(torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64))  # ties
    for sigma in cases:
        for k in range(1, sigma.numel()):
            p = inclusion_probabilities(sigma[torch.randperm(sigma.numel(), generator=g)], k)
            p_sorted = inclusion_probabilities(sigma, k)
            torch.testing.assert_close(
                p_sorted, reference_probabilities(sigma, k), atol=1e-9, rtol=0
            )
            assert float(p.sum()) == pytest.approx(k, abs=1e-9)
            torch.testing.assert_close(p.sort().values, p_sorted.sort().values)
    assert torch.equal(
        inclusion_probabilities(torch.ones(3), 5), torch.ones(3, dtype=torch.float64)
    )
    # Fewer non-zero singular values than r: those are kept; how the rest of the budget
    # goes to the zeros does not matter (they add nothing to the estimate) as long as the
    # probabilities still sum to r.
    p = inclusion_probabilities(torch.tensor([2.0, 0.0, 1.0, 0.0, 0.0]), 3)
    assert p[0] == 1 and p[2] == 1 and float(p.sum()) == pytest.approx(3)
    assert float(p.min()) >= 0 and float(p.max()) <= 1


def test_systematic_sampling_draws_r_distinct_indices_with_the_marginals() -> None:
    p = reference_probabilities(torch.tensor(SIGMA, dtype=torch.float64), 4)
    p = torch.cat([p, torch.zeros(2, dtype=torch.float64)])  # never drawable
    g = torch.Generator().manual_seed(1)
    draws = 20000
    counts = torch.zeros_like(p)
    for _ in range(draws):
        picked = systematic_sample(p, g)
        assert picked.numel() == 4 and picked.unique().numel() == 4
        counts[picked] += 1
    se = (p * (1 - p) / draws).sqrt()
    assert torch.all((counts / draws - p).abs() <= 5 * se + 1e-12), (counts / draws, p)


def one_step(grad: torch.Tensor, seed: int, rank: int = 3) -> tuple[nn.Parameter, Plumage]:
    w = nn.Parameter(torch.zeros_like(grad))
    opt = Plumage(
        [{"params": [w], "lowrank": True}],
        lr=LR,
        betas=BETAS,
        eps=EPS,
        rank=rank,
        update_gap=10,
        scale=SCALE,
        seed=seed,
    )
    w.grad = grad.clone()
    opt.step()
    return w, opt


def full_space(moment: torch.Tensor, proj: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """P M for a left projector (m x r), M P for a right one (r x n)."""
    return proj @ moment if shape[0] < shape[1] else moment @ proj


@pytest.mark.parametrize("shape", [(12, 30), (30, 12)])  # left and right projectors
def test_first_moment_is_an_unbiased_estimate_of_the_gradient(shape: tuple[int, int]) -> None:
    """The paper's claim: the low-rank estimate of the gradient is unbiased. What Adam
    accumulates is that estimate, so one step from a fresh state leaves a first moment
    whose back-projection has mean (1 - b1)·G over the sampling."""
    grad = spectrum_matrix(shape, SIGMA, seed=2)
    draws = 1500
    total = torch.zeros_like(grad)
    for seed in range(draws):
        _, opt = one_step(grad, seed)
        state = next(iter(opt.state.values()))
        total += full_space(state["exp_avg"], state["projector"], grad.shape)
    mean = total / draws
    sigma = torch.tensor(SIGMA, dtype=torch.float64)
    p = reference_probabilities(sigma, 3)
    target = (1 - BETAS[0]) * grad
    # E||X - E X||_F^2 = Σ σ_i² (1/p_i - 1) for any design with these marginals (the
    # components are orthogonal), so the mean of the draws has this standard error.
    se = (1 - BETAS[0]) * math.sqrt(float((sigma.square() * (1 / p - 1)).sum()) / draws)
    bias = (1 - BETAS[0]) * math.sqrt(float((sigma.square() * (1 - p).square()).sum()))
    assert bias > 10 * se, "the test could not tell an unweighted projection apart"
    error = float((mean - target).norm())
    assert error < 5 * se, (error, se)


@pytest.mark.parametrize("shape", [(12, 30), (30, 12)])
def test_first_step_has_galore_size_in_every_sampled_direction(shape: tuple[int, int]) -> None:
    """Adam's first step is m̂/√v̂ = sign(c) in every coordinate, whatever weight the
    coordinate carries: each sampled direction moves by lr·scale, as in GaLore. Weights
    applied after the normalisation would move a direction drawn with probability p by
    lr·scale/p."""
    grad = spectrum_matrix(shape, SIGMA, seed=3)
    tail_drawn = 0
    for seed in range(20):
        w, opt = one_step(grad, seed)
        state = opt.state[w]
        proj, weights = state["projector"], state["weights"]
        tail_drawn += int((weights > 1.01).sum())
        delta = w.detach()
        coords = proj.T @ delta if shape[0] < shape[1] else delta @ proj.T
        assert float(coords.abs().max()) <= LR * SCALE * (1 + 1e-6)
        # ε shortens the smallest coordinates a little: |c| / (|c| + ε/√(1 - b2)).
        assert float(coords.abs().min()) >= LR * SCALE * (1 - 1e-3)
        residual = delta - full_space(coords, proj, grad.shape)
        # Nothing outside the sampled subspace, up to the float32 SVD's orthonormality.
        assert float(residual.abs().max()) < 1e-4 * LR * SCALE
    assert tail_drawn >= 20, "every draw should include sampled (p < 1) directions"


def reference_run(
    w0: torch.Tensor,
    grads: list[torch.Tensor],
    bases: dict[int, tuple[torch.Tensor, torch.Tensor]],
    *,
    gap: int,
    weight_decay: float,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(weight, first moment, second moment) after each step, from the equations:
    c = w ⊙ P^T G (left; G P^T w on the right), Adam on c, W -= step·scale·P·m̂/(√v̂+ε),
    and at a refresh the old weights come off, m <- w' ⊙ R (m / w), v <- w'² ⊙ (R∘R)(v / w²),
    R = P'^T P."""
    left = w0.shape[0] < w0.shape[1]
    b1, b2 = BETAS
    w = w0.clone()
    m = v = proj = weights = None
    for t, g in enumerate(grads, start=1):
        if (t - 1) % gap == 0:
            new, new_weights = bases[t]
            if m is not None:
                if left:  # coordinates are rows: r x n moments
                    rot = new.T @ proj
                    m = new_weights[:, None] * (rot @ (m / weights[:, None]))
                    v = new_weights[:, None] ** 2 * ((rot * rot) @ (v / weights[:, None] ** 2))
                else:  # coordinates are columns: m x r moments
                    rot = proj @ new.T
                    m = ((m / weights) @ rot) * new_weights
                    v = ((v / weights**2) @ (rot * rot)) * new_weights**2
            proj, weights = new, new_weights
        c = weights[:, None] * (proj.T @ g) if left else (g @ proj.T) * weights
        m = (1 - b1) * c if m is None else b1 * m + (1 - b1) * c
        v = (1 - b2) * c * c if v is None else b2 * v + (1 - b2) * c * c
        step = LR * math.sqrt(1 - b2**t) / (1 - b1**t)
        normalised = m / (v.sqrt() + EPS)
        w = w - step * SCALE * (proj @ normalised if left else normalised @ proj)
        w = w - LR * weight_decay * w
        yield w, m, v


def check_sampled_basis(
    grad: torch.Tensor, proj: torch.Tensor, weights: torch.Tensor, rank: int
) -> None:
    """The stored basis is r distinct singular vectors of this gradient (up to sign), each
    with weight 1/p_i for the water-filling probabilities of the singular values."""
    u, sigma, vh = torch.linalg.svd(grad)
    left = grad.shape[0] < grad.shape[1]
    overlap = (u.T @ proj if left else vh @ proj.T).abs()  # (min side) x r
    best = overlap.max(dim=0)
    torch.testing.assert_close(best.values, torch.ones(rank, dtype=grad.dtype), atol=1e-5, rtol=0)
    assert best.indices.unique().numel() == rank
    p = reference_probabilities(sigma, rank)
    torch.testing.assert_close(weights, 1 / p[best.indices], rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", [(10, 16), (16, 10)])
def test_matches_the_reference_across_refreshes(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(4)
    rank, gap, weight_decay = 3, 3, 0.1
    w = nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64))
    w0 = w.detach().clone()
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(8)]
    opt = Plumage(
        [{"params": [w], "lowrank": True}],
        lr=LR,
        betas=BETAS,
        eps=EPS,
        weight_decay=weight_decay,
        rank=rank,
        update_gap=gap,
        scale=SCALE,
        seed=5,
    )
    bases, got = {}, []
    for t, g in enumerate(grads, start=1):
        w.grad = g.clone()
        opt.step()
        state = opt.state[w]
        if (t - 1) % gap == 0:
            check_sampled_basis(g, state["projector"], state["weights"], rank)
            bases[t] = (state["projector"].clone(), state["weights"].clone())
        else:
            assert torch.equal(state["projector"], bases[max(bases)][0]), "refreshed off-gap"
        got.append((w.detach().clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone()))
    assert sorted(bases) == [1, 4, 7]
    assert any(float(b[1].max()) > 1.01 for b in bases.values()), "no sampled direction"
    expected = reference_run(w0, grads, bases, gap=gap, weight_decay=weight_decay)
    for t, (mine, ref) in enumerate(zip(got, expected, strict=True), start=1):
        for name, a, b in zip(("weight", "exp_avg", "exp_avg_sq"), mine, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=f"{name}, step {t}")


def test_every_tensor_of_a_step_names_its_device() -> None:
    """On a GPU run a tensor made without a device lands on the host and meets the
    gradient's basis there (the probabilities and weights used to)."""
    torch.manual_seed(6)
    w = nn.Parameter(torch.randn(10, 16))
    opt = Plumage([{"params": [w], "lowrank": True}], rank=3, update_gap=2, seed=0)
    with implicit_device_calls() as calls:
        for _ in range(3):  # crosses a refresh
            w.grad = torch.randn(10, 16, device=w.device)
            opt.step()
    assert calls == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_and_agrees_with_the_host() -> None:
    torch.manual_seed(7)
    w_host = nn.Parameter(torch.randn(24, 40, dtype=torch.float64))
    w_dev = nn.Parameter(w_host.detach().cuda())
    grads = [torch.randn(24, 40, dtype=torch.float64) for _ in range(5)]
    for w in (w_host, w_dev):
        opt = Plumage([{"params": [w], "lowrank": True}], rank=4, update_gap=2, seed=1)
        for g in grads:  # crosses two refreshes
            w.grad = g.to(w.device)
            opt.step()
        tensors = [t for t in opt.state[w].values() if isinstance(t, torch.Tensor)]
        assert all(t.device == w.device for t in tensors)
    # The draw happens on the host from the same singular values; singular vectors may
    # differ in sign between devices, which the step does not see.
    torch.testing.assert_close(w_dev.detach().cpu(), w_host.detach(), atol=1e-6, rtol=0)
