"""A statistical test for OOD inputs from per-channel activation statistics.

Haroush, Frostig, Heller & Soudry, "A Statistical Framework for Efficient Out of
Distribution Detection in Deep Neural Networks", ICLR 2022, arXiv:2102.12967.

Each input is tested against the null hypothesis "drawn from the in-distribution":

1. Forward hooks on the inputs of BatchNorm, pooling and Linear layers reduce each channel
   over its spatial (or token) positions: ``mean``, ``max`` or both (``mean_max``). Token
   positions that are padding are left out (``features.token_mask``), so an input's
   summaries do not depend on how long the other inputs of its batch are.
2. For every channel, a two-sided empirical p-value against the reference values of the
   in-distribution inputs the model assigns to the same class (class-conditional by the
   predicted class; see ``pvalues.two_sided``).
3. Within a layer the channel p-values are combined by Simes (``layer_combine: simes``)
   or by conditional Fisher (``fisher``: −2 Σ log p over p ≤ 0.1, turned back into a
   p-value with its right tail on fit inputs held out of the reference, so that the null
   is not read off the very points the channel p-values were ranked against).
4. Across layers by Fisher, S = −2 Σ_l log p_l. Layers are strongly dependent, so S is not
   χ²: it is calibrated empirically, right-sided, per predicted class, on calibration
   inputs disjoint from everything above. The final p-value is a conformal p-value: for
   an input exchangeable with the calibration inputs, P(p ≤ α) ≤ α.

Where the calibration inputs come from decides what that guarantee covers. The fit
inputs are the model's training inputs, on which a model is more typical than on new
data; calibrated on them, the guarantee holds for more training inputs, not for the
held-out test inputs. ``fit`` therefore takes ``calibration_batches``: in-distribution
inputs the model was not trained on (the detector protocol passes half of the workload's
validation split). Without them, ``calibration_fraction`` of the fit inputs is held out of
the reference instead and ``calibration_source`` says that the claim is narrowed to inputs
exchangeable with the fit data.

``score`` is the combined statistic S (higher = more likely OOD; within one calibration
group the p-value is a non-increasing step function of it, but S keeps ordering inputs
beyond the largest calibration statistic, where every p-value sits at its floor
1/(n + 1)); ``pvalue`` is the calibrated p-value, and ``flag`` rejects at p ≤ α.

Groups (the paper's class-conditional null). A predicted class with at least
``min_class_samples`` reference inputs (and, for ``fisher``, layer-null inputs) has its own
reference; the classes below that share one reference made of the rare classes only, so
that a rare class is never tested against the frequent ones. Calibration is grouped the
same way on its own counts (a Mondrian conformal p-value: valid within each group, hence
overall). A class with no fit or calibration input at all (which an in-distribution input
is predicted as with probability below about 1/n) is tested against the rare pool, or,
when no class is rare, against every class pooled.

Where this departs from the authors' released code (``OODDetector``, ``calc_simes``):
- exact rank-based empirical p-values with the +1 correction instead of interpolation
  in a fixed grid of tracked percentiles; the reference is grouped by *predicted* class
  (the official code groups its reference by label and reads the test p-value at the
  predicted class), so the null is the same at fit and test time, where labels are absent;
- the calibration set is disjoint from the quantile reference and from the model's
  training data (the official code fits both on the training set);
- the paper's optional layer selection by clustering is not implemented (all matching
  layers are used).
The splits of the fit inputs are random under torch's global generator, which the runner
seeds with the run's seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

import torch
from annotated_types import Interval
from pydantic import PositiveInt
from torch import nn

from plugins.detectors import pvalues
from plugins.detectors.features import inputs_of, token_mask

Reduction = Literal["mean", "max", "mean_max"]
LayerCombine = Literal["simes", "fisher"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
LAYER_COMBINES: tuple[str, ...] = get_args(LayerCombine)
RARE = -1  # group id of the classes too rare for a group of their own, pooled together
ALL = -2  # group id of every class pooled: only for unseen classes when none is rare

_CHANNEL_FIRST = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


def tracked_layers(model: nn.Module) -> list[tuple[str, nn.Module, bool]]:
    """(name, module, channel_first) of every BatchNorm, pooling and Linear layer."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, _CHANNEL_FIRST):
            out.append((name, module, True))
        elif isinstance(module, nn.Linear):
            out.append((name, module, False))  # channels last: [B, ..., features]
    return out


