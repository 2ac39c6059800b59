"""Validation splits and test-set intervals (issue 14).

Each workload's validation items are disjoint from its test items and from what the
protocols fit, calibrate or fine-tune on (checked by content or by index, not by size);
the compressor and detector protocols compute their ``val_*`` figures on the validation
split (fake workloads whose two splits give different figures); and the intervals they
attach agree with independent few-line computations (Wilson, DeLong, and the perplexity
interval over documents)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from benchmark.kinds import MethodSpec
from benchmark.kinds.workload import (
    QualityMetric,
    check_split,
    has_validation,
    perplexity_interval,
    proportion_interval,
)
from benchmark.protocols import compressor, detector
from benchmark.protocols.base import RunContext
from benchmark.records import Budget, RunSpec
from plugins.detectors.audit_sim import AuditWorkload
from plugins.detectors.fewshot_pair import FewShotPair
from plugins.workloads.images import SPLIT_SEED, load_images, load_ood, split_indices

from .helpers import registry, workload

CPU = torch.device("cpu")
DIGITS = {"ood": "noise"}


def _keys(x: torch.Tensor | np.ndarray) -> set[bytes]:
    """One key per image (its 8-bit pixels): content, not position."""
    a = x.numpy() if isinstance(x, torch.Tensor) else x
    return {np.rint(img * 255).astype(np.uint8).tobytes() for img in a}


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _delong(neg: np.ndarray, pos: np.ndarray) -> tuple[float, float, float]:
    """AUROC and DeLong's 95% interval by the pairwise definition (O(n·m))."""
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    se = math.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    return auc, auc - 1.959963984540054 * se, auc + 1.959963984540054 * se


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    ("name", "sizes"), [("mnist-cnn", (4000, 750, 250)), ("digits-cnn", (1438, 270, 89))]
)
def test_image_splits_are_disjoint_by_content(name: str, sizes: tuple[int, int, int]) -> None:
    w = workload("compressor", name)
    assert (len(w.x_train), len(w.x_test), len(w.x_val)) == sizes
    train, test, val = _keys(w.x_train), _keys(w.x_test), _keys(w.x_val)
    assert len(test) > 0.99 * sizes[1] and len(val) > 0.99 * sizes[2]
    assert not (val & test) and not (val & train) and not (test & train)
    assert has_validation(w) and str(sizes[2]) in w.validation
    # The protocols' data: calibration/fine-tuning/fit batches come from train only.
    drawn = _keys(torch.cat([x for x, _ in w.labelled_batches("train", 10**6, 512, 3, CPU)]))
    assert drawn == train and not (drawn & val)
    val_drawn = _keys(torch.cat([x for x, _ in w.labelled_batches("val", 10**6, 64, 3, CPU)]))
    assert val_drawn == val
    # The held-out pool is the same as before the validation split (cached models stay
    # valid): test then validation, in the permutation's order.
    x, _ = load_images(w.dataset)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    held = perm[: int(len(x) * 0.2)]
    np.testing.assert_array_equal(w.x_test.numpy(), x[held[: sizes[1]]])
    np.testing.assert_array_equal(w.x_val.numpy(), x[held[sizes[1] :]])


@pytest.mark.parametrize("ood", ["animal-mnist", "noise", "mnist-noise", "mnist-rotated"])
def test_image_ood_validation_is_disjoint_from_the_ood_test_set(ood: str) -> None:
    test, val = load_ood(ood, 750, 28, SPLIT_SEED), load_ood(ood, 250, 28, SPLIT_SEED, "val")
    assert len(_keys(val) & _keys(test)) == 0
    if ood.startswith("mnist-"):  # shifted copies of the split's own digits
        x, _ = load_images("mnist-5k")
        idx = split_indices(len(x))
        assert not np.array_equal(val, test[:250])
        assert len(idx["val"]) == 250 and not set(idx["val"]) & set(idx["test"])


