"""Near-OOD sets: exact, deterministic transforms of the held-out MNIST-5k digits."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.workloads.images import (
    HELDOUT_FRACTION,
    NEAR_OOD,
    NOISE_STD,
    SPLIT_SEED,
    load_images,
    load_ood,
    near_ood,
)


def _heldout_digits(split: str = "test") -> np.ndarray:
    """The held-out MNIST-5k digits, computed here from the permutation: the first three
    quarters are the test split, the last quarter validation."""
    x, _ = load_images("mnist-5k")
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    held = perm[: int(len(x) * HELDOUT_FRACTION)]
    return x[held[:750]] if split == "test" else x[held[750:]]


@pytest.mark.parametrize("name", NEAR_OOD)
def test_near_ood_sets_are_deterministic_and_in_range(name: str) -> None:
    a, b = load_ood(name, 200, 28, seed=5), load_ood(name, 200, 28, seed=5)
    assert a.shape == (200, 1, 28, 28) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, load_ood(name, 200, 28, seed=6))
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert load_ood(name, 30, 8, seed=5).shape == (30, 1, 8, 8)  # resized for digits


def test_shifts_are_the_stated_transforms() -> None:
    x = _heldout_digits()[:64]
    g = np.random.default_rng(0)
    np.testing.assert_allclose(near_ood("mnist-inverted", x, g), 1.0 - x)
    rotated = near_ood("mnist-rotated", x, np.random.default_rng(1))
    turns = np.random.default_rng(1).integers(1, 4, size=len(x))
    for img, rot, k in zip(x, rotated, turns, strict=True):
        np.testing.assert_array_equal(rot, np.rot90(img, k=int(k), axes=(1, 2)))
    noisy = near_ood("mnist-noise", x, np.random.default_rng(2))
    noise = np.random.default_rng(2).normal(0.0, NOISE_STD, size=x.shape).astype(np.float32)
    np.testing.assert_allclose(noisy, np.clip(x + noise, 0.0, 1.0))
    assert np.std(noise) == pytest.approx(NOISE_STD, rel=0.02)

    # Every near-OOD image is a transformed held-out digit of its split: the inverted test
    # set is the test digits, the inverted validation set the validation digits.
    def key(img: np.ndarray) -> bytes:
        return np.rint(img * 255).astype(np.uint8).tobytes()

    for split, n in (("test", 750), ("val", 250)):
        inverted = load_ood("mnist-inverted", n, 28, seed=3, split=split)
        assert {key(1.0 - img) for img in inverted} == {key(img) for img in _heldout_digits(split)}
