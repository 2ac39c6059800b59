"""Optimizer-kind workloads of the multiple-descent study: an autoencoder trained from
scratch on reconstruction, the method (AdamW by default) being its trainer.

``ae-synthetic``: the subspace data model of ``plugins.autoencoders.core`` (this
project's reading of arXiv:2406.11703, whose data-model section could not be read here).
``ae-mnist``: MNIST-5k digits, flattened to 784 values in [0, 1]: the training pool is the
4,000 images of ``plugins.workloads.images.split_indices`` (``n_train`` of them, a seeded
subset), the test split its 750 held-out images and the validation split its 250 (5,000
in all: the held-out images are not trained on, so the pool is 4,000, not 5,000).

Figures: ``eval_loss`` is the mean squared reconstruction error per entry on the clean
held-out split (the protocol's unit reads "nats"; here it is squared units of the
data), with the standard error of that mean over the held-out samples;
``final_train_loss`` is the (noisy) training MSE of the last step, which with full-batch
training (``batch_size`` null, the default) is the whole training set's. The protocol's
``steps`` are epochs when training is full-batch, so its evaluation curve (every
``eval_every`` steps, on the validation split) is the epoch-wise curve.

Seeds. ``data_seed`` null (the default) draws the data (the subspace, the samples, which
samples and features are noisy, the noise) from the run's seed, so a suite's seeds
replicate the data as well as the initialisation; an integer fixes the data across seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import nn

from plugins.autoencoders.core import (
    Activation,
    Autoencoder,
    Fraction,
    corrupt,
    orthonormal,
    per_sample_mse,
    rotate_images,
    subspace_samples,
    turned_basis,
)

SPLIT_TAGS = {"train": 0, "test": 1, "val": 2, "noise": 3, "basis": 4, "shift": 5}


class AutoencoderReconstruction:
    """Implements ``OptimizerWorkload`` (with a validation split) for an autoencoder on
    a data set that a subclass draws in ``_draw(seed)``: float32 rows ``train`` (noisy),
    ``clean_train``, ``test`` and ``val`` (clean, possibly shifted)."""

    target_loss: float | None = None
    items_unit = "samples"
    # The optimizer protocol's units for this workload's loss and its extra figures.
    loss_unit = "MSE (squared data units)"
    figure_units: ClassVar[dict[str, str]] = {"train_mse": loss_unit, "clean_train_mse": loss_unit}

    def __init__(
        self,
        *,
        hidden_width: PositiveInt,
        bottleneck: PositiveInt,
        depth: NonNegativeInt,
        activation: Activation,
        n_train: PositiveInt,
        sample_noise: Fraction,
        feature_noise: Fraction,
        noise_std: NonNegativeFloat,
        domain_shift: Fraction,
        batch_size: PositiveInt | None,
        data_seed: NonNegativeInt | None,
    ) -> None:
        for name, value in (("sample_noise", sample_noise), ("feature_noise", feature_noise)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} is a fraction in [0, 1], not {value!r}")
        if n_train < 1:
            raise ValueError(f"n_train must be >= 1, not {n_train!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or null, not {batch_size!r}")
        self.hidden_width, self.bottleneck, self.depth = hidden_width, bottleneck, depth
        self.activation, self.n_train = activation, n_train
        self.sample_noise, self.feature_noise, self.noise_std = (
            sample_noise,
            feature_noise,
            noise_std,
        )
        self.domain_shift, self.batch_size, self.data_seed = domain_shift, batch_size, data_seed
        self._data_for: int | None = None
        self.validation = "clean held-out samples of the test distribution, disjoint from it"
        # Check the architecture now, so a bad option fails before any run starts.
        Autoencoder(self.input_dim, hidden_width, bottleneck, depth, activation)

    input_dim: int  # set by subclasses before ``__init__`` builds the check model

    # ------------------------------------------------------------------ data

    def _draw(self, seed: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def bind(self, seed: int) -> None:
        """Draw the data for a run seed (once; ``data_seed`` overrides the run's seed)."""
        seed = seed if self.data_seed is None else self.data_seed
        if self._data_for != seed:
            self._draw(seed)
            self._data_for = seed

    def _require(self) -> None:
        if self._data_for is None:
            self.bind(0)

    def _rng(self, seed: int, tag: str) -> np.random.Generator:
        return np.random.default_rng([seed, SPLIT_TAGS[tag]])

    def _set(self, train: np.ndarray, clean: np.ndarray, test: np.ndarray, val: np.ndarray) -> None:
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        self.train, self.clean_train, self.test, self.val = t(train), t(clean), t(test), t(val)

    # ------------------------------------------------------------------ the contract

    def build_model(self, seed: int, device: torch.device) -> nn.Module:
        self.bind(seed)
        torch.manual_seed(seed)
        return Autoencoder(
            self.input_dim, self.hidden_width, self.bottleneck, self.depth, self.activation
        ).to(device)

    def train_batches(self, seed: int, device: torch.device) -> Iterator[torch.Tensor]:
        """The whole (noisy) training set every step, or shuffled batches of ``batch_size``
        (a new permutation each epoch, drawn from the run's seed)."""
        self.bind(seed)
        x = self.train.to(device)
        n = len(x)
        if self.batch_size is None or self.batch_size >= n:
            while True:
                yield x
        g = torch.Generator().manual_seed(seed)
        while True:
            order = torch.randperm(n, generator=g).to(device)
            for i in range(0, n - self.batch_size + 1, self.batch_size):
                yield x[order[i : i + self.batch_size]]

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(model(batch), batch)

    def items_in(self, batch: torch.Tensor) -> int:
        return int(batch.shape[0])

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, device: torch.device, split: str = "test"
    ) -> dict[str, float]:
        """Mean squared reconstruction error per entry on the clean held-out ``split``, its
        standard error over the samples, and the same figure on the training set as it
        was trained on (``train_mse``) and without its noise (``clean_train_mse``)."""
        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', not {split!r}")
        self._require()
        was = model.training
        model.eval()
        errors = per_sample_mse(model, (self.test if split == "test" else self.val).to(device))
        errors = errors.double().cpu()
        figures = {
            "eval_loss": float(errors.mean()),
            "eval_loss_stderr": float(errors.std(unbiased=True) / math.sqrt(len(errors))),
            "eval_items": float(len(errors)),
            "train_mse": float(per_sample_mse(model, self.train.to(device)).mean()),
            "clean_train_mse": float(per_sample_mse(model, self.clean_train.to(device)).mean()),
        }
        model.train(was)
        return figures


