"""Structured pruning's two neuron criteria: producer L1 (Li et al.) and weight x activation
(Wanda-sp), on a model small enough to know which neuron each must keep."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

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
