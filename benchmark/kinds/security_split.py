"""The security_split kind: a method partitions a trained model between a trusted and an
untrusted device; the protocol (``benchmark.protocols.security_split``) checks the hybrid
reproduces the original, measures what the trusted side costs, and runs every registered
attack (an attacker holding the untrusted device) to measure what the split leaks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from benchmark.kinds.definition import KindDef, KindInfo, MetricDecl, Option, Verdict
from benchmark.kinds.workload import ClassifierWorkload, QualityIntervals

if TYPE_CHECKING:
    import torch
    from torch import nn

# --------------------------------------------------------------------------- method side


@runtime_checkable
class SplitModel(Protocol):
    """A model partitioned between a trusted and an untrusted device.

    ``untrusted_state`` is what an attacker holding the untrusted device stores, keyed by
    the original model's parameter names (a residual under the original name, a missing
    layer simply absent), so attacks can load it into a fresh copy of the architecture.
    A split should also offer ``Transcript``; optional: ``Offline``, ``OfflineSide``,
    ``UntrustedDtype``.
    """

    trusted: nn.Module
    untrusted: nn.Module

    def forward(self, inputs: torch.Tensor) -> torch.Tensor: ...

    def untrusted_state(self) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class SecuritySplitter(Protocol):
    """What a security_split factory builds."""

    def split(self, model: nn.Module) -> SplitModel: ...


@runtime_checkable
class Transcript(Protocol):
    """What the untrusted device sent and received, round trip by round trip, during one
    hybrid forward, with the original modules the trusted side computed
    (``benchmark.measure.crossings``; ``record_transcript`` builds it from hooks). A split
    without it still runs, but the traffic attack fails on it, so its verdict is
    ``incomplete``."""

    def transcript(self, inputs: Any) -> Any: ...


@runtime_checkable
class Offline(Protocol):
    """A module of input-independent precomputation (SLIP's pads W_D·r)."""

    offline: nn.Module


@runtime_checkable
class OfflineSide(Protocol):
    """Which side holds the offline precomputation (default "trusted")."""

    offline_side: str


@runtime_checkable
class UntrustedDtype(Protocol):
    """The dtype of the untrusted products, where the split decides it (masked SLIP needs
    float64 there to stay exact); default: the untrusted parameters' dtypes."""

    untrusted_dtype: str | None


# --------------------------------------------------------------------------- attack side


@runtime_checkable
class AttackChoice(Protocol):
    """Optional on the model an attack returns: it chose among candidates (the stolen state
    as it is, fine-tuned copies, ...) by a held-out loss. The protocol keeps the choice and
    the scores in ``info``, and the sanity gate checks every learned candidate."""

    attack_choice: str
    attack_scores: Mapping[str, float]
    attack_candidates: Mapping[str, nn.Module]


@runtime_checkable
class TrafficFit(Protocol):
    """Optional on the model an attack returns: how well a traffic attack's fits explain
    the transcript they learned from, each fitted site's held-out R² (kept in ``info``)."""

    traffic_r2: Mapping[str, float]


# --------------------------------------------------------------------------- workload side


@dataclass(frozen=True)
class AttackRecipe:
    """How an attacker fine-tunes this workload's model: a workload knows the learning
    rate its model tolerates (Adam at 1e-3 wrecks a pretrained transformer that was tuned
    at 5e-5), so security attacks take their optimiser settings from here, not from a
    constant that suits one model. ``schedule``: "constant" or "linear" (decay to 0)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    batch_size: int = 32
    # The task head (the model's ``last_layer``) starts untrained for an attacker who
    # starts from a public checkpoint; it learns at this rate (None: ``lr``), as a fresh
    # head is fine-tuned on top of a pretrained encoder (and as the TEE-partition
    # benchmark's stealing attack trains its classifier faster than the rest).
    head_lr: float | None = None


@runtime_checkable
class HasAttackRecipe(Protocol):
    """Optional: the attacker's optimiser settings (default ``AttackRecipe()``)."""

    attack_recipe: AttackRecipe


@runtime_checkable
class AttackerModel(Protocol):
    """Optional: where an attacker starts, the public pretrained checkpoint with a fresh
    task head for a workload built from one (default ``fresh_model``)."""

    def attacker_model(self, seed: int, device: torch.device) -> nn.Module: ...


@runtime_checkable
class AttackerStart(Protocol):
    """Optional: a sentence saying where the attacker starts (``info.attacker_start``)."""

    attacker_start: str


@runtime_checkable
class QualityStderr(Protocol):
    """Optional: the quality figure's standard error on the test set (binomial for an
    accuracy); None where it cannot be had."""

    def quality_stderr(self, value: float) -> float | None: ...


@runtime_checkable
class MembershipData(Protocol):
    """Optional (default True): whether ``labelled_batches("train", ...)`` holds the
    model's own training data, so that a membership-inference attack means something."""

    has_members: bool


# ``labelled_batches`` must draw the first n samples of one seed's permutation whatever n
# is (a prefix), so the protocol can hand disjoint slices to tuning, selection and the
# membership test.
SecurityWorkload = ClassifierWorkload

# --------------------------------------------------------------------------- metrics

_Q = "the workload's quality unit (fraction, perplexity)"
_ATTACK = "attack <attack>"
_FAILED = "the attack failed (attack_<attack>_quality says why)"
METRICS: tuple[MetricDecl, ...] = (
    MetricDecl(
        "max_abs_output_diff",
        "logit",
        "lower",
        "how far the hybrid's outputs are from the original's (0: the split is exact).",
        "max |hybrid - original| over the logits of a fixed batch of 64 real inputs.",
    ),
    MetricDecl(
        "quality",
        _Q,
        "workload",
        "the hybrid model's quality figure on the test split.",
        "workload.evaluate on the hybrid model.",
    ),
    MetricDecl(
        "quality_original",
        _Q,
        "none",
        "the original model's quality figure on the test split.",
        "workload.evaluate on the original model.",
    ),
    MetricDecl(
        "quality_delta",
        _Q,
        "none",
        "how much the split changes quality.",
        "quality - quality_original.",
    ),
    MetricDecl(
        "trusted_flops",
        "FLOP",
        "none",
        "the online FLOPs the trusted side computes per forward of the batch.",
        "torch.utils.flop_counter, each FLOP charged to the side of the innermost module running.",
    ),
    MetricDecl(
        "trusted_flops_share",
        "fraction",
        "lower",
        "the trusted side's share of the online FLOPs.",
        "trusted FLOPs / (all FLOPs of the hybrid forward minus offline FLOPs).",
    ),
    MetricDecl(
        "trusted_flops_vs_original",
        "x",
        "lower",
        "the trusted side's work against running everything trusted (1).",
        "(trusted online FLOPs + offline FLOPs where the trusted side holds them) / the "
        "original model's FLOPs.",
    ),
    MetricDecl(
        "offline_flops",
        "FLOP",
        "lower",
        "the input-independent precomputation per forward of the batch.",
        "torch.utils.flop_counter over split.offline.",
    ),
    MetricDecl(
        "offline_bytes",
        "bytes",
        "lower",
        "what the offline precomputation holds.",
        "parameter and buffer bytes of split.offline (on the side info.offline_side names).",
    ),
    MetricDecl(
        "offline_time",
        "s",
        "none",
        "the time of the offline precomputation in one forward.",
        "host clock, forward hooks on split.offline, median trace.",
    ),
    MetricDecl(
        "trusted_bytes_share",
        "fraction",
        "lower",
        "the trusted side's share of the online parameter and buffer bytes.",
        "trusted bytes / (trusted + untrusted bytes).",
    ),
    MetricDecl(
        "trusted_bytes_vs_original",
        "x",
        "lower",
        "what the trusted side stores against the whole original model.",
        "(trusted + trusted-side offline parameter bytes) / the original's bytes.",
    ),
    MetricDecl(
        "latency_original",
        "s",
        "lower",
        "the original model's forward time on the batch.",
        "median of calls timed interleaved with the hybrid's (one of each in turn), with p10/p90.",
    ),
    MetricDecl(
        "latency_hybrid",
        "s",
        "lower",
        "the hybrid model's forward time on the batch, both sides on this device.",
        "median of the interleaved timing, as latency_original.",
    ),
    MetricDecl(
        "latency_overhead",
        "x",
        "lower",
        "how much slower the hybrid runs on this machine.",
        "median hybrid latency / median original latency.",
    ),
    MetricDecl(
        "trusted_compute_time",
        "s",
        "none",
        "the time the trusted side computes in one forward.",
        "host clock, forward hooks on the trusted leaves, median trace.",
    ),
    MetricDecl(
        "untrusted_compute_time",
        "s",
        "none",
        "the time the untrusted side computes in one forward.",
        "the traced forward's time minus the trusted and offline time.",
    ),
    MetricDecl(
        "crossings",
        "count",
        "none",
        "how many tensors cross between the devices per forward.",
        "counted by hooks on one forward (the recorder the transcript uses).",
    ),
    MetricDecl(
        "crossing_bytes",
        "bytes",
        "none",
        "the bytes that cross between the devices per forward.",
        "summed by hooks on one forward.",
    ),
    MetricDecl(
        "modelled_transfer_time",
        "s",
        "none",
        "the modelled time of the link transfers per forward.",
        "crossings x link_latency_s + crossing_bytes / link_bandwidth_Bps (protocol options).",
    ),
    MetricDecl(
        "modelled_latency",
        "s",
        "lower",
        "the modelled latency of a deployment with a slower trusted device and a link.",
        "untrusted time + trusted_slowdown x trusted time + modelled transfer time.",
    ),
    MetricDecl(
        "modelled_latency_overhead",
        "x",
        "lower",
        "the modelled deployment's latency against the original's.",
        "modelled_latency / measured original latency.",
    ),
    MetricDecl(
        "attacker_start_quality",
        _Q,
        "none",
        "the quality of the model every attacker starts from.",
        "workload.evaluate on the attacker's starting model (attacker_model or fresh_model).",
    ),
    MetricDecl(
        "attack_recovered_ratio",
        "fraction",
        "lower",
        "the worst case over attacks of the share of the scratch-to-original gap an attacker "
        "closes; the kind's headline.",
        "max over attacks of attack_<attack>_recovered_ratio; null when any attack failed "
        "(incomplete), when an attacker with nothing stolen already matches the original "
        "within noise, when every attack's scratch-to-original gap is within noise, or when "
        "no attack ran.",
    ),
    MetricDecl(
        "attack_<attack>_quality",
        _Q,
        "none",
        "the quality of the model one attack recovered.",
        f"workload.evaluate on the {_ATTACK}'s best model from the untrusted state and traffic.",
    ),
    MetricDecl(
        "attack_<attack>_scratch_quality",
        _Q,
        "none",
        "the quality the same attack reaches with nothing stolen and no traffic.",
        "the attack run again from the same start with an empty state (cached per workload, "
        "attack, settings, seed, device and code).",
        absent=_FAILED,
    ),
    MetricDecl(
        "attack_<attack>_vs_original",
        "fraction",
        "none",
        "the attacker's quality as a fraction of the original's.",
        "attacker / original (original / attacker for a lower-is-better quality).",
        absent=_FAILED,
    ),
    MetricDecl(
        "attack_<attack>_recovered_ratio",
        "fraction",
        "lower",
        "the share of the scratch-to-original gap one attack closes.",
        "(attack - scratch) / (original - scratch) on the quality's oriented scale, clipped "
        "to [0, 1], with a delta-method 95% interval; null when original and scratch are "
        "within 3 standard errors.",
    ),
    MetricDecl(
        "attack_<attack>_mia_auroc",
        "AUROC",
        "none",
        "how well membership in the training data can be read off one attack's model.",
        "AUROC of a loss-threshold membership test (members: train samples the attacker never "
        "saw; non-members: test samples).",
        absent="the attack failed, or no membership test ran (mia_auroc says why)",
    ),
    MetricDecl(
        "mia_auroc",
        "AUROC",
        "none",
        "the best membership-inference AUROC over the attackers' models (0.5 = chance).",
        "max over attacks of attack_<attack>_mia_auroc.",
    ),
    MetricDecl(
        "mia_auroc_original",
        "AUROC",
        "none",
        "the white-box membership-inference reference on the original model.",
        "the same loss-threshold test on the original model.",
    ),
)

KIND = KindDef(
    name="security_split",
    summary="Partitioning a trained model between a trusted and an untrusted device.",
    built="benchmark.kinds.security_split:SecuritySplitter",
    run="benchmark.protocols.security_split:run",
    capabilities={
        "transcript": Transcript,
        "offline": Offline,
        "offline_side": OfflineSide,
        "untrusted_dtype": UntrustedDtype,
    },
    workload=SecurityWorkload,
    workload_capabilities={
        "attack_recipe": HasAttackRecipe,
        "attacker_model": AttackerModel,
        "attacker_start": AttackerStart,
        "quality_stderr": QualityStderr,
        "quality_interval": QualityIntervals,
        "has_members": MembershipData,
    },
    options={
        # Typed as the protocol uses them (benchmark.protocols.security_split).
        "trusted_slowdown": Option(
            "PositiveFloat",
            10.0,
            "how many times slower the trusted device computes (modelled latency)",
        ),
        "link_latency_s": Option(
            "NonNegativeFloat", 1e-4, "the link's latency per crossing, seconds (modelled)"
        ),
        "link_bandwidth_Bps": Option(
            "PositiveFloat", 1e9, "the link's bandwidth, bytes per second (modelled)"
        ),
        "attack_steps": Option(
            "NonNegativeInt | None",
            None,
            "overrides every attack's fine-tuning steps (null: each attack's own), for "
            "workloads whose steps are too dear on a CPU; the record's protocol says it",
        ),
    },
    # Ranked by the tuple (what the attacker recovers, trusted compute with the trusted
    # side's offline work against the whole model's, modelled overhead); recovered ratios
    # in the same 0.05 bin count as equally secure; a split whose attacker closes half the
    # gap to the original or more is "exposed", one whose interval reaches that line
    # "inconclusive", and one whose worst case is unknown (an attack failed)
    # "incomplete", ranked last.
    ranking=KindInfo(
        primary="attack_recovered_ratio",
        higher_is_better=False,
        columns=(
            "max_abs_output_diff",
            "quality",
            "trusted_flops_share",
            "trusted_flops_vs_original",
            "trusted_bytes_vs_original",
            "offline_flops",
            "latency_overhead",
            "modelled_latency_overhead",
            "attack_recovered_ratio",
            "mia_auroc",
        ),
        tiebreak=(("trusted_flops_vs_original", False), ("modelled_latency_overhead", False)),
        primary_bin=0.05,
        verdict=Verdict(
            "attack_recovered_ratio",
            0.5,
            bad="exposed",
            good="protected",
            missing="incomplete",
            uncertain="inconclusive",
        ),
    ),
    plot="benchmark.kinds.security_split_plot:security_scatter",
    takes_attacks=True,
    metrics=METRICS,
)
