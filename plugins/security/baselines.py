"""Baseline security splits that SLIP-style methods must beat, and the two bounds.

- ``no-split``: everything on the untrusted device; the attacker holds the whole model.
- ``all-trusted``: everything on the trusted device; nothing leaks, everything is slow.
- ``layer-split``: the first and last ``trusted_layers`` parameterised layers (and the
  BatchNorm that follows a trusted convolution) run on the trusted device, the rest on the
  untrusted one; a common practical split (e.g. protecting the embedding and the head).
- ``shield-shallow``, ``shield-deep``, ``shield-intermediate``: the TEE-shielded
  partitions of the S&P 2024 benchmark (``ShieldUnits``).

The split keeps the original computation exactly: the untrusted model is a copy whose
trusted layers are replaced by proxies that call into the trusted container.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import NonNegativeInt, PositiveInt
from torch import nn

from benchmark.measure.crossings import Exchange, SiteOf, keyed_site, record_transcript

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

    def __init__(
        self,
        trusted: nn.Module,
        untrusted: nn.Module,
        entry: nn.Module,
        site_of: SiteOf = keyed_site,
    ) -> None:
        self.trusted = trusted
        self.untrusted = untrusted
        self._entry = entry
        self._site_of = site_of

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._entry(inputs)

    def untrusted_state(self) -> dict[str, torch.Tensor]:
        return dict(self.untrusted.state_dict())

    def transcript(self, inputs: torch.Tensor) -> list[Exchange]:
        return record_transcript(self, inputs, self._site_of)


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
    def __init__(self, trusted_layers: NonNegativeInt = 1) -> None:
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
        return ModuleSplit(model, nn.ModuleDict(), model, site_of=lambda p: (p, "replace"))


# --------------------------------------------------------------------------- TEE partitions


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and next(m.children(), None) is None]


def units(model: nn.Module) -> list[list[str]]:
    """The model cut into the "layers" a TEE partition shields, in forward order.

    A transformer's blocks (the members of its largest ``nn.ModuleList``) are one unit
    each: the whole block runs inside the enclave, attention glue included. Elsewhere a
    unit is one parameterised layer with the parameter-free layers after it (BatchNorm is
    parameterised but joins the layer it follows; activations, pooling, flatten), so a
    conv-BN-ReLU-pool stage is one unit, as the layer-level partitions count them."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    blocks: list[str] = []
    if lists:
        name, biggest = max(lists, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))
        blocks = [f"{name}.{i}" for i in range(len(biggest))]
    out: list[list[str]] = []
    for leaf, module in _leaves(model):
        block = next((b for b in blocks if leaf == b or leaf.startswith(b + ".")), None)
        if block is not None:
            if not out or out[-1] != [block]:
                out.append([block])
            continue
        starts = isinstance(module, PARAMETERISED)
        if starts or not out or (len(out[-1]) == 1 and out[-1][0] in blocks):
            out.append([leaf])
        else:
            out[-1].append(leaf)
    return out


class ShieldUnits:
    """Shield a contiguous run of units (``units``) in the trusted device, everything else
    untrusted; the partitions benchmarked by Zhang et al. ("No Privacy Left Outside", IEEE
    S&P 2024, arXiv:2310.07152): ``shallow`` (the first units, as Serdab), ``deep`` (the
    last, as DarkneTZ) and ``intermediate`` (the middle ones; SOTER shields a random subset
    and scales the rest, which the S&P benchmark's attacker undoes: the contiguous middle
    stands in for it here). Activations cross in clear at the shielded run's ends."""

    def __init__(
        self,
        position: Literal["shallow", "deep", "intermediate"] = "deep",
        trusted_units: PositiveInt = 1,
    ) -> None:
        if position not in ("shallow", "deep", "intermediate"):
            raise ValueError(f"position must be shallow, deep or intermediate, not {position!r}")
        if trusted_units < 1:
            raise ValueError("trusted_units must be >= 1")
        self.position, self.count = position, trusted_units

    def picked(self, model: nn.Module) -> list[str]:
        all_units = units(model)
        k = min(self.count, len(all_units))
        if self.position == "shallow":
            chosen = all_units[:k]
        elif self.position == "deep":
            chosen = all_units[len(all_units) - k :]
        else:
            first = (len(all_units) - k) // 2
            chosen = all_units[first : first + k]
        return [name for unit in chosen for name in unit]

    def split(self, model: nn.Module) -> ModuleSplit:
        untrusted = copy.deepcopy(model)
        trusted = nn.ModuleDict()
        for name in self.picked(untrusted):
            module = untrusted.get_submodule(name)
            trusted[name.replace(".", "__")] = module
            _set_submodule(untrusted, name, _Proxy(module))
        return ModuleSplit(trusted, untrusted, untrusted)
