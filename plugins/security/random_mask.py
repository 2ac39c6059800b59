"""Random-mask split: the baseline that tells whether SLIP's *choice* of what to keep
secret (the top singular components) matters, or only *how much* is kept; and, with
``criterion: magnitude`` (registered as ``magnitude-mask``), the TEE partition that shields
the largest-magnitude weights (Zhang et al., "No Privacy Left Outside", S&P 2024,
arXiv:2310.07152, whose benchmark shields the top 1%).

Each protected weight W is split entry-wise by a random Bernoulli(``trusted_fraction``)
mask M: the trusted device keeps W ⊙ M (and the bias), the untrusted one W ⊙ (1 − M);
hybrid inference sums the two products, so outputs equal the original's. Activations cross
in clear (as SLIP with ``mask=False``). Layer selection, the attacker's view (every
parameter but the trusted entries) and tied weights are handled as in SLIP.

The trusted product is computed densely (W ⊙ M stored as a dense matrix), which is what
the protocol's FLOP counter sees: a sparse kernel would need about ``trusted_fraction`` of
those FLOPs, but no sparse kernel runs here, so none is claimed.
"""

from __future__ import annotations

import copy
from typing import Annotated, Literal

import torch
from annotated_types import Interval
from torch import nn

from plugins.security.baselines import _Proxy, _set_submodule
from plugins.security.slip import (
    SLIPSplit,
    _attacker_state,
    _Product,
    _tied_users,
    additive_site,
    select_layers,
)


class _TrustedShare(nn.Module):
    """Trusted: (W ⊙ M) x + b."""

    def __init__(self, layer: nn.Module, weight: torch.Tensor) -> None:
        super().__init__()
        self.product = _Product(layer, weight)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self.ndim_extra = layer.weight.dim() - 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.product(x)
        if self.bias is not None:
            y = y + self.bias.reshape(-1, *([1] * self.ndim_extra))
        return y


class _MaskedLayer(nn.Module):
    """Untrusted host's layer: its own share plus the trusted share, held by reference."""

    def __init__(self, layer: nn.Module, keep: torch.Tensor) -> None:
        super().__init__()
        w = layer.weight.detach()
        object.__setattr__(self, "trusted_share", _TrustedShare(layer, w * keep))
        self.residual_weight = w * ~keep  # plain attribute: what the attacker gets
        self.residual = _Product(layer, self.residual_weight.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.trusted_share(x)
        return self.residual(x) + z


class RandomMask:
    def __init__(
        self,
        trusted_fraction: Annotated[float, Interval(ge=0, le=1)] = 0.1,
        layers: str | list[str] = "all-linear",
        seed: int = 0,
        criterion: Literal["random", "magnitude"] = "random",
    ) -> None:
        if not 0.0 <= trusted_fraction <= 1.0:
            raise ValueError(f"trusted_fraction must be in [0, 1], got {trusted_fraction}")
        if criterion not in ("random", "magnitude"):
            raise ValueError(f"criterion must be 'random' or 'magnitude', got {criterion!r}")
        self.trusted_fraction, self.layers, self.seed = trusted_fraction, layers, seed
        self.criterion = criterion

    def _keep(self, weight: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Which entries are trusted: a Bernoulli draw, or the largest magnitudes."""
        if self.criterion == "random":
            return torch.rand(weight.shape, generator=g) < self.trusted_fraction
        k = round(self.trusted_fraction * weight.numel())
        keep = torch.zeros(weight.numel(), dtype=torch.bool)
        if k > 0:
            keep[weight.detach().abs().flatten().cpu().topk(k).indices] = True
        return keep.reshape(weight.shape)

    def split(self, model: nn.Module) -> SLIPSplit:
        host = copy.deepcopy(model)
        g = torch.Generator().manual_seed(self.seed)
        original = {k: v.detach() for k, v in host.state_dict(keep_vars=True).items()}
        protected = select_layers(host, self.layers)
        layers = {}
        for name in protected:
            layer = host.get_submodule(name)
            keep = self._keep(layer.weight, g)
            layers[name] = _MaskedLayer(layer, keep.to(layer.weight.device))
        state = _attacker_state(host, original, layers, protected)
        trusted = nn.ModuleDict()
        for name, masked in layers.items():
            trusted[name.replace(".", "__")] = masked.trusted_share
            _set_submodule(host, name, masked)
        for name in _tied_users(host, original, layers):
            module = host.get_submodule(name)
            trusted[name.replace(".", "__")] = module
            _set_submodule(host, name, _Proxy(module))
        return SLIPSplit(
            host,
            trusted,
            host,
            nn.ModuleDict(),
            state,
            ranks={},
            site_of=additive_site(set(layers)),
        )
