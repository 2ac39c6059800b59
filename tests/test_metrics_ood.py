"""Our OOD metrics agree with scikit-learn (OOD positive), ties included; the trapezoid
AUPR with OpenOOD's definition; FPR@95%TPR under both conventions with a reference
written out here."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from benchmark.metrics.ood import (
    aupr_trapezoid,
    auroc,
    average_precision,
    fpr_at_tpr,
    fpr_at_tpr_id,
    ood_metrics,
    roc_curve,
)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(ties: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    s_in, s_out = rng.normal(size=300), rng.normal(0.8, size=211)
    if ties:
        s_in, s_out = np.round(s_in, 1), np.round(s_out, 1)
    y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
    s = np.r_[s_in, s_out]
    m = ood_metrics(s_in, s_out)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert m["aupr_out"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert m["aupr_in"] == pytest.approx(skm.average_precision_score(1 - y, -s), abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert m["fpr_at_95_tpr"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)], abs=1e-12)
    ours = roc_curve(s_in, s_out)
    np.testing.assert_allclose(ours[0], fpr, atol=1e-12)
    np.testing.assert_allclose(ours[1], tpr, atol=1e-12)


def test_known_values() -> None:
    assert auroc([0, 1], [2, 3]) == 1.0
    assert auroc([2, 3], [0, 1]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    assert average_precision([0.1], [0.9, 0.8]) == 1.0
    assert fpr_at_tpr([0.0, 0.5, 1.0], [2.0, 3.0]) == 0.0


def test_non_finite_scores_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        auroc([0.0, np.nan], [1.0])


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_trapezoid_aupr_is_openoods(ties: bool, seed: int) -> None:
    # OpenOOD: sklearn.metrics.auc(recall, precision) over precision_recall_curve, with
    # ID positive (scores negated) for AUPR-in and OOD positive for AUPR-out.
    rng = np.random.default_rng(seed)
    s_in, s_out = rng.normal(size=250), rng.normal(0.7, size=180)
    if ties:
        s_in, s_out = np.round(s_in, 1), np.round(s_out, 1)
    y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
    s = np.r_[s_in, s_out]
    m = ood_metrics(s_in, s_out)
    p_out, r_out, _ = skm.precision_recall_curve(y, s)
    p_in, r_in, _ = skm.precision_recall_curve(1 - y, -s)
    assert m["aupr_out_trapezoid"] == pytest.approx(skm.auc(r_out, p_out), abs=1e-12)
    assert m["aupr_in_trapezoid"] == pytest.approx(skm.auc(r_in, p_in), abs=1e-12)
    # Not the same figure as average precision: the names must not be swapped.
    assert abs(m["aupr_out_trapezoid"] - m["aupr_out"]) > 1e-4


def test_trapezoid_and_average_precision_on_a_hand_example() -> None:
    # OOD scores 3, 1; ID 2. (recall, precision) down the ranking: (1/2, 1), (1/2, 1/2),
    # (1, 2/3). AP = 1/2·1 + 1/2·2/3 = 5/6. Trapezoid from (0, 1): 1/2·(1 + 1)/2 + 0 +
    # 1/2·(1/2 + 2/3)/2 = 19/24, below AP: it joins (1/2, 1/2) to (1, 2/3) by a line.
    assert average_precision([2.0], [3.0, 1.0]) == pytest.approx(5 / 6)
    assert aupr_trapezoid([2.0], [3.0, 1.0]) == pytest.approx(19 / 24)


def _fpr95_ood_positive(s_in: np.ndarray, s_out: np.ndarray) -> float:
    """Highest threshold flagging (score >= t) at least 95% of OOD; the ID share flagged."""
    t = max(v for v in s_out if np.mean(s_out >= v) >= 0.95)
    return float(np.mean(s_in >= t))


def _fpr95_id_positive(s_in: np.ndarray, s_out: np.ndarray) -> float:
    """Lowest threshold accepting (score <= t) at least 95% of ID; the OOD share accepted."""
    t = min(v for v in s_in if np.mean(s_in <= v) >= 0.95)
    return float(np.mean(s_out <= t))


def test_fpr_at_95_tpr_both_conventions_on_fixed_scores() -> None:
    s_in = np.arange(20.0)  # 0..19
    s_out = 15.0 + 2.0 * np.arange(20)  # 15, 17, ..., 53
    # OOD positive: t = 17 flags 19/20 OOD and the ID scores 17, 18, 19: 3/20.
    # ID positive: t = 18 accepts 19/20 ID and the OOD scores 15, 17: 2/20.
    assert fpr_at_tpr(s_in, s_out, 0.95) == pytest.approx(0.15)
    assert fpr_at_tpr_id(s_in, s_out, 0.95) == pytest.approx(0.10)
    m = ood_metrics(s_in, s_out)
    assert (m["fpr_at_95_tpr"], m["fpr_at_95_tpr_id"]) == pytest.approx((0.15, 0.10))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fpr_at_95_tpr_both_conventions_against_a_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s_in = np.round(rng.normal(size=137), 1)  # ties on purpose
    s_out = np.round(rng.gamma(2.0, 1.0, size=91), 1)  # skewed: the conventions differ
    m = ood_metrics(s_in, s_out)
    assert m["fpr_at_95_tpr"] == pytest.approx(_fpr95_ood_positive(s_in, s_out), abs=1e-12)
    assert m["fpr_at_95_tpr_id"] == pytest.approx(_fpr95_id_positive(s_in, s_out), abs=1e-12)
