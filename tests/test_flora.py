"""FLORA against a few-line reference written from the paper and the official code's step:
Adafactor's factored second moment, the momentum compressed by a Gaussian projection
regenerated from a seed, moved to a fresh projection every kappa steps; plus its state
dtypes, seeds and devices."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from plugins.optimizers.flora import Flora, build_flora

from .helpers import implicit_device_calls

B1, RANK, KAPPA = 0.9, 3, 3


def reference_projection(
    shape: tuple[int, int], seed: int, dtype: torch.dtype, device: str = "cpu"
) -> torch.Tensor:
    """A ~ N(0, 1/r), r x m when m < n, else n x r, from a generator seeded on the device."""
    m, n = shape
    size = (RANK, m) if m < n else (n, RANK)
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(size, generator=g, dtype=dtype, device=device) / math.sqrt(RANK)


def reference_run(
    w0: torch.Tensor,
    grads: list[torch.Tensor],
    seeds: list[tuple[int, int]],
    *,
    lr: float,
    weight_decay: float,
    scale_parameter: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, compressed momentum) after each step. ``seeds`` holds the projection seed
    before and after each step: the reference trusts the optimizer for which seed comes
    next, not for what a seed means."""
    m, n = w0.shape
    left = m < n
    w, row, col = w0.clone(), w0.new_zeros(m), w0.new_zeros(n)
    mc = w0.new_zeros((RANK, n) if left else (m, RANK))

    def down(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return a @ x if left else x @ a

    def up(y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return a.T @ y if left else y @ a.T

    def rms(x: torch.Tensor) -> float:
        return float(x.square().mean().sqrt())

    for t, (g, (before, after)) in enumerate(zip(grads, seeds, strict=True), start=1):
        step_lr = lr * max(1e-3, rms(w)) if scale_parameter else lr
        beta2 = 1 - t**-0.8
        sq = g * g + 1e-30
        row = beta2 * row + (1 - beta2) * sq.mean(dim=1)
        col = beta2 * col + (1 - beta2) * sq.mean(dim=0)
        g_hat = g / (row / row.mean()).sqrt()[:, None] / col.sqrt()[None, :]
        a = reference_projection((m, n), before, w0.dtype)
        update = (1 - B1) * g_hat + B1 * up(mc, a)
        if t % KAPPA == 0:
            a_next = reference_projection((m, n), after, w0.dtype)
            mc = down(up(mc, a), a_next)
            a = a_next
        mc = B1 * mc + (1 - B1) * down(g_hat, a)
        update = update / max(1.0, rms(update))
        w = w * (1 - step_lr * weight_decay) - step_lr * update
        yield w, mc


@pytest.mark.parametrize("shape", [(10, 16), (16, 10)])  # left (r x n) and right (m x r)
@pytest.mark.parametrize(("scale_parameter", "weight_decay"), [(False, 0.0), (True, 0.1)])
def test_matches_the_reference_across_resamples(
    shape: tuple[int, int], scale_parameter: bool, weight_decay: float
) -> None:
    gen = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64))
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3 * KAPPA)]
    lr = 0.05
    opt = Flora(
        [w],
        lr=lr,
        rank=RANK,
        kappa=KAPPA,
        beta1=B1,
        weight_decay=weight_decay,
        scale_parameter=scale_parameter,
        seed=3,
    )
    w0 = w.detach().clone()
    seeds, got = [], []
    for g in grads:
        before = opt.state[w]["seed"]
        w.grad = g.clone()
        opt.step()
        seeds.append((before, opt.state[w]["seed"]))
        got.append((w.detach().clone(), opt.state[w]["momentum"].clone()))
    changed = [t for t, (b, a) in enumerate(seeds, start=1) if a != b]
    assert changed == [KAPPA, 2 * KAPPA, 3 * KAPPA]  # a fresh projection every kappa steps
    assert len({s for pair in seeds for s in pair}) == 4
    expected = reference_run(
        w0, grads, seeds, lr=lr, weight_decay=weight_decay, scale_parameter=scale_parameter
    )
    pairs = zip(got, expected, strict=True)
    for t, ((w_got, mc_got), (w_ref, mc_ref)) in enumerate(pairs, start=1):
        assert mc_got.shape == ((RANK, 16) if shape[0] < shape[1] else (16, RANK))
        torch.testing.assert_close(mc_got, mc_ref, rtol=1e-10, atol=1e-12, msg=f"step {t}")
        torch.testing.assert_close(w_got, w_ref, rtol=1e-10, atol=1e-12, msg=f"step {t}")
    assert float(got[-1][1].abs().max()) > 1e-3, "a momentum that stays zero is no momentum"


