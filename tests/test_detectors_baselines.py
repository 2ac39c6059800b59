"""MSP, energy, ODIN, Mahalanobis, kNN and ReAct against independent references on known
inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors
from torch import nn

from benchmark.protocols import detector
from plugins.detectors.baselines import Energy, MaxSoftmax
from plugins.detectors.knn import KNN
from plugins.detectors.mahalanobis import Mahalanobis
from plugins.detectors.odin import ODIN
from plugins.detectors.react import ReAct

from .helpers import context


class FeatureModel(nn.Module):
    """Features = a fixed ReLU map of the inputs; logits = last_layer(features)."""

    def __init__(self, d_in: int = 6, d: int = 5, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(d_in, d)
        self.head = nn.Linear(d, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(x))

    @property
    def last_layer(self) -> nn.Linear:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))


def _data(n: int = 300, d_in: int = 6, classes: int = 3, seed: int = 0):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, d_in, generator=g) + 2.0 * nn.functional.one_hot(y, d_in).float()
    return x, y


def _batches(x: torch.Tensor, y: torch.Tensor, size: int = 64) -> list:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


# Fixed logits (the model is the identity, so a batch is its own logits): a uniform row, a
# two-class row with softmax (1/4, 3/4), a confident row and a row whose naive exp
# overflows float32.
LOGITS = [
    [0.0, 0.0, 0.0],
    [0.0, math.log(3.0), -math.inf],
    [4.0, -1.0, 2.5],
    [1000.0, 999.0, -20.0],
]


def _lse(row: list[float]) -> float:
    top = max(row)
    return top + math.log(math.fsum(math.exp(v - top) for v in row))


def _softmax_max(row: list[float], t: float = 1.0) -> float:
    scaled = [v / t for v in row]
    return math.exp(max(scaled) - _lse(scaled))


def test_msp_is_the_negated_max_softmax_on_fixed_logits() -> None:
    x = torch.tensor(LOGITS, dtype=torch.float64)
    got = MaxSoftmax().score(nn.Identity(), x).double().numpy()
    np.testing.assert_allclose(got, [-_softmax_max(r) for r in LOGITS], rtol=1e-6, atol=1e-7)
    assert got[0] == pytest.approx(-1 / 3) and got[1] == pytest.approx(-0.75)


@pytest.mark.parametrize("t", [1.0, 0.5, 2.0, 10.0])
def test_energy_is_the_free_energy_at_its_temperature(t: float) -> None:
    # Liu et al. 2020: E(x; T) = -T log sum_c exp(f_c(x) / T); higher = more OOD.
    x = torch.tensor(LOGITS, dtype=torch.float64)
    got = Energy(temperature=t).score(nn.Identity(), x).double().numpy()
    expected = [-t * _lse([v / t for v in r]) for r in LOGITS]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert got[0] == pytest.approx(-t * math.log(3.0))  # uniform row: -T log C


def test_odin_temperature_scaling_on_fixed_logits() -> None:
    x = torch.tensor(LOGITS, dtype=torch.float64)
    for t in (1.0, 1000.0, 7.0):
        got = ODIN(temperature=t, epsilon=0.0).score(nn.Identity(), x).double().numpy()
        expected = [-_softmax_max(r, t) for r in LOGITS]
        # ODIN scales in float32: 1000/7 carries ~1e-5 of absolute error in the exponent.
        np.testing.assert_allclose(got, expected, rtol=5e-5, atol=1e-7)


def test_mahalanobis_matches_numpy() -> None:
    model = FeatureModel()
    x, y = _data()
    det = Mahalanobis()
    det.fit(model, _batches(x, y))
    f = model.penultimate(x).detach().double().numpy()
    yn = y.numpy()
    means = np.stack([f[yn == c].mean(0) for c in range(3)])
    centred = f - means[yn]
    precision = np.linalg.pinv(centred.T @ centred / len(f))
    q = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    diff = model.penultimate(q).detach().double().numpy()[:, None, :] - means[None]
    expected = np.einsum("bcd,de,bce->bc", diff, precision, diff).min(1)
    np.testing.assert_allclose(det.score(model, q).numpy(), expected, rtol=1e-5, atol=1e-4)
    # The score is the squared distance to the *closest* class mean: a class mean scores 0.
    assert det.distances(det.means[1:2].float()).amin().item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("k", [1, 5, 17])
def test_knn_matches_sklearn(k: int) -> None:
    model = FeatureModel()
    x, y = _data()
    det = KNN(k=k, scale_k_to=None)
    det.fit(model, _batches(x, y))
    bank = model.penultimate(x).detach().numpy()
    bank = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
    q_in = torch.randn(50, 6, generator=torch.Generator().manual_seed(3))
    qf = model.penultimate(q_in).detach().numpy()
    qf = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
    dist, _ = NearestNeighbors(n_neighbors=k).fit(bank).kneighbors(qf)
    np.testing.assert_allclose(det.score(model, q_in).numpy(), dist[:, -1], rtol=1e-5, atol=1e-5)


def test_knn_k_scales_with_the_fit_set() -> None:
    model = FeatureModel()
    x, y = _data(n=2000)
    det = KNN()  # k = 50 at 50,000 samples
    det.fit(model, _batches(x, y))
    assert det.k == 2
    small = KNN(k=50, scale_k_to=None)
    small.fit(model, _batches(x[:30], y[:30]))
    assert small.k == 30  # never more than the bank holds


def test_react_threshold_is_the_percentile_and_clips() -> None:
    model = FeatureModel()
    x, y = _data()
    det = ReAct(percentile=90.0)
    det.fit(model, _batches(x, y))
    feats = model.penultimate(x).detach().numpy()
    assert det.threshold == pytest.approx(float(np.percentile(feats.ravel(), 90.0)))
    assert np.mean(feats.ravel() <= det.threshold) == pytest.approx(0.9, abs=0.01)
    q = torch.randn(30, 6) * 3
    h = np.minimum(model.penultimate(q).detach().numpy(), det.threshold)
    logits = h @ model.head.weight.detach().numpy().T + model.head.bias.detach().numpy()
    expected = -np.log(np.exp(logits).sum(1))
    np.testing.assert_allclose(det.score(model, q).numpy(), expected, rtol=1e-5, atol=1e-5)
    # Clipping at the 100th percentile of ID features leaves ID inputs as energy scores them.
    full = ReAct(percentile=100.0)
    full.fit(model, _batches(x, y))
    torch.testing.assert_close(full.score(model, x), Energy().score(model, x))


def test_odin_step_matches_the_analytic_gradient_and_raises_confidence() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(4, 3)
    x = torch.randn(64, 4)
    det = ODIN(temperature=1000.0, epsilon=0.01)
    with torch.inference_mode():  # the protocol scores under inference mode
        x_inf = x.clone()
        perturbed = det.perturb(linear, x_inf)
        scores = det.score(linear, x_inf)
    # d/dx CE(Wx/T + b/T, ŷ) = Wᵀ(softmax(logits/T) − onehot(ŷ)) / T for a linear model.
    logits = linear(x).detach() / 1000.0
    grad = (torch.softmax(logits, -1) - nn.functional.one_hot(logits.argmax(-1), 3)) @ (
        linear.weight.detach() / 1000.0
    )
    torch.testing.assert_close(perturbed, x - 0.01 * grad.sign())
    with torch.no_grad():
        before = torch.softmax(linear(x) / 1000.0, -1).amax(-1)
        after = torch.softmax(linear(perturbed) / 1000.0, -1).amax(-1)
    assert bool((after > before).all())
    torch.testing.assert_close(scores, -after)


def test_odin_without_perturbation_is_temperature_scaled_msp() -> None:
    model = FeatureModel()
    x = torch.randn(20, 6)
    expected = -torch.softmax(model(x) / 7.0, -1).amax(-1)
    torch.testing.assert_close(ODIN(temperature=7.0, epsilon=0.0).score(model, x), expected)
    with pytest.raises(TypeError, match="continuous"):
        ODIN().score(model, torch.zeros(2, 6, dtype=torch.long))


@pytest.mark.parametrize("method", ["odin", "mahalanobis", "knn", "react"])
def test_detectors_through_the_protocol(method: str) -> None:
    r = detector.run(context("detector", method, "digits-cnn", options={"ood": "noise"}))
    m = r.metrics
    assert {"auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr", "fit_time"} <= set(m)
    assert {"aupr_in_trapezoid", "aupr_out_trapezoid", "fpr_at_95_tpr_id"} <= set(m)
    assert m["fpr_at_95_tpr_id"].n == r.info["n_out"]  # Wilson over the OOD items
    assert "type1_error_at_alpha" not in m  # none of these defines a p-value
    assert m["auroc"].value > 0.9, m["auroc"].value


def test_feature_capabilities_are_typed_protocols() -> None:
    """``penultimate`` and ``last_layer`` are the PenultimateFeatures and LastLayer
    Protocols, tested with isinstance: a model with them is read, one without is refused
    with the reason, and a ``last_layer`` that is not an nn.Linear is refused too."""
    from benchmark.kinds.detector import PenultimateFeatures
    from benchmark.kinds.workload import LastLayer
    from plugins.detectors.features import last_layer, penultimate

    class Featured(nn.Module):
        def __init__(self, head: nn.Module) -> None:
            super().__init__()
            self.body = nn.Linear(3, 4)
            self.head = head

        def penultimate(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

        @property
        def last_layer(self) -> nn.Module:
            return self.head

    model, plain = Featured(nn.Linear(4, 2)), nn.Sequential(nn.Linear(3, 2))
    assert isinstance(model, PenultimateFeatures) and isinstance(model, LastLayer)
    assert not isinstance(plain, PenultimateFeatures) and not isinstance(plain, LastLayer)
    assert penultimate(model, torch.ones(5, 3)).shape == (5, 4)
    assert last_layer(model) is model.head
    with pytest.raises(TypeError, match="no penultimate"):
        penultimate(plain, torch.ones(5, 3))
    with pytest.raises(TypeError, match="no last_layer"):
        last_layer(plain)
    with pytest.raises(TypeError, match="no last_layer"):
        last_layer(Featured(nn.Identity()))
