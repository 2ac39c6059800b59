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
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from annotated_types import Le
from pydantic import NonNegativeInt, PositiveInt
from torch import nn
from torch.nn import functional as F

from benchmark.measure.crossings import Exchange
from plugins.security.attack_training import choose, fine_tune, load_stolen, parameter_groups

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
        """(X, Y) rows of one exchange for this layer (on the CPU, where the statistics
        live), or None if it does not fit."""
        sent, got, layer = ex.sent, ex.received, self.layer
        if got is None or sent.numel() == 0:
            return None
        sent, got = sent.detach().cpu(), got.detach().cpu()
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
            self._add_lookup(x, y)
            return True
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

    def _add_lookup(self, ids: torch.Tensor, y: torch.Tensor) -> None:
        """An embedding is least squares on one-hot rows: per id, the mean reply. Kept as
        per-id sums (a one-hot Gram matrix of a 30k vocabulary would take gigabytes)."""
        n, d = self.layer.num_embeddings, y.shape[1]  # type: ignore[union-attr]
        if self.cross is None:
            self.cross = torch.zeros(n, d, dtype=torch.float64)
            self.counts = torch.zeros(n, dtype=torch.float64)
            self.held = [
                torch.zeros(d, dtype=torch.float64),
                torch.zeros(d, dtype=torch.float64),
                0,
            ]
        assert self.counts is not None
        self.cross.index_add_(0, ids, y)
        self.counts.index_add_(0, ids, torch.ones(len(ids), dtype=torch.float64))
        self.held = [self.held[0] + (y * y).sum(0), self.held[1] + y.sum(0), self.held[2] + len(y)]
        self.gram = self.counts  # marks the fit as started

    def _solve_lookup(self) -> tuple[torch.Tensor, float]:
        """(per-id means, share of the replies' variance they explain): 1 when every id's
        replies agree, as a table lookup's do."""
        assert self.cross is not None and self.counts is not None
        seen = self.counts > 0
        a = torch.full_like(self.cross, float("nan"))
        a[seen] = self.cross[seen] / self.counts[seen].unsqueeze(1)
        yy, ysum, n = self.held
        between = float((self.cross[seen] ** 2 / self.counts[seen].unsqueeze(1)).sum())
        sse = float(yy.sum()) - between
        sst = float((yy - ysum**2 / max(n, 1)).sum())
        return a, 1.0 - sse / max(sst, 1e-300)

    def solve(self) -> tuple[torch.Tensor, float]:
        """(A, R² on held-out rows): ridge with a penalty 1e-6 of the mean diagonal; for an
        embedding, A's rows are the mean reply per id (ids never seen stay NaN)."""
        if isinstance(self.layer, nn.Embedding):
            return self._solve_lookup()
        assert self.gram is not None and self.cross is not None
        d = self.gram.shape[0]
        lam = 1e-6 * float(self.gram.diagonal().mean()) + 1e-12
        a = torch.linalg.solve(self.gram + lam * torch.eye(d, dtype=self.gram.dtype), self.cross)
        xtx, xty, yy, ysum, n = self.held
        if n == 0:
            return a, float("nan")
        a0 = a
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


class TrafficFitter:
    """Streams batches of exchanges into the per-exchange least-squares fits."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.fits: dict[tuple[int, tuple[str, ...]], _Fit] = {}

    def affine(self, ex: Exchange) -> bool:
        """Whether the exchange's reply is (structurally) one affine layer's output."""
        return _sites_fit(self.model, ex) is not None

    def add(self, exchanges: list[Exchange]) -> None:
        for i, ex in enumerate(exchanges):
            found = _sites_fit(self.model, ex)
            if found is not None:
                layer, sites = found
                self.fits.setdefault((i, sites), _Fit(layer, sites, ex.combine)).add(ex)

    def result(self, min_r2: float) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """The tensors to load (under the model's names, before the stolen share is added
        for ``combine="add"``) and each fitted site's held-out R²."""
        out: dict[str, torch.Tensor] = {}
        quality: dict[str, float] = {}
        modules = dict(self.model.named_modules())
        for (_, sites), fit in self.fits.items():
            if fit.gram is None:
                continue
            a, r2 = fit.solve()
            quality["+".join(sites)] = r2
            if r2 >= min_r2:
                out.update(_load_tensors(fit, a, sites, modules))
        return out, quality


def _load_tensors(
    fit: _Fit, a: torch.Tensor, sites: tuple[str, ...], modules: dict[str, nn.Module]
) -> dict[str, torch.Tensor]:
    name, layer = sites[0], fit.layer
    out = {f"__combine__{name}": torch.tensor(fit.combine == "add")}
    if isinstance(layer, nn.Embedding):
        weight = layer.weight.detach().double().cpu().clone()  # ids never served keep the start
        seen = ~torch.isnan(a).any(1)
        weight[seen] = a[seen]
        out[f"{name}.weight"] = weight
        return out
    w, b = a[:-1].T, a[-1]
    out[f"{name}.weight"] = w.reshape(layer.weight.shape)
    if getattr(layer, "bias", None) is not None:
        out[f"{name}.bias"] = b
        b = torch.zeros_like(b)
    if len(sites) == 2:  # the BatchNorm after it becomes the identity (plus the bias)
        bn = modules[sites[1]]
        out[f"{sites[1]}.weight"] = torch.ones_like(b)
        out[f"{sites[1]}.bias"] = b
        out[f"{sites[1]}.running_mean"] = torch.zeros_like(b)
        out[f"{sites[1]}.running_var"] = torch.full_like(b, 1.0 - bn.eps)
    return out


