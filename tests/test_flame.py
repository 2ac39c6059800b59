"""FLAME few-shot refinement: the label oracle cannot be overdrawn, FLAME's queries come
from the marginal band and from distinct clusters, and at an equal (small) budget its
labels train a better filter than uniformly drawn ones.

Uses ``fewshot-pair`` on scikit-learn's digits (the same 4-vs-9 merged pair as the MNIST
default, trained in a fraction of the time) so that the file stays within a minute.

The band's default is tuned on other digit pairs (``benchmarks/tune_flame_band.py``), and
the suite reports the no-density ablation (band 1.0) next to every FLAME row.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import yaml
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score

from benchmark.host import Registry
from plugins.detectors.fewshot_pair import BudgetExceeded, FewShotPair, LabelOracle
from plugins.detectors.flame import Flame, marginal_band

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


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


def _tuner() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "tune_flame_band", ROOT / "benchmarks" / "tune_flame_band.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_band_tuning_never_uses_the_benchmarked_pair(tmp_path: Path) -> None:
    tuner = _tuner()
    assert tuner.main(["--dataset", "digits", "--pairs", "4,1"]) == 2  # shares the 4
    out = tmp_path / "tune.json"
    args = ["--dataset", "digits", "--pairs", "3,5", "--seeds", "0", "--budgets", "6"]
    assert tuner.main([*args, "--bands", "0.5", "1.0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {r["pair"] for r in result["rows"]} == {"3,5"}
    assert result["best_with_density"] == 0.5  # the only band below 1 offered
    assert all(0.0 <= a <= 1.0 for r in result["rows"] for a in r["heldout_auroc"])


def test_band_tuning_drops_every_held_out_image_the_benchmark_scores() -> None:
    """Tuning pairs draw their held-out proposals from the same held-out digits as the
    benchmarked pair: any image both share is dropped before tuning."""
    from plugins.detectors.fewshot_pair import FewShotPair

    tuner = _tuner()
    benchmarked = FewShotPair(dataset="digits")
    pair = FewShotPair(dataset="digits", target=3, lookalike=5)
    # Plant the overlap the real datasets can have: one of the benchmarked pair's
    # held-out images among the tuning pair's test proposals.
    pair.test_x = torch.cat([pair.test_x, benchmarked.test_x[:1]])
    pair.test_fp = np.concatenate([pair.test_fp, benchmarked.test_fp[:1]])
    assert tuner.drop_benchmarked_images(pair, benchmarked) >= 1
    taken = set(tuner._image_keys(torch.cat([benchmarked.test_x, benchmarked.val_x])))
    held = tuner._image_keys(torch.cat([pair.test_x, pair.val_x]))
    assert not taken.intersection(held)
    assert len(pair.test_x) == len(pair.test_fp) and len(pair.val_x) == len(pair.val_fp)


def test_default_band_keeps_the_density_step_and_the_suite_reports_its_ablation() -> None:
    registered = Registry().method("detector", "flame").defaults["band"]
    signature = inspect.signature(Flame).parameters["band"].default
    assert registered == signature < 1.0  # a band of 1.0 would drop the density step
    suite = yaml.safe_load((ROOT / "suites" / "detectors-fewshot.yaml").read_text())
    rows = [
        m.get("hparams", {})
        for e in suite["experiments"]
        for m in e["methods"]
        if isinstance(m, dict) and m.get("name") == "flame"
    ]
    for budget in {r["budget"] for r in rows if r.get("selection", "flame") == "flame"}:
        flame = [r for r in rows if r["budget"] == budget and r.get("selection") == "flame"]
        bands = {r.get("band", registered) for r in flame}
        assert bands == {registered, 1.0}, (budget, bands)


def test_band_one_is_no_density_step() -> None:
    """The ablation row ``band: 1.0`` must be k-means on the whole pool: no mixture fitted,
    no reordering of the candidates by its margin."""
    from plugins.detectors.flame import diverse_picks, marginal_band

    z = np.random.default_rng(0).normal(size=(60, 3))
    assert np.array_equal(marginal_band(z, 1.0, seed=0), np.arange(60))
    picks = diverse_picks(z, marginal_band(z, 1.0, seed=0), 5, seed=0)
    assert np.array_equal(picks, diverse_picks(z, np.arange(60), 5, seed=0))