def test_image_detector_side_serves_both_splits() -> None:
    w = workload("detector", "mnist-cnn", ood="animal-mnist")
    in_test = torch.cat(list(w.test_batches("in", CPU)))
    in_val = torch.cat(list(w.test_batches("in", CPU, split="val")))
    out_test = torch.cat(list(w.test_batches("out", CPU)))
    out_val = torch.cat(list(w.test_batches("out", CPU, split="val")))
    assert (len(in_test), len(in_val), len(out_test), len(out_val)) == (750, 250, 750, 250)
    assert not (_keys(in_val) & _keys(in_test)) and not (_keys(out_val) & _keys(out_test))
    fit = torch.cat([x for x, _ in w.fit_batches(CPU)])
    assert not (_keys(fit) & _keys(in_val)) and not (_keys(fit) & _keys(in_test))
    with pytest.raises(ValueError, match="split"):
        next(iter(w.test_batches("in", CPU, split="train")))


# --------------------------------------------------------------------------- few-shot, audit


def test_fewshot_validation_proposals_are_disjoint_from_test_and_pool() -> None:
    pair = FewShotPair(dataset="digits")
    pool, test, val = _keys(pair.pool_x), _keys(pair.test_x), _keys(pair.val_x)
    assert val and not (val & test) and not (val & pool)
    assert val <= _keys(pair.generic.x_val) and test <= _keys(pair.generic.x_test)
    v_in = torch.cat(list(pair.test_batches("in", CPU, "val")))
    v_out = torch.cat(list(pair.test_batches("out", CPU, "val")))
    assert len(v_in) == int((pair.val_fp == 0).sum()) and len(v_out) == int(pair.val_fp.sum())
    assert len(v_in) + len(v_out) == len(pair.val_x)


def test_audit_validation_datasets_are_fresh_draws() -> None:
    wl = AuditWorkload(n_samples=200, n_datasets=400, val_datasets=200)
    for which in ("in", "out"):
        test, val = wl.datasets(which), wl.datasets(which, "val")
        assert test.shape == (400, 200) and val.shape == (200, 200)
        assert wl.stream(which, "val") != wl.stream(which, "test")
        rows = {tuple(r.tolist()) for r in test}
        assert not any(tuple(r.tolist()) in rows for r in val)
        # The test stream is the one the workload always used (committed numbers hold).
        rng = np.random.default_rng([0, 0 if which == "in" else 1, 200])
        expected = wl.sim.decisions(wl.stance[which], (400, 200), rng)
        np.testing.assert_array_equal(test.numpy(), expected)
    # Same policy, fresh data: the validation rate is close to the test rate.
    assert float(wl.datasets("out", "val").mean()) == pytest.approx(
        float(wl.datasets("out").mean()), abs=0.01
    )
    assert AuditWorkload(val_datasets=0).validation is None


# --------------------------------------------------------------------------- text


def test_textcls_validation_is_disjoint_and_train_test_unchanged() -> None:
    from plugins.workloads.textcls import (
        balanced_split,
        balanced_splits,
        load_labelled_texts,
    )

    _, labels, _ = load_labelled_texts("kjv-testament", None, "text", "label")
    train, test, val = balanced_splits(labels, 2000, 500, 200)
    old_train, old_test = balanced_split(labels, 2000, 500)
    np.testing.assert_array_equal(train, old_train)  # the cached model's training data
    np.testing.assert_array_equal(test, old_test)
    assert len(val) == 400 and np.bincount(labels[val]).tolist() == [200, 200]
    assert not set(val) & set(train) and not set(val) & set(test)
    # The split's own draw does not depend on how many validation items are asked for.
    t2, s2, v2 = balanced_splits(labels, 2000, 500, 50)
    assert (t2 == train).all() and (s2 == test).all() and set(v2) <= set(val)


