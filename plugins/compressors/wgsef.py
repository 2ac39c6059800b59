"""WGSEF: k-level structured sparsity by proximal gradient with the group sparse envelope.

Refael, Arbel & Huleihel, "Learning k-Level Structured Sparse Neural Networks Using Group
Envelope Regularization", arXiv:2212.12921. The regularizer is the weighted group sparse
envelope function (WGSEF, see ``plugins.compressors.wgsef_prox`` for the equations): the convex
envelope of ``1/2 sum_i d_i ||w_i||^2`` restricted to at most k non-zero groups. Training is
proximal gradient, as in the paper: an SGD step on the loss, then
``W <- prox_{lr * lam * WGSEF}(W)`` on every group-structured tensor, computed in linear time in
the number of groups. The groups follow the hardware (``groups``):

- ``neurons``: hidden neurons of ``nn.Sequential`` Linear -> activation -> Linear chains (a
  neuron = its row and bias in the first layer); removed physically
  (``neurons.remove_neurons``). Groups are keyed by the producer's full dotted path: two
  heads that each hold a Linear named ``0`` are two group sets, not one.
- ``filters``: conv output channels with their BatchNorm scale/shift (``channels.py``);
  removed physically with the BN channel and the consumer's input channels / columns.
- ``weights``: single weight entries of every Linear/Conv2d (unstructured); masked-dense.

``k`` per layer is ``max(1, round(keep_fraction * groups))``. After ``steps`` prox-gradient steps
(or ``ctx.budget.time_s`` seconds, whichever first), the support is made exactly k by the prox
of the non-convex function WGSEF relaxes (``hard_group_prox``: the k largest groups), the zero
groups are removed, and ``finetune_steps`` of Adam fine-tune what is left (zeros stay zero in
``weights`` mode by re-masking). How many groups the envelope's prox had zeroed on its own
before that projection is kept in ``zeroed_by_prox`` (the projection's share is the rest).

Scale of k and lam. ``k`` counts groups per group set, i.e. per layer: every layer keeps the
same share, and no layer can lose all its neurons. Whether the paper sets k per layer or for
the network as a whole we could not settle from the text we could read (abstract and front
matter), so per layer is our stated choice. ``lam`` multiplies the envelope, and
``WGSEF(w) >= 1/2 sum_i d_i ||w_i||^2`` with equality on k-sparse ``w``: ``lam * WGSEF`` is at
least an L2 penalty of weight decay ``lam`` on every group (the groups the prox keeps whole are
scaled by ``1 / (1 + lr * lam)`` at each step: implicit-step weight decay ``lam``), and the
groups below them are shrunk like a group lasso, by ``lr * lam * sigma`` in norm per step
(``sigma``: the prox's threshold, at most the smallest wholly kept group's norm), those under
``lr * lam * sigma`` to exactly zero. The default ``lam = 1.0`` is ours, not the paper's (we
found no value to take), and strong: ~2,000x the usual 5e-4 weight decay. What it buys is
speed: a few hundred CPU steps zero most groups outside the top k (measured:
``docs/methods/wgsef.md``); the ``compressors-wgsef`` suite runs ``lam`` in {0.1, 1.0}.

``prox: false`` is the ablation that says what the envelope buys: the same ``steps`` of the
same SGD with no prox (plain training of the dense model), then the same hard top-k by group
norm at the same k, the same removal and the same fine-tune, so the two models have equal
size and equal gradient steps and differ only in the regularizer.

Departures, stated plainly: (1) the prox of the convex envelope keeps at least k groups, so the
exact-k support at the end comes from that final hard projection rather than from the
envelope's prox alone (``zeroed_by_prox`` says how far the prox got; on a small MLP a test sees
the prox alone zero all but k groups after 1,000 steps, and stop one or two groups short after
a few hundred); (2) group weights ``d_i`` are uniform (1) within a layer -- the paper lets
hardware costs set them; the prox supports any positive weights; (3) the paper's ``channels`` /
filter-shape groups are not offered (only neurons, filters, single weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import torch
from annotated_types import Interval
from pydantic import NonNegativeInt, PositiveFloat
from torch import nn

from plugins.compressors.channels import filter_groups, filter_rows, remove_filters
from plugins.compressors.neurons import remove_neurons
from plugins.compressors.structured import linear_chains
from plugins.compressors.training import deadline_of, train_steps
from plugins.compressors.wgsef_prox import envelope_prox_scales, top_k_groups

Grouping = Literal["neurons", "filters", "weights"]
GROUPINGS: tuple[str, ...] = get_args(Grouping)


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
        for group in linear_chains(model):
            name = group.producers[0]  # the full dotted path: unique in the model
            layer = model.get_submodule(name)
            assert isinstance(layer, nn.Linear)
            parts = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
            out.append(GroupedTensors(name, parts, _k(layer.out_features, keep_fraction)))
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
        groups: Grouping = "neurons",
        keep_fraction: Annotated[float, Interval(gt=0, le=1)] = 0.5,
        lam: PositiveFloat = 1.0,
        steps: NonNegativeInt = 300,
        lr: PositiveFloat = 0.05,
        momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        finetune_steps: NonNegativeInt = 100,
        finetune_lr: PositiveFloat = 1e-3,
        prox: bool = True,
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
        self.prox = prox
        self.kept: dict[str, int] = {}
        self.zeroed_by_prox: dict[str, int] = {}

    @property
    def info(self) -> dict[str, Any]:
        """Per group set (layer): groups kept, and groups the prox had zeroed before the
        final projection, so a report can tell the envelope's sparsity from the projection's."""
        return {"prox": self.prox, "kept": self.kept, "zeroed_by_prox": self.zeroed_by_prox}

    def compress(self, model: nn.Module, ctx: Any) -> nn.Module:
        deadline = deadline_of(ctx)
        grouped = grouped_tensors(model, self.groups, self.keep_fraction)
        self.train(model, ctx, grouped, deadline)
        self.zeroed_by_prox = {gt.name: gt.count - gt.nonzero_groups() for gt in grouped}
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
        """Proximal gradient: an SGD step on the loss, then the WGSEF prox per group set
        (with ``prox`` off, the same SGD steps alone: the ablation's plain training)."""
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum)

        def prox() -> None:
            for gt in grouped:
                apply_envelope_prox(gt, self.lr * self.lam)

        after = prox if self.prox else None
        train_steps(model, ctx, opt, self.steps, deadline=deadline, after_step=after)

    def remove(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        """Physically delete the zero groups."""
        if self.groups == "neurons":
            for group in linear_chains(model):
                keep = torch.nonzero(masks[group.producers[0]]).view(-1)
                remove_neurons(model, group, keep)
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
