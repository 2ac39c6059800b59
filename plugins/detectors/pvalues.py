"""Empirical p-values and their combinations, for the statistical OOD framework.

Empirical p-values are rank-based with the +1 correction of permutation tests, so that
for a test point exchangeable with the reference sample they are valid (super-uniform)
at every sample size: P(p ≤ α) ≤ α.

    right-sided:  p⁺(s) = (1 + #{r_j ≥ s}) / (n + 1)
    two-sided:    p(x)  = min(1, 2·min((1 + #{r_j ≤ x}) / (n + 1), (1 + #{r_j ≥ x}) / (n + 1)))

Combinations (each takes a [B, m] matrix of p-values, one row per sample):

    Simes:               p = min_i m · p_(i) / i                 (valid under independence
                                                                  and PRDS dependence)
    Fisher:              T = −2 Σ_i log p_i                      (χ²₂ₘ under independence)
    conditional Fisher:  T = −2 Σ_{i: p_i ≤ τ} log p_i, τ = 0.1  (only the small p-values)
"""

from __future__ import annotations

import torch

COND_FISHER_THRESHOLD = 0.1


def sort_reference(reference: torch.Tensor) -> torch.Tensor:
    """[n, C] reference values -> [C, n], each row sorted, ready for ``two_sided``."""
    return reference.T.contiguous().sort(dim=1).values


def two_sided(sorted_reference: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-channel two-sided p-values [B, C] of ``x`` [B, C] against sorted [C, n] rows."""
    n = sorted_reference.shape[1]
    q = x.T.contiguous().to(sorted_reference.dtype)
    at_most = torch.searchsorted(sorted_reference, q, right=True)  # #{r ≤ x}
    at_least = n - torch.searchsorted(sorted_reference, q, right=False)  # #{r ≥ x}
    tail = torch.minimum(at_most, at_least).to(torch.float64)
    return (2 * (tail + 1) / (n + 1)).clamp(max=1.0).T


def right_sided(sorted_reference: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Right-tail p-values of statistics ``s`` [B] against a sorted 1-D reference [n]."""
    n = len(sorted_reference)
    at_least = n - torch.searchsorted(sorted_reference, s.to(sorted_reference.dtype).contiguous())
    return (at_least.to(torch.float64) + 1) / (n + 1)


def simes(p: torch.Tensor) -> torch.Tensor:
    """Simes' combined p-value of each row of ``p`` [B, m]."""
    m = p.shape[1]
    ranked = p.sort(dim=1).values
    i = torch.arange(1, m + 1, dtype=p.dtype, device=p.device)
    return (m * ranked / i).amin(dim=1).clamp(max=1.0)


def fisher(p: torch.Tensor) -> torch.Tensor:
    """Fisher's statistic −2 Σ log p of each row (large = evidence against H0)."""
    return -2 * torch.log(p).sum(dim=1)


def conditional_fisher(p: torch.Tensor, threshold: float = COND_FISHER_THRESHOLD) -> torch.Tensor:
    """Fisher's statistic over the p-values at or below ``threshold`` only (others count 1)."""
    return fisher(torch.where(p > threshold, torch.ones_like(p), p))