class SyntheticAE(AutoencoderReconstruction):
    """``ae-synthetic``: the subspace data model (``plugins.autoencoders.core``)."""

    def __init__(
        self,
        *,
        input_dim: PositiveInt = 64,
        latent_dim: PositiveInt = 8,  # dimension of the data's subspace
        hidden_width: PositiveInt = 64,
        bottleneck: PositiveInt = 8,
        depth: NonNegativeInt = 1,  # hidden layers on each side of the code
        activation: Activation = "relu",
        n_train: PositiveInt = 256,
        n_test: PositiveInt = 1000,
        n_val: PositiveInt = 500,
        sample_noise: Fraction = 0.0,  # share of training samples with noise
        feature_noise: Fraction = 0.0,  # share of features with noise in every sample
        noise_std: NonNegativeFloat = 1.0,
        domain_shift: Fraction = 0.0,  # the test subspace's angle, x 90 degrees
        batch_size: PositiveInt | None = None,  # None: full batch (steps are epochs)
        data_seed: NonNegativeInt | None = None,  # None: the run's seed
    ) -> None:
        if not 1 <= latent_dim <= input_dim:
            raise ValueError(f"latent_dim must lie in [1, input_dim], not {latent_dim!r}")
        self.input_dim, self.latent_dim, self.n_test, self.n_val = (
            input_dim,
            latent_dim,
            n_test,
            n_val,
        )
        super().__init__(
            hidden_width=hidden_width,
            bottleneck=bottleneck,
            depth=depth,
            activation=activation,
            n_train=n_train,
            sample_noise=sample_noise,
            feature_noise=feature_noise,
            noise_std=noise_std,
            domain_shift=domain_shift,
            batch_size=batch_size,
            data_seed=data_seed,
        )
        if self.domain_shift and input_dim < 2 * latent_dim:
            raise ValueError("domain_shift needs input_dim >= 2 * latent_dim")

    def _draw(self, seed: int) -> None:
        basis = orthonormal(self.input_dim, self.latent_dim, self._rng(seed, "basis"))
        shifted = turned_basis(basis, self.domain_shift, self._rng(seed, "shift"))
        self.basis, self.test_basis = basis, shifted
        clean = subspace_samples(self.n_train, basis, self._rng(seed, "train"))
        train, self.noisy_samples, self.noisy_features = corrupt(
            clean,
            sample_noise=self.sample_noise,
            feature_noise=self.feature_noise,
            noise_std=self.noise_std,
            g=self._rng(seed, "noise"),
        )
        test = subspace_samples(self.n_test, shifted, self._rng(seed, "test"))
        val = subspace_samples(self.n_val, shifted, self._rng(seed, "val"))
        self._set(train, clean, test, val)


