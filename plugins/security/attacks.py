"""Attacks on security splits: what an attacker holding the untrusted device can rebuild.

Every attack gets ``untrusted_state`` (the stolen tensors under the original parameter
names; missing ones absent) and the attacker's context (a fresh copy of the architecture,
a few labelled samples, the loss). The protocol also runs each attack with an empty state,
the "training from scratch" baseline with the same samples.

- ``untrusted-only``: the stolen state loaded into a fresh model, used as it is (missing
  parts stay at random initialisation, a residual stays without its secret part).
- ``untrusted-random``: the same, but what the attacker can tell is missing is filled with
  random values of a plausible norm (see ``fill_missing``), rather than left at zero.
- ``finetune`` (64 samples) and ``finetune-1024``: the stolen state fine-tuned on n
  labelled samples, the model-stealing-by-fine-tuning threat that SLIP (arXiv:2407.10886)
  evaluates. ``untrusted-only`` is the n = 0 point.
- ``lowrank`` (64 samples) and ``lowrank-1024``: low-rank reconstruction (see
  ``SubspaceAttack``): the attacker reads from the residual's spectrum which subspace was
  removed and fits only the k x k-sized map inside it, plus a fine-tune of the rest.

Budgets are named variants (one registered attack per sample count) rather than attack
hyperparameters in the suite: a suite lists attacks by name, and a record's metric names
(``attack_finetune-1024_recovered_ratio``) then say which budget produced them.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from benchmark import hookimpl
from benchmark.kinds import AttackSpec


class FineTuneAttack:
    """The stolen state loaded into a fresh model, then trained on n labelled samples."""

    def __init__(
        self, n_samples: int = 64, steps: int = 50, lr: float = 1e-3, batch_size: int = 32
    ) -> None:
        self.n_samples, self.steps, self.lr, self.batch_size = n_samples, steps, lr, batch_size

    def __call__(self, untrusted_state: dict[str, torch.Tensor], ctx: Any) -> nn.Module:
        model = ctx.fresh_model(ctx.seed)
        model.load_state_dict(untrusted_state, strict=False)
        if self.n_samples <= 0 or self.steps <= 0:
            return model.eval()
        self.fine_tune(model, [{"params": list(model.parameters()), "lr": self.lr}], ctx)
        return model.eval()

    def fine_tune(self, model: nn.Module, groups: list[dict[str, Any]], ctx: Any) -> None:
        """Adam over ``groups`` for ``steps`` batches of the attacker's samples, stopped
        early by the run's ``budget.time_s`` (per fine-tuning call)."""
        opt = torch.optim.Adam(groups)
        batches = itertools.cycle(ctx.labelled_batches(self.n_samples, self.batch_size))
        deadline = None if ctx.budget.time_s is None else time.monotonic() + ctx.budget.time_s
        model.train()
        for _ in range(self.steps):
            inputs, labels = next(batches)
            opt.zero_grad()
            ctx.loss(model, inputs, labels).backward()
            opt.step()
            if deadline is not None and time.monotonic() > deadline:
                break


def _untrusted_only() -> FineTuneAttack:
    return FineTuneAttack(n_samples=0)


# --------------------------------------------------------------------------- what is missing


@dataclass
class Missing:
    """For one stolen weight matrix W_D (m x n, convolutions flattened to out x in·kernel):
    the removed part is believed to be ``left @ M @ right.T`` for some matrix M. ``left``
    (m x d) and ``right`` (n x d) are orthonormal bases of the directions the residual's
    spectrum shows as missing; on the longer side of a non-square matrix that basis is not
    identifiable (the residual's null space there is larger than d) and is ``None``: that
    factor of M is then free (m or n rows). ``sigma_top`` is the largest singular value
    left, a lower bound on the removed ones under a top-k split."""

    left: torch.Tensor | None
    right: torch.Tensor | None
    deficit: int
    sigma_top: float
    shape: tuple[int, int]

    def map_shape(self) -> tuple[int, int]:
        m, n = self.shape
        return (m if self.left is None else self.deficit, n if self.right is None else self.deficit)

    def expand(self, core: torch.Tensor) -> torch.Tensor:
        """``left @ core @ right.T`` with a missing basis read as the identity."""
        out = core if self.left is None else self.left.to(core) @ core
        return out if self.right is None else out @ self.right.to(core).T


