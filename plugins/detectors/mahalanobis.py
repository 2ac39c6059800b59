"""Mahalanobis distance to the closest class mean, with a tied covariance.

Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
Samples and Adversarial Attacks", NeurIPS 2018, arXiv:1807.03888.

On penultimate features f(x), fitted on labelled in-distribution data:

    μ_c = mean of f over class c,   Σ = (1/N) Σ_c Σ_{i: y_i = c} (f_i − μ_c)(f_i − μ_c)ᵀ
    score(x) = min_c (f(x) − μ_c)ᵀ Σ⁺ (f(x) − μ_c)      (higher = more likely OOD)

This is the paper's M(x) with the sign turned so that OOD is positive. As in OpenOOD's
``mds`` postprocessor, the single-layer variant without the paper's input preprocessing
(ε = 0) and without its feature ensemble over layers (whose weights the paper fits on
OOD validation data) is the default. Σ⁺ is the pseudo-inverse, as OpenOOD uses, so a
rank-deficient covariance (dead ReLU units) does not fail.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from plugins.detectors.features import collect, penultimate


class Mahalanobis:
    def __init__(self) -> None:
        self.means: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None

    def fit(self, model: nn.Module, in_distribution_batches: Iterable[Any]) -> None:
        feats, labels = collect(model, in_distribution_batches)
        feats = feats.double()
        classes = torch.unique(labels)
        means = torch.stack([feats[labels == c].mean(0) for c in classes])
        centred = feats - means[torch.searchsorted(classes, labels)]
        cov = centred.T @ centred / len(feats)
        self.means = means
        self.precision = torch.linalg.pinv(cov, hermitian=True)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """[B, C] squared Mahalanobis distances of features to every class mean."""
        if self.means is None or self.precision is None:
            raise RuntimeError("fit the detector first")
        # (f − μ)ᵀP(f − μ) = fᵀPf − 2 fᵀPμ + μᵀPμ: one [B, D]x[D, D] product per batch
        # instead of one per class; float64 keeps the cancellation harmless.
        f = features.double()
        fp = f @ self.precision
        quad = (fp * f).sum(1, keepdim=True)
        mean_quad = ((self.means @ self.precision) * self.means).sum(1)
        return (quad - 2 * fp @ self.means.T + mean_quad).clamp_min(0.0)

    def score(self, model: nn.Module, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            return self.distances(penultimate(model, batch)).amin(dim=1).float()
