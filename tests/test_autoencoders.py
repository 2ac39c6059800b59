"""The multiple-descent autoencoder study (plugins/autoencoders): its data model, the linear
autoencoder's absence of a peak against the PCA optimum, what a miniature nonlinear width
sweep with sample noise shows, and the reconstruction-error detector."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from benchmark.metrics.ood import auroc
from benchmark.protocols import detector as detector_protocol
from benchmark.protocols import optimizer as optimizer_protocol
from benchmark.report.descent import find_descents
from plugins.autoencoders.core import (
    Autoencoder,
    pca_reconstruction_mse,
    rotate_images,
)
from plugins.autoencoders.detector import AnomalySynthetic, ReconstructionDetector

from .helpers import context, registry

CPU = torch.device("cpu")
# A miniature of ae-synthetic: 64 samples of a 4-dimensional subspace of R^32.
MINI = {"input_dim": 32, "latent_dim": 4, "bottleneck": 4, "n_train": 64, "n_test": 500}


def synthetic(**options):  # type: ignore[no-untyped-def]
    spec = registry().workload("optimizer", "ae-synthetic")
    return spec.load()(**{**dict(spec.defaults), **MINI, **options})


def trained_test_loss(wl, *, seed: int, steps: int, lr: float = 1e-3) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Full-batch AdamW on the workload's own model, batches and loss (the optimizer
    protocol's loop without its meters), then the workload's held-out figures."""
    model = wl.build_model(seed, CPU)
    batches = wl.train_batches(seed, CPU)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        wl.loss(model, next(batches)).backward()
        opt.step()
    return wl.evaluate(model, CPU)


# --------------------------------------------------------------------------- data model


def test_clean_synthetic_data_span_exactly_latent_dim() -> None:
    wl = synthetic(n_train=200, latent_dim=5, bottleneck=5)
    wl.bind(0)
    assert wl.train.shape == (200, 32) and wl.test.shape == (500, 32) and wl.val.shape[1] == 32
    s = torch.linalg.svdvals(wl.clean_train.double())
    assert s[4] > 1.0 and s[5] < 1e-4 * s[0], "rank 5: the subspace dimension is latent_dim"
    # Unit variance per feature on average, so noise_std reads against a unit signal.
    assert wl.clean_train.pow(2).mean().item() == pytest.approx(1.0, rel=0.15)
    # Without noise or shift the test samples lie in the training subspace.
    stacked = torch.cat([wl.clean_train, wl.test]).double()
    assert torch.linalg.svdvals(stacked)[5] < 1e-4 * s[0]


@pytest.mark.parametrize(("sample_noise", "feature_noise"), [(0.25, 0.0), (0.0, 0.5), (0.3, 0.25)])
def test_noise_corrupts_the_fraction_of_samples_and_features_the_options_say(
    sample_noise: float, feature_noise: float
) -> None:
    wl = synthetic(n_train=200, sample_noise=sample_noise, feature_noise=feature_noise)
    wl.bind(3)
    rows, cols = wl.noisy_samples, wl.noisy_features
    assert len(rows) == round(sample_noise * 200) and len(cols) == round(feature_noise * 32)
    changed = (wl.train != wl.clean_train).numpy()
    clean_rows = np.setdiff1d(np.arange(200), rows)
    clean_cols = np.setdiff1d(np.arange(32), cols)
    assert changed[np.ix_(rows, np.arange(32))].all(), "every feature of a noisy sample"
    assert changed[np.ix_(np.arange(200), cols)].all(), "every sample of a noisy feature"
    assert not changed[np.ix_(clean_rows, clean_cols)].any(), "nothing else"
    # The held-out sets stay clean (exactly rank latent_dim).
    assert torch.linalg.svdvals(wl.test.double())[8] < 1e-4


def test_domain_shift_turns_the_test_subspace_by_the_stated_angle() -> None:
    wl = synthetic(domain_shift=1 / 3)
    wl.bind(0)
    cosines = torch.linalg.svdvals(torch.from_numpy(wl.basis.T @ wl.test_basis))
    assert torch.allclose(
        cosines, torch.full((4,), math.cos(math.pi / 6), dtype=torch.float64), atol=1e-6
    )
    assert torch.linalg.svdvals(torch.cat([wl.clean_train, wl.test]).double())[4] > 1.0


