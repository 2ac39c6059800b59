"""Structured pruning's neuron criteria: producer L1 (Li et al.) and weight x activation
(Wanda-sp), on a model small enough to know which neuron each must keep, and the random
control they are read against."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest
import torch
from torch import nn

from benchmark.host import Registry
from benchmark.protocols.base import RunContext
from benchmark.records import RunSpec
from plugins.compressors.structured import StructuredPrune, activation_norms


def _mlp() -> nn.Sequential:
    """Hidden neuron 0: large producer row, tiny consumer column (matters little);
    neuron 1: small producer row, large consumer column (matters most);
    neuron 2: in between on both."""
    model = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[4.0, 4.0], [0.5, 0.5], [1.0, 1.0]]))
        model[2].weight.copy_(torch.tensor([[0.01, 10.0, 1.0]]))
    return model


def _ctx(x: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(calibration_batches=[(x, torch.zeros(len(x)))])


def test_activation_norms_are_the_consumer_input_norms() -> None:
    model, x = _mlp(), torch.rand(8, 2)
    norms = activation_norms(model, ["2"], [(x[:5], None), (x[5:], None)])
    hidden = torch.relu(x @ model[0].weight.T)
    torch.testing.assert_close(norms["2"], hidden.norm(dim=0))


def test_criteria_keep_different_neurons_and_activation_keeps_the_one_that_matters() -> None:
    x = torch.rand(16, 2) + 0.1
    l1 = StructuredPrune(amount=0.34, criterion="l1").compress(_mlp(), _ctx(x))
    act = StructuredPrune(amount=0.34, criterion="activation").compress(_mlp(), _ctx(x))
    # L1 drops neuron 1 (smallest producer row); weight x activation drops neuron 0.
    torch.testing.assert_close(l1[0].weight, torch.tensor([[4.0, 4.0], [1.0, 1.0]]))
    torch.testing.assert_close(act[0].weight, torch.tensor([[0.5, 0.5], [1.0, 1.0]]))
    full = _mlp()(x)
    assert (act(x) - full).abs().max() < 0.1 < (l1(x) - full).abs().max()


def test_unknown_criterion_is_refused() -> None:
    with pytest.raises(ValueError, match="criterion"):
        StructuredPrune(criterion="taylor")


def _wide() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 40), nn.ReLU(), nn.Linear(40, 2))


def _kept_rows(model: nn.Sequential, original: nn.Sequential) -> set[int]:
    rows = original[0].weight.detach()
    return {int((rows - r).abs().sum(1).argmin()) for r in model[0].weight.detach()}


def test_random_criterion_removes_the_same_fraction_and_depends_only_on_its_seed() -> None:
    x = torch.rand(8, 4)
    kept = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        pruned = StructuredPrune(amount=0.25, criterion="random", seed=seed)
        kept[name] = _kept_rows(pruned.compress(_wide(), _ctx(x)), _wide())
    l1 = _kept_rows(StructuredPrune(amount=0.25).compress(_wide(), _ctx(x)), _wide())
    assert len(kept["a"]) == len(l1) == 30
    assert kept["a"] == kept["b"] != kept["c"]
    assert kept["a"] != l1


def test_random_criterion_is_seeded_by_the_run_seed() -> None:
    """The harness gives a method that declares ``seed`` the run's seed plus the suite's
    offset: two seeds of a suite draw two different random neuron sets."""
    spec = Registry().method("compressor", "structured-prune")
    assert spec.defaults["seed"] == 0
    run = cast(RunSpec, SimpleNamespace(seed=5, hparams={"criterion": "random", "seed": 2}))
    none = cast(Registry, None)
    ctx = RunContext(
        spec=run, method=spec, workload=None, device=torch.device("cpu"), registry=none
    )
    assert ctx.hparams["seed"] == 7
    assert ctx.build_method().seed == 7
