"""The statistical OOD framework: its pieces against hand computations, and its defining
property: on in-distribution inputs exchangeable with the calibration inputs the final
p-values are uniform, so flagging p ≤ α raises false alarms at rate α (at most)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from benchmark.protocols import detector
from plugins.detectors import pvalues
from plugins.detectors.statistical import StatisticalOOD, reduce_channels, tracked_layers
from plugins.workloads.images import BNConvNet

from .helpers import context

# ---------------------------------------------------------------- combination functions


def test_simes_by_hand() -> None:
    p = torch.tensor([[0.01, 0.04, 0.03, 0.5], [0.9, 0.8, 0.7, 0.6]], dtype=torch.float64)
    # sorted row 0: .01 .03 .04 .5 -> 4·.01/1, 4·.03/2, 4·.04/3, 4·.5/4 -> min .04
    # sorted row 1: .6 .7 .8 .9 -> 2.4, 1.4, 1.0667, 0.9 -> .9
    torch.testing.assert_close(pvalues.simes(p), torch.tensor([0.04, 0.9], dtype=torch.float64))
    assert pvalues.simes(torch.tensor([[1.0, 1.0]], dtype=torch.float64)).item() == 1.0


def test_fisher_and_conditional_fisher_by_hand() -> None:
    p = torch.tensor([[0.01, 0.2, 0.05]], dtype=torch.float64)
    full = -2 * (math.log(0.01) + math.log(0.2) + math.log(0.05))
    assert pvalues.fisher(p).item() == pytest.approx(full)
    statistic, _ = stats.combine_pvalues([0.01, 0.2, 0.05], method="fisher")
    assert pvalues.fisher(p).item() == pytest.approx(statistic)
    # p = 0.2 > 0.1 counts as 1 (contributes nothing)
    cond = -2 * (math.log(0.01) + math.log(0.05))
    assert pvalues.conditional_fisher(p).item() == pytest.approx(cond)


def test_empirical_pvalues_match_brute_force_with_ties() -> None:
    rng = np.random.default_rng(0)
    ref = np.round(rng.normal(size=(57, 4)), 1)  # rounding makes ties
    x = np.round(rng.normal(size=(30, 4)) * 1.5, 1)
    ours = pvalues.two_sided(pvalues.sort_reference(torch.from_numpy(ref)), torch.from_numpy(x))
    n = len(ref)
    lower = ((ref[None] <= x[:, None]).sum(1) + 1) / (n + 1)
    upper = ((ref[None] >= x[:, None]).sum(1) + 1) / (n + 1)
    np.testing.assert_allclose(ours.numpy(), np.minimum(1, 2 * np.minimum(lower, upper)))
    s_ref, s = ref[:, 0], x[:, 0]
    right = pvalues.right_sided(torch.from_numpy(np.sort(s_ref)), torch.from_numpy(s))
    np.testing.assert_allclose(right.numpy(), ((s_ref[None] >= s[:, None]).sum(1) + 1) / (n + 1))


# ---------------------------------------------------------------- activations and hooks


def test_tracked_layers_and_reductions() -> None:
    net = BNConvNet(8, 4, 16)
    names = [n for n, _, _ in tracked_layers(net)]
    assert names == ["features.1", "features.3", "features.5", "features.7", "head.fc1", "head.fc2"]
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)
    torch.testing.assert_close(reduce_channels(x, True, "mean"), x.mean((2, 3)))
    torch.testing.assert_close(reduce_channels(x, True, "max"), x.amax((2, 3)))
    both = reduce_channels(x, True, "mean_max")
    assert both.shape == (2, 6)
    tokens = torch.randn(2, 5, 3)  # [B, T, features] into a Linear: channels last
    torch.testing.assert_close(reduce_channels(tokens, False, "max"), tokens.amax(1))
    # Padding (mask False) is left out of both summaries; an input of no tokens gets zeros.
    mask = torch.tensor([[True, True, False, False, False], [False] * 5])
    masked = reduce_channels(tokens, False, "mean_max", mask)
    torch.testing.assert_close(masked[0], torch.cat([tokens[0, :2].mean(0), tokens[0, :2].amax(0)]))
    torch.testing.assert_close(masked[1], torch.zeros(6))
    flat = torch.randn(4, 7)
    assert reduce_channels(flat, False, "mean_max") is not None
    assert reduce_channels(flat, False, "mean_max").shape == (4, 7)  # no positions to reduce


# ---------------------------------------------------------------- the defining property


def _synthetic(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """i.i.d. 8x8 images: in-distribution at shift 0, a brighter distribution otherwise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 1, 1, generator=g) * 0.5
    return (base + 0.3 * torch.randn(n, 1, 8, 8, generator=g) + shift).clamp(0, 1)


