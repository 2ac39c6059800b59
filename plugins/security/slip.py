"""SLIP: a model split by weight decomposition (Refael, Hakim, Greenberg et al. 2024,
"SLIP: Securing LLMs IP Using Weights Decomposition", arXiv:2407.10886; the protocol's
formal treatment is SLIP-SEC, arXiv:2510.24999).

Decomposition. Each protected weight W (an ``nn.Linear``, or an ``nn.Conv1d``/``Conv2d``
read as an out x (in·kernel) matrix) is split by its SVD W = U S Vᵀ: the trusted device
keeps the top-k components W_C = U_k S_k V_kᵀ, stored as the two thin factors U_k S_k and
V_kᵀ, and the untrusted device keeps the residual W_D = W − W_C. Since the layer is linear,
W x = W_C x + W_D x, so hybrid inference reproduces the original outputs (float rounding
aside). The trusted device pays 2·k·(m+n) FLOPs per input vector instead of 2·m·n (for a
convolution: per output position, with n = in·kernel). ``rank`` fixes k; ``energy`` picks,
per layer, the smallest k whose components hold that share of ‖W‖²_F.

Masked protocol (``mask=True``, the paper's honest-but-curious protocol). The untrusted
device must not see the activations in clear, or it could regress W from input/output
pairs. The trusted device runs the model's "glue" (activations, norms, pooling, attention
products, embeddings: everything but the protected products) and, for each layer:

1. (offline, input-independent) draws a fresh one-time mask r and precomputes W_D r;
2. sends x̃ = x + r to the untrusted device, which returns ỹ = W_D x̃;
3. unmasks: y = ỹ − W_D r + W_C x + b.

Layers not selected for protection run the same way with W_D = W (k = 0): their weights
are on the untrusted device, their activations are still masked. Step 1 is this module's
``offline`` part: the security protocol runs it inline, so outputs stay exact, but reports
its FLOPs and time apart from the online cost, as the paper counts it as precomputation.
The crossing trace sees x̃ leave and ỹ come back for every layer.

Departures from the paper, and why:

- The SLIP-SEC proof is over a finite field with uniform masks (perfect hiding). In
  floating point that is impossible; masks are Gaussian with standard deviation
  ``mask_std`` and the masked products are computed in ``mask_dtype`` (float64 by
  default) so that unmasking stays exact to float32 tolerance. What crosses is then
  x + r with an activation-to-mask ratio of about ‖x‖/``mask_std``: statistically, not
  perfectly, hiding. The default 1e4 makes the correlation of x̃ with x about 1e-4.
- Masks come from torch generators seeded with 63 bits from the operating system's
  entropy (``secrets``), a fresh seed per layer and split: whoever knows the run's seed
  learns nothing about them. ``mask_seed`` fixes them, for tests that need
  reproducibility only. The generator stream itself is not a cryptographic one.
- The pads W_D·r need W_D: the offline part holds its own copy (counted as
  ``offline_bytes``, on the trusted side, which precomputes them; a deployment could
  instead receive them from a dealer that holds W_D).
- Biases stay with the trusted side (added when unmasking). ``untrusted_state`` is
  conservative: it gives the attacker every parameter but the secret top-k components
  (residuals under the original names, unprotected weights, biases, norms, embeddings),
  as if all the non-secret parts had leaked. A tensor tied to a protected weight (a tied
  embedding) is replaced by the residual too.
- The paper's integrity checks against a malicious untrusted device (Freivalds-style
  probabilistic verification) are not implemented: the benchmark's threat model is the
  honest-but-curious attacker who steals weights.

With ``mask=False`` the activations cross in clear: the host model (glue included) runs
on the untrusted device, and the trusted device only adds W_C x + b; modules that use a
protected weight under another name (a tied embedding) run trusted.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
from annotated_types import Interval
from pydantic import NonNegativeInt, PositiveFloat
from torch import nn
from torch.nn import functional as F

from benchmark.measure.crossings import Exchange, SiteOf, keyed_site, record_transcript
from plugins.layers import decomposable, select_layers
from plugins.security.baselines import _Proxy, _set_submodule

# --------------------------------------------------------------------------- selection


def _as_matrix(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1)


def choose_rank(s: torch.Tensor, rank: int | None, energy: float | None) -> int:
    """k from a fixed rank (capped) or the smallest k holding ``energy`` of Σσ²."""
    if rank is not None:
        return min(rank, len(s))
    assert energy is not None
    share = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum().clamp_min(1e-300)
    return min(int((share < energy).sum()) + 1, len(s))


# --------------------------------------------------------------------------- layer parts


class _Product(nn.Module):
    """``weight``'s product with an input, as the layer it came from computes it, in
    ``compute_dtype`` (the weight's own dtype unless told)."""

    def __init__(
        self, layer: nn.Module, weight: torch.Tensor, compute_dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.kind = type(layer)
        self.conv_args = (
            {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation}
            if isinstance(layer, nn.Conv1d | nn.Conv2d)
            else {}
        )
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.compute_dtype = compute_dtype or weight.dtype

    def product(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The product without going through ``__call__`` (no hooks fire)."""
        w = self.weight if weight is None else weight
        x, w = x.to(self.compute_dtype), w.to(self.compute_dtype)
        if self.kind is nn.Linear:
            return F.linear(x, w)
        conv = F.conv1d if self.kind is nn.Conv1d else F.conv2d
        return conv(x, w, **self.conv_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.product(x)


class _LowRank(nn.Module):
    """Trusted: W_C x = (U_k S_k)(V_kᵀ x) as two thin products (for a convolution: k
    filters of the layer's shape, then a 1x1 convolution)."""

    def __init__(self, layer: nn.Module, us: torch.Tensor, vt: torch.Tensor) -> None:
        super().__init__()
        shape = layer.weight.shape
        k = vt.shape[0]
        self.first = _Product(layer, vt.reshape(k, *shape[1:]).contiguous())
        if isinstance(layer, nn.Linear):
            self.second = _Product(nn.Linear(k, shape[0]), us.contiguous())
        else:
            ones = (1,) * (len(shape) - 2)
            self.second = _Product(type(layer)(k, shape[0], ones), us.reshape(shape[0], k, *ones))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second.product(self.first(x))


class _Pad(nn.Module):
    """Offline: a fresh mask r for an input of ``x``'s shape and its product W_D r.

    Uses only the shape of ``x``; a deployment precomputes these pairs ahead of time.
    Holds its own copy of W_D (the product needs it, so whoever precomputes holds it)."""

    def __init__(self, residual: _Product, std: float, seed: int | None) -> None:
        super().__init__()
        object.__setattr__(self, "_residual", residual)
        self.weight = nn.Parameter(residual.weight.detach().clone(), requires_grad=False)
        self.std = std
        self.seed = seed
        self._gen: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        res = self._residual
        if self._gen is None or self._gen.device != x.device:
            seed = self.seed if self.seed is not None else secrets.randbits(63)
            self._gen = torch.Generator(device=x.device).manual_seed(seed)
        r = torch.randn(x.shape, generator=self._gen, device=x.device, dtype=res.compute_dtype)
        r.mul_(self.std)
        return r, res.product(r, self.weight)  # not res(r): that is the untrusted side's call


class _Blind(nn.Module):
    """Trusted: x̃ = x + r, in the masked products' precision (r set aside beforehand, so
    the call's only argument is what the trusted side holds in clear)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.pending is not None, "blind without a mask"
        r, self.pending = self.pending, None
        return x.to(r.dtype) + r


class _Unblind(nn.Module):
    """Trusted: y = ỹ − W_D r + W_C x + b, from what it set aside before sending x̃."""

    def __init__(self, bias: torch.Tensor | None, ndim_extra: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.ndim_extra = ndim_extra  # spatial dims after the channel dim (convolutions)
        self.dtype = dtype  # the layer's own output dtype
        self.pending: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def add_bias(self, y: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return y
        return y + self.bias.reshape(-1, *([1] * self.ndim_extra))

    def forward(self, y_masked: torch.Tensor) -> torch.Tensor:
        assert self.pending is not None, "unblind without a pending mask"
        w_r, low = self.pending
        self.pending = None
        y = (y_masked - w_r).to(self.dtype)
        if low is not None:
            y = y + low
        return self.add_bias(y)


class SLIPLayer(nn.Module):
    """One decomposed layer. Which parts are registered (and so belong to the host's
    side) depends on the mode: masked, the host is trusted and the residual and the pad
    are held by reference; unmasked, the host is untrusted and the trusted low-rank part
    is held by reference."""

    def __init__(
        self,
        layer: nn.Module,
        k: int,
        *,
        mask: bool,
        mask_std: float,
        mask_dtype: torch.dtype,
        seed: int | None,
    ) -> None:
        super().__init__()
        w = layer.weight.detach()
        dtype = w.dtype
        mat = _as_matrix(w).double()
        low: _LowRank | None = None
        if k > 0:
            u, s, vh = torch.linalg.svd(mat, full_matrices=False)
            us = (u[:, :k] * s[:k]).to(dtype)
            vt = vh[:k].to(dtype)
            low = _LowRank(layer, us, vt)
            mat = mat - us.double() @ vt.double()  # exact residual of the stored factors
        self.k = k
        self.out_features = w.shape[0]
        self.in_features = mat.shape[1]
        self.mask = mask
        residual = mat.reshape(w.shape)
        self.residual_weight = residual.to(dtype)  # plain attribute: what the attacker gets
        bias = None if layer.bias is None else layer.bias.detach().clone()
        ndim_extra = w.dim() - 2
        if mask:
            res = _Product(layer, residual.to(dtype), compute_dtype=mask_dtype)
            pad = _Pad(res, mask_std, seed)
            object.__setattr__(self, "residual", res)
            object.__setattr__(self, "pad", pad)
            if low is not None:
                self.low = low
            self.blind = _Blind()
            self.unblind = _Unblind(bias, ndim_extra, dtype)
        else:
            res = _Product(layer, residual.to(dtype))
            self.residual = res
            secure = _Secure(low, bias, ndim_extra, dtype)
            object.__setattr__(self, "secure", secure)

    def trusted_parts(self) -> list[nn.Module]:
        if self.mask:
            return [m for m in (getattr(self, "low", None), self.blind, self.unblind) if m]
        return [self.secure]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.mask:
            z = self.secure(x)  # trusted: W_C x + b, back to the untrusted host
            return self.residual(x) + z
        low = self.low(x) if self.k > 0 else None
        r, w_r = self.pad(x)
        self.blind.pending = r
        x_masked = self.blind(x)
        self.unblind.pending = (w_r, low)
        y_masked = self.residual(x_masked)  # the only thing the untrusted device computes
        return self.unblind(y_masked)


class _Secure(nn.Module):
    """Trusted side of the unmasked protocol: W_C x + b."""

    def __init__(
        self,
        low: _LowRank | None,
        bias: torch.Tensor | None,
        ndim_extra: int,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.low = low
        self.unblind = _Unblind(bias, ndim_extra, dtype)  # only its bias is used here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.low is None:
            bias = self.unblind.bias
            if bias is None:
                return torch.zeros((), dtype=x.dtype, device=x.device)
            return bias.reshape(-1, *([1] * self.unblind.ndim_extra))
        return self.unblind.add_bias(self.low(x))


# --------------------------------------------------------------------------- the split


class SLIPSplit:
    """``SplitModel`` for SLIP: ``trusted``, ``untrusted``, ``offline`` module trees."""

    offline_side = "trusted (precomputes the pads, holding a copy of W_D)"

    def __init__(
        self,
        host: nn.Module,
        trusted: nn.Module,
        untrusted: nn.Module,
        offline: nn.Module,
        state: dict[str, torch.Tensor],
        ranks: dict[str, int],
        site_of: SiteOf = keyed_site,
        untrusted_dtype: str | None = None,
    ) -> None:
        self._host = host
        self.trusted = trusted
        self.untrusted = untrusted
        self.offline = offline
        self._state = state
        self.ranks = ranks
        self._site_of = site_of
        self.untrusted_dtype = untrusted_dtype

    def forward(self, inputs: Any) -> Any:
        return self._host(inputs)

    def untrusted_state(self) -> dict[str, torch.Tensor]:
        return dict(self._state)

    def transcript(self, inputs: Any) -> list[Exchange]:
        return record_transcript(self, inputs, self._site_of)


class SLIP:
    """Factory: ``SLIP(**hparams).split(model)``."""

    def __init__(
        self,
        layers: str | list[str] = "all-linear",
        rank: NonNegativeInt = 8,  # ignored when energy is given
        energy: Annotated[float, Interval(gt=0, le=1)]
        | None = None,  # instead of rank: keep this fraction of energy
        mask: bool = True,
        mask_std: PositiveFloat = 1e4,
        mask_dtype: Literal["float64", "float32", "bfloat16", "float16"] = "float64",
        mask_seed: int | None = None,
    ) -> None:
        if energy is not None:
            if not 0.0 < energy <= 1.0:
                raise ValueError(f"energy must be in (0, 1], got {energy}")
            rank = None
        elif rank is None or rank < 0:
            raise ValueError("give rank >= 0 or energy in (0, 1]")
        if mask_std <= 0:
            raise ValueError("mask_std must be > 0")
        self.layers, self.rank, self.energy = layers, rank, energy
        self.mask, self.mask_std, self.mask_seed = mask, mask_std, mask_seed
        self.mask_dtype = getattr(torch, mask_dtype)

    def _rank_of(self, layer: nn.Module) -> int:
        s = torch.linalg.svdvals(_as_matrix(layer.weight.detach()).double())
        return choose_rank(s, self.rank, self.energy)

    def split(self, model: nn.Module) -> SLIPSplit:
        host = copy.deepcopy(model)
        protected = select_layers(host, self.layers)
        original_state = {k: v.detach() for k, v in host.state_dict(keep_vars=True).items()}
        # In masked mode every decomposable layer goes through the protocol: the
        # unprotected ones with k = 0 (their whole weight untrusted, inputs still masked).
        names = (
            [n for n, m in host.named_modules() if n and decomposable(m)]
            if self.mask
            else protected
        )
        layers: dict[str, SLIPLayer] = {}
        ranks: dict[str, int] = {}
        for i, name in enumerate(names):
            layer = host.get_submodule(name)
            k = self._rank_of(layer) if name in protected else 0
            layers[name] = SLIPLayer(
                layer,
                k,
                mask=self.mask,
                mask_std=self.mask_std,
                mask_dtype=self.mask_dtype,
                seed=None if self.mask_seed is None else self.mask_seed * 100003 + i,
            )
            if name in protected:
                ranks[name] = k
        state = _attacker_state(host, original_state, layers, protected)
        for name, sl in layers.items():
            _set_submodule(host, name, sl)
        key = {n: n.replace(".", "__") for n in layers}
        if self.mask:
            trusted = host
            untrusted = nn.ModuleDict({key[n]: sl.residual for n, sl in layers.items()})
            offline = nn.ModuleDict({key[n]: sl.pad for n, sl in layers.items()})
            return SLIPSplit(
                host,
                trusted,
                untrusted,
                offline,
                state,
                ranks,
                site_of=_host_site(set(layers)),
                untrusted_dtype=str(self.mask_dtype).removeprefix("torch."),
            )
        trusted = nn.ModuleDict({key[n]: sl.secure for n, sl in layers.items()})
        for name in _tied_users(host, original_state, layers):
            module = host.get_submodule(name)
            trusted[name.replace(".", "__")] = module
            _set_submodule(host, name, _Proxy(module))
        return SLIPSplit(
            host, trusted, host, nn.ModuleDict(), state, ranks, site_of=additive_site(set(layers))
        )


def additive_site(shares: set[str]) -> SiteOf:
    """Sites of a trusted ModuleDict (keyed names) where the layers in ``shares`` reply
    with a share the host adds to its own product, and the rest (tied users) reply in
    full."""

    def site_of(path: str) -> tuple[str, str] | None:
        found = keyed_site(path)
        if found is None:
            return None
        return found[0], "add" if found[0] in shares else "replace"

    return site_of


def _host_site(layers: set[str]) -> SiteOf:
    """Sites of a trusted host (masked mode): a decomposed layer's parts (low-rank
    product, blinding, unblinding) serve that layer; the glue serves its own module."""

    def site_of(path: str) -> tuple[str, str] | None:
        parts = path.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in layers:
                return ".".join(parts[:i]), "replace"
        return path, "replace"

    return site_of


def _attacker_state(
    host: nn.Module,
    original: dict[str, torch.Tensor],
    layers: Mapping[str, Any],
    protected: list[str],
) -> dict[str, torch.Tensor]:
    """Everything but the secret top-k parts: residuals under the original names, and
    the residual again for any other name tied to a protected weight."""
    residual_of: dict[int, torch.Tensor] = {}
    for name in protected:
        weight = host.get_submodule(name).weight
        residual_of[weight.data_ptr()] = layers[name].residual_weight
    state = {}
    for key, value in original.items():
        hit = residual_of.get(value.data_ptr()) if value.numel() else None
        state[key] = (hit if hit is not None else value).detach().clone()
    return state


def _tied_users(
    host: nn.Module, original: dict[str, torch.Tensor], layers: Mapping[str, Any]
) -> list[str]:
    """Modules (not decomposed) that hold a tensor tied to a decomposed weight."""
    secret = {original[f"{n}.weight"].data_ptr() for n in layers}
    users = []
    for name, module in host.named_modules():
        if name in layers or not name or any(name.startswith(n + ".") for n in layers):
            continue
        if any(p.data_ptr() in secret for p in module.parameters(recurse=False)):
            users.append(name)
    return users