class UnmaskablePositions(ValueError):
    """A token model's layer whose positions are not the input's tokens (a convolution
    without padding, a prepended token, truncation): padding cannot be masked out of it."""


def reduce_channels(
    x: torch.Tensor, channel_first: bool, reduction: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, C] per-channel summaries of a layer input: spatial/token mean, max or both.

    ``mask`` [B, T] (True at real tokens) restricts the summaries to real tokens where the
    layer's positions are the batch's tokens; padding would otherwise enter the mean and
    the max, and how much padding an input gets depends on its batch."""
    x = x.detach().float()
    if x.dim() == 2:
        return x
    x = x.flatten(2) if channel_first else x.flatten(1, -2).transpose(1, 2)  # B, C, positions
    if mask is not None and tuple(mask.shape) != (x.shape[0], x.shape[2]):
        raise UnmaskablePositions(
            f"{x.shape[2]} positions per input, not the batch's {mask.shape[-1]} tokens"
        )
    if mask is not None:
        keep = mask.to(device=x.device, dtype=torch.bool)[:, None, :]
        mean = torch.where(keep, x, 0.0).sum(-1) / keep.sum(-1).clamp_min(1)
        peak = x.masked_fill(~keep, float("-inf")).amax(-1)
        peak = torch.where(keep.any(-1), peak, torch.zeros_like(peak))  # an input of no tokens
    else:
        mean, peak = x.mean(-1), x.amax(-1)
    if reduction == "mean":
        return mean
    if reduction == "max":
        return peak
    return torch.cat([mean, peak], dim=1)


@dataclass
class _Null:
    """The null of one reference group: per layer, the sorted reference summaries [C, n]
    and (``fisher``) the sorted layer statistics of fit inputs held out of the reference."""

    references: list[torch.Tensor]
    layer_stats: list[torch.Tensor] = field(default_factory=list)


def _lookup(
    mapping: dict[int, int], groups: Iterable[int], predicted: torch.Tensor
) -> torch.Tensor:
    """The group of each predicted class; a class the mapping lacks goes to the rare pool,
    or to every class pooled where there is no rare pool."""
    fallback = RARE if RARE in set(groups) else ALL
    return torch.tensor([mapping.get(int(c), fallback) for c in predicted.tolist()])


class StatisticalOOD:
    def __init__(
        self,
        reduction: Reduction = "mean_max",
        layer_combine: LayerCombine = "simes",
        alpha: Annotated[float, Interval(gt=0, lt=1)] = 0.05,
        calibration_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.5,
        class_conditional: bool = True,
        min_class_samples: PositiveInt = 20,
        layer_null_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.5,
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")
        if layer_combine not in LAYER_COMBINES:
            raise ValueError(f"layer_combine must be one of {LAYER_COMBINES}")
        if not 0.0 < calibration_fraction < 1.0:
            raise ValueError("calibration_fraction must lie in (0, 1)")
        if not 0.0 < layer_null_fraction < 1.0:
            raise ValueError("layer_null_fraction must lie in (0, 1)")
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must lie in (0, 1)")
        if min_class_samples < 1:
            raise ValueError("min_class_samples must be at least 1")
        self.reduction, self.layer_combine = reduction, layer_combine
        self.alpha, self.calibration_fraction = alpha, calibration_fraction
        self.layer_null_fraction = layer_null_fraction
        self.class_conditional, self.min_class_samples = class_conditional, min_class_samples
        self.nulls: dict[int, _Null] = {}
        self.null_of: dict[int, int] = {}  # predicted class -> reference group
        self.calibration: dict[int, torch.Tensor] = {}  # group -> sorted statistics S
        self.calibration_of: dict[int, int] = {}  # predicted class -> calibration group
        self.calibration_source: str | None = None
        self.layer_names: list[str] = []
        self.unmasked_layers: set[str] = set()  # token layers left out: padding is unmaskable

    # ------------------------------------------------------------------ activations

    def _record(self, model: nn.Module, inputs: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-layer [B, C_l] channel summaries and the predicted classes of one batch."""
        layers = tracked_layers(model)
        if not layers:
            raise TypeError(f"{type(model).__name__} has no BatchNorm, pooling or Linear layer")
        seen: dict[str, torch.Tensor] = {}
        mask = token_mask(model, inputs)

        def hook_for(name: str, channel_first: bool) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
                try:
                    summary = reduce_channels(args[0], channel_first, self.reduction, mask)
                except UnmaskablePositions:
                    # Its summary would depend on how much padding the batch gave the input:
                    # the layer is left out (and named in ``unmasked_layers``).
                    self.unmasked_layers.add(name)
                    return
                seen[name] = summary.cpu()

            return hook

        handles = [m.register_forward_pre_hook(hook_for(n, cf)) for n, m, cf in layers]
        try:
            with torch.no_grad():
                predicted = model(inputs).argmax(-1).cpu()
        finally:
            for h in handles:
                h.remove()
        names = [n for n, _, _ in layers if n in seen]
        if self.layer_names and names != self.layer_names:
            raise RuntimeError(f"layers seen changed between fit and test: {names}")
        self.layer_names = names
        return [seen[n] for n in names], predicted

    def _record_all(
        self, model: nn.Module, batches: Iterable[Any], what: str = "fit on"
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        recorded = [self._record(model, inputs_of(b)) for b in batches]
        if not recorded:
            raise ValueError(f"no in-distribution batches to {what}")
        acts = [torch.cat(layer) for layer in zip(*(a for a, _ in recorded), strict=True)]
        return acts, torch.cat([p for _, p in recorded])

    # ------------------------------------------------------------------ grouping

    def _assign(self, predicted: torch.Tensor, parts: list[torch.Tensor]) -> dict[int, int]:
        """Predicted class -> group: its own where each part holds ``min_class_samples`` of
        its rows, the pool of rare classes otherwise (every class pooled when the test is
        not class-conditional)."""
        present = torch.unique(torch.cat([predicted[rows] for rows in parts])).tolist()
        out = {}
        for c in present:
            if not self.class_conditional:
                out[int(c)] = ALL
                continue
            counts = [int((predicted[rows] == c).sum()) for rows in parts]
            out[int(c)] = int(c) if min(counts) >= self.min_class_samples else RARE
        return out

    @staticmethod
    def _members(
        mapping: dict[int, int], gid: int, predicted: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        if gid == ALL:
            return rows
        classes = [c for c, g in mapping.items() if g == gid]
        return rows[torch.isin(predicted[rows], torch.tensor(classes, dtype=predicted.dtype))]

    # ------------------------------------------------------------------ the test

    def _layer_pvalues(self, null: _Null, acts: list[torch.Tensor]) -> torch.Tensor:
        """[B, L] one p-value per layer: channels combined by Simes or conditional Fisher."""
        cols = []
        for layer, (ref, x) in enumerate(zip(null.references, acts, strict=True)):
            p = pvalues.two_sided(ref, x)
            if self.layer_combine == "simes":
                cols.append(pvalues.simes(p))
            else:
                stat = pvalues.conditional_fisher(p)
                cols.append(pvalues.right_sided(null.layer_stats[layer], stat))
        return torch.stack(cols, dim=1)

    def _by_null(
        self, acts: list[torch.Tensor], predicted: torch.Tensor, fn: Callable[..., torch.Tensor]
    ) -> torch.Tensor:
        gids = _lookup(self.null_of, self.nulls, predicted)
        out: torch.Tensor | None = None
        for gid in torch.unique(gids).tolist():
            rows = gids == gid
            value = fn(self.nulls[int(gid)], [a[rows] for a in acts])
            if out is None:
                out = torch.empty((len(gids), *value.shape[1:]), dtype=value.dtype)
            out[rows] = value
        assert out is not None
        return out

    def _statistic(self, acts: list[torch.Tensor], predicted: torch.Tensor) -> torch.Tensor:
        """Fisher's combination of the layer p-values, S = −2 Σ_l log p_l, per input."""
        return self._by_null(
            acts, predicted, lambda null, a: pvalues.fisher(self._layer_pvalues(null, a))
        )

    def _build_null(
        self, acts: list[torch.Tensor], ref_rows: torch.Tensor, null_rows: torch.Tensor | None
    ) -> _Null:
        null = _Null(references=[pvalues.sort_reference(a[ref_rows]) for a in acts])
        if null_rows is not None:
            for layer, a in enumerate(acts):
                p = pvalues.two_sided(null.references[layer], a[null_rows])
                null.layer_stats.append(pvalues.conditional_fisher(p).sort().values)
        return null

    def fit(
        self,
        model: nn.Module,
        in_distribution_batches: Iterable[Any],
        calibration_batches: Iterable[Any] | None = None,
    ) -> None:
        """Fit the reference on ``in_distribution_batches`` and calibrate S on
        ``calibration_batches`` (in-distribution inputs the model was not trained on, bare
        or ``(inputs, labels)``); without them, on a held-out part of the fit inputs."""
        acts, predicted = self._record_all(model, in_distribution_batches)
        n = len(predicted)
        order = torch.randperm(n)
        if calibration_batches is None:
            n_cal = round(n * self.calibration_fraction)
            cal_rows, rest = order[:n_cal], order[n_cal:]
            if len(cal_rows) < 1:
                raise ValueError(f"{n} fit inputs cannot be split into reference and calibration")
        else:
            cal_rows, rest = None, order
        if self.layer_combine == "fisher":
            n_null = round(len(rest) * self.layer_null_fraction)
            null_rows: torch.Tensor | None = rest[:n_null]
            ref_rows = rest[n_null:]
            parts = [ref_rows, rest[:n_null]]
        else:
            null_rows, ref_rows, parts = None, rest, [rest]
        if len(ref_rows) < 1 or (null_rows is not None and len(null_rows) < 1):
            raise ValueError(f"{n} fit inputs are too few to split into reference and null")

        self.null_of = self._assign(predicted, parts)
        if RARE in self.null_of.values() and not len(
            self._members(self.null_of, RARE, predicted, ref_rows)
        ):
            # Rare classes seen only among the layer-null rows: no reference to pool.
            self.null_of = {c: g for c, g in self.null_of.items() if g != RARE}
        gids = set(self.null_of.values())
        if RARE not in gids:
            gids.add(ALL)
        self.nulls = {}
        for gid in sorted(gids):
            members = self._members(self.null_of, gid, predicted, ref_rows)
            held = None
            if null_rows is not None:
                held = self._members(self.null_of, gid, predicted, null_rows)
            self.nulls[gid] = self._build_null(acts, members, held)

        if calibration_batches is None:
            assert cal_rows is not None
            cal_acts, cal_pred = [a[cal_rows] for a in acts], predicted[cal_rows]
            self.calibration_source = (
                f"{len(cal_rows)} of the fit inputs held out of the reference: the Type-I "
                "guarantee covers inputs exchangeable with the fit data only"
            )
        else:
            cal_acts, cal_pred = self._record_all(model, calibration_batches, "calibrate on")
            self.calibration_source = (
                f"{len(cal_pred)} in-distribution inputs disjoint from the fit data "
                "(calibration_batches)"
            )
        s = self._statistic(cal_acts, cal_pred)
        every = torch.arange(len(cal_pred))
        self.calibration_of = self._assign(cal_pred, [every])
        groups = set(self.calibration_of.values())
        if RARE not in groups:
            groups.add(ALL)
        self.calibration = {
            gid: s[self._members(self.calibration_of, gid, cal_pred, every)].sort().values
            for gid in sorted(groups)
        }

    def _check_fitted(self) -> None:
        if not self.nulls or not self.calibration:
            raise RuntimeError("fit the detector first")

    def statistic(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The combined statistic S of each input (float64), before calibration."""
        self._check_fitted()
        return self._statistic(*self._record(model, batch))

    def layer_pvalues(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """[B, L] the per-layer p-values that S combines (for diagnostics)."""
        self._check_fitted()
        return self._by_null(*self._record(model, batch), self._layer_pvalues)

    def pvalue(self, model: nn.Module, batch: Any) -> torch.Tensor:
        self._check_fitted()
        acts, predicted = self._record(model, batch)
        s = self._statistic(acts, predicted)
        gids = _lookup(self.calibration_of, self.calibration, predicted)
        out = torch.empty(len(gids), dtype=torch.float64)
        for gid in torch.unique(gids).tolist():
            rows = gids == gid
            out[rows] = pvalues.right_sided(self.calibration[int(gid)], s[rows])
        return out

    def score(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.statistic(model, batch)

    def flag(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The test's decision at level ``alpha``: True rejects "in-distribution"."""
        return self.pvalue(model, batch) <= self.alpha
