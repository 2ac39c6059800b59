"""Deep nearest neighbours: distance to the k-th nearest normalised ID feature.

Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest Neighbors",
ICML 2022, arXiv:2204.06507.

    z = f(x) / ‖f(x)‖₂ on penultimate features; bank = {z_i} of the fit set
    score(x) = ‖z − z_(k)‖₂, the distance to the k-th nearest bank entry (higher = OOD)

The paper uses k = 50 with the full CIFAR-10 training set (50,000 images) and shows that
k should grow in proportion to the bank (k = 1000 for all of ImageNet, 10 for 1% of it).
So the default is k = 50 at a bank of ``scale_k_to`` = 50,000, scaled to the actual fit
set: k = max(1, round(50 · n_fit / 50,000)); ``scale_k_to: null`` keeps k as given.
Exact search (torch.cdist and top-k) stands in for the paper's Faiss index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pydantic import PositiveInt
from torch import nn

from plugins.detectors.features import collect, penultimate

CHUNK = 4096  # bank rows per distance block: bounds memory for large fit sets


def normalise(features: torch.Tensor) -> torch.Tensor:
    """Unit-length rows in float64: cdist's matrix-product form loses ~1e-6 in float32,
    enough to swap near neighbours; in float64 it costs about the same on CPU."""
    return nn.functional.normalize(features.double(), p=2, dim=1)


def kth_distance(queries: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Euclidean distance from each query row to its k-th nearest row of ``bank``."""
    best: torch.Tensor | None = None
    for i in range(0, len(bank), CHUNK):
        d = torch.cdist(queries, bank[i : i + CHUNK])
        cand = d if best is None else torch.cat([best, d], dim=1)
        best = cand.topk(min(k, cand.shape[1]), dim=1, largest=False).values
    assert best is not None
    return best[:, k - 1]


class KNN:
    def __init__(self, k: PositiveInt = 50, scale_k_to: PositiveInt | None = 50_000) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k_given, self.scale_k_to = k, scale_k_to
        self.k: int | None = None
        self.bank: torch.Tensor | None = None

    def fit(self, model: nn.Module, in_distribution_batches: Iterable[Any]) -> None:
        feats, _ = collect(model, in_distribution_batches)
        self.bank = normalise(feats)
        n = len(self.bank)
        k = self.k_given if self.scale_k_to is None else round(self.k_given * n / self.scale_k_to)
        self.k = min(max(1, k), n)

    def score(self, model: nn.Module, batch: Any) -> torch.Tensor:
        if self.bank is None or self.k is None:
            raise RuntimeError("fit the detector first")
        with torch.no_grad():
            return kth_distance(normalise(penultimate(model, batch)), self.bank, self.k)
