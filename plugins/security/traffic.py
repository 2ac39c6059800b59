"""The traffic attack: fit every trusted map that crosses in clear from what the untrusted
device sent and received.

An attacker on the untrusted device records the exchanges of the inputs it serves
(``ctx.transcripts(n)``, from the split's ``transcript``). Where the trusted side answers
a request with the output of one layer of the (public) architecture, or of a layer and the
BatchNorm after it, the reply is an affine function of the request: least squares (ridge)
over the served rows gives the layer, and it is loaded into the stolen model (added to
the untrusted share of the same weight when the host adds the reply to its own product,
``combine="add"``). A fit is loaded only when it explains held-out rows (R² >=
``min_r2``): a masked transcript (SLIP's one-time pads) explains nothing and is ignored,
and the attacker keeps what it stole.

Fits are streamed as sufficient statistics (XᵀX, XᵀY per exchange), so 1024 served inputs
of a transformer need memory for the Gram matrices, not for the activations.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.measure.crossings import Exchange
from plugins.security.attack_training import choose, load_stolen, tuned_copy

BN = (nn.BatchNorm1d, nn.BatchNorm2d)
HELD_OUT_EVERY = 5  # every 5th row is held out to check a fit


@dataclass
class _Fit:
    """Streaming ridge regression Y ≈ [X, 1] A, with rows split into fit and held out."""

    layer: nn.Module
    sites: tuple[str, ...]
    combine: str
    gram: torch.Tensor | None = None
    cross: torch.Tensor | None = None
    held: list[torch.Tensor] = field(default_factory=list)  # [XᵀX, XᵀY, YᵀY diag, ΣY, n]
    counts: torch.Tensor | None = None  # embeddings: rows seen per id

    def rows(self, ex: Exchange) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(X, Y) rows of one exchange for this layer, or None if it does not fit."""
        sent, got, layer = ex.sent, ex.received, self.layer
        if got is None or sent.numel() == 0:
            return None
        if isinstance(layer, nn.Embedding):
            if sent.is_floating_point() or got.shape != (*sent.shape, layer.embedding_dim):
                return None
            return sent.reshape(-1).long(), got.reshape(-1, layer.embedding_dim).double()
        if isinstance(layer, nn.Linear):
            ok = sent.shape[-1] == layer.in_features and got.shape[-1] == layer.out_features
            if not ok or sent.shape[:-1] != got.shape[:-1]:
                return None
            return sent.reshape(-1, layer.in_features).double(), got.reshape(
                -1, layer.out_features
            ).double()
        if isinstance(layer, nn.Conv2d):
            if sent.dim() != 4 or sent.shape[1] != layer.in_channels or layer.groups != 1:
                return None
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
                return None
            cols = F.unfold(
                sent.double(), layer.kernel_size, layer.dilation, layer.padding, layer.stride
            )  # (B, C·kh·kw, L)
            if got.dim() != 4 or got.shape[1] != layer.out_channels:
                return None
            y = got.double().reshape(got.shape[0], got.shape[1], -1)
            if y.shape[-1] != cols.shape[-1]:
                return None
            return cols.transpose(1, 2).reshape(-1, cols.shape[1]), y.transpose(1, 2).reshape(
                -1, got.shape[1]
            )
        return None

    def add(self, ex: Exchange) -> bool:
        rows = self.rows(ex)
        if rows is None:
            return False
        x, y = rows
        if isinstance(self.layer, nn.Embedding):
            x = F.one_hot(x, self.layer.num_embeddings).double()
        else:
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        held = torch.zeros(len(x), dtype=torch.bool)
        held[::HELD_OUT_EVERY] = True
        if len(x) < 2 * HELD_OUT_EVERY:  # too few rows to hold some out: fit them all
            held[:] = False
        xf, yf, xh, yh = x[~held], y[~held], x[held], y[held]
        if self.gram is None:
            self.gram, self.cross = xf.T @ xf, xf.T @ yf
            self.held = [xh.T @ xh, xh.T @ yh, (yh * yh).sum(0), yh.sum(0), len(yh)]
        else:
            assert self.cross is not None
            self.gram += xf.T @ xf
            self.cross += xf.T @ yf
            parts = [xh.T @ xh, xh.T @ yh, (yh * yh).sum(0), yh.sum(0), len(yh)]
            self.held = [a + b for a, b in zip(self.held, parts, strict=True)]
        return True

    def solve(self) -> tuple[torch.Tensor, float]:
        """(A, held-out R²): ridge with a penalty 1e-6 of the mean diagonal; for an
        embedding, A's rows are the mean reply per id (ids never seen stay NaN)."""
        assert self.gram is not None and self.cross is not None
        d = self.gram.shape[0]
        if isinstance(self.layer, nn.Embedding):
            counts = self.gram.diagonal()
            a = self.cross / counts.clamp_min(1).unsqueeze(1)
            a[counts == 0] = float("nan")
        else:
            lam = 1e-6 * float(self.gram.diagonal().mean()) + 1e-12
            a = torch.linalg.solve(
                self.gram + lam * torch.eye(d, dtype=self.gram.dtype), self.cross
            )
        xtx, xty, yy, ysum, n = self.held
        if n == 0:
            return a, float("nan")
        a0 = torch.nan_to_num(a)
        sse = float(yy.sum() - 2 * (a0 * xty).sum() + (a0 * (xtx @ a0)).sum())
        sst = float((yy - ysum**2 / n).sum())
        return a, 1.0 - sse / max(sst, 1e-300)


