"""Counting what tensors and modules hold, one definition for every protocol."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor inside ``obj``, recursing through dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored (quantized tensors included)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def leaf_modules(module: nn.Module) -> list[nn.Module]:
    """Modules without children: where the computation of a module tree happens."""
    return [m for m in module.modules() if next(m.children(), None) is None]
