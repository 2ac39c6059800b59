"""WGSEF: k-level structured sparsity by proximal gradient with the group sparse envelope.

Refael, Arbel & Huleihel, "Learning k-Level Structured Sparse Neural Networks Using Group
Envelope Regularization", arXiv:2212.12921. The regularizer is the weighted group sparse
envelope function (WGSEF, see ``plugins.compressors.wgsef_prox`` for the equations): the convex
envelope of ``1/2 sum_i d_i ||w_i||^2`` restricted to at most k non-zero groups. Training is
proximal gradient, as in the paper: an SGD step on the loss, then
``W <- prox_{lr * lam * WGSEF}(W)`` on every group-structured tensor, computed in linear time in
the number of groups. The groups follow the hardware (``groups``):

- ``neurons``: hidden neurons of ``nn.Sequential`` Linear -> activation -> Linear chains (a
  neuron = its row and bias in the first layer); removed physically (``structured.shrink_pair``).
- ``filters``: conv output channels with their BatchNorm scale/shift (``channels.py``);
  removed physically with the BN channel and the consumer's input channels / columns.
- ``weights``: single weight entries of every Linear/Conv2d (unstructured); masked-dense.

``k`` per layer is ``max(1, round(keep_fraction * groups))``. After ``steps`` prox-gradient steps
(or ``ctx.budget.time_s`` seconds, whichever first), the support is made exactly k by the prox
of the non-convex function WGSEF relaxes (``hard_group_prox``: the k largest groups), the zero
groups are removed, and ``finetune_steps`` of Adam fine-tune what is left (zeros stay zero in
``weights`` mode by re-masking).

Departures, stated plainly: (1) the prox of the convex envelope keeps at least k groups, so
the exact-k support at the end comes from that final hard projection rather than from the
envelope's prox alone; (2) group weights ``d_i`` are uniform (1) within a layer -- the paper
lets hardware costs set them; the prox supports any positive weights; (3) the paper's
``channels`` / filter-shape groups are not offered (only neurons, filters, single weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmark import hookimpl
from benchmark.kinds import MethodSpec
from plugins.compressors.channels import filter_groups, filter_rows, remove_filters
from plugins.compressors.structured import linear_chains, shrink_pair
from plugins.compressors.training import deadline_of, train_steps
from plugins.compressors.wgsef_prox import envelope_prox_scales, top_k_groups

GROUPINGS = ("neurons", "filters", "weights")


@dataclass
class GroupedTensors:
    """Tensors sharing one group axis (dim 0), regularized together with k kept groups."""

    name: str
    tensors: list[torch.Tensor]
    k: int

    @property
    def count(self) -> int:
        return self.tensors[0].shape[0]

    def norms(self) -> torch.Tensor:
        sq = sum(t.detach().reshape(self.count, -1).pow(2).sum(dim=1) for t in self.tensors)
        return sq.sqrt()  # type: ignore[union-attr]

    @torch.no_grad()
    def scale(self, factors: torch.Tensor) -> None:
        for t in self.tensors:
            t.mul_(factors.to(t.dtype).view(-1, *([1] * (t.dim() - 1))))

    def nonzero_groups(self) -> int:
        return int(torch.count_nonzero(self.norms()))


def _k(count: int, keep_fraction: float) -> int:
    return max(1, min(count, round(keep_fraction * count)))


def grouped_tensors(model: nn.Module, groups: str, keep_fraction: float) -> list[GroupedTensors]:
    """The model's group-structured tensors for the chosen grouping."""
    out: list[GroupedTensors] = []
    if groups == "neurons":
        for container, first, _ in linear_chains(model):
            layer = getattr(container, first)
            parts = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
            out.append(GroupedTensors(first, parts, _k(layer.out_features, keep_fraction)))
    elif groups == "filters":
        for g in filter_groups(model):
            parts = filter_rows(model, g)
            out.append(GroupedTensors(g.conv, parts, _k(parts[0].shape[0], keep_fraction)))
    elif groups == "weights":
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear | nn.Conv2d):
                flat = mod.weight.view(-1, 1)  # each entry its own group (a view: shared storage)
                out.append(GroupedTensors(name, [flat], _k(flat.shape[0], keep_fraction)))
    else:
        raise ValueError(f"groups must be one of {GROUPINGS}, got {groups!r}")
    if not out:
        raise ValueError(f"the model has no {groups!r} groups WGSEF can act on")
    return out


