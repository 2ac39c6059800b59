"""SUMO against a reference written from the paper's update, several steps side by side
through subspace refreshes at the official cadence, for both orthogonalisers; the
norm-growth limiter without a host sync; and why it is inert with the exact SVD."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plugins.optimizers.sumo import SUMO

NS = (3.4445, -4.7750, 2.0315)


def _newton_schulz(d: torch.Tensor) -> torch.Tensor:
    """Five quintic iterations in fp32 on the wide orientation (Jordan et al.)."""
    x = d.float()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (x.norm() + 1e-7)
    for _ in range(5):
        a = x @ x.T
        x = NS[0] * x + (NS[1] * a + NS[2] * a @ a) @ x
    return (x.T if tall else x).to(d.dtype)


def _svd_orthogonal(d: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(d.float(), full_matrices=False)  # fp32, as the plugin
    return (u @ vh).to(d.dtype)


def _sumo_reference(
    weight: torch.Tensor,
    grads: list[torch.Tensor],
    *,
    rank: int,
    gap: int,
    lr: float,
    alpha: float,
    gamma: float,
    mu: float,
    weight_decay: float,
    orthogonalizer: str,
) -> tuple[list[torch.Tensor], int]:
    """SUMO (Refael et al. 2025, Algorithm 1) from the paper's equations: Q_t, the top-r
    singular vectors of G on its smaller side, at step 1 and steps K, 2K, ... (the
    official cadence), with the moment moved across, M <- Q_t^T Q_{t-1} M; M <- mu·M + Ĝ;
    O = orth(Ĝ + mu·M) (Nesterov look-ahead); ||O|| limited to gamma·||O_prev||; then
    W <- W - alpha·lr·(G - Q(Ĝ - 0.2·sqrt(max(m, n))·O)) - lr·wd·W. Returns the weights
    after each step and how many times the limiter acted."""
    orth = _svd_orthogonal if orthogonalizer == "svd" else _newton_schulz
    w, q, m, prev, limited = weight.clone(), None, None, None, 0
    path = []
    for t, g in enumerate(grads, start=1):
        right = g.shape[0] >= g.shape[1]  # basis of the row space: Q is r x n
        if q is None or t % gap == 0:
            u, _, vh = torch.linalg.svd(g.float(), full_matrices=False)  # fp32, as the plugin
            new = (vh[:rank] if right else u[:, :rank].T).to(g.dtype)  # r x (smaller side)
            if m is not None:
                m = m @ (q @ new.T) if right else (new @ q.T) @ m
            q = new
        low = g @ q.T if right else q @ g
        m = low.clone() if m is None else mu * m + low
        o = orth(low + mu * m)
        norm = o.norm()
        if prev is not None and norm / prev > gamma:
            o, norm, limited = o * (gamma * prev / norm), gamma * prev, limited + 1
        prev = norm
        inside = low - 0.2 * max(g.shape) ** 0.5 * o
        w = w - alpha * lr * (g - (inside @ q if right else q.T @ inside))
        w = w - lr * weight_decay * w
        path.append(w.clone())
    return path, limited


def _gradients(shape: tuple[int, int], steps: int, seed: int) -> list[torch.Tensor]:
    """A turning low-rank signal plus noise whose spectrum changes from step to step, so
    a refresh changes the basis and Newton-Schulz's ||O|| moves."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(*shape, generator=g, dtype=torch.float64)
    turn = torch.randn(*shape, generator=g, dtype=torch.float64)
    out = []
    for t in range(steps):
        spread = torch.diag(torch.logspace(0, -2 if t % 3 else -0.3, shape[1], dtype=torch.float64))
        noise = torch.randn(*shape, generator=g, dtype=torch.float64) @ spread
        out.append(base + 0.3 * t * turn + 0.5 * noise)
    return out


@pytest.mark.parametrize("orthogonalizer", ["svd", "newton-schulz"])
@pytest.mark.parametrize("shape", [(40, 24), (16, 48)])
def test_sumo_matches_a_reference_through_refreshes(
    orthogonalizer: str, shape: tuple[int, int]
) -> None:
    """A refresh one step off the official cadence, a moment not moved into the new
    basis, an update without the out-of-subspace gradient or with the wrong sign or
    scale of O all leave this path; the comparison does not depend on the signs the SVD
    picks for Q, since the update is invariant to the basis of the subspace."""
    g = torch.Generator().manual_seed(5)
    weight = nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64))
    start = weight.detach().clone()
    gamma = 1.1 if orthogonalizer == "svd" else 1.002
    opt = SUMO(
        [{"params": [weight], "lowrank": True}],
        lr=2e-3,
        rank=4,
        update_gap=4,
        alpha=4.0,
        gamma=gamma,
        momentum=0.9,
        weight_decay=0.01,
        orthogonalizer=orthogonalizer,
    )
    grads = _gradients(shape, 10, seed=6)
    expected, limited = _sumo_reference(
        start,
        grads,
        rank=4,
        gap=4,
        lr=2e-3,
        alpha=4.0,
        gamma=gamma,
        mu=0.9,
        weight_decay=0.01,
        orthogonalizer=orthogonalizer,
    )
    projectors = []
    for grad, want in zip(grads, expected, strict=True):
        weight.grad = grad.clone()
        opt.step()
        projectors.append(opt.state[weight]["projector"].clone())
        torch.testing.assert_close(weight.detach(), want, rtol=0, atol=1e-8)
    changed = [i + 1 for i in range(1, 10) if not torch.equal(projectors[i], projectors[i - 1])]
    assert changed == [4, 8]  # official cadence: steps K and 2K (1-based)
    if orthogonalizer == "svd":
        assert limited == 0  # see test_limiter_is_inert_with_the_exact_svd
    else:
        assert limited > 0, "the limiter was exercised"


def test_limiter_is_inert_with_the_exact_svd() -> None:
    """With O = U V^T, ||O||_F = sqrt(r) at every step, so the ratio never exceeds
    gamma > 1: the limiter only matters for the Newton-Schulz variant."""
    weight = nn.Parameter(torch.zeros(40, 24, dtype=torch.float64))
    opt = SUMO([{"params": [weight], "lowrank": True}], rank=4, update_gap=3)
    for grad in _gradients((40, 24), 8, seed=7):
        weight.grad = grad
        opt.step()
        assert float(opt.state[weight]["o_norm"]) == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("orthogonalizer", ["svd", "newton-schulz"])
def test_sumo_step_reads_no_tensor_on_the_host(
    orthogonalizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limiter is a tensor select: no Python branch on a tensor, so no device sync
    in the step (the refresh cadence is a step count kept on the host)."""
    weight = nn.Parameter(torch.zeros(40, 24, dtype=torch.float64))
    opt = SUMO(
        [{"params": [weight], "lowrank": True}],
        rank=4,
        update_gap=3,
        gamma=1.0001,
        orthogonalizer=orthogonalizer,
    )
    reads = [0]
    real_bool = torch.Tensor.__bool__

    def counting_bool(self: torch.Tensor) -> bool:
        reads[0] += 1
        return real_bool(self)

    grads = _gradients((40, 24), 7, seed=8)
    monkeypatch.setattr(torch.Tensor, "__bool__", counting_bool)
    for grad in grads:
        weight.grad = grad
        opt.step()
    monkeypatch.setattr(torch.Tensor, "__bool__", real_bool)
    assert reads[0] == 0
