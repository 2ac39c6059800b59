"""FLAME few-shot refinement: the label oracle cannot be overdrawn, FLAME's queries come
from the marginal band and from distinct clusters, and at an equal (small) budget its
labels train a better filter than uniformly drawn ones.

Uses ``fewshot-pair`` on scikit-learn's digits (the same 4-vs-9 merged pair as the MNIST
default, trained in a fraction of the time) so that the file stays within a minute.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score

from benchmark.workloads.fewshot import BudgetExceeded, FewShotPair, LabelOracle
from plugins.detectors.flame import Flame, marginal_band

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pair() -> FewShotPair:
    return FewShotPair(dataset="digits")


def test_oracle_enforces_its_budget() -> None:
    oracle = LabelOracle(np.array([0, 1, 1, 0, 1]), budget=3)
    assert oracle.query([1, 2]).tolist() == [1, 1]
    assert oracle.query([2]).tolist() == [1]  # already revealed: free
    assert oracle.used == 2
    with pytest.raises(BudgetExceeded):
        oracle.query([0, 3])  # two new labels, one left
    assert oracle.used == 2  # a refused query reveals nothing
    oracle.restrict(10)  # cannot raise the budget
    assert oracle.budget == 3
    oracle.restrict(2)
    with pytest.raises(BudgetExceeded):
        oracle.query([4])


def test_proposals_are_the_confused_pair(pair: FewShotPair) -> None:
    # The generic model merges 4 and 9: its proposals hold both, each a large share.
    assert 0.25 < pair.pool_fp.mean() < 0.75
    assert len(list(pair.test_batches("in", CPU))) and len(list(pair.test_batches("out", CPU)))


@pytest.mark.parametrize("selection", ["flame", "random", "uncertainty"])
def test_no_selection_reads_more_than_its_budget(pair: FewShotPair, selection: str) -> None:
    torch.manual_seed(0)
    det = Flame(budget=7, selection=selection)
    det.fit(pair.model(CPU), pair.fit_batches(CPU))
    assert pair.oracle is not None and pair.oracle.used == 7
    assert len(set(det.queried.tolist())) == 7


def test_flame_queries_lie_in_the_band_and_in_distinct_clusters(pair: FewShotPair) -> None:
    torch.manual_seed(0)
    det = Flame(budget=10, band=0.25)
    det.fit(pair.model(CPU), pair.fit_batches(CPU))
    with torch.no_grad():
        feats = pair.model(CPU).penultimate(pair.pool_x).numpy()
    zz = det._pca.transform(feats)
    band = set(det.band_indices.tolist())
    assert len(band) == round(0.25 * len(zz))
    assert set(det.queried.tolist()) <= band
    # The band is the set of smallest mixture margins: recomputing it gives the same set.
    assert set(marginal_band(zz, 0.25, det._seed).tolist()) == band
    # Diversity: the 10 queries fall in 10 different k-means clusters of the band.
    # (Same candidate order and seed as the detector, so the same clustering.)
    km = KMeans(10, n_init=4, random_state=det._seed).fit(zz[det.band_indices])
    clusters = km.predict(zz[det.queried])
    assert len(set(clusters.tolist())) == 10
    for q, c in zip(det.queried, clusters, strict=True):  # each the member nearest its centroid
        members = det.band_indices[km.labels_ == c]
        dist = ((zz[members] - km.cluster_centers_[c]) ** 2).sum(-1)
        assert members[np.argmin(dist)] == q


def _auroc(pair: FewShotPair, selection: str, budget: int, seed: int) -> float:
    torch.manual_seed(seed)
    det = Flame(budget=budget, selection=selection)
    model = pair.model(CPU)
    det.fit(model, pair.fit_batches(CPU))
    return float(roc_auc_score(pair.test_fp, det.score(model, pair.test_x).numpy()))


def test_flame_beats_random_sampling_at_equal_budget(pair: FewShotPair) -> None:
    flame = [_auroc(pair, "flame", 10, s) for s in range(5)]
    random = [_auroc(pair, "random", 10, s) for s in range(5)]
    assert np.mean(flame) > np.mean(random), (flame, random)