def apply_envelope_prox(gt: GroupedTensors, step: float) -> None:
    """``W <- prox_{step * WGSEF}(W)`` on one grouped tensor set (uniform group weights)."""
    gt.scale(envelope_prox_scales(gt.norms(), gt.k, step))


def project_exact_k(gt: GroupedTensors) -> torch.Tensor:
    """Keep the k groups of largest norm (the hard prox at step -> 0); returns the keep mask."""
    keep = top_k_groups(gt.norms(), gt.k)
    gt.scale(keep.to(torch.float32))
    return keep


class WGSEF:
    def __init__(
        self,
        groups: str = "neurons",
        keep_fraction: float = 0.5,
        lam: float = 1.0,
        steps: int = 300,
        lr: float = 0.05,
        momentum: float = 0.0,
        finetune_steps: int = 100,
        finetune_lr: float = 1e-3,
    ) -> None:
        if groups not in GROUPINGS:
            raise ValueError(f"groups must be one of {GROUPINGS}, got {groups!r}")
        if not 0.0 < keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        if lam <= 0 or lr <= 0:
            raise ValueError("lam and lr must be > 0")
        self.groups, self.keep_fraction, self.lam = groups, keep_fraction, lam
        self.steps, self.lr, self.momentum = steps, lr, momentum
        self.finetune_steps, self.finetune_lr = finetune_steps, finetune_lr
        self.kept: dict[str, int] = {}

    def compress(self, model: nn.Module, ctx: Any) -> nn.Module:
        deadline = deadline_of(ctx)
        grouped = grouped_tensors(model, self.groups, self.keep_fraction)
        self.train(model, ctx, grouped, deadline)
        masks = {gt.name: project_exact_k(gt) for gt in grouped}
        self.kept = {gt.name: gt.nonzero_groups() for gt in grouped}
        if self.groups == "weights":
            self._finetune(model, ctx, deadline, grouped)
            return model
        self.remove(model, masks)
        self._finetune(model, ctx, deadline, [])
        return model

    def train(
        self,
        model: nn.Module,
        ctx: Any,
        grouped: list[GroupedTensors],
        deadline: float | None = None,
    ) -> None:
        """Proximal gradient: an SGD step on the loss, then the WGSEF prox per group set."""
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum)

        def prox() -> None:
            for gt in grouped:
                apply_envelope_prox(gt, self.lr * self.lam)

        train_steps(model, ctx, opt, self.steps, deadline=deadline, after_step=prox)

    def remove(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        """Physically delete the zero groups."""
        if self.groups == "neurons":
            for container, first, second in linear_chains(model):
                keep = torch.nonzero(masks[first]).view(-1)
                a, b = shrink_pair(getattr(container, first), getattr(container, second), keep)
                setattr(container, first, a)
                setattr(container, second, b)
        else:
            for g in filter_groups(model):
                remove_filters(model, g, torch.nonzero(masks[g.conv]).view(-1))

    def _finetune(
        self,
        model: nn.Module,
        ctx: Any,
        deadline: float | None,
        masked: list[GroupedTensors],
    ) -> None:
        if self.finetune_steps <= 0:
            return
        # Re-fetch views: removal replaced modules, and 'weights' mode keeps its zeros.
        zeros = [(gt, gt.norms() == 0) for gt in masked]
        opt = torch.optim.Adam(model.parameters(), lr=self.finetune_lr)

        def keep_zeros() -> None:
            for gt, z in zeros:
                gt.scale((~z).to(torch.float32))

        train_steps(model, ctx, opt, self.finetune_steps, deadline=deadline, after_step=keep_zeros)


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="compressor",
            name="wgsef",
            factory=WGSEF,
            defaults={
                "groups": "neurons",
                "keep_fraction": 0.5,
                "lam": 1.0,
                "steps": 300,
                "lr": 0.05,
                "momentum": 0.0,
                "finetune_steps": 100,
                "finetune_lr": 1e-3,
            },
            paper="arXiv:2212.12921",
            description="proximal gradient with the weighted group sparse envelope (k groups kept)",
        )
    )
