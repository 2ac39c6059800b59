"""Structured L1 pruning of hidden neurons, physically removed.

Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017,
arXiv:1608.08710: rank structures by the L1 norm of their weights and remove the
smallest. Here the structures are the hidden neurons of Linear -> activation -> Linear
chains inside ``nn.Sequential`` containers: the neuron's row in the first layer (and its
bias) and its column in the next are deleted, and both layers are rebuilt smaller, so the
saving is real in parameters, bytes and time. Optional fine-tuning follows, as in the paper.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from benchmark import hookimpl
from benchmark.kinds import MethodSpec

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


def linear_chains(model: nn.Module) -> list[tuple[nn.Sequential, str, str]]:
    """(container, first, second): Linear, element-wise layers, then Linear, in order."""
    chains = []
    for container in model.modules():
        if not isinstance(container, nn.Sequential):
            continue
        names = list(container._modules)
        for i, name in enumerate(names):
            if not isinstance(container._modules[name], nn.Linear):
                continue
            for nxt in names[i + 1 :]:
                layer = container._modules[nxt]
                if isinstance(layer, nn.Linear):
                    chains.append((container, name, nxt))
                    break
                if not isinstance(layer, ELEMENTWISE):
                    break
    return chains


@torch.no_grad()
def shrink_pair(
    first: nn.Linear, second: nn.Linear, keep: torch.Tensor
) -> tuple[nn.Linear, nn.Linear]:
    """New layers with only the hidden neurons in ``keep``."""
    a = nn.Linear(
        first.in_features,
        len(keep),
        bias=first.bias is not None,
        device=first.weight.device,
        dtype=first.weight.dtype,
    )
    a.weight.copy_(first.weight[keep])
    if first.bias is not None:
        a.bias.copy_(first.bias[keep])
    b = nn.Linear(
        len(keep),
        second.out_features,
        bias=second.bias is not None,
        device=second.weight.device,
        dtype=second.weight.dtype,
    )
    b.weight.copy_(second.weight[:, keep])
    if second.bias is not None:
        b.bias.copy_(second.bias)
    return a, b


class StructuredPrune:
    def __init__(self, amount: float = 0.5, finetune_steps: int = 0, lr: float = 1e-3) -> None:
        if not 0.0 <= amount < 1.0:
            raise ValueError(f"amount must be in [0, 1), got {amount}")
        self.amount, self.finetune_steps, self.lr = amount, finetune_steps, lr

    def compress(self, model: nn.Module, ctx: Any) -> nn.Module:
        for container, first_name, second_name in linear_chains(model):
            first = container._modules[first_name]
            second = container._modules[second_name]
            assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
            n_keep = max(1, round(first.out_features * (1 - self.amount)))
            if n_keep == first.out_features:
                continue
            scores = first.weight.detach().abs().sum(dim=1)
            keep = torch.sort(torch.topk(scores, n_keep).indices).values
            container._modules[first_name], container._modules[second_name] = shrink_pair(
                first, second, keep
            )
        if self.finetune_steps > 0:
            self._finetune(model, ctx)
        return model

    def _finetune(self, model: nn.Module, ctx: Any) -> None:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        batches = itertools.cycle(ctx.finetune_batches)
        for _ in range(self.finetune_steps):
            inputs, labels = next(batches)
            opt.zero_grad()
            ctx.loss(model, inputs, labels).backward()
            opt.step()
        model.eval()


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="compressor",
            name="structured-prune",
            factory=StructuredPrune,
            defaults={"amount": 0.5, "finetune_steps": 0, "lr": 1e-3},
            paper="arXiv:1608.08710",
            description="L1 structured pruning of hidden neurons, physically removed",
        )
    )
