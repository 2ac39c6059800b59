"""Muon against an independent reference written from its published definition
(Jordan et al. 2024; KellerJordan/Muon): momentum buffer, Nesterov look-ahead, five
quintic Newton-Schulz steps with (3.4445, -4.7750, 2.0315), scale sqrt(max(1, m/n)),
decoupled weight decay."""

from __future__ import annotations

import pytest
import torch

from plugins.optimizers.muon import Muon


def reference_orthogonalise(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.T if g.shape[0] > g.shape[1] else g  # iterate on the wide orientation
    x = x / (torch.linalg.matrix_norm(x) + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * (s @ s)) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def reference_muon(
    w: torch.Tensor,
    grads: list[torch.Tensor],
    lr: float,
    beta: float,
    nesterov: bool,
    wd: float,
) -> torch.Tensor:
    w, buf = w.clone(), torch.zeros_like(w)
    rows, cols = w.shape
    for g in grads:
        buf = beta * buf + (1 - beta) * g
        direction = (1 - beta) * g + beta * buf if nesterov else buf
        update = reference_orthogonalise(direction) * max(1.0, rows / cols) ** 0.5
        w = w * (1 - lr * wd) - lr * update
    return w


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (32, 32)], ids=["tall", "wide", "square"])
@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_steps_match_the_reference(shape: tuple[int, int], nesterov: bool, wd: float) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    w0 = torch.randn(shape, generator=g) * 0.1
    # Gradients that change direction between steps, so the momentum buffer matters.
    grads = [torch.randn(shape, generator=g) * (1 + k) for k in range(6)]
    lr, beta = 0.02, 0.95
    w = torch.nn.Parameter(w0.clone())
    opt = Muon(
        [{"params": [w], "lowrank": True}],
        lr=lr,
        momentum=beta,
        nesterov=nesterov,
        weight_decay=wd,
        ns_dtype="fp32",
    )
    for grad in grads:
        w.grad = grad.clone()
        opt.step()
    expected = reference_muon(w0, grads, lr, beta, nesterov, wd)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-5, atol=1e-5)


def test_the_reference_tells_the_variants_apart() -> None:
    """The comparison above can fail: a missing Nesterov look-ahead, a transposed aspect
    scale or an undamped buffer each move the weights by more than its tolerance."""
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(40, 24, generator=g)
    grads = [torch.randn(40, 24, generator=g) * (1 + k) for k in range(6)]
    right = reference_muon(w0, grads, 0.02, 0.95, True, 0.0)
    assert (right - reference_muon(w0, grads, 0.02, 0.95, False, 0.0)).abs().max() > 1e-3
    assert (
        right - reference_muon(w0, grads, 0.02 * (24 / 40) ** 0.5, 0.95, True, 0.0)
    ).abs().max() > 1e-3
    assert (right - reference_muon(w0, grads, 0.02, 0.0, True, 0.0)).abs().max() > 1e-3


def test_momentum_buffer_is_the_damped_average() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.nn.Parameter(torch.randn(16, 8, generator=g))
    opt = Muon([{"params": [w], "lowrank": True}], momentum=0.9, ns_dtype="fp32")
    grads = [torch.randn(16, 8, generator=g) for _ in range(3)]
    expected = torch.zeros(16, 8)
    for grad in grads:
        w.grad = grad.clone()
        opt.step()
        expected = 0.9 * expected + 0.1 * grad
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], expected)
