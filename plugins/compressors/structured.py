"""Structured L1 pruning of hidden neurons, physically removed.

Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017,
arXiv:1608.08710: rank structures by the L1 norm of their weights and remove the
smallest. Here the structures are hidden neurons (``plugins.compressors.neurons``: Linear ->
activation -> Linear chains, BERT feed-forward blocks, LLaMA gated MLPs), scored by the L1
norm of their rows in the producing layers: the neuron's rows (and biases) and its column
in the consuming layer are deleted, and both layers are rebuilt smaller, so the
saving is real in parameters, bytes and time. Optional fine-tuning follows, as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmark import hookimpl
from benchmark.kinds import MethodSpec
from plugins.compressors.neurons import neuron_groups, remove_neurons, sliced_linear
from plugins.compressors.training import deadline_of, train_steps


def linear_chains(model: nn.Module) -> list[tuple[nn.Sequential, str, str]]:
    """(container, first, second) of the ``nn.Sequential`` Linear -> element-wise -> Linear
    chains (the neuron groups that live inside one container)."""
    out = []
    for group in neuron_groups(model):
        parent, _, first = group.producers[0].rpartition(".")
        container = model.get_submodule(parent) if parent else model
        if len(group.producers) == 1 and isinstance(container, nn.Sequential):
            out.append((container, first, group.consumer.rpartition(".")[2]))
    return out


def shrink_pair(
    first: nn.Linear, second: nn.Linear, keep: torch.Tensor
) -> tuple[nn.Linear, nn.Linear]:
    """New layers with only the hidden neurons in ``keep``."""
    return sliced_linear(first, rows=keep), sliced_linear(second, cols=keep)


class StructuredPrune:
    def __init__(self, amount: float = 0.5, finetune_steps: int = 0, lr: float = 1e-3) -> None:
        if not 0.0 <= amount < 1.0:
            raise ValueError(f"amount must be in [0, 1), got {amount}")
        self.amount, self.finetune_steps, self.lr = amount, finetune_steps, lr

    def compress(self, model: nn.Module, ctx: Any) -> nn.Module:
        for group in neuron_groups(model):
            producers = [model.get_submodule(n) for n in group.producers]
            width = producers[0].weight.shape[0]
            n_keep = max(1, round(width * (1 - self.amount)))
            if n_keep == width:
                continue
            # A neuron's L1 norm: its rows in every producer (the filter norm of the paper).
            scores = sum(p.weight.detach().abs().sum(dim=1) for p in producers)
            remove_neurons(model, group, torch.topk(scores, n_keep).indices)
        if self.finetune_steps > 0:
            self._finetune(model, ctx)
        return model

    def _finetune(self, model: nn.Module, ctx: Any) -> None:
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        train_steps(model, ctx, opt, self.finetune_steps, deadline=deadline_of(ctx))


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
