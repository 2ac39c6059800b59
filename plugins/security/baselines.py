"""Baseline security splits that SLIP-style methods must beat, and the two bounds.

- ``no-split``: everything on the untrusted device; the attacker holds the whole model.
- ``all-trusted``: everything on the trusted device; nothing leaks, everything is slow.
- ``layer-split``: the first and last ``trusted_layers`` parameterised layers (and the
  BatchNorm that follows a trusted convolution) run on the trusted device, the rest on the
  untrusted one; a common practical split (e.g. protecting the embedding and the head).

The split keeps the original computation exactly: the untrusted model is a copy whose
trusted layers are replaced by proxies that call into the trusted container.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from benchmark import hookimpl
from benchmark.kinds import MethodSpec

PARAMETERISED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


class _Proxy(nn.Module):
    """Stands in the untrusted model for a trusted layer; owns no parameters."""

    def __init__(self, target: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_target", target)  # not registered: stays trusted

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._target(*args, **kwargs)


class ModuleSplit:
    """A split by modules; ``untrusted_state`` keeps the original parameter names."""

    def __init__(self, trusted: nn.Module, untrusted: nn.Module, entry: nn.Module) -> None:
        self.trusted = trusted
        self.untrusted = untrusted
        self._entry = entry

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._entry(inputs)

    def untrusted_state(self) -> dict[str, torch.Tensor]:
        return dict(self.untrusted.state_dict())


def _set_submodule(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def trusted_layer_names(model: nn.Module, first: int, last: int) -> list[str]:
    """Names of the first/last parameterised leaves, each with the norm right after it."""
    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    layers = [i for i, (_, m) in enumerate(leaves) if isinstance(m, PARAMETERISED)]
    picked = set(layers[:first]) | set(layers[len(layers) - last :] if last else [])
    names = []
    for i in sorted(picked):
        names.append(leaves[i][0])
        if i + 1 < len(leaves) and isinstance(leaves[i + 1][1], NORMS):
            names.append(leaves[i + 1][0])
    return names


class LayerSplit:
    def __init__(self, trusted_layers: int = 1) -> None:
        if trusted_layers < 0:
            raise ValueError("trusted_layers must be >= 0")
        self.trusted_layers = trusted_layers

    def split(self, model: nn.Module) -> ModuleSplit:
        untrusted = copy.deepcopy(model)
        trusted = nn.ModuleDict()
        for name in trusted_layer_names(untrusted, self.trusted_layers, self.trusted_layers):
            layer = untrusted.get_submodule(name)
            trusted[name.replace(".", "__")] = layer
            _set_submodule(untrusted, name, _Proxy(layer))
        return ModuleSplit(trusted, untrusted, untrusted)


class NoSplit:
    def split(self, model: nn.Module) -> ModuleSplit:
        return ModuleSplit(nn.ModuleDict(), model, model)


class AllTrusted:
    def split(self, model: nn.Module) -> ModuleSplit:
        return ModuleSplit(model, nn.ModuleDict(), model)


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="security_split",
            name="no-split",
            factory=NoSplit,
            description="everything untrusted: the exposed bound",
        )
    )
    register(
        MethodSpec(
            kind="security_split",
            name="all-trusted",
            factory=AllTrusted,
            description="everything trusted: the secure, expensive bound",
        )
    )
    register(
        MethodSpec(
            kind="security_split",
            name="layer-split",
            factory=LayerSplit,
            defaults={"trusted_layers": 1},
            description="first and last parameterised layers trusted",
        )
    )
