"""Neuron removal is exact: deleting neurons whose producer rows and biases are zero leaves
the model's output unchanged, for every element-wise module a chain may hold, including those
with ``act(0) != 0`` (Sigmoid), whose constant share must move into the consumer's bias."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plugins.compressors.neurons import ELEMENTWISE, neuron_groups, remove_neurons
from plugins.compressors.structured import StructuredPrune

DROP = [1, 4]


def _chain(*between: nn.Module, consumer_bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), *between, nn.Linear(7, 3, bias=consumer_bias))
    with torch.no_grad():
        model[0].weight[DROP] = 0
        model[0].bias[DROP] = 0
    return model.eval()


def _remove_dropped(model: nn.Sequential) -> None:
    (group,) = neuron_groups(model)
    keep = torch.tensor([i for i in range(7) if i not in DROP])
    remove_neurons(model, group, keep)


@pytest.mark.parametrize("act", ELEMENTWISE, ids=lambda a: a.__name__)
def test_removing_zero_neurons_leaves_the_output_unchanged(act: type[nn.Module]) -> None:
    model = _chain(act())
    x = torch.randn(32, 5)
    with torch.no_grad():
        before = model(x)
        _remove_dropped(model)
        after = model(x)
    assert model[0].out_features == 5 and model[-1].in_features == 5
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_a_consumer_without_bias_gets_one_for_the_folded_constant() -> None:
    model = _chain(nn.Sigmoid(), nn.Dropout(0.3), consumer_bias=False)
    x = torch.randn(32, 5)
    with torch.no_grad():
        before = model(x)
        _remove_dropped(model)
        after = model(x)
    assert model[-1].bias is not None
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_no_bias_is_added_where_act_of_zero_is_zero() -> None:
    model = _chain(nn.ReLU(), consumer_bias=False)
    _remove_dropped(model)
    assert model[-1].bias is None


def test_structured_pruning_of_sigmoid_neurons_equals_zeroing_their_weights() -> None:
    """Pruning a structure means its weights become zero: the physically smaller model
    computes what the dense model with the pruned neurons' rows and biases zeroed computes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Sigmoid(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(torch.linspace(0.1, 2.0, 8).view(-1, 1))
    zeroed = nn.Sequential(nn.Linear(5, 8), nn.Sigmoid(), nn.Linear(8, 3)).eval()
    zeroed.load_state_dict(model.state_dict())
    scores = model[0].weight.abs().sum(1)
    dropped = torch.topk(scores, 2, largest=False).indices
    with torch.no_grad():
        zeroed[0].weight[dropped] = 0
        zeroed[0].bias[dropped] = 0
    pruned = StructuredPrune(amount=0.25).compress(model, None)
    x = torch.randn(16, 5)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zeroed(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "between",
    [
        (nn.Sigmoid, nn.Tanh),
        (nn.Identity, nn.Sigmoid),
        (nn.Sigmoid, nn.Dropout),
        (nn.Dropout, nn.Sigmoid),
    ],
    ids=lambda b: "-".join(m.__name__ for m in b),
)
def test_the_fold_runs_every_module_in_order_and_in_evaluation_mode(
    between: tuple[type[nn.Module], ...],
) -> None:
    """act(0) is the whole chain between producer and consumer evaluated at 0 with Dropout
    off, whatever mode the model is in when neurons are removed (a fold taken in training
    mode would scale by Dropout's 1/(1-p) or zero at random)."""
    model = _chain(*(m(0.5) if m is nn.Dropout else m() for m in between))
    x = torch.randn(32, 5)
    with torch.no_grad():
        before = model(x)
    model.train()
    _remove_dropped(model)
    model.eval()
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
