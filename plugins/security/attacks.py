"""Attacks on security splits: what an attacker holding the untrusted device can rebuild.

The threat model is the protocol's (``benchmark/protocols/security_split.py``): every
attack gets ``untrusted_state`` (the stolen tensors under the original parameter names;
missing ones absent) and the attacker's context: its starting model (the public
checkpoint where the workload has one, else random initialisation), labelled samples to
train on and held-out ones to choose with, the workload's fine-tuning recipe, and the
transcripts of the inputs it serves. The protocol also runs each attack with an empty
state and no traffic, the "training from scratch" baseline with the same samples.

- ``untrusted-only``: the stolen state loaded into the starting model, used as it is.
- ``untrusted-random``: the same, but what the attacker can tell is missing is filled with
  random values of a plausible norm (see ``fill_missing``).
- ``finetune`` (64 samples) and ``finetune-1024``: the stolen state fine-tuned, the
  model-stealing threat that SLIP (arXiv:2407.10886) and the TEE-partition benchmarks
  (arXiv:2310.07152) evaluate; the stolen model as it is stays a candidate.
- ``lowrank`` / ``lowrank-1024``: low-rank reconstruction (see ``SubspaceAttack``).
- ``traffic-64`` / ``traffic-1024``: least squares on what crosses in clear
  (``plugins/security/traffic.py``).

Budgets are named variants (one registered attack per sample count) rather than attack
hyperparameters in the suite: a suite lists attacks by name, and a record's metric names
(``attack_finetune-1024_recovered_ratio``) then say which budget produced them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import NonNegativeInt, PositiveFloat
from torch import nn
from torch.nn.utils import parametrize

from plugins.security.attack_training import (
    choose,
    fine_tune,
    load_stolen,
    parameter_groups,
    tuned_copy,
)


class FineTuneAttack:
    """The stolen state loaded into the attacker's starting model, then fine-tuned on n
    labelled samples for ``steps`` steps with the workload's recipe; the better (on the
    attacker's held-out samples) of the stolen model as it is and fine-tuned is kept."""

    def __init__(self, n_samples: NonNegativeInt = 64, steps: NonNegativeInt = 100) -> None:
        self.n_samples, self.steps = n_samples, steps

    def __call__(self, untrusted_state: dict[str, torch.Tensor], ctx: Any) -> nn.Module:
        model = ctx.fresh_model(ctx.seed)
        load_stolen(model, untrusted_state, ctx.device)
        if self.n_samples <= 0 or self.steps <= 0:
            return model.eval()
        tuned = tuned_copy(model, ctx, self.n_samples, self.steps)
        return choose({"stolen as-is": model, "fine-tuned": tuned}, ctx)


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
        load_stolen(model, filled, ctx.device)
        return model.eval()