def missing_subspace(weight: torch.Tensor, rtol: float = 1e-4) -> Missing | None:
    """What a residual's spectrum gives away.

    A trained weight matrix has full rank p = min(m, n): its singular values decay but none
    is zero. Remove its top-k components and the residual W − U_k S_k V_kᵀ has rank p − k:
    exactly k singular values collapse to float rounding. On the short side (both sides of
    a square matrix) their singular vectors span V_k (or U_k) exactly, so an attacker who
    holds the residual knows *where* the secret lives and misses only the map inside that
    subspace: k x k numbers for a square matrix, k x max(m, n) otherwise, instead of m x n.
    Assumptions: the weight had full rank before the split (true of trained layers), and
    singular values below ``rtol`` x the largest are rounding. None when nothing is missing.
    """
    if weight.dim() < 2 or min(weight.shape[0], weight[0].numel()) < 2:
        return None
    mat = weight.detach().reshape(weight.shape[0], -1).double().cpu()
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    if s[0] <= 0:
        return None
    rank = int((s > rtol * s[0]).sum())
    deficit = s.numel() - rank
    if deficit <= 0:
        return None
    m, n = mat.shape
    return Missing(
        left=u[:, rank:].to(weight.dtype) if m <= n else None,
        right=vh[rank:].T.to(weight.dtype) if n <= m else None,
        deficit=deficit,
        sigma_top=float(s[0]),
        shape=(m, n),
    )


def _random_isometry(rows: int, cols: int, rank: int, gen: torch.Generator) -> torch.Tensor:
    """A random rows x cols matrix with ``rank`` singular values equal to 1."""
    a = torch.linalg.qr(torch.randn(rows, rank, generator=gen, dtype=torch.float64))[0]
    b = torch.linalg.qr(torch.randn(cols, rank, generator=gen, dtype=torch.float64))[0]
    return a @ b.T