def test_scale_parameter_makes_the_step_relative_to_the_weight() -> None:
    """Official semantics: lr·max(eps2, RMS(W)). A weight ten times larger moves ten times
    more; one below eps2 moves as if its RMS were eps2."""
    lr = 0.1
    for factor in (1.0, 10.0, 1e-6):
        torch.manual_seed(0)
        w = nn.Parameter(torch.randn(8, 8, dtype=torch.float64) * 0.05 * factor)
        before = w.detach().clone()
        opt = Flora([w], lr=lr, rank=RANK, beta1=B1, scale_parameter=True)
        # A constant gradient is preconditioned to all ones; with no momentum yet the
        # update is (1 - b1) everywhere, under the clipping threshold.
        w.grad = torch.full_like(w, 0.3)
        opt.step()
        rms = float(before.square().mean().sqrt())
        expected = lr * max(1e-3, rms) * (1 - B1)
        torch.testing.assert_close(w.detach() - before, torch.full_like(w, -expected))


def test_no_two_parameters_or_run_seeds_share_a_projection() -> None:
    model = nn.Sequential(nn.Linear(12, 12), nn.Linear(12, 12), nn.Linear(12, 12))
    seeds = []
    for run_seed in (0, 1, 2):
        opt = build_flora(model, lr=1e-3, rank=4, kappa=5, beta1=0.9, weight_decay=0, seed=run_seed)
        seeds += [opt.state[p]["seed"] for p in model.parameters()]
    assert len(set(seeds)) == len(seeds)


def test_half_precision_weights_keep_float32_state_through_a_resume() -> None:
    torch.manual_seed(1)
    w16 = nn.Parameter(torch.randn(12, 16).to(torch.bfloat16))
    w32 = nn.Parameter(w16.detach().float().clone())
    opts = [Flora([w], lr=0.05, rank=RANK, kappa=KAPPA, beta1=B1) for w in (w16, w32)]
    grad = torch.randn(12, 16).to(torch.bfloat16).float()  # the same numbers for both
    for w, opt in zip((w16, w32), opts, strict=True):
        w.grad = grad.to(w.dtype)
        opt.step()
    # One step computed in float32 and rounded once: the float32 run, rounded.
    assert torch.equal(w16.detach(), w32.detach().to(torch.bfloat16))
    for key in ("row", "col", "momentum"):
        assert opts[0].state[w16][key].dtype == torch.float32, key
        torch.testing.assert_close(opts[0].state[w16][key], opts[1].state[w32][key])
    twin = nn.Parameter(w16.detach().clone())
    twin_opt = Flora([twin], lr=0.05, rank=RANK, kappa=KAPPA, beta1=B1)
    twin_opt.load_state_dict(copy.deepcopy(opts[0].state_dict()))
    assert twin_opt.state[twin]["momentum"].dtype == torch.float32  # torch would cast it
    for w, opt in ((w16, opts[0]), (twin, twin_opt)):
        for step in range(2 * KAPPA):  # crosses a resample
            w.grad = (grad * (step + 2)).to(torch.bfloat16)
            opt.step()
    assert torch.equal(w16, twin)


def test_every_tensor_of_a_step_names_its_device() -> None:
    """On a GPU run a tensor made without a device lands on the host: the projection used
    to be drawn there and copied over for every matrix at every step."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = build_flora(model, lr=1e-2, rank=RANK, kappa=2, beta1=0.9, weight_decay=0.1)
    x = torch.randn(8, 12)
    with implicit_device_calls() as calls:
        for _ in range(3):  # crosses a resample
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    assert calls == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_projection_is_drawn_on_the_device() -> None:
    torch.manual_seed(3)
    w = nn.Parameter(torch.randn(16, 24, device="cuda"))
    opt = Flora([w], lr=0.05, rank=RANK, kappa=KAPPA, beta1=B1, scale_parameter=False)
    seed = opt.state[w]["seed"]
    grad = torch.randn(16, 24, device="cuda")
    w.grad = grad.clone()
    opt.step()
    state = opt.state[w]
    assert all(t.device == w.device for t in state.values() if isinstance(t, torch.Tensor))
    sq = grad.square() + 1e-30
    row, col = sq.mean(dim=1), sq.mean(dim=0)  # first step: beta2 = 0
    g_hat = grad / (row / row.mean()).sqrt()[:, None] / col.sqrt()[None, :]
    a = reference_projection((16, 24), seed, torch.float32, device="cuda")
    torch.testing.assert_close(state["momentum"], (1 - B1) * (a @ g_hat))