def fit_transcripts(
    model: nn.Module, transcripts: Iterable[list[Exchange]], min_r2: float = 0.9
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """``TrafficFitter`` over batches of exchanges."""
    fitter = TrafficFitter(model)
    for exchanges in transcripts:
        fitter.add(exchanges)
    return fitter.result(min_r2)


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


def _missing_params(model: nn.Module, sites: list[str], stolen: dict[str, Any]) -> bool:
    """Whether the modules at ``sites`` hold a parameter the attacker did not steal."""
    modules = dict(model.named_modules())
    for site in sites:
        module = modules.get(site)
        if module is None:
            continue
        for pname, _ in module.named_parameters():
            if f"{site}.{pname}" not in stolen:
                return True
    return False


@dataclass
class _Imitation:
    """What the attacker trains its model to reproduce on the inputs it served: the
    outputs the host got (every deployment's black-box view) and the replies of trusted
    units it could not fit as one affine layer (a conv-BN-ReLU-pool stage, a block),
    captured at the unit's last module."""

    batches: list[tuple[Any, torch.Tensor, dict[str, torch.Tensor]]] = field(default_factory=list)

    def add(self, inputs: Any, output: torch.Tensor, units: dict[str, torch.Tensor]) -> None:
        out = output.detach().cpu()
        if out.numel() > 2**24:  # an LM's logits: half precision keeps them in memory
            out = out.half()
        self.batches.append((inputs, out, {k: v.detach().cpu() for k, v in units.items()}))

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        inputs, output, units = batch
        captured: dict[str, torch.Tensor] = {}
        handles = []
        modules = dict(model.named_modules())
        for site in units:
            handles.append(
                modules[site].register_forward_hook(
                    lambda _m, _a, out, site=site: captured.__setitem__(site, _first(out))
                )
            )
        try:
            got = model(inputs)
        finally:
            for h in handles:
                h.remove()
        total = _relative_mse(_first(got), output.to(device))
        for site, want in units.items():
            total = total + _relative_mse(captured[site], want.to(device))
        return total


def _first(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def _relative_mse(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    want = want.to(got.dtype)
    return ((got - want) ** 2).mean() / (want**2).mean().clamp_min(1e-12)


class TrafficAttack:
    """``traffic-N``: an attacker that serves N inputs and learns from everything it saw.

    1. Least squares on every reply that is one affine layer's output (loaded when it
       explains held-out rows).
    2. Imitation: fine-tuning on its labelled samples while matching, on the served
       inputs, the outputs the host got back and the replies of trusted units it could
       not fit in closed form (their hooked outputs regressed on the replies).
    Candidates kept by held-out loss: the stolen state as it is, with the fits, and
    trained. The from-scratch attacker of this attack sees only the black box (the served
    inputs and outputs): the ratio measures what the split leaks beyond the outputs
    every deployment answers with.
    """

    def __init__(
        self,
        n_served: PositiveInt = 64,
        n_samples: NonNegativeInt = 64,
        steps: NonNegativeInt = 100,
        min_r2: Annotated[float, Le(1)] = 0.9,  # fit a layer's map below this: give up
    ) -> None:
        self.n_served, self.n_samples, self.steps, self.min_r2 = n_served, n_samples, steps, min_r2

    def __call__(self, untrusted_state: dict[str, torch.Tensor], ctx: Any) -> nn.Module:
        start = ctx.fresh_model(ctx.seed)
        load_stolen(start, untrusted_state, ctx.device)
        fitter = TrafficFitter(start)
        imitation = _Imitation()
        for served in ctx.transcripts(self.n_served):
            fitter.add(served.exchanges)
            units = {
                ex.sites[-1]: ex.received
                for ex in served.exchanges
                if ex.sites
                and ex.received is not None
                and not fitter.affine(ex)
                and _missing_params(start, ex.sites, untrusted_state)
                and ex.received.shape != served.output.shape
            }
            imitation.add(served.inputs, served.output, units)
        fitted_state, r2 = fitter.result(self.min_r2)
        candidates = {"stolen as-is": start}
        base = start
        if any(not k.startswith("__combine__") for k in fitted_state):
            base = copy.deepcopy(start)
            apply_fits(base, fitted_state, untrusted_state)
            candidates["traffic fit"] = base
        if self.steps > 0 and (self.n_samples > 0 or imitation.batches):
            trained = copy.deepcopy(base)
            extra = None
            if imitation.batches:
                served_batches = itertools.cycle(imitation.batches)

                def extra(model: nn.Module) -> torch.Tensor:
                    return imitation.loss(model, next(served_batches), ctx.device)

            fine_tune(
                trained,
                parameter_groups(trained, ctx),
                ctx,
                self.n_samples,
                self.steps,
                extra_loss=extra,
            )
            candidates["trained"] = trained
        model = choose(candidates, ctx)
        model.traffic_r2 = r2  # type: ignore[assignment]
        return model