def test_seeds_redraw_the_data_unless_data_seed_fixes_it() -> None:
    wl = synthetic()
    wl.bind(0)
    first = wl.train.clone()
    wl.bind(1)
    assert not torch.equal(first, wl.train)
    fixed = synthetic(data_seed=7)
    fixed.bind(0)
    again = fixed.train.clone()
    fixed.bind(1)
    assert torch.equal(again, fixed.train)


def test_mnist_workload_flattens_digits_and_holds_out_the_test_split() -> None:
    spec = registry().workload("optimizer", "ae-mnist")
    wl = spec.load()(**{**dict(spec.defaults), "n_train": 300, "sample_noise": 0.5})
    wl.bind(0)
    assert wl.train.shape == (300, 784) and wl.test.shape == (750, 784) and len(wl.val) == 250
    assert wl.clean_train.min() >= 0 and wl.clean_train.max() <= 1
    assert len(wl.noisy_samples) == 150
    # A quarter turn of a digit is a quarter turn (up to interpolation at the border).
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, 4:24, 12:16] = 1.0  # a vertical bar
    turned = rotate_images(img, 90.0)[0, 0]
    assert turned[12:16, 6:22].mean() > 0.9 and turned[4:10, 12:16].mean() < 0.1


def test_bad_options_fail_when_the_workload_is_built() -> None:
    with pytest.raises(ValueError, match="sample_noise"):
        synthetic(sample_noise=1.5)
    with pytest.raises(ValueError, match="activation"):
        synthetic(activation="swish-ish")
    with pytest.raises(ValueError, match="input_dim"):
        synthetic(domain_shift=0.5, input_dim=6, latent_dim=4, bottleneck=4)


# --------------------------------------------------------------------------- descent


def test_linear_autoencoder_shows_no_peak_and_reaches_the_pca_optimum() -> None:
    """The paper's analytic result: a linear AE (any width above its bottleneck) computes a
    map of rank <= bottleneck, whose training optimum is the projection on the top principal
    subspace of the training data (Baldi & Hornik), so its test loss cannot rise and fall
    with width. Reference: ``pca_reconstruction_mse`` (centred SVD, written from the
    equations), on the same noisy training set and clean test set."""
    widths = (8, 64, 512)
    sizes = []
    for w in widths:
        model = synthetic(activation="linear", hidden_width=w).build_model(0, torch.device("cpu"))
        sizes.append(sum(p.numel() for p in model.parameters()))
    assert sizes[0] < sizes[1] < sizes[2], "the width option must reach the model"
    seeds = (0, 1, 2)
    losses = np.array(
        [
            [
                trained_test_loss(
                    synthetic(activation="linear", sample_noise=0.5, hidden_width=w),
                    seed=s,
                    steps=1000,
                )["eval_loss"]
                for w in widths
            ]
            for s in seeds
        ]
    )
    for s, row in zip(seeds, losses, strict=True):
        wl = synthetic(activation="linear", sample_noise=0.5)
        wl.bind(s)
        reference = pca_reconstruction_mse(wl.train.numpy(), wl.test.numpy(), rank=4)
        assert row == pytest.approx([reference] * 3, rel=0.02), (s, row, reference)
    # And the report's detector, on the seeds' bands, finds no peak over width.
    half = stats.t.ppf(0.975, 2) * losses.std(axis=0, ddof=1) / math.sqrt(3)
    assert find_descents(widths, losses.mean(axis=0), half).n_peaks == 0