@pytest.mark.slow
def test_minilm_workload_serves_a_disjoint_validation_split() -> None:
    from plugins.workloads.textcls import TextClassification, load_ood_texts

    # The small configuration of test_workloads_pretrained (the same cached model: the
    # validation size is not part of its key).
    wl = TextClassification(
        train_per_class=48, test_per_class=16, val_per_class=8, epochs=1, fit_samples=32
    )
    assert (len(wl.train_ids), len(wl.test_ids), len(wl.val_ids)) == (96, 32, 16)
    assert has_validation(wl) and wl.y_val.tolist().count(0) == 8
    texts = load_ood_texts("fortune")
    pick = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
    assert wl._ood_rows["test"] == wl._encode([texts[i] for i in pick[:32]], wl.max_len)
    assert wl._ood_rows["val"] == wl._encode([texts[i] for i in pick[32:48]], wl.max_len)
    in_val = torch.cat([b for b in wl.test_batches("in", CPU, split="val")])
    assert len(in_val) == 16 and len(torch.cat(list(wl.test_batches("out", CPU, "val")))) == 16
    (x, y), *_ = wl.labelled_batches("val", 8, 8, seed=0, device=CPU)
    assert x.shape[0] == 8 and y.shape == (8,)
    model = wl.model(CPU)
    with torch.no_grad():
        pred = torch.cat([model(wl._batch(wl.val_ids[i : i + 8])).argmax(-1) for i in (0, 8)])
    assert wl.evaluate(model, CPU, split="val") == pytest.approx(
        float((pred == wl.y_val).float().mean())
    )
    ci = wl.quality_interval(0.75, "val")
    assert ci.n == 16 and (ci.low, ci.high) == pytest.approx(_wilson(12, 16))


# --------------------------------------------------------------------------- intervals


def test_proportion_and_perplexity_intervals_match_independent_formulas() -> None:
    ci = proportion_interval(0.73, 200)
    assert ci.n == 200 and (ci.low, ci.high) == pytest.approx(_wilson(146, 200))
    ll = np.array([-1200.0, -900.0, -1500.0, -700.0, -1100.0])
    words = np.array([400, 310, 480, 260, 350])
    ci = perplexity_interval(ll.tolist(), words.tolist())
    # Independent: per-word loss as a ratio, linearised residuals, t with n - 1 df.
    loss = -ll.sum() / words.sum()
    d = -ll - loss * words
    se = math.sqrt(np.sum(d**2) / (len(d) - 1) / len(d)) / words.mean()
    t = stats.t.ppf(0.975, len(d) - 1)
    assert ci.n == 5
    assert (ci.low, ci.high) == pytest.approx((math.exp(loss - t * se), math.exp(loss + t * se)))
    assert ci.low < math.exp(loss) < ci.high


def test_check_split_refuses_unknown_splits_and_missing_validation() -> None:
    check_split("test")
    with pytest.raises(ValueError, match="'test' or 'val'"):
        check_split("train")

    class NoVal:
        validation = None

    with pytest.raises(ValueError, match="no validation split"):
        check_split("val", NoVal())


# --------------------------------------------------------------------------- protocols


class _OneHot(nn.Module):
    """Predicts the class whose input coordinate is largest (a linear map, so it has
    parameters to count and compress)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _items(correct: int, wrong: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels, and inputs pointing at the label for the first ``correct`` items."""
    y = torch.randint(0, 2, (correct + wrong,), generator=g)
    hint = torch.cat([y[:correct], 1 - y[correct:]])
    return nn.functional.one_hot(hint, 2).float(), y