@pytest.fixture(scope="module")
def model() -> BNConvNet:
    """A random BatchNorm CNN whose sharpened head predicts several classes on the data."""
    torch.manual_seed(0)
    net = BNConvNet(8, 4, 16).eval()
    with torch.no_grad():
        net.head.fc2.weight.mul_(10.0)
        net.head.fc2.bias.zero_()
    return net


@pytest.mark.parametrize("layer_combine", ["simes", "fisher"])
def test_final_pvalues_are_uniform_in_distribution(model: BNConvNet, layer_combine: str) -> None:
    torch.manual_seed(1)
    det = StatisticalOOD(layer_combine=layer_combine)
    # Many calibration inputs against fewer test inputs: the test p-values share one
    # calibration set, and their CDF given it is uniform only up to O(1/sqrt(n_cal)).
    fit = _synthetic(12000, seed=2)
    det.fit(model, [(fit[i : i + 2000], torch.zeros(2000)) for i in range(0, 12000, 2000)])
    assert len(det.nulls) >= 3, "several predicted classes have their own null"
    assert len(det.calibration) >= 3, "and their own calibration"
    n = 1500
    x = _synthetic(n, seed=3)
    p = torch.cat([det.pvalue(model, x[i : i + 500]) for i in range(0, n, 500)]).numpy()
    if layer_combine == "simes":
        assert stats.kstest(p, "uniform").pvalue > 1e-3
    else:
        # Conditional Fisher sets every p > 0.1 to 1, so inputs with no small channel
        # p-value tie at the bottom of the statistic and get p = 1: super-uniform. Test
        # that there is no excess of small p-values (the one-sided KS alternative).
        assert stats.kstest(p, "uniform", alternative="greater").pvalue > 1e-3
        assert np.mean(p == 1.0) > 0.01
    lo, hi = stats.binom.interval(0.999, n, 0.05)
    assert lo / n <= np.mean(p < 0.05) <= hi / n
    flags = det.flag(model, x[:500])
    assert torch.equal(flags, torch.from_numpy(p[:500] <= det.alpha))
    # The same test rejects shifted inputs: it has power, so its passing above means something.
    q = det.pvalue(model, _synthetic(1000, seed=4, shift=0.15)).numpy()
    assert stats.kstest(q, "uniform").pvalue < 1e-6 and np.mean(q < 0.05) > 0.2
    assert all(not m._forward_pre_hooks for m in model.modules()), "hooks are removed"


def test_uncalibrated_fisher_would_not_control_type1_error(model: BNConvNet) -> None:
    """Layers are dependent, so χ² on −2Σlog p_l is wrong; the empirical calibration is not."""
    torch.manual_seed(1)
    det = StatisticalOOD()
    fit = _synthetic(12000, seed=2)
    det.fit(model, [(fit, torch.zeros(12000))])
    x = _synthetic(1500, seed=3)
    chi2_p = stats.chi2.sf(det.statistic(model, x).numpy(), df=2 * len(det.layer_names))
    assert stats.kstest(chi2_p, "uniform").pvalue < 1e-6
    assert stats.kstest(det.pvalue(model, x).numpy(), "uniform").pvalue > 1e-3


def test_end_to_end_reports_type1_error() -> None:
    torch.manual_seed(0)
    r = detector.run(context("detector", "statistical-ood", "digits-cnn", options={"ood": "noise"}))
    # Calibrated on a seeded half (45) of the 89 validation digits (never trained on); the
    # validation AUROC is read off the other 44 and the 89 OOD validation images.
    assert r.info["calibration"].startswith("45 in-distribution inputs disjoint")
    assert r.metrics["val_auroc"].n == 44 + 89
    t1e = r.metrics["type1_error_at_alpha"]
    assert r.info["alpha"] == 0.05 and t1e.n == 270  # the digits' test split
    for name, level in (("type1_error_at_5pct", 0.05), ("type1_error_at_1pct", 0.01)):
        m = r.metrics[name]
        assert m.n == 270 and m.ci_low is not None and m.ci_low <= level
    # 45 calibration inputs: no p-value is below 1/46 > 0.01, so nothing is flagged there.
    assert r.metrics["type1_error_at_1pct"].value == 0.0
    assert r.metrics["auroc"].value > 0.9
    # Noise images are far from digits: the test flags nearly all of them at alpha.
    power = r.metrics["power_at_alpha"]
    assert power.n > 0 and power.value > 0.9


def test_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="reduction"):
        StatisticalOOD(reduction="median")
    with pytest.raises(ValueError, match="calibration_fraction"):
        StatisticalOOD(calibration_fraction=1.0)
    with pytest.raises(ValueError, match="layer_null_fraction"):
        StatisticalOOD(layer_null_fraction=0.0)