class SubspaceAttack(FineTuneAttack):
    """Low-rank reconstruction: W = W_D + L M Rᵀ, with M fitted on ``n_samples``.

    For every stolen weight whose spectrum shows a deficit (``missing_subspace``), the
    attacker parametrises the weight as the residual plus a map M inside the missing
    subspace and trains M with every other parameter on its labelled samples. M starts
    where an attacker's knowledge puts it, never at zero (from zero, Adam needs thousands
    of steps to grow it to the scale of the removed singular values):

    - from a public checkpoint (``ctx.pretrained_start``), M = Lᵀ W_pub R, the public
      weights' own component in the missing subspace (fine-tuning moves a weight little,
      so this is close to the secret);
    - otherwise a random isometry scaled by the largest remaining singular value (the
      removed ones were at least that large).

    From a random start M's learning rate is ``subspace_lr`` x that singular value, so a
    step moves M by a fixed share of its scale; from the public start it is the recipe's
    (M is tuned like the public weights it came from, not thrown away). Candidates kept by
    held-out loss: the stolen state as it is, with M at its start, and trained. With no
    deficit anywhere (an entry-wise split, no split, the from-scratch baseline) this is
    ``finetune``. It assumes a top-k-style split,
    which SLIP's design makes public (Kerckhoffs).
    """

    def __init__(
        self,
        n_samples: NonNegativeInt = 64,
        steps: NonNegativeInt = 100,
        subspace_lr: PositiveFloat = 0.02,
    ) -> None:
        super().__init__(n_samples, steps)
        self.subspace_lr = subspace_lr

    def _map_lr(self, fill: _SubspaceFill, ctx: Any) -> float:
        """From a public start M is already close: it is tuned like the public weights it
        came from (the recipe's rate); from a random isometry it must travel its own scale."""
        return ctx.recipe.lr if _public_start(ctx) else self.subspace_lr * fill.sigma_top

    def __call__(self, untrusted_state: dict[str, torch.Tensor], ctx: Any) -> nn.Module:
        start = ctx.fresh_model(ctx.seed)
        public = {k: v.detach().clone() for k, v in start.state_dict().items()}
        load_stolen(start, untrusted_state, ctx.device)
        params = dict(start.named_parameters())
        gen = torch.Generator().manual_seed(ctx.seed)
        misses: dict[str, tuple[Missing, torch.Tensor]] = {}
        for name, w in untrusted_state.items():
            if name not in params or not w.is_floating_point():
                continue
            miss = missing_subspace(w.float().cpu())
            if miss is not None:
                misses[name] = (miss, _initial_map(miss, public.get(name), ctx, gen))
        if not misses or self.n_samples <= 0 or self.steps <= 0:
            return super().__call__(untrusted_state, ctx)
        filled, trained = copy.deepcopy(start), copy.deepcopy(start)
        _attach(filled, misses, ctx.device)
        fills = _attach(trained, misses, ctx.device, trainable=True)
        maps = {id(f.m) for f in fills}
        groups = parameter_groups(trained, ctx, exclude=maps)
        groups += [{"params": [f.m], "lr": self._map_lr(f, ctx)} for f in fills]
        fine_tune(trained, groups, ctx, self.n_samples, self.steps)
        for model in (filled, trained):
            _detach(model, misses)
        return choose({"stolen as-is": start, "subspace filled": filled, "trained": trained}, ctx)


def _public_start(ctx: Any) -> bool:
    return bool(getattr(ctx, "pretrained_start", False))


def _initial_map(
    miss: Missing, public: torch.Tensor | None, ctx: Any, gen: torch.Generator
) -> torch.Tensor:
    rows, cols = miss.map_shape()
    if _public_start(ctx) and public is not None:
        w = public.detach().double().cpu().reshape(miss.shape)
        left = torch.eye(miss.shape[0], dtype=w.dtype) if miss.left is None else miss.left.double()
        right = (
            torch.eye(miss.shape[1], dtype=w.dtype) if miss.right is None else miss.right.double()
        )
        return (left.T @ w @ right).float()
    return (_random_isometry(rows, cols, miss.deficit, gen) * miss.sigma_top).float()


def _attach(
    model: nn.Module,
    misses: dict[str, tuple[Missing, torch.Tensor]],
    device: torch.device,
    trainable: bool = False,
) -> list[_SubspaceFill]:
    fills = []
    for name, (miss, init) in misses.items():
        owner, _, leaf = name.rpartition(".")
        weight = model.get_submodule(owner).get_parameter(leaf)
        fill = _SubspaceFill(miss, tuple(weight.shape), device, init)
        fill.m.requires_grad_(trainable)
        parametrize.register_parametrization(model.get_submodule(owner), leaf, fill)
        fills.append(fill)
    return fills


def _detach(model: nn.Module, misses: dict[str, Any]) -> None:
    for name in misses:
        owner, _, leaf = name.rpartition(".")
        parametrize.remove_parametrizations(model.get_submodule(owner), leaf)


class _SubspaceFill(nn.Module):
    """Parametrization W -> W + left @ M @ right.T with M starting at ``init``."""

    def __init__(
        self, miss: Missing, shape: tuple[int, ...], device: torch.device, init: torch.Tensor
    ) -> None:
        super().__init__()
        self.miss = Missing(
            None if miss.left is None else miss.left.to(device),
            None if miss.right is None else miss.right.to(device),
            miss.deficit,
            miss.sigma_top,
            miss.shape,
        )
        self.m = nn.Parameter(init.clone().to(device))
        self.shape = shape
        self.sigma_top = miss.sigma_top

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.miss.expand(self.m.to(w.dtype)).reshape(self.shape)


# Budgets are steps, never wall clock: on a loaded machine a time cap, not the attack,
# would decide the outcome.
