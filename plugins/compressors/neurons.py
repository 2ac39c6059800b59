"""Where a model's hidden neurons are, so structured compressors can remove them for real.

A *neuron group* is a set of producer layers whose output rows feed, through element-wise
operations only, the input columns of one consumer layer. Deleting neuron i means deleting
row i of every producer and column i of the consumer, with smaller dense matrices and no
index operations at run time. The model then computes exactly what it computed with that
neuron's producer rows and biases set to zero (what pruning a structure means): a zero
pre-activation reaches the consumer as ``act(0)``, which is 0 for ReLU, GELU, SiLU, Tanh,
LeakyReLU, Dropout and Identity but 0.5 for Sigmoid, so for ``nn.Sequential`` chains the
constant ``act(0) * W_consumer[:, i]`` of each deleted neuron is folded into the consumer's
bias (one is added where the consumer had none and the constant is non-zero). Without the
fold, deleting a sigmoid neuron whose weights are zero would still change the output.
Three patterns are recognised:

- ``nn.Sequential`` chains: Linear, element-wise layers, Linear (the CNN heads, MLPs);
- BERT-style feed-forward blocks: ``<block>.intermediate.dense`` -> ``<block>.output.dense``
  (GELU between);
- LLaMA-style gated MLPs: ``gate_proj`` and ``up_proj`` -> ``down_proj``
  (down(silu(gate(x)) * up(x)): neuron i is zero when either producer's row i is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

ELEMENTWISE = (
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.Dropout,
    nn.Identity,
)


@dataclass(frozen=True)
class NeuronGroup:
    """Producers' rows and the consumer's columns that index the same hidden neurons,
    as dotted module names relative to the model."""

    producers: tuple[str, ...]
    consumer: str
    # Element-wise modules between producers and consumer, in order (Sequential chains only;
    # the transformer patterns map a zero neuron to exactly 0 and need no fold).
    between: tuple[str, ...] = ()


LinearTest = Callable[[nn.Module], bool]


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


def _sequential_groups(model: nn.Module, is_linear: LinearTest) -> list[NeuronGroup]:
    groups = []
    for prefix, container in model.named_modules():
        if not isinstance(container, nn.Sequential):
            continue
        names = list(container._modules)
        for i, name in enumerate(names):
            if not is_linear(container._modules[name]):
                continue
            base = f"{prefix}." if prefix else ""
            between: list[str] = []
            for nxt in names[i + 1 :]:
                layer = container._modules[nxt]
                if is_linear(layer):
                    groups.append(NeuronGroup((base + name,), base + nxt, tuple(between)))
                    break
                if not isinstance(layer, ELEMENTWISE):
                    break
                between.append(base + nxt)
    return groups


def _transformer_groups(model: nn.Module, is_linear: LinearTest) -> list[NeuronGroup]:
    modules = dict(model.named_modules())
    groups = []
    for name in modules:
        if name.endswith(".intermediate.dense"):
            block = name[: -len(".intermediate.dense")]
            consumer = f"{block}.output.dense"
            if consumer in modules and is_linear(modules[consumer]):
                groups.append(NeuronGroup((name,), consumer))
        elif name.endswith(".down_proj"):
            block = name[: -len(".down_proj")]
            producers = (f"{block}.gate_proj", f"{block}.up_proj")
            if all(p in modules and is_linear(modules[p]) for p in producers):
                groups.append(NeuronGroup(producers, name))
    return groups


def neuron_groups(model: nn.Module, is_linear: LinearTest = _is_linear) -> list[NeuronGroup]:
    """Every recognised neuron group of ``model``, in module order. ``is_linear`` says which
    modules count as linear layers (a compressor's wrapped layers, say)."""
    return _sequential_groups(model, is_linear) + _transformer_groups(model, is_linear)


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@torch.no_grad()
def sliced_linear(
    layer: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None
) -> nn.Linear:
    """A new, smaller Linear holding only ``rows`` (outputs) and ``cols`` (inputs)."""
    w = layer.weight
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    out = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None)
    out = out.to(device=w.device, dtype=w.dtype)
    out.weight.copy_(w)
    if layer.bias is not None:
        out.bias.copy_(layer.bias if rows is None else layer.bias[rows])
    return out


@torch.no_grad()
def zero_response(model: nn.Module, group: NeuronGroup, width: int) -> torch.Tensor | None:
    """What each neuron hands the consumer when its pre-activation is 0 (None: all zeros).

    The element-wise modules are evaluated on a zero input in evaluation mode (Dropout is the
    identity at inference, which is where the smaller model's equality is claimed)."""
    if not group.between:
        return None
    consumer = model.get_submodule(group.consumer)
    assert isinstance(consumer, nn.Linear)
    h = torch.zeros(1, width, device=consumer.weight.device, dtype=consumer.weight.dtype)
    for name in group.between:
        module = model.get_submodule(name)
        was = module.training
        module.eval()
        try:
            h = module(h)
        finally:
            module.train(was)
    h = h.reshape(-1)
    return h if bool(h.ne(0).any()) else None


@torch.no_grad()
def _fold_into_bias(layer: nn.Linear, shift: torch.Tensor) -> nn.Linear:
    """``layer`` with ``shift`` added to its bias (a bias is created if it had none)."""
    if layer.bias is None:
        out = nn.Linear(layer.in_features, layer.out_features, bias=True)
        out = out.to(device=layer.weight.device, dtype=layer.weight.dtype)
        out.weight.copy_(layer.weight)
        out.bias.zero_()
        layer = out
    assert layer.bias is not None
    layer.bias.add_(shift.to(layer.bias.dtype))
    return layer


def remove_neurons(model: nn.Module, group: NeuronGroup, keep: torch.Tensor) -> None:
    """Replace the group's layers by copies that hold only the neurons in ``keep``; the
    constant a deleted neuron would still send the consumer (``act(0) != 0``) goes into the
    consumer's bias."""
    keep = torch.sort(keep.to(torch.long)).values
    consumer = model.get_submodule(group.consumer)
    assert isinstance(consumer, nn.Linear)
    width = consumer.in_features
    h0 = zero_response(model, group, width)
    for name in group.producers:
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)
        set_module(model, name, sliced_linear(layer, rows=keep.to(layer.weight.device)))
    device = consumer.weight.device
    smaller = sliced_linear(consumer, cols=keep.to(device))
    if h0 is not None:
        dropped = torch.ones(width, dtype=torch.bool, device=device)
        dropped[keep.to(device)] = False
        shift = consumer.weight.detach()[:, dropped] @ h0[dropped]
        if bool(shift.ne(0).any()):
            smaller = _fold_into_bias(smaller, shift)
    set_module(model, group.consumer, smaller)