def test_nonlinear_width_sweep_with_sample_noise() -> None:
    """What the miniature shows (3 seeds of the initialisation on one draw of the data,
    1,000 full-batch epochs, half the 64 training samples noisy at SNR 0 dB): the test loss
    rises from width 16 to a peak at width 64, where the AE first fits the noisy training
    set, and falls again at width 1024, and the report's detector calls the peak real.
    Measured when written: mean test MSE 0.19 (16), 0.44 (64), 0.32 (1024), band
    half-widths 0.06, 0.03, 0.04. What it does not show: the second descent stays above
    the first minimum, and with the data redrawn per seed as well (``data_seed: null``)
    the seeds' bands are too wide at three seeds for the detector (0.22, 0.45, 0.36 with
    half-widths 0.05, 0.20, 0.13: "flat within the bands"); three widths cannot show a
    first descent either, so the detector names it "rise and fall"."""
    widths = (16, 64, 1024)
    runs = [
        [
            trained_test_loss(
                synthetic(sample_noise=0.5, hidden_width=w, data_seed=0), seed=s, steps=1000
            )
            for w in widths
        ]
        for s in (0, 1, 2)
    ]
    test = np.array([[f["eval_loss"] for f in row] for row in runs])
    train = np.array([[f["train_mse"] for f in row] for row in runs]).mean(axis=0)
    print("widths", widths, "test MSE", test.mean(axis=0), "train MSE", train)
    half = stats.t.ppf(0.975, 2) * test.std(axis=0, ddof=1) / math.sqrt(3)
    found = find_descents(widths, test.mean(axis=0), half)
    assert found.n_peaks == 1 and found.peak_x == [64.0], (test.mean(axis=0), half)
    assert found.descent_type == "rise and fall"
    assert train[1] < 0.1 and train[2] < 0.02, "both wide models fit the noisy samples"
    assert test.mean(axis=0)[2] > test.mean(axis=0)[0], "the second descent stays above"


def test_clean_nonlinear_autoencoder_improves_with_width() -> None:
    narrow, wide = (
        trained_test_loss(synthetic(hidden_width=w), seed=0, steps=600)["eval_loss"]
        for w in (8, 256)
    )
    assert wide < narrow


def test_optimizer_protocol_runs_the_synthetic_workload() -> None:
    ctx = context(
        "optimizer", "adamw", "ae-synthetic", options={**MINI, "sample_noise": 0.5}, steps=30
    )
    result = optimizer_protocol.run(ctx)
    m = result.metrics
    assert m["eval_loss"].value > 0 and m["eval_loss"].ci_low < m["eval_loss"].value
    assert m["eval_loss"].n == 500 and m["val_eval_loss"].value > 0
    assert result.curves["eval_loss"].x[-1] == 30
    assert result.curves["train_loss"].y[-1] < result.curves["train_loss"].y[0]


# --------------------------------------------------------------------------- detector


def test_reconstruction_detector_scores_anomalies_higher_through_the_protocol() -> None:
    ctx = context(
        "detector",
        "ae-recon",
        "ae-anomaly-synthetic",
        hparams={"hidden_width": 64, "steps": 400, "lr": 3e-3},
        options={"n_train": 300, "n_test": 200, "n_val": 100},
    )
    result = detector_protocol.run(ctx)
    assert result.metrics["auroc"].value > 0.9
    assert result.metrics["val_auroc"].value > 0.9
    assert result.info["n_in"] == 200 and result.info["n_out"] == 200


def test_anomaly_workload_contaminates_the_fit_data_as_stated() -> None:
    wl = AnomalySynthetic(n_train=200, contamination=0.1, sample_noise=0.25, noise_std=0.0)
    wl.bind_run_seed(0)
    assert len(wl.contaminated) == 20 and len(wl.noisy_samples) == 50
    # Clean normal rows (neither anomalous nor noisy) span exactly latent_dim dimensions.
    normal = np.setdiff1d(np.arange(200), np.union1d(wl.contaminated, wl.noisy_samples))
    s = torch.linalg.svdvals(wl.x_train[normal].double())
    assert s[7] > 1.0 and s[8] < 1e-4 * s[0]


def test_detector_flattens_images_and_ignores_the_model() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g) * 0.1
    det = ReconstructionDetector(hidden_width=32, bottleneck=4, steps=200, lr=3e-3)
    det.fit(None, [(x[:32], torch.zeros(32)), (x[32:], torch.zeros(32))])
    odd = torch.rand(16, 1, 8, 8, generator=g)  # ten times the spread of the fit data
    s_in, s_out = det.score(None, x), det.score(None, odd)
    assert s_in.shape == (64,) and auroc(s_in.numpy(), s_out.numpy()) > 0.95
    assert isinstance(det.ae, Autoencoder) and det.ae.input_dim == 64
