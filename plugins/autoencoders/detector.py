"""Anomaly detection by an autoencoder's reconstruction error, as the multiple-descent study
uses it downstream (Rahimi, Refael, Tirer & Lindenbaum, arXiv:2406.11703: over-parameterised
autoencoders detect anomalies better), and a synthetic anomaly workload.

``ae-recon`` (detector): fits its own autoencoder on the workload's in-distribution fit
batches and scores an input by its mean squared reconstruction error (higher: more
anomalous). It ignores the workload's ``model`` (a classifier for the image workloads):
the autoencoder it trains is the whole detector, so it runs on any detector workload whose
inputs are tensors (images are flattened).

``ae-anomaly-synthetic`` (detector workload): normal samples from the subspace data model
(``plugins.autoencoders.core``), anomalies from another subspace at ``anomaly_angle`` · 90°
from it, both with isotropic N(0, noise_std²) noise; a ``contamination`` fraction of the
training samples are anomalies (the detector is fitted on contaminated data, as an
unsupervised detector is in practice), and a ``sample_noise`` fraction of them get
N(0, sample_noise_std²) more (partial sample noise, as in ``ae-synthetic``; the held-out
sets carry only the isotropic noise). This is this project's reading: the paper's
anomaly section could not be read here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Interval
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from plugins.autoencoders.core import (
    Activation,
    Autoencoder,
    Fraction,
    as_rows,
    chosen,
    fit_autoencoder,
    orthonormal,
    per_sample_mse,
    subspace_samples,
    turned_basis,
)


class ReconstructionDetector:
    """Fits an autoencoder (``hidden_width``, ``bottleneck``, ``depth``, ``activation``) for
    ``steps`` Adam steps at ``lr`` on the in-distribution fit inputs; score = per-sample MSE.

    The ``model`` argument of ``fit`` and ``score`` (the workload's classifier) is ignored.
    ``standardize``: scale every feature by the fit data's mean and standard deviation
    before encoding (off by default: pixels and the synthetic features share one scale).
    """

    def __init__(
        self,
        *,
        hidden_width: PositiveInt = 256,
        bottleneck: PositiveInt = 8,
        depth: NonNegativeInt = 1,
        activation: Activation = "relu",
        steps: PositiveInt = 1000,
        lr: PositiveFloat = 1e-3,
        batch_size: PositiveInt | None = None,  # None: the whole training set
        weight_decay: NonNegativeFloat = 0.0,
        standardize: bool = False,
        seed: int | None = None,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, not {steps!r}")
        self.hidden_width, self.bottleneck, self.depth = hidden_width, bottleneck, depth
        self.activation, self.steps, self.lr = activation, steps, lr
        self.batch_size, self.weight_decay, self.standardize = batch_size, weight_decay, standardize
        self.seed = 0 if seed is None else int(seed)
        self.ae: Autoencoder | None = None
        self.train_loss: list[float] = []

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().reshape(len(x), -1)
        return (x - self.mean) / self.scale if self.standardize else x

    def fit(self, model: nn.Module, in_distribution_batches: Iterable[Any]) -> None:
        x = as_rows(in_distribution_batches)
        self.mean = x.mean(dim=0)
        self.scale = x.std(dim=0).clamp_min(1e-6)
        x = self._prepare(x)
        torch.manual_seed(self.seed)
        self.ae = Autoencoder(
            x.shape[1], self.hidden_width, self.bottleneck, self.depth, self.activation
        ).to(x.device)
        self.train_loss = fit_autoencoder(
            self.ae,
            x,
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size,
            weight_decay=self.weight_decay,
            seed=self.seed,
        )

    @torch.no_grad()
    def score(self, model: nn.Module, batch: Any) -> torch.Tensor:
        if self.ae is None:
            raise RuntimeError("fit the detector before scoring")
        x = batch[0] if isinstance(batch, tuple | list) else batch
        return per_sample_mse(self.ae, self._prepare(torch.as_tensor(x)))


class AnomalySynthetic:
    """Implements ``DetectorWorkload`` (with a validation split and ``bind_run_seed``)."""

    in_name = "subspace"
    out_name = "turned-subspace anomalies"

    def __init__(
        self,
        *,
        input_dim: PositiveInt = 64,
        latent_dim: PositiveInt = 8,
        n_train: PositiveInt = 500,
        n_test: PositiveInt = 500,
        n_val: PositiveInt = 250,
        noise_std: NonNegativeFloat = 0.1,
        contamination: Annotated[float, Interval(ge=0, lt=1)] = 0.05,  # anomalies in the fit
        anomaly_angle: Annotated[float, Interval(gt=0, le=1)] = 0.5,  # x 90 degrees
        sample_noise: Fraction = 0.0,  # share of fit samples with extra noise
        sample_noise_std: NonNegativeFloat = 1.0,
        data_seed: NonNegativeInt | None = None,  # None: the run's seed
    ) -> None:
        if input_dim < 2 * latent_dim:
            raise ValueError("anomalies need input_dim >= 2 * latent_dim")
        if not 0 <= contamination < 1:
            raise ValueError(f"contamination is a fraction in [0, 1), not {contamination!r}")
        if not 0 < anomaly_angle <= 1:
            raise ValueError(
                f"anomaly_angle is a fraction of 90 degrees in (0, 1], not {anomaly_angle!r}"
            )
        self.input_dim, self.latent_dim = input_dim, latent_dim
        self.n_train, self.n_test, self.n_val = n_train, n_test, n_val
        self.noise_std, self.contamination, self.anomaly_angle = (
            noise_std,
            contamination,
            anomaly_angle,
        )
        self.sample_noise, self.sample_noise_std = sample_noise, sample_noise_std
        self.data_seed = data_seed
        self.validation = (
            f"{n_val} normal samples and {n_val} anomalies, fresh draws disjoint from the test "
            "sets and from the fit data"
        )
        self._seed: int | None = None

    def bind_run_seed(self, seed: int) -> None:
        seed = seed if self.data_seed is None else self.data_seed
        if seed == self._seed:
            return
        rng = lambda tag: np.random.default_rng([seed, tag])  # noqa: E731
        normal = orthonormal(self.input_dim, self.latent_dim, rng(0))
        abnormal = turned_basis(normal, self.anomaly_angle, rng(1))

        def draw(n: int, basis: np.ndarray, tag: int) -> torch.Tensor:
            g = rng(tag)
            x = subspace_samples(n, basis, g)
            x += (self.noise_std * g.standard_normal(x.shape)).astype(np.float32)
            return torch.from_numpy(x)

        train = draw(self.n_train, normal, 2)
        self.contaminated = chosen(self.n_train, self.contamination, rng(3))
        train[self.contaminated] = draw(len(self.contaminated), abnormal, 4)
        # Partial sample noise on the fit data, as in the reconstruction workloads.
        self.noisy_samples = chosen(self.n_train, self.sample_noise, rng(9))
        noise = rng(10).standard_normal((len(self.noisy_samples), self.input_dim))
        train[self.noisy_samples] += torch.from_numpy(
            (self.sample_noise_std * noise).astype(np.float32)
        )
        self.x_train = train
        self.sets = {
            ("in", "test"): draw(self.n_test, normal, 5),
            ("out", "test"): draw(self.n_test, abnormal, 6),
            ("in", "val"): draw(self.n_val, normal, 7),
            ("out", "val"): draw(self.n_val, abnormal, 8),
        }
        self._seed = seed

    def _require(self) -> None:
        if self._seed is None:
            self.bind_run_seed(0)

    def model(self, device: torch.device) -> nn.Module:
        """No classifier here: an identity stands in (the reconstruction detector ignores it)."""
        return nn.Identity().to(device)

    def fit_batches(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (contaminated) training samples with placeholder labels (all 0: unsupervised)."""
        self._require()
        x = self.x_train
        return [
            (
                x[i : i + 256].to(device),
                torch.zeros(len(x[i : i + 256]), dtype=torch.long, device=device),
            )
            for i in range(0, len(x), 256)
        ]

    def test_batches(
        self, which: str, device: torch.device, split: str = "test"
    ) -> Iterator[torch.Tensor]:
        if which not in ("in", "out"):
            raise ValueError(f"which must be 'in' or 'out', not {which!r}")
        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', not {split!r}")
        self._require()
        x = self.sets[(which, split)]
        for i in range(0, len(x), 256):
            yield x[i : i + 256].to(device)
