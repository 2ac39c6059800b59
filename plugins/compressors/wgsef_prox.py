"""Value and proximal operator of the weighted group sparse envelope function (WGSEF).

Refael, Arbel & Huleihel, arXiv:2212.12921, generalising the sparse envelope function (SEF) of
Beck & Refael. The groups of a parameter vector ``x`` are ``x_1..x_m`` with weights
``d_i > 0``. WGSEF is the convex envelope (biconjugate) of the non-convex

    f(x) = 1/2 * sum_i d_i ||x_i||^2  +  indicator{ at most k groups are non-zero }.

Writing ``t_i = sqrt(d_i) ||x_i||`` the conjugate is ``f*(y) = 1/2 * top_k_sum(||y_i||^2 / d_i)``
and the envelope is ``g(x) = sup_theta>=0 [ -k theta / 2 + sum_i h_i(theta) ]`` with
``h_i = t_i sqrt(theta)`` when ``t_i <= sqrt(theta)`` and ``(t_i^2 + theta) / 2`` otherwise
(the sup over the dual variable done in closed form; for d = 1 it is half the squared k-support
norm, i.e. Beck & Refael's SEF). Both the value and the prox reduce to finding the root of a
monotone piecewise-linear function of one scalar, whose breakpoints are per-group numbers.
That root is found here by the classic linear-time scheme (Brucker / Kiwiel for the
continuous knapsack): pick the median breakpoint with a median-of-medians selection
(worst-case linear), evaluate the function using running sums for the groups already
decided, discard the half of the breakpoints on the wrong side. Each round costs linear time
in what is left and at least halves it, so the total is O(m): nothing sorts the full vector.

The prox of ``lam * g`` comes from Moreau's identity ``prox_{lam g}(x) = x - lam
prox_{f*/lam}(x / lam)``; the inner problem, with ``a_i = ||x_i|| / lam``, keeps each group's
direction and shrinks its norm to ``b_i``. With a threshold ``theta = sigma^2`` the group's share
in the top-k sum is ``w_i = clip(lam sqrt(d_i) a_i / sigma - lam d_i, 0, 1)`` and the optimum is
where ``sum_i w_i = k``: groups with ``w_i = 0`` are zeroed, ``w_i = 1`` are scaled by
``1 / (1 + lam d_i)`` and the rest are shrunk to norm ``||x_i|| - lam sqrt(d_i) sigma``.

Departure / honest note: the prox of the convex envelope keeps *at least* ``min(k, nnz)``
groups (e.g. k = 1 gives half the squared group-l1 norm, whose prox can keep every group), so
it cannot alone make "exactly k groups". The exact-k support is produced by
:func:`hard_group_prox`, the prox of the non-convex ``f`` the envelope relaxes (keep the k
groups with largest ``||x_i||^2 / (1 + lam d_i)``, also by linear-time selection); the
compressor applies it once at the end of proximal-gradient training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SMALL = 32  # below this size a selection simply sorts (a constant-size problem)


@dataclass
class OpCount:
    """Element operations done by the selections (for the linear-cost unit test)."""

    elements: int = 0
    largest_sort: int = 0
    rounds: list[int] = field(default_factory=list)


def _median_of_medians(v: torch.Tensor, ops: OpCount | None) -> torch.Tensor:
    """Blum-Floyd-Pratt-Rivest-Tarjan pivot: the true median of the medians of 5, found by
    a recursive ``select``; at least ~30% of ``v`` lies on each side of it."""
    n5 = v.numel() // 5 * 5
    if ops is not None:
        ops.elements += v.numel()
    medians = v[:n5].view(-1, 5).median(dim=1).values  # constant-size groups, no full sort
    return select(medians, (medians.numel() - 1) // 2, ops)


def select(values: torch.Tensor, rank: int, ops: OpCount | None = None) -> torch.Tensor:
    """The ``rank``-th smallest entry (0-based) of a 1-D tensor, in worst-case linear time."""
    v = values.reshape(-1)
    if not 0 <= rank < v.numel():
        raise ValueError(f"rank {rank} out of range for {v.numel()} values")
    while v.numel() > SMALL:
        if ops is not None:
            ops.elements += v.numel()
        pivot = _median_of_medians(v, ops)
        below, above = v[v < pivot], v[v > pivot]
        if rank < below.numel():
            v = below
        elif rank >= v.numel() - above.numel():
            rank -= v.numel() - above.numel()
            v = above
        else:
            return pivot
    if ops is not None:
        ops.largest_sort = max(ops.largest_sort, v.numel())
        ops.elements += v.numel()
    return torch.sort(v).values[rank]


def _median(v: torch.Tensor, ops: OpCount | None) -> torch.Tensor:
    return select(v, (v.numel() - 1) // 2, ops)


def group_norms(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each row of ``x`` (rows are the groups)."""
    return x.reshape(x.shape[0], -1).norm(dim=1)


