"""Our OOD metrics agree with scikit-learn (OOD positive), ties included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from benchmark.metrics.ood import auroc, average_precision, fpr_at_tpr, ood_metrics, roc_curve


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