def fill_missing(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The attacker's random guess for what is missing, with a plausible norm.

    - A rank-deficient matrix (a top-k residual): add a random map in its missing
      subspace with each of the ``deficit`` singular values set to the largest one left
      (the spectrum is decreasing, so the removed ones were at least that large).
    - A matrix with many exact zeros (an entry-wise split): fill them with Gaussian values
      of the standard deviation of the entries that are present.
    - Absent tensors stay at the fresh model's random initialisation.
    """
    gen = torch.Generator().manual_seed(seed)
    out = dict(state)
    for name, w in state.items():
        if not w.is_floating_point() or w.dim() < 2:
            continue
        miss = missing_subspace(w)
        if miss is not None:
            core = _random_isometry(*miss.map_shape(), miss.deficit, gen) * miss.sigma_top
            fill = miss.expand(core).reshape(w.shape)
            out[name] = w + fill.to(w.dtype)
            continue
        zeros = w == 0
        if zeros.float().mean() > 0.01 and (~zeros).any():
            std = float(w[~zeros].std())
            noise = torch.randn(w.shape, generator=gen, dtype=torch.float64) * std
            out[name] = torch.where(zeros, noise.to(w.dtype), w)
    return out


class RandomFillAttack:
    """``untrusted-random``: the stolen state with its missing parts randomly filled."""

    def __call__(self, untrusted_state: dict[str, torch.Tensor], ctx: Any) -> nn.Module:
        model = ctx.fresh_model(ctx.seed)
        filled = fill_missing({k: v.cpu() for k, v in untrusted_state.items()}, ctx.seed)
        model.load_state_dict({k: v.to(ctx.device) for k, v in filled.items()}, strict=False)
        return model.eval()


class SubspaceAttack(FineTuneAttack):
    """Low-rank reconstruction: W = W_D + U_0 M N_0ᵀ, with M fitted on ``n_samples``.

    For every stolen weight whose spectrum shows a deficit (``missing_subspace``), the
    attacker parametrises the weight as the residual plus a map M inside the missing
    subspace, initialised at zero, and trains M (learning rate ``lr`` x the largest
    remaining singular value, the scale of the missing ones) together with every other
    parameter (learning rate ``lr``) on its labelled samples. With no deficit anywhere
    (an entry-wise split, no split at all, the from-scratch baseline) this is ``finetune``.
    What it assumes: a top-k-style split (the removed part is low-rank and the residual
    keeps the rest exactly), which SLIP's design makes public (Kerckhoffs).
    """

    def __init__(
        self, n_samples: int = 64, steps: int = 100, lr: float = 1e-3, batch_size: int = 32
    ) -> None:
        super().__init__(n_samples, steps, lr, batch_size)

    def __call__(self, untrusted_state: dict[str, torch.Tensor], ctx: Any) -> nn.Module:
        model = ctx.fresh_model(ctx.seed)
        model.load_state_dict(untrusted_state, strict=False)
        if self.n_samples <= 0 or self.steps <= 0:
            return model.eval()
        params = dict(model.named_parameters())
        fills: list[tuple[str, _SubspaceFill]] = []
        for name, w in untrusted_state.items():
            if name not in params or not w.is_floating_point():
                continue
            miss = missing_subspace(w.float().cpu())
            if miss is not None:
                fills.append((name, _SubspaceFill(miss, tuple(w.shape), ctx.device)))
        groups: list[dict[str, Any]] = [{"params": list(params.values()), "lr": self.lr}]
        groups += [{"params": [f.m], "lr": self.lr * f.sigma_top} for _, f in fills]
        for name, fill in fills:
            owner, _, leaf = name.rpartition(".")
            parametrize.register_parametrization(model.get_submodule(owner), leaf, fill)
        self.fine_tune(model, groups, ctx)
        for name, _ in fills:
            owner, _, leaf = name.rpartition(".")
            parametrize.remove_parametrizations(model.get_submodule(owner), leaf)
        return model.eval()


class _SubspaceFill(nn.Module):
    """Parametrization W -> W + left @ M @ right.T with a trainable M (zero at the start)."""

    def __init__(self, miss: Missing, shape: tuple[int, ...], device: torch.device) -> None:
        super().__init__()
        self.miss = Missing(
            None if miss.left is None else miss.left.to(device),
            None if miss.right is None else miss.right.to(device),
            miss.deficit,
            miss.sigma_top,
            miss.shape,
        )
        self.m = nn.Parameter(torch.zeros(*miss.map_shape(), device=device))
        self.shape = shape
        self.sigma_top = miss.sigma_top

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.miss.expand(self.m).reshape(self.shape)


_VARIANTS: dict[str, tuple[Any, dict[str, Any], str]] = {
    "finetune": (
        FineTuneAttack,
        {"n_samples": 64, "steps": 50, "lr": 1e-3, "batch_size": 32},
        "fine-tune the stolen untrusted part with 64 labelled samples",
    ),
    "finetune-1024": (
        FineTuneAttack,
        {"n_samples": 1024, "steps": 200, "lr": 1e-3, "batch_size": 32},
        "fine-tune the stolen untrusted part with 1024 labelled samples",
    ),
    "lowrank": (
        SubspaceAttack,
        {"n_samples": 64, "steps": 100, "lr": 1e-3, "batch_size": 32},
        "read the removed subspace off the residual's spectrum, fit its map on 64 samples",
    ),
    "lowrank-1024": (
        SubspaceAttack,
        {"n_samples": 1024, "steps": 200, "lr": 1e-3, "batch_size": 32},
        "read the removed subspace off the residual's spectrum, fit its map on 1024 samples",
    ),
}


@hookimpl
def methodbench_register_attacks(register):  # type: ignore[no-untyped-def]
    for name, (factory, defaults, description) in _VARIANTS.items():
        register(
            AttackSpec(
                name=name,
                factory=factory,
                defaults=defaults,
                paper="arXiv:2407.10886",
                description=description,
            )
        )
    register(
        AttackSpec(
            name="untrusted-only",
            factory=_untrusted_only,
            defaults={},
            description="the untrusted part alone, missing parts at random init",
        )
    )
    register(
        AttackSpec(
            name="untrusted-random",
            factory=RandomFillAttack,
            defaults={},
            description="the untrusted part alone, what is missing filled at random",
        )
    )