def _check(norms: torch.Tensor, weights: torch.Tensor | None, k: int) -> torch.Tensor:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    d = torch.ones_like(norms) if weights is None else weights.to(norms)
    if d.shape != norms.shape or bool((d <= 0).any()):
        raise ValueError("weights must be positive, one per group")
    return d


def envelope_value(
    norms: torch.Tensor, k: int, weights: torch.Tensor | None = None, ops: OpCount | None = None
) -> torch.Tensor:
    """WGSEF of a vector whose group norms are ``norms`` (linear time, float64 inside)."""
    d = _check(norms, weights, k).double()
    t = d.sqrt() * norms.double()
    if int(torch.count_nonzero(t)) <= k:  # the envelope equals f itself on k-sparse vectors
        return 0.5 * (t * t).sum()
    # phi'(s) = s (#{t > s} - k) + sum_{t <= s} t is > 0 left of the maximiser, <= 0 right.
    # Zero groups never count (t = 0 <= s for every s > 0) and phi'(0) = 0 would mislead.
    cand, n_above, s_below = t[t > 0], 0, torch.zeros((), dtype=t.dtype)
    lo, hi = 0.0, float("inf")
    while cand.numel() > 0:
        p = float(_median(cand, ops))
        left, right = cand[cand <= p], cand[cand > p]
        slope = p * (n_above + right.numel() - k) + float(s_below + left.sum())
        if ops is not None:
            ops.rounds.append(cand.numel())
        if slope > 0:  # the maximiser is right of p: every t <= p is "below" from now on
            lo, cand, s_below = p, right, s_below + left.sum()
        else:  # left of p (or at it): every t >= p is "above"
            hi, cand, n_above = p, cand[cand < p], n_above + int((cand >= p).sum())
    # On (lo, hi) no breakpoint is left: phi' = s (n_above - k) + s_below there.
    # If n_above >= k, phi' >= 0 on the whole interval (and <= 0 at hi): the maximiser is hi.
    sigma = min(max(float(s_below) / (k - n_above), lo), hi) if n_above < k else hi
    inner = t <= sigma
    return -0.5 * k * sigma**2 + sigma * t[inner].sum() + 0.5 * (t[~inner] ** 2 + sigma**2).sum()