class FakeClassifier:
    """A ClassifierWorkload whose test and validation accuracies are known and differ."""

    quality = QualityMetric("accuracy", "fraction", True)

    def __init__(self, *, validation: bool = True) -> None:
        g = torch.Generator().manual_seed(0)
        self.data = {
            "train": _items(64, 0, g),
            "test": _items(146, 54, g),  # 0.73
            "val": _items(30, 50, g),  # 0.375
        }
        self.validation = "80 fake items" if validation else None

    def model(self, device: torch.device) -> nn.Module:
        return _OneHot().to(device).eval()

    def fresh_model(self, seed: int, device: torch.device) -> nn.Module:
        return self.model(device)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device, split: str = "test") -> float:
        check_split(split, self)
        x, y = self.data[split]
        return float((model(x).argmax(-1) == y).float().mean())

    def quality_interval(self, value: float, split: str = "test") -> Any:
        return proportion_interval(value, len(self.data[split][1]))

    def example_inputs(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return self.data["test"][0][:batch_size]

    def labelled_batches(self, split, n, batch_size, seed, device):  # type: ignore[no-untyped-def]
        x, y = self.data[split]
        return [
            (x[i : i + batch_size], y[i : i + batch_size])
            for i in range(0, min(n, len(y)), batch_size)
        ]

    def loss(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(inputs), labels)


class _PredictZero:
    """A "compressor" whose model always predicts class 0."""

    def compress(self, model: nn.Module, ctx: Any) -> nn.Module:
        with torch.no_grad():
            model.fc.weight.zero_()
            model.fc.bias.copy_(torch.tensor([1.0, 0.0]))
        return model


def _ctx(kind: str, wl: Any, factory: Any, hparams: dict | None = None) -> RunContext:
    spec = RunSpec(
        suite="test",
        kind=kind,
        method="fake",
        hparams=hparams or {},
        workload="fake",
        seed=0,
        device="cpu",
        budget=Budget(),
    )
    method = MethodSpec(kind=kind, name="fake", factory=factory, defaults=hparams or {})
    return RunContext(spec=spec, method=method, workload=wl, device=CPU, registry=registry())


def test_compressor_reports_validation_figures_and_wilson_intervals() -> None:
    wl = FakeClassifier()
    r = compressor.run(_ctx("compressor", wl, _PredictZero))
    m = r.metrics
    y_test, y_val = wl.data["test"][1], wl.data["val"][1]
    zeros_test, zeros_val = int((y_test == 0).sum()), int((y_val == 0).sum())
    assert m["quality_before"].value == pytest.approx(0.73)
    assert m["val_quality_before"].value == pytest.approx(0.375)
    assert m["quality_after"].value == pytest.approx(zeros_test / 200)
    assert m["val_quality_after"].value == pytest.approx(zeros_val / 80)
    for name, k, n in (
        ("quality_before", 146, 200),
        ("quality_after", zeros_test, 200),
        ("val_quality_before", 30, 80),
        ("val_quality_after", zeros_val, 80),
    ):
        assert m[name].n == n
        assert (m[name].ci_low, m[name].ci_high) == pytest.approx(_wilson(k, n)), name
    assert r.info["validation"] == "80 fake items"
    assert r.info["quality_interval"] == "Wilson over 200 items"


def test_compressor_without_validation_emits_no_val_figures() -> None:
    r = compressor.run(_ctx("compressor", FakeClassifier(validation=False), _PredictZero))
    assert not [k for k in r.metrics if k.startswith("val_")]
    assert r.info["validation"] is None
    assert r.metrics["quality_after"].ci_low is not None


class FakeScores:
    """A DetectorWorkload whose inputs are their own scores: test and validation differ."""

    in_name, out_name = "fake-in", "fake-out"

    def __init__(self, *, validation: bool = True) -> None:
        g = np.random.default_rng(0)
        self.sets = {
            ("test", "in"): g.normal(0.0, 1.0, 300),
            ("test", "out"): g.normal(1.5, 1.0, 200),
            ("val", "in"): g.normal(0.0, 1.0, 60),
            ("val", "out"): g.normal(0.3, 1.0, 40),  # a much harder validation pair
        }
        self.validation = "100 fake scores" if validation else None

    def model(self, device: torch.device) -> nn.Module:
        return nn.Identity()

    def fit_batches(self, device: torch.device) -> list[Any]:
        return []

    def test_batches(self, which: str, device: torch.device, split: str = "test") -> Any:
        check_split(split, self)
        x = torch.from_numpy(self.sets[(split, which)])
        return [x[i : i + 64] for i in range(0, len(x), 64)]


class _Threshold:
    """Score = the input; p-value = the normal upper tail; predict = score > 1."""

    def __init__(self, alpha: float = 0.05) -> None:
        self.alpha = alpha

    def fit(self, model: nn.Module, batches: Any) -> None:
        pass

    def score(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return batch

    def pvalue(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(stats.norm.sf(batch.numpy()))

    def predict(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return batch > 1.0


def test_detector_reports_val_auroc_and_intervals() -> None:
    wl = FakeScores()
    r = detector.run(_ctx("detector", wl, _Threshold, {"alpha": 0.05}))
    m = r.metrics
    s_in, s_out = wl.sets[("test", "in")], wl.sets[("test", "out")]
    v_in, v_out = wl.sets[("val", "in")], wl.sets[("val", "out")]
    auc, lo, hi = _delong(s_in, s_out)
    assert m["auroc"].value == pytest.approx(auc)
    assert (m["auroc"].ci_low, m["auroc"].ci_high) == pytest.approx((lo, hi))
    assert m["auroc"].n == 500
    v_auc, v_lo, v_hi = _delong(v_in, v_out)
    assert m["val_auroc"].value == pytest.approx(v_auc) and m["val_auroc"].n == 100
    assert (m["val_auroc"].ci_low, m["val_auroc"].ci_high) == pytest.approx((v_lo, v_hi))
    assert abs(m["val_auroc"].value - m["auroc"].value) > 0.1  # from the other data
    # FPR at 95% TPR: the share of ID scores at or above the OOD scores' 5% quantile.
    threshold = np.sort(s_out)[::-1][math.ceil(0.95 * len(s_out)) - 1]
    k = int((s_in >= threshold).sum())
    assert m["fpr_at_95_tpr"].value == pytest.approx(k / 300) and m["fpr_at_95_tpr"].n == 300
    assert (m["fpr_at_95_tpr"].ci_low, m["fpr_at_95_tpr"].ci_high) == pytest.approx(_wilson(k, 300))
    # Type-I error and power at alpha over the ID and the OOD items.
    k_in = int((stats.norm.sf(s_in) < 0.05).sum())
    k_out = int((stats.norm.sf(s_out) < 0.05).sum())
    t1e, power = m["type1_error_at_alpha"], m["power_at_alpha"]
    assert (t1e.n, power.n) == (300, 200)
    assert (t1e.value, t1e.ci_low, t1e.ci_high) == pytest.approx((k_in / 300, *_wilson(k_in, 300)))
    assert (power.value, power.ci_low, power.ci_high) == pytest.approx(
        (k_out / 200, *_wilson(k_out, 200))
    )
    # Targets kept (predict False): precision over the kept items, recall over the targets.
    tp, fp = int((s_in <= 1.0).sum()), int((s_out <= 1.0).sum())
    prec, rec = m["target_precision"], m["target_recall"]
    assert (prec.value, prec.n) == (pytest.approx(tp / (tp + fp)), tp + fp)
    assert (prec.ci_low, prec.ci_high) == pytest.approx(_wilson(tp, tp + fp))
    assert (rec.value, rec.n) == (pytest.approx(tp / 300), 300)
    assert (rec.ci_low, rec.ci_high) == pytest.approx(_wilson(tp, 300))
    assert r.info["validation"] == "100 fake scores"


def test_detector_without_validation_emits_no_val_auroc() -> None:
    r = detector.run(_ctx("detector", FakeScores(validation=False), _Threshold, {"alpha": 0.05}))
    assert "val_auroc" not in r.metrics and r.info["validation"] is None
    assert r.metrics["auroc"].ci_low is not None


def test_real_workloads_through_the_protocols_carry_val_figures() -> None:
    ctx = _ctx("compressor", workload("compressor", "digits-cnn", **DIGITS), _Unchanged)
    m = compressor.run(ctx).metrics
    wl = ctx.workload
    model = wl.model(CPU)
    with torch.no_grad():
        acc = float((model(wl.x_val).argmax(-1) == wl.y_val).float().mean())
    assert m["val_quality_before"].value == pytest.approx(acc) and m["val_quality_before"].n == 89
    assert m["quality_before"].n == 270
    det = _ctx("detector", workload("detector", "digits-cnn", **DIGITS), _MaxLogit)
    m = detector.run(det).metrics
    assert m["val_auroc"].n == 89 * 2 and m["auroc"].n == 270 * 2
    assert m["auroc"].ci_low <= m["auroc"].value <= m["auroc"].ci_high


class _Unchanged:
    def compress(self, model: nn.Module, ctx: Any) -> nn.Module:
        return model


class _MaxLogit:
    def fit(self, model: nn.Module, batches: Any) -> None:
        pass

    def score(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return -model(batch).max(-1).values