def _sites_fit(model: nn.Module, ex: Exchange) -> tuple[nn.Module, tuple[str, ...]] | None:
    """The layer this exchange's reply is an affine function of, if any: one Linear,
    Conv2d or Embedding of the architecture, optionally followed by a BatchNorm."""
    if not ex.sites:
        return None
    modules = dict(model.named_modules())
    layers = [modules.get(s) for s in ex.sites]
    if any(m is None for m in layers):
        return None
    first, rest = layers[0], layers[1:]
    if not isinstance(first, nn.Linear | nn.Conv2d | nn.Embedding):
        return None
    if len(rest) > 1 or (rest and not isinstance(rest[0], BN)):
        return None
    if rest and (isinstance(first, nn.Embedding) or ex.combine != "replace"):
        return None
    return first, tuple(ex.sites)


def fit_transcripts(
    model: nn.Module, transcripts: Iterable[list[Exchange]], min_r2: float = 0.9
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """From batches of exchanges: the tensors to load (under the model's names, before the
    stolen share is added for ``combine="add"``) and each fitted site's held-out R²."""
    fits: dict[tuple[int, tuple[str, ...]], _Fit] = {}
    for exchanges in transcripts:
        for i, ex in enumerate(exchanges):
            found = _sites_fit(model, ex)
            if found is None:
                continue
            layer, sites = found
            fit = fits.setdefault((i, sites), _Fit(layer, sites, ex.combine))
            fit.add(ex)
    out: dict[str, torch.Tensor] = {}
    quality: dict[str, float] = {}
    modules = dict(model.named_modules())
    for (_, sites), fit in fits.items():
        if fit.gram is None:
            continue
        a, r2 = fit.solve()
        quality["+".join(sites)] = r2
        if not r2 >= min_r2:
            continue
        name, layer = sites[0], fit.layer
        if isinstance(layer, nn.Embedding):
            current = layer.weight.detach().double().cpu()
            seen = ~torch.isnan(a).any(1)
            weight = current.clone()
            weight[seen] = a[seen]
            out[f"{name}.weight"] = weight
            out[f"__combine__{name}"] = torch.tensor(fit.combine == "add")
            continue
        w, b = a[:-1].T, a[-1]
        out[f"{name}.weight"] = w.reshape(layer.weight.shape)
        out[f"__combine__{name}"] = torch.tensor(fit.combine == "add")
        if getattr(layer, "bias", None) is not None:
            out[f"{name}.bias"] = b
            b = torch.zeros_like(b)
        if len(sites) == 2:  # the BatchNorm after it becomes the identity (plus the bias)
            bn = modules[sites[1]]
            out[f"{sites[1]}.weight"] = torch.ones_like(b)
            out[f"{sites[1]}.bias"] = b
            out[f"{sites[1]}.running_mean"] = torch.zeros_like(b)
            out[f"{sites[1]}.running_var"] = torch.full_like(b, 1.0 - bn.eps)
    return out, quality


def apply_fits(
    model: nn.Module, fitted: dict[str, torch.Tensor], stolen: dict[str, torch.Tensor]
) -> None:
    """Load fitted tensors; a reply that the host adds to its own product adds to the
    stolen share of that weight (``W_D + W_C`` for an unmasked SLIP layer)."""
    state = model.state_dict()
    load: dict[str, torch.Tensor] = {}
    for key, value in fitted.items():
        if key.startswith("__combine__"):
            continue
        module = key.rsplit(".", 1)[0]
        add = bool(fitted.get(f"__combine__{module}", torch.tensor(False)))
        if add and key.endswith(".weight") and key in stolen:
            value = value + stolen[key].double().cpu()
        load[key] = value.to(state[key].dtype)
    model.load_state_dict({k: v.to(state[k].device) for k, v in load.items()}, strict=False)


class TrafficAttack:
    """``traffic-N``: fit what crosses in clear from N served inputs' transcripts, then
    (optionally) fine-tune on ``n_samples`` labelled samples; keep the best of the stolen
    state as it is, the fitted model, and the fitted model fine-tuned."""

    def __init__(
        self, n_served: int = 64, n_samples: int = 64, steps: int = 100, min_r2: float = 0.9
    ) -> None:
        self.n_served, self.n_samples, self.steps, self.min_r2 = n_served, n_samples, steps, min_r2

    def __call__(self, untrusted_state: dict[str, torch.Tensor], ctx: Any) -> nn.Module:
        start = ctx.fresh_model(ctx.seed)
        load_stolen(start, untrusted_state, ctx.device)
        candidates = {"stolen as-is": start}
        fitted_state, r2 = fit_transcripts(start, ctx.transcripts(self.n_served), self.min_r2)
        base = start
        if any(not k.startswith("__combine__") for k in fitted_state):
            base = copy.deepcopy(start)
            apply_fits(base, fitted_state, untrusted_state)
            candidates["traffic fit"] = base
        if self.n_samples > 0 and self.steps > 0:
            candidates["fine-tuned"] = tuned_copy(base, ctx, self.n_samples, self.steps)
        model = choose(candidates, ctx)
        model.traffic_r2 = r2  # type: ignore[assignment]
        return model