def envelope_prox_scales(
    norms: torch.Tensor,
    k: int,
    lam: float,
    weights: torch.Tensor | None = None,
    ops: OpCount | None = None,
) -> torch.Tensor:
    """Per-group factor ``c_i`` so that ``prox_{lam WGSEF}(x)_i = c_i x_i`` (linear time)."""
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    d = _check(norms, weights, k).double()
    n = norms.double()
    full = 1.0 / (1.0 + lam * d)
    nz = n > 0
    if int(nz.sum()) <= k:
        return torch.where(nz, full, torch.zeros_like(full)).to(norms.dtype)
    # w_i(rho) = clip(alpha_i rho - beta_i, 0, 1), rho = 1/sigma, nondecreasing; find sum = k.
    alpha = (d.sqrt() * n)[nz]  # lam sqrt(d) a with a = ||x|| / lam
    beta = lam * d[nz]
    start, stop = beta / alpha, (1.0 + beta) / alpha
    idx = torch.arange(alpha.numel())
    saturated, sum_a, sum_b = 0.0, 0.0, 0.0
    lo, hi = 0.0, float("inf")
    while idx.numel() > 0:
        bps = torch.cat([start[idx], stop[idx]])
        bps = bps[(bps > lo) & (bps < hi)]
        if bps.numel() == 0:
            break
        p = float(_median(bps, ops))
        if ops is not None:
            ops.rounds.append(bps.numel())
        w = (alpha[idx] * p - beta[idx]).clamp(0.0, 1.0).sum()
        total = saturated + sum_a * p - sum_b + float(w)
        if total == k:
            lo = hi = p
        elif total < k:
            lo = p
        else:
            hi = p
        a, b = start[idx], stop[idx]
        done_one = b <= lo
        done_zero = a >= hi
        ramp = (a <= lo) & (b >= hi) & ~done_one & ~done_zero
        saturated += float(done_one.sum())
        sum_a += float(alpha[idx[ramp]].sum())
        sum_b += float(beta[idx[ramp]].sum())
        idx = idx[~(done_one | done_zero | ramp)]
        if lo == hi:
            break
    # Between the remaining breakpoints the total is saturated + sum_a rho - sum_b.
    if lo == hi:
        rho = lo
    elif sum_a > 0:
        rho = min(max((k - saturated + sum_b) / sum_a, lo), hi)
    else:
        rho = lo if hi == float("inf") else 0.5 * (lo + hi)
    w_all = (alpha * rho - beta).clamp(0.0, 1.0)
    sigma = 1.0 / rho
    shrunk = 1.0 - lam * d[nz].sqrt() * sigma / n[nz]  # b_i / a_i with b_i = sqrt(d_i) sigma
    scale_nz = torch.where(
        w_all >= 1.0, full[nz], torch.where(w_all <= 0.0, torch.zeros_like(shrunk), shrunk)
    )
    out = torch.zeros_like(n)
    out[nz] = scale_nz
    return out.to(norms.dtype)


def envelope_prox(
    x: torch.Tensor, k: int, lam: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``prox_{lam WGSEF}(x)`` for ``x`` whose first dimension indexes the groups."""
    scales = envelope_prox_scales(group_norms(x), k, lam, weights)
    return x * scales.view(-1, *([1] * (x.dim() - 1)))


def top_k_groups(scores: torch.Tensor, k: int, ops: OpCount | None = None) -> torch.Tensor:
    """Boolean mask of ``k`` groups with the largest scores (ties broken by index), linear."""
    m = scores.numel()
    if k >= m:
        return torch.ones(m, dtype=torch.bool)
    cut = select(scores, m - k, ops)  # the k-th largest
    keep = scores > cut
    ties = torch.nonzero(scores == cut).view(-1)[: k - int(keep.sum())]
    keep[ties] = True
    return keep


def hard_group_prox(
    x: torch.Tensor, k: int, lam: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Prox of ``lam f`` (the non-convex function WGSEF relaxes): exactly ``min(k, m)`` groups.

    Keeping group ``i`` shrinks it to ``x_i / (1 + lam d_i)`` and saves
    ``||x_i||^2 / (2 (1 + lam d_i))`` of the objective, so the best support is the top-k of
    that score.
    """
    norms = group_norms(x)
    d = _check(norms, weights, k)
    keep = top_k_groups(norms**2 / (1.0 + lam * d), k)
    scale = torch.where(keep, 1.0 / (1.0 + lam * d), torch.zeros_like(d))
    return x * scale.view(-1, *([1] * (x.dim() - 1)))
