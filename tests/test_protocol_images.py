"""Compressor, detector and security-split protocols on the digits CNN (seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.kinds import MethodSpec
from benchmark.protocols import compressor, detector, security_split
from benchmark.protocols.base import Diverged
from plugins.workloads.images import ImageClassification, load_images, load_ood

from .helpers import context, workload

DIGITS = {"ood": "noise"}


def test_digits_model_is_trained_and_cached() -> None:
    w = workload("detector", "digits-cnn", **DIGITS)
    cpu = torch.device("cpu")
    assert w.evaluate(w.model(cpu), cpu) > 0.9
    assert w.evaluate(w.fresh_model(0, cpu), cpu) < 0.3
    again = ImageClassification(
        dataset="digits",
        width=8,
        hidden=64,
        epochs=15,
        lr=3e-3,
        batch_size=32,
        ood="noise",
        fit_samples=1000,
    )
    for k, v in w._state.items():
        assert torch.equal(v, again._state[k]), "loaded from the cache, not retrained"
    a = w.labelled_batches("train", 10, 4, seed=1, device=cpu)
    b = w.labelled_batches("train", 10, 4, seed=1, device=cpu)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    assert [len(x[1]) for x in a] == [4, 4, 2]


def test_mnist_and_animal_assets_load() -> None:
    x, y = load_images("mnist-5k")
    assert x.shape == (5000, 1, 28, 28) and sorted(set(y.tolist())) == list(range(10))
    assert np.bincount(y).min() == 500 and x.min() >= 0.0 and x.max() <= 1.0
    ood = load_ood("animal-mnist", 50, 8, seed=0)
    assert ood.shape == (50, 1, 8, 8) and ood.min() >= 0.0 and ood.max() <= 1.0


def test_magnitude_prune_is_reported_masked_dense() -> None:
    r = compressor.run(
        context(
            "compressor", "magnitude-prune", "digits-cnn", options=DIGITS, hparams={"sparsity": 0.6}
        )
    )
    m = r.metrics
    assert r.info["representation"] == "masked-dense"
    assert m["latency_speedup"].value is None and "masked-dense" in m["latency_speedup"].reason
    assert m["params_kept_ratio"].value == 1.0
    # Biases and BatchNorm parameters are not pruned: the non-zero share is a little above.
    assert 0.4 <= m["nonzero_params_ratio"].value < 0.5


def test_structured_prune_shrinks_physically() -> None:
    r = compressor.run(
        context(
            "compressor", "structured-prune", "digits-cnn", options=DIGITS, hparams={"amount": 0.5}
        )
    )
    m = r.metrics
    assert r.info["representation"] == "physical"
    assert m["params_kept_ratio"].value < 1.0 and m["bytes_kept_ratio"].value < 1.0
    assert m["latency_speedup"].value is not None and m["latency_speedup"].n >= 20
    assert m["quality_before"].value > 0.9


def test_structured_prune_at_zero_keeps_outputs() -> None:
    from plugins.compressors.structured import StructuredPrune

    w = workload("compressor", "digits-cnn", **DIGITS)
    cpu = torch.device("cpu")
    model, x = w.model(cpu), w.example_inputs(16, cpu)
    same = StructuredPrune(amount=0.0).compress(w.model(cpu), None)
    torch.testing.assert_close(same(x), model(x))
    small = StructuredPrune(amount=0.25).compress(w.model(cpu), None)
    assert small.head.fc1.out_features == 48 and small.head.fc2.in_features == 48


@pytest.mark.parametrize("method", ["msp", "energy"])
def test_detectors_separate_noise(method: str) -> None:
    r = detector.run(context("detector", method, "digits-cnn", options=DIGITS))
    m = r.metrics
    assert m["auroc"].value > 0.9
    assert {"aupr_in", "aupr_out", "fpr_at_95_tpr", "fit_time", "latency_per_sample"} <= set(m)
    assert r.info["positive_class"] == "OOD" and r.curves["roc"].x[0] == 0.0


class _NaNDetector:
    def fit(self, model, batches):  # type: ignore[no-untyped-def]
        self.fitted = True

    def score(self, model, batch):  # type: ignore[no-untyped-def]
        return torch.full((len(batch),), float("nan"))


class _UniformPValues(_NaNDetector):
    def score(self, model, batch):  # type: ignore[no-untyped-def]
        return torch.rand(len(batch))

    def pvalue(self, model, batch):  # type: ignore[no-untyped-def]
        return torch.rand(len(batch), generator=torch.Generator().manual_seed(len(batch)))


def test_nan_scores_diverge_and_pvalues_give_type1_error() -> None:
    bad = MethodSpec(kind="detector", name="nan", factory=_NaNDetector)
    with pytest.raises(Diverged, match="non-finite"):
        detector.run(context("detector", "nan", "digits-cnn", options=DIGITS, method_spec=bad))
    pv = MethodSpec(kind="detector", name="pv", factory=_UniformPValues)
    r = detector.run(context("detector", "pv", "digits-cnn", options=DIGITS, method_spec=pv))
    t1e = r.metrics["type1_error_at_alpha"]
    assert t1e.n == 270 and 0.01 < t1e.value < 0.1  # the digits' test split


def _split(method: str, **kw: object):  # type: ignore[no-untyped-def]
    return security_split.run(
        context(
            "security_split",
            method,
            "digits-cnn",
            options=DIGITS,
            attacks=["finetune", "untrusted-only"],
            **kw,
        )
    )


def test_layer_split_reproduces_outputs_and_counts_flops() -> None:
    r = _split("layer-split")
    m = r.metrics
    assert m["max_abs_output_diff"].value <= 1e-5
    assert m["quality"].value == m["quality_original"].value
    w = workload("security_split", "digits-cnn", **DIGITS)
    model = w.model(torch.device("cpu"))
    conv, fc2 = model.features[0], model.head.fc2
    b = 64
    conv_flops = 2 * b * 8 * 8 * conv.out_channels * conv.in_channels * 9
    fc_flops = 2 * b * fc2.in_features * fc2.out_features
    from benchmark.measure.flops import count_flops

    x = w.example_inputs(b, torch.device("cpu"))
    total = count_flops(lambda: model(x))
    assert m["trusted_flops_share"].value == pytest.approx((conv_flops + fc_flops) / total)
    assert m["crossings"].value == 4  # in, back after conv+BN, in for fc2, back with logits
    parts = (
        m["untrusted_compute_time"].value
        + m["trusted_compute_time"].value * 10.0
        + m["modelled_transfer_time"].value
    )
    assert m["modelled_latency"].value == pytest.approx(parts)


def test_exposed_split_is_ranked_worst_and_trusted_best() -> None:
    exposed, secure = _split("no-split").metrics, _split("all-trusted").metrics
    assert exposed["trusted_flops_share"].value == 0.0
    assert exposed["attack_recovered_ratio"].value == 1.0
    assert secure["trusted_flops_share"].value == 1.0 and secure["trusted_bytes_share"].value == 1.0
    assert secure["attack_recovered_ratio"].value == 0.0
    assert secure["attacker_start_quality"].value < 0.3 < exposed["attack_finetune_quality"].value
    layer = _split("layer-split").metrics
    assert secure["attack_recovered_ratio"].value <= layer["attack_recovered_ratio"].value
    assert layer["attack_recovered_ratio"].value <= exposed["attack_recovered_ratio"].value


def test_deployment_model_is_a_protocol_option() -> None:
    r = _split("all-trusted", protocol={"trusted_slowdown": 100.0, "link_latency_s": 0.5})
    m = r.metrics
    assert r.info["deployment"]["trusted_slowdown"] == 100.0
    assert m["crossings"].value == 2  # inputs in, logits out
    assert m["modelled_transfer_time"].value == pytest.approx(
        2 * 0.5 + m["crossing_bytes"].value / 1e9
    )
    assert m["modelled_latency"].value == pytest.approx(
        m["untrusted_compute_time"].value
        + 100.0 * m["trusted_compute_time"].value
        + m["modelled_transfer_time"].value
    )
