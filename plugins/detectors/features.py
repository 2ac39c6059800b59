"""What feature-space detectors need from a model and its batches, in one place.

Convention (shared with the workloads): a classifier that feature-space detectors can use
exposes ``penultimate(inputs) -> [B, D]`` (the features the last layer reads; the
``PenultimateFeatures`` Protocol of ``benchmark.kinds.detector``) and a property
``last_layer -> nn.Linear`` mapping those features to logits (``LastLayer``, of
``benchmark.kinds.workload``). Fit batches are
``(inputs, labels)`` pairs; score batches are bare inputs. Inputs are passed to the model
unchanged, so a text model may take a mapping of token tensors.

Token batches are padded to their longest input, so a detector that summarises positions
must skip the padding or its statistic depends on what else is in the batch. Where the
real tokens are comes from an ``attention_mask`` in a mapping of token tensors, or, for a
model that takes bare token ids, from the model's ``pad_id`` (``token_mask``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from benchmark.kinds.detector import PenultimateFeatures
from benchmark.kinds.workload import LastLayer


def inputs_of(batch: Any) -> Any:
    """The inputs of a fit batch ``(inputs, labels)``, or a score batch as it is."""
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0]
    return batch


def labels_of(batch: Any) -> torch.Tensor:
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        raise TypeError("fit batches must be (inputs, labels) pairs")
    return torch.as_tensor(batch[1]).reshape(-1)


def penultimate(model: nn.Module, inputs: Any) -> torch.Tensor:
    if not isinstance(model, PenultimateFeatures):
        raise TypeError(
            f"{type(model).__name__} has no penultimate(inputs) method; feature-space "
            "detectors need it (see plugins/detectors/features.py)"
        )
    return model.penultimate(inputs).float().flatten(1)


def last_layer(model: nn.Module) -> nn.Linear:
    layer = model.last_layer if isinstance(model, LastLayer) else None
    if not isinstance(layer, nn.Linear):
        raise TypeError(
            f"{type(model).__name__} has no last_layer (nn.Linear from penultimate features "
            "to logits); ReAct needs it"
        )
    return layer


def is_continuous(inputs: Any) -> bool:
    """Whether gradient steps on the inputs make sense (images yes, token ids no)."""
    return isinstance(inputs, torch.Tensor) and inputs.is_floating_point()


@torch.no_grad()
def collect(
    model: nn.Module, batches: Iterable[Any], *, features: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (or logits with ``features=False``) and labels of fit batches."""
    outs, labels = [], []
    for batch in batches:
        x = inputs_of(batch)
        outs.append(penultimate(model, x) if features else model(x).float())
        labels.append(labels_of(batch).to(outs[-1].device))
    if not outs:
        raise ValueError("no in-distribution batches to fit on")
    return torch.cat(outs), torch.cat(labels)


def token_mask(model: nn.Module, inputs: Any) -> torch.Tensor | None:
    """[B, T] True at real tokens, or None where the inputs carry no padding to skip."""
    if isinstance(inputs, Mapping):
        mask = inputs.get("attention_mask")
        return None if mask is None else torch.as_tensor(mask).bool()
    pad_id = getattr(model, "pad_id", None)
    if (
        isinstance(inputs, torch.Tensor)
        and inputs.dim() == 2
        and not inputs.is_floating_point()
        and isinstance(pad_id, int)
    ):
        return inputs != pad_id
    return None


def batch_len(inputs: Any) -> int:
    if isinstance(inputs, Mapping):
        return len(next(iter(inputs.values())))
    return len(inputs)