class MnistAE(AutoencoderReconstruction):
    """``ae-mnist``: MNIST-5k digits flattened to 784 values in [0, 1]; domain shift turns
    the held-out digits by ``domain_shift`` · 90°."""

    input_dim = 784

    def __init__(
        self,
        *,
        hidden_width: PositiveInt = 256,
        bottleneck: PositiveInt = 32,
        depth: NonNegativeInt = 1,  # hidden layers on each side of the code
        activation: Activation = "relu",
        n_train: PositiveInt = 4000,  # of the 4,000 training digits
        sample_noise: Fraction = 0.0,  # share of training digits with noise
        feature_noise: Fraction = 0.0,  # share of pixels with noise in every digit
        noise_std: NonNegativeFloat = 0.3,
        domain_shift: Fraction = 0.0,  # the held-out digits' rotation, x 90 degrees
        batch_size: PositiveInt | None = None,  # None: full batch (steps are epochs)
        data_seed: NonNegativeInt | None = None,  # None: the run's seed
    ) -> None:
        super().__init__(
            hidden_width=hidden_width,
            bottleneck=bottleneck,
            depth=depth,
            activation=activation,
            n_train=n_train,
            sample_noise=sample_noise,
            feature_noise=feature_noise,
            noise_std=noise_std,
            domain_shift=domain_shift,
            batch_size=batch_size,
            data_seed=data_seed,
        )

    def _draw(self, seed: int) -> None:
        from plugins.workloads.images import load_images, split_indices

        x, _ = load_images("mnist-5k")
        idx = split_indices(len(x))
        pool = idx["train"]
        if self.n_train > len(pool):
            raise ValueError(f"n_train {self.n_train} exceeds the {len(pool)} training images")
        pick = np.sort(self._rng(seed, "train").permutation(len(pool))[: self.n_train])
        clean = x[pool[pick]].reshape(self.n_train, -1)
        train, self.noisy_samples, self.noisy_features = corrupt(
            clean,
            sample_noise=self.sample_noise,
            feature_noise=self.feature_noise,
            noise_std=self.noise_std,
            g=self._rng(seed, "noise"),
        )
        degrees = 90.0 * self.domain_shift

        def held(split: str) -> np.ndarray:
            images = torch.from_numpy(x[idx[split]])
            return rotate_images(images, degrees).reshape(len(images), -1).numpy()

        self._set(train, clean, held("test"), held("val"))
