"""The attack half of the security-split protocol: what the attacker is given, how each
attack's result is scored, and the checks that keep a verdict honest.

- Data. The attacker's labelled samples are disjoint slices of one seed's permutation of
  the workload's train split: the first ``n`` (each attack trains on its own budget's
  prefix), then a held-out slice it chooses between candidates with (never the test set
  the protocol reports), then a slice of members for the membership test. Served inputs
  for the traffic attack are the inputs of the first slice.
- Score. ``recovered_ratio`` = (attack − scratch) / (original − scratch) on the quality's
  oriented scale, where "scratch" is the same attack with nothing stolen and no traffic
  from the attacker's starting model. With the test set's standard error it carries a 95%
  interval, and it is null ("gap within noise") when original and scratch are closer than
  three standard errors: then the secret is worth nothing measurable.
- No silent safety. The worst case over attacks is null, and the run's verdict
  ``incomplete``, when any requested attack failed. On a split that keeps nothing trusted
  (``no-split``: the sanity gate) every attack must reach the original's quality within
  noise, or the run fails: attacks that cannot steal an unprotected model judge nothing.
- Membership inference (as the TEE-partition benchmarks report beside model stealing,
  arXiv:2310.07152): a loss-threshold attack on each recovered model, members from the
  train split, non-members from the test split; ``mia_auroc`` 0.5 is chance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.kinds import ContractError
from benchmark.kinds.security_split import (
    AttackerModel,
    AttackRecipe,
    HasAttackRecipe,
    MembershipData,
    QualityStderr,
    SplitModel,
    Transcript,
)
from benchmark.metrics.ood import auroc
from benchmark.protocols.base import RunContext
from benchmark.records import Budget, Metric

SLICE_BATCH = 32
VALIDATION_SAMPLES = 256
MEMBER_SAMPLES = 512
NOISE_SIGMAS = 3.0  # a gap below this many standard errors is noise
Z95 = 1.96


class SanityGateFailed(RuntimeError):
    """An attack could not recover a model the split left entirely exposed."""


@dataclass
class Served:
    """One batch of inputs the untrusted host served: the inputs, the output the host got
    back (the black-box view every deployment gives), and the exchanges of the hybrid
    forward (empty for the from-scratch attacker, whose view is the black box alone)."""

    inputs: Any
    output: torch.Tensor
    exchanges: list[Any]


@dataclass
class AttackContext:
    """What an attacker has besides the stolen state (see the protocol's threat model)."""

    fresh_model: Any  # (seed) -> nn.Module: where the attacker starts
    labelled_batches: Any  # (n, batch_size) -> the first n of its labelled samples
    validation_batches: Any  # () -> held-out labelled samples to choose candidates with
    transcripts: Any  # (n) -> iterator of ``Served`` batches, n inputs in all
    loss: Any
    device: torch.device
    seed: int
    budget: Budget
    recipe: AttackRecipe = field(default_factory=AttackRecipe)
    pretrained_start: bool = False


@dataclass
class DataSlices:
    """Disjoint slices of the train split's permutation for the run's seed."""

    reserve: int  # the attacks' own samples: [0, reserve)
    validation: list[Any]
    members: list[Any]


def slice_train(ctx: RunContext, start: int, count: int) -> list[Any]:
    """Samples [start, start + count) of the seed's permutation of the train split, in
    batches (``labelled_batches`` draws prefixes, so this is a prefix with its head cut)."""
    if count <= 0:
        return []
    wl = ctx.workload
    first = start // SLICE_BATCH
    batches = wl.labelled_batches(
        "train", first * SLICE_BATCH + count, SLICE_BATCH, ctx.spec.seed, ctx.device
    )
    return batches[first:]


def data_slices(ctx: RunContext, reserve: int) -> DataSlices:
    reserve = -(-reserve // SLICE_BATCH) * SLICE_BATCH
    available = sum(
        len(y)
        for _, y in ctx.workload.labelled_batches(
            "train", 10**9, 1024, ctx.spec.seed, torch.device("cpu")
        )
    )
    left = available - reserve
    if left < 2 * SLICE_BATCH:
        raise ValueError(
            f"the train split has {available} samples: too few for attacks that train on "
            f"{reserve} and hold {2 * SLICE_BATCH} more out"
        )
    n_val = min(VALIDATION_SAMPLES, (left // 2) // SLICE_BATCH * SLICE_BATCH)
    n_mem = min(MEMBER_SAMPLES, left - n_val)
    return DataSlices(
        reserve=reserve,
        validation=slice_train(ctx, reserve, n_val),
        members=slice_train(ctx, reserve + n_val, n_mem),
    )


def attack_context(
    ctx: RunContext, split: SplitModel | None, slices: DataSlices, *, scratch: bool
) -> AttackContext:
    """The attacker's context; ``scratch`` gives the baseline attacker the black box only
    (served inputs and outputs, no exchanges)."""
    wl, device, spec = ctx.workload, ctx.device, ctx.spec
    start = wl.attacker_model if isinstance(wl, AttackerModel) else None
    recipe = wl.attack_recipe if isinstance(wl, HasAttackRecipe) else AttackRecipe()

    def transcripts(n: int) -> Iterator[Served]:
        record = split.transcript if isinstance(split, Transcript) and not scratch else None
        if record is None and not scratch:
            raise ContractError(
                f"{type(split).__name__} has no transcript(inputs): its traffic cannot be "
                "attacked, so its verdict cannot be complete"
            )
        served = wl.labelled_batches("train", n, recipe.batch_size, spec.seed, device)
        for inputs, _ in served:
            if record is None:  # the black box: what the deployed model answers
                assert split is not None
                with torch.no_grad():
                    yield Served(inputs, split.forward(inputs), [])
                continue
            exchanges = record(inputs)
            output = getattr(exchanges, "output", None)
            if output is None:
                with torch.no_grad():
                    output = split.forward(inputs)
            yield Served(inputs, output, list(exchanges))

    return AttackContext(
        fresh_model=(lambda seed: start(seed, device))
        if start
        else (lambda seed: wl.fresh_model(seed, device)),
        labelled_batches=lambda n, bs: wl.labelled_batches("train", n, bs, spec.seed, device),
        validation_batches=lambda: slices.validation,
        transcripts=transcripts,
        loss=wl.loss,
        device=device,
        seed=spec.seed,
        budget=spec.budget,
        recipe=recipe,
        pretrained_start=start is not None,
    )


# --------------------------------------------------------------------------- scoring


def stderr(ctx: RunContext, value: float) -> float | None:
    """The quality's standard error on the test set, on the oriented scale (None when the
    workload cannot give one)."""
    wl = ctx.workload
    se = wl.quality_stderr(value) if isinstance(wl, QualityStderr) else None
    if se is None:
        return None
    if ctx.workload.quality.log_scale:
        return se / max(value, 1e-300)
    return float(se)


def recovered_ratio(q: Any, original: float, scratch: float, attacked: float) -> float:
    """How much of the gap between training from scratch and the original the attacker
    closes, on the quality's oriented scale (log for perplexity), clipped to [0, 1]; 1
    when the original is no better than scratch (nothing to protect)."""
    o, s, a = q.oriented(original), q.oriented(scratch), q.oriented(attacked)
    gap = o - s
    return 1.0 if gap <= 0 else min(max((a - s) / gap, 0.0), 1.0)


def ratio_metric(
    ctx: RunContext, name: str, original: float, scratch: float, attacked: float
) -> Metric:
    """The recovered ratio with its 95% interval (delta method, the three qualities'
    standard errors taken as independent), or null when the gap is within noise."""
    q = ctx.workload.quality
    meter = f"attack {name}: (attack - scratch) / (original - scratch), clipped to [0, 1]"
    se = [stderr(ctx, v) for v in (original, scratch, attacked)]
    gap = q.oriented(original) - q.oriented(scratch)
    ratio = recovered_ratio(q, original, scratch, attacked)
    if any(s is None for s in se):
        return Metric(
            value=ratio,
            unit="fraction",
            meter=meter + "; no standard error",
            higher_is_better=False,
        )
    so, ss, sa = (float(s) for s in se)  # type: ignore[arg-type]
    noise = math.sqrt(so**2 + ss**2)
    if gap < NOISE_SIGMAS * noise:
        return Metric.null(
            "fraction",
            meter,
            f"n/a (gap within noise): original - scratch = {gap:.4g} < "
            f"{NOISE_SIGMAS:g} x {noise:.3g}",
        )
    r_raw = (q.oriented(attacked) - q.oriented(scratch)) / gap
    sd = math.sqrt(sa**2 + (1 - r_raw) ** 2 * ss**2 + r_raw**2 * so**2) / gap
    return Metric(
        value=ratio,
        unit="fraction",
        meter=meter + "; 95% interval by the delta method from the test set's standard error",
        std=sd,
        ci_low=min(max(r_raw - Z95 * sd, 0.0), 1.0),
        ci_high=min(max(r_raw + Z95 * sd, 0.0), 1.0),
        higher_is_better=False,
    )


def within_noise_of(ctx: RunContext, original: float, attacked: float) -> tuple[bool, str]:
    """Whether ``attacked`` reaches ``original`` within the test set's noise (one-sided:
    better is fine), and the tolerance used."""
    q = ctx.workload.quality
    so, sa = stderr(ctx, original), stderr(ctx, attacked)
    if so is None or sa is None:
        tol, how = 0.02, "0.02 on the oriented scale (no standard error)"
    else:
        tol = NOISE_SIGMAS * math.sqrt(so**2 + sa**2)
        how = f"{NOISE_SIGMAS:g} standard errors ({tol:.3g})"
    return q.oriented(attacked) >= q.oriented(original) - tol, how


def trusted_holds_nothing(split: SplitModel, trusted_flops: int) -> bool:
    """A split that keeps no tensor and no computation trusted (the sanity gate's case)."""
    held = sum(1 for _ in split.trusted.parameters()) + sum(1 for _ in split.trusted.buffers())
    return held == 0 and trusted_flops == 0


# --------------------------------------------------------------------------- membership


@torch.no_grad()
def _per_sample_losses(model: nn.Module, batches: list[Any]) -> list[float] | None:
    model.eval()
    out: list[float] = []
    for x, y in batches:
        logits = model(x)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or y.dim() != 1:
            return None
        out += F.cross_entropy(logits.float(), y, reduction="none").tolist()
    return out


def membership_auroc(model: nn.Module, members: list[Any], non_members: list[Any]) -> float | None:
    """AUROC of the loss-threshold attack (lower loss = member); None for a model that is
    not a classifier of (batch, classes) logits."""
    lm, ln = _per_sample_losses(model, members), _per_sample_losses(model, non_members)
    if lm is None or ln is None or not lm or not ln:
        return None
    scores_m = [-v if math.isfinite(v) else -1e30 for v in lm]
    scores_n = [-v if math.isfinite(v) else -1e30 for v in ln]
    return auroc(scores_n, scores_m)


def membership_sets(ctx: RunContext, slices: DataSlices) -> tuple[list[Any], list[Any]] | str:
    """(members, non-members), or why there are none."""
    wl = ctx.workload
    if isinstance(wl, MembershipData) and not wl.has_members:
        return "the workload's train split is not the model's training data"
    n = sum(len(y) for _, y in slices.members)
    if n == 0:
        return "no train samples left for a member set"
    non = ctx.workload.labelled_batches("test", n, SLICE_BATCH, ctx.spec.seed, ctx.device)
    return slices.members, non
