"""Structured pruning of hidden neurons (L1, weight x activation, random), physically removed.

Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017,
arXiv:1608.08710: rank structures by the L1 norm of their weights and remove the
smallest. Here the structures are hidden neurons (``plugins.compressors.neurons``: Linear ->
activation -> Linear chains, BERT feed-forward blocks, LLaMA gated MLPs), scored by the L1
norm of their rows in the producing layers: the neuron's rows (and biases) and its column
in the consuming layer are deleted, and both layers are rebuilt smaller, so the
saving is real in parameters, bytes and time. Optional fine-tuning follows, as in the paper.

``criterion: activation`` scores neuron j instead by ‖W_c[:, j]‖₂ · ‖X_j‖₂, the consumer's
column norm times the norm of the neuron's activation over calibration inputs: Wanda's
weight-times-activation importance (Sun, Liu, Bair & Kolter, arXiv:2306.11695) applied to
whole neurons, the "Wanda-sp" baseline of FLAP (An et al., AAAI 2024, arXiv:2312.11983).
It exists because weight norms mislead on LLMs: on SmolLM2-135M, removing the MLP
neurons with the smallest producer L1 norm does far worse than this score, and worse than
a random choice (the perplexities: ``results/compressors/README.md``).

``criterion: random`` is the control both scores are read against: each group's neurons get
uniform random scores from a generator seeded by ``seed`` (the harness passes the run's seed
plus the suite's offset), so the same fraction of neurons is removed with no information
about them. A score that loses to it is worse than knowing nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import torch
from annotated_types import Interval
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from plugins.compressors.neurons import NeuronGroup, neuron_groups, remove_neurons
from plugins.compressors.training import deadline_of, finetune_all

Criterion = Literal["l1", "activation", "random"]
CRITERIA: tuple[str, ...] = get_args(Criterion)


def linear_chains(model: nn.Module) -> list[NeuronGroup]:
    """The neuron groups that live inside one ``nn.Sequential`` (Linear -> element-wise ->
    Linear), named by full dotted path: two heads each holding a layer ``0`` stay apart."""
    out = []
    for group in neuron_groups(model):
        parent = group.producers[0].rpartition(".")[0]
        container = model.get_submodule(parent) if parent else model
        if len(group.producers) == 1 and isinstance(container, nn.Sequential):
            out.append(group)
    return out


@torch.no_grad()
def activation_norms(
    model: nn.Module, consumers: list[str], batches: list[tuple[Any, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ of every input feature j of each consumer layer over ``batches``."""
    sums: dict[str, torch.Tensor] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sq = (x * x).sum(0)
            sums[name] = sums[name] + sq if name in sums else sq

        return record

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in consumers]
    was = model.training
    model.eval()
    try:
        for inputs, _ in batches:
            model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {n: v.sqrt() for n, v in sums.items()}


class StructuredPrune:
    def __init__(
        self,
        amount: Annotated[float, Interval(ge=0, lt=1)] = 0.5,
        finetune_steps: NonNegativeInt = 0,
        lr: PositiveFloat = 1e-3,
        criterion: Criterion = "l1",
        calibration_batches: PositiveInt = 2,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= amount < 1.0:
            raise ValueError(f"amount must be in [0, 1), got {amount}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        if calibration_batches < 1:
            raise ValueError("calibration_batches must be >= 1")
        self.amount, self.finetune_steps, self.lr = amount, finetune_steps, lr
        self.criterion, self.calibration_batches = criterion, calibration_batches
        self.seed = seed

    def scores(self, model: nn.Module, ctx: Any) -> dict[NeuronGroup, torch.Tensor]:
        """Each group's per-neuron importance (larger: kept)."""
        groups = neuron_groups(model)
        if self.criterion == "random":
            g = torch.Generator().manual_seed(self.seed)
            return {
                grp: torch.rand(model.get_submodule(grp.consumer).weight.shape[1], generator=g)
                for grp in groups
            }
        if self.criterion == "l1":
            # A neuron's L1 norm: its rows in every producer (the filter norm of the paper).
            return {
                g: sum(model.get_submodule(p).weight.detach().abs().sum(dim=1) for p in g.producers)
                for g in groups
            }
        batches = ctx.calibration_batches[: self.calibration_batches]
        norms = activation_norms(model, [g.consumer for g in groups], batches)
        return {
            g: model.get_submodule(g.consumer).weight.detach().norm(dim=0) * norms[g.consumer]
            for g in groups
        }

    def compress(self, model: nn.Module, ctx: Any) -> nn.Module:
        for group, scores in self.scores(model, ctx).items():
            width = scores.numel()
            n_keep = max(1, round(width * (1 - self.amount)))
            if n_keep == width:
                continue
            remove_neurons(model, group, torch.topk(scores, n_keep).indices)
        if self.finetune_steps > 0:
            finetune_all(model, ctx, self.finetune_steps, self.lr, deadline_of(ctx))
        return model
