"""How one security-split run is executed and scored.

Threat model. The attacker controls the untrusted device. It holds:

1. the untrusted device's stored tensors (``split.untrusted_state()``, under the original
   model's parameter names);
2. every tensor the untrusted device sends or receives during hybrid inference on the
   inputs it serves (``split.transcript(inputs)``: per round trip, what it sent and what
   came back, and which module of the public architecture the trusted side computed);
3. n labelled samples of the task, and any public pretrained checkpoint of the
   architecture (the workload's ``attacker_model``: e.g. MiniLM's public weights with a
   fresh head);
4. the design of the split (Kerckhoffs): which kind of split it is and how the host uses
   each reply. It does not hold the trusted device's tensors, nor its randomness (masks
   come from the operating system's entropy, not from the run seed).

The attacker is honest-but-curious: it runs the protocol faithfully (integrity attacks by
a malicious device are out of scope). Its goals: model stealing (a model as good as the
original) and membership inference on the original's training data.

Equivalence and cost. The split must reproduce the original model (max |hybrid −
original| on the logits, and the untrusted side's dtype, on which exactness depends); its
cost is the trusted side's share of online FLOPs and of parameter bytes, the offline
precomputation's FLOPs and bytes and on which side they live (SLIP's pads W_D·r need
W_D), the measured latency of hybrid against original (timed interleaved, so load weighs
on both), and a modelled latency for a deployment where the trusted device is slower and
activations cross a link (``trusted_slowdown``, ``link_latency_s``,
``link_bandwidth_Bps``). Crossings and their bytes come from the same recorder as the
transcript (``benchmark.measure.crossings``).

Leak. Every requested attack (the experiment's ``attacks``, or all registered ones) gets
1-4 and returns its best model; it is run again with nothing stolen and no traffic from
the same start (the "scratch" baseline). ``attack_<name>_recovered_ratio`` is the share of
the scratch-to-original gap the attack closes, with a 95% interval
(``benchmark/protocols/security_attacks.py``), and ``attack_recovered_ratio`` is the worst
case over attacks: null, and the verdict ``incomplete``, when any attack failed. On a
split that keeps nothing trusted every attack must recover the original within noise (the
sanity gate), or the run fails.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.hashing import config_key
from benchmark.kinds import ContractError
from benchmark.kinds.security_split import (
    KIND,
    AttackChoice,
    AttackerStart,
    OfflineSide,
    SplitModel,
    TrafficFit,
    UntrustedDtype,
)
from benchmark.measure.hybrid import (
    HybridModule,
    count_flops_by_side,
    median_trace,
    sides_of,
)
from benchmark.measure.tensors import module_bytes
from benchmark.measure.timing import clock_label, time_interleaved
from benchmark.protocols import security_attacks as scratch_baseline_code
from benchmark.protocols.base import ProtocolResult, RunContext
from benchmark.protocols.security_attacks import (
    AttackContext,
    SanityGateFailed,
    attack_context,
    data_slices,
    membership_auroc,
    membership_sets,
    ratio_metric,
    recovered_ratio,
    trusted_holds_nothing,
    within_noise_of,
)
from benchmark.records import Metric
from benchmark.workloads.cache import cached_json, source_fingerprint

__all__ = ["AttackContext", "recovered_ratio", "run"]

OPTIONS: dict[str, Any] = KIND.option_defaults
BATCH = 64


def run(ctx: RunContext) -> ProtocolResult:
    wl, device, spec = ctx.workload, ctx.device, ctx.spec
    opts = {**OPTIONS, **spec.protocol}
    q = wl.quality
    original = wl.model(device)
    split = ctx.build_method().split(copy.deepcopy(original))
    if not isinstance(split, SplitModel):
        raise ContractError(f"split() returned {type(split).__name__}, which lacks SplitModel")
    hybrid = HybridModule(split).eval()
    x = wl.example_inputs(BATCH, device)
    timer = clock_label(device)  # host clock: the hook trace
    event_timer = clock_label(device, cuda_events=True)  # time_interleaved

    with torch.inference_mode():
        diff = float((hybrid(x).float() - original(x).float()).abs().max())
    quality_original = wl.evaluate(original, device)
    quality = wl.evaluate(hybrid, device)
    ctx.progress(0, max_abs_output_diff=diff, quality=quality, quality_original=quality_original)

    flops = count_flops_by_side(split, lambda: hybrid(x))
    online_flops = flops["total"] - flops.get("offline", 0)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        original(x)
    original_flops = max(counter.get_total_flops(), 1)
    sides = sides_of(split)
    t_bytes, u_bytes = module_bytes(split.trusted), module_bytes(split.untrusted)
    off_bytes = module_bytes(sides["offline"]) if "offline" in sides else 0
    offline_side = split.offline_side if isinstance(split, OfflineSide) else "trusted"
    offline_trusted = offline_side.startswith("trusted")
    trusted_work = flops["trusted"] + (flops.get("offline", 0) if offline_trusted else 0)
    trusted_held = t_bytes + (off_bytes if offline_trusted else 0)

    with torch.inference_mode():
        lat_orig, lat_hybrid = time_interleaved(
            [lambda: original(x), lambda: hybrid(x)], device=device, warmup=3, repeats=20
        )
    trace = median_trace(split, x, device)
    untrusted_s = trace.untrusted_s
    transfer_s = (
        trace.crossings * opts["link_latency_s"] + trace.crossing_bytes / opts["link_bandwidth_Bps"]
    )
    modelled = untrusted_s + trace.trusted_s * opts["trusted_slowdown"] + transfer_s
    untrusted_dtypes = sorted(
        {str(p.dtype).removeprefix("torch.") for p in split.untrusted.parameters()}
    )
    declared_dtype = split.untrusted_dtype if isinstance(split, UntrustedDtype) else None
    untrusted_dtype = declared_dtype or ",".join(untrusted_dtypes)

    metrics: dict[str, Metric] = {
        "max_abs_output_diff": Metric(
            value=diff,
            unit="logit",
            meter=f"hybrid vs original (untrusted products in {untrusted_dtype})",
            higher_is_better=False,
        ),
        "quality": Metric(
            value=quality,
            unit=q.unit,
            meter=f"{q.meter} (hybrid)",
            higher_is_better=q.higher_is_better,
        ),
        "quality_original": Metric(value=quality_original, unit=q.unit, meter=q.meter),
        "quality_delta": Metric(value=quality - quality_original, unit=q.unit, meter=q.meter),
        "trusted_flops_share": Metric(
            value=flops["trusted"] / max(online_flops, 1),
            unit="fraction",
            meter="torch.utils.flop_counter, innermost-module hooks, online FLOPs",
            higher_is_better=False,
        ),
        "trusted_flops": Metric(
            value=float(flops["trusted"]), unit="FLOP", meter="torch.utils.flop_counter"
        ),
        "offline_flops": Metric(
            value=float(flops.get("offline", 0)),
            unit="FLOP",
            meter=f"torch.utils.flop_counter, split.offline (input-independent "
            f"precomputation, on the {offline_side} side), per forward of batch {BATCH}",
            higher_is_better=False,
        ),
        "offline_bytes": Metric(
            value=float(off_bytes),
            unit="bytes",
            meter=f"parameters and buffers the offline precomputation holds ({offline_side} side)",
            higher_is_better=False,
        ),
        "trusted_flops_vs_original": Metric(
            value=trusted_work / original_flops,
            unit="x",
            meter="(trusted online + trusted-side offline FLOPs) / the original model's "
            "FLOPs: 1 is the cost of running everything trusted",
            higher_is_better=False,
        ),
        "trusted_bytes_vs_original": Metric(
            value=trusted_held / max(module_bytes(original), 1),
            unit="x",
            meter="(trusted + trusted-side offline parameter bytes) / the original's",
            higher_is_better=False,
        ),
        "offline_time": Metric(
            value=trace.offline_s, unit="s", meter=f"{timer}, hooks on split.offline"
        ),
        "trusted_bytes_share": Metric(
            value=t_bytes / max(t_bytes + u_bytes, 1),
            unit="fraction",
            meter="parameter and buffer bytes (online parts)",
            higher_is_better=False,
        ),
        "latency_original": lat_orig.metric("s", f"{event_timer}, batch {BATCH}, interleaved"),
        "latency_hybrid": lat_hybrid.metric("s", f"{event_timer}, batch {BATCH}, interleaved"),
        "latency_overhead": Metric(
            value=lat_hybrid.median / lat_orig.median,
            unit="x",
            meter="median hybrid / original, timed interleaved (one call of each in turn)",
            higher_is_better=False,
            n=lat_hybrid.n,
        ),
        "trusted_compute_time": Metric(
            value=trace.trusted_s, unit="s", meter=f"{timer}, hooks on trusted leaves"
        ),
        "untrusted_compute_time": Metric(
            value=untrusted_s, unit="s", meter=f"{timer}, forward minus trusted and offline"
        ),
        "crossings": Metric(value=float(trace.crossings), unit="count", meter="hooks, per forward"),
        "crossing_bytes": Metric(
            value=float(trace.crossing_bytes), unit="bytes", meter="hooks, per forward"
        ),
        "modelled_transfer_time": Metric(
            value=transfer_s, unit="s", meter="crossings x latency + bytes / bandwidth"
        ),
        "modelled_latency": Metric(
            value=modelled,
            unit="s",
            meter="untrusted + slowdown x trusted + transfer",
            higher_is_better=False,
        ),
        "modelled_latency_overhead": Metric(
            value=modelled / lat_orig.median,
            unit="x",
            meter="modelled / measured original",
            higher_is_better=False,
        ),
    }
    exposed_bound = trusted_holds_nothing(split, flops["trusted"])
    attack_metrics, attack_info = _attacks(ctx, split, original, quality_original, exposed_bound)
    metrics.update(attack_metrics)
    info = {
        "deployment": opts,
        "quality_metric": q.name,
        "batch": BATCH,
        "untrusted_dtype": untrusted_dtype,
        "offline_side": offline_side,
        "attacker_start": wl.attacker_start
        if isinstance(wl, AttackerStart)
        else "the workload's fresh_model",
        "attacks": attack_info,
    }
    return ProtocolResult(metrics=metrics, info=info)


def _attack_reserve(ctx: RunContext, names: list[str]) -> int:
    """The most labelled samples (or served inputs) any requested attack uses."""
    most = 0
    for name in names:
        try:
            defaults = ctx.registry.attack(name).defaults
        except Exception:  # an unknown attack fails in the loop, with its reason
            continue
        most = max(most, *(int(defaults.get(k, 0) or 0) for k in ("n_samples", "n_served")))
    return most


def _attacks(
    ctx: RunContext,
    split: SplitModel,
    original: nn.Module,
    quality_original: float,
    exposed_bound: bool,
) -> tuple[dict[str, Metric], dict[str, Any]]:
    wl, device, spec = ctx.workload, ctx.device, ctx.spec
    names = spec.attacks or sorted(ctx.registry.attacks)
    steps = {**OPTIONS, **spec.protocol}["attack_steps"]
    slices = data_slices(ctx, _attack_reserve(ctx, names))
    actx = attack_context(ctx, split, slices, scratch=False)
    scratch_ctx = attack_context(ctx, split, slices, scratch=True)
    stolen = {k: v.detach().clone() for k, v in split.untrusted_state().items()}
    q = wl.quality
    start = scratch_ctx.fresh_model(spec.seed)
    out: dict[str, Metric] = {
        "attacker_start_quality": Metric(
            value=wl.evaluate(start, device),
            unit=q.unit,
            meter=f"{q.meter}, the attacker's starting model",
        ),
    }
    members = membership_sets(ctx, slices)
    mia: dict[str, float] = {}
    if isinstance(members, tuple):
        value = membership_auroc(original, *members)
        if value is not None:
            mia["original"] = value
    info: dict[str, Any] = {}
    ratios: dict[str, float] = {}
    errors: list[str] = []
    undefined: list[str] = []
    worthless: list[str] = []  # the scratch attacker already matches the original
    gate: list[str] = []
    for step, name in enumerate(names, 1):
        ctx.say(f"attack {name}")
        try:
            aspec = ctx.registry.attack(name)
            hparams = dict(aspec.defaults)
            if steps is not None and "steps" in hparams:
                hparams["steps"] = int(steps)
            attack = aspec.load()(**hparams)
            model = attack(dict(stolen), actx)
            attacked = wl.evaluate(model, device)
            scratch_result, scratch_cached = _scratch(ctx, name, hparams, attack, scratch_ctx)
            scratch = scratch_result["quality"]
        except Exception as exc:
            why = f"attack failed: {type(exc).__name__}: {exc}"
            errors.append(f"{name}: {why}")
            for key, unit in (("quality", q.unit), ("recovered_ratio", "fraction")):
                out[f"attack_{name}_{key}"] = Metric.null(unit, f"attack {name}", why)
            continue
        chosen = isinstance(model, AttackChoice)
        info[name] = {
            "choice": model.attack_choice if chosen else None,
            "validation_losses": model.attack_scores if chosen else None,
            "traffic_r2": model.traffic_r2 if isinstance(model, TrafficFit) else None,
            "scratch_choice": scratch_result.get("choice"),
            "scratch_cached": scratch_cached,
        }
        meter = f"attack {name}"
        out[f"attack_{name}_quality"] = Metric(value=attacked, unit=q.unit, meter=meter)
        out[f"attack_{name}_scratch_quality"] = Metric(
            value=scratch,
            unit=q.unit,
            meter=f"{meter}, nothing stolen, no traffic"
            + (" (cached from an identical earlier run)" if scratch_cached else ""),
        )
        # attacker / original for accuracy-like qualities, original / attacker for
        # perplexity-like ones: either way 1 means the attacker matches the original.
        num, den = (
            (attacked, quality_original) if q.higher_is_better else (quality_original, attacked)
        )
        out[f"attack_{name}_vs_original"] = Metric(
            value=num / max(den, 1e-12),
            unit="fraction",
            meter=f"{meter}: attacker's quality as a fraction of the original's"
            + ("" if q.higher_is_better else " (original / attacker, lower-is-better quality)"),
        )
        ratio = ratio_metric(ctx, name, quality_original, scratch, attacked)
        out[f"attack_{name}_recovered_ratio"] = ratio
        ctx.progress(
            step,
            **{f"attack_{name}_quality": attacked, f"attack_{name}_recovered_ratio": ratio.value},
        )
        if ratio.value is None:
            undefined.append(name)
            if within_noise_of(ctx, quality_original, attacked)[0]:
                worthless.append(name)
        else:
            ratios[name] = ratio.value
        if isinstance(members, tuple):
            value = membership_auroc(model, *members)
            if value is not None:
                mia[name] = value
                out[f"attack_{name}_mia_auroc"] = Metric(
                    value=value, unit="AUROC", meter=f"{meter}: loss-threshold membership test"
                )
        if exposed_bound:
            gate += _gate(ctx, name, model, attacked, quality_original)
    if gate:
        raise SanityGateFailed(
            "sanity gate: the split keeps nothing trusted, yet attacks did not recover the "
            f"original within noise: {'; '.join(gate)} (too weak to judge any split)"
        )
    out.update(_worst_case(ratios, errors, undefined, worthless, out))
    out.update(_membership_metrics(mia, members))
    return out, info


def _gate(
    ctx: RunContext, name: str, model: nn.Module, attacked: float, original: float
) -> list[str]:
    """On a split that keeps nothing trusted, the attack's result and every model it
    learned (not only the one it chose: the stolen state as it is would hide a broken
    fine-tune) must reach the original within noise."""
    wl = ctx.workload
    candidates = model.attack_candidates if isinstance(model, AttackChoice) else {}
    learned = {k: m for k, m in candidates.items() if k != "stolen as-is"}
    results = {"result": attacked}
    for cname, cmodel in learned.items():
        results[cname] = (cmodel is model and attacked) or wl.evaluate(cmodel, ctx.device)
    failures = []
    for cname, value in results.items():
        ok, how = within_noise_of(ctx, original, value)
        if not ok:
            failures.append(
                f"{name} ({cname}) reached {value:.4g} against {original:.4g} (tolerance {how})"
            )
    return failures


def _scratch(
    ctx: RunContext, name: str, hparams: dict[str, Any], attack: Any, scratch_ctx: Any
) -> tuple[dict[str, Any], bool]:
    """The attack's from-scratch baseline. It does not depend on the split, so it is
    computed once per (workload, attack, settings, seed, device, code) and cached: every
    split of a suite is compared with the same baseline, at the cost of one."""
    spec = ctx.spec
    key = config_key(
        spec.workload,
        spec.workload_options,
        name,
        hparams,
        spec.seed,
        str(ctx.device),
        source_fingerprint(attack, ctx.workload, scratch_baseline_code),
    )

    def compute() -> dict[str, Any]:
        model = attack({}, scratch_ctx)
        return {
            "quality": ctx.workload.evaluate(model, ctx.device),
            "choice": model.attack_choice if isinstance(model, AttackChoice) else None,
        }

    return cached_json(f"security-scratch-{key}", compute)


def _worst_case(
    ratios: dict[str, float],
    errors: list[str],
    undefined: list[str],
    worthless: list[str],
    out: dict[str, Metric],
) -> dict[str, Metric]:
    """The headline: the worst ratio over every attack; null when any attack failed
    (incomplete), or when an attacker with nothing stolen already matches the original
    (nothing to protect at that budget: no split can be called protected against it)."""
    meter = "worst case over attacks"
    if errors:
        return {
            "attack_recovered_ratio": Metric.null(
                "fraction", meter, "incomplete: " + "; ".join(errors)
            )
        }
    if worthless:
        why = (
            f"nothing to protect: with nothing stolen, {', '.join(worthless)} already "
            "reaches the original within noise"
        )
        return {"attack_recovered_ratio": Metric.null("fraction", meter, why)}
    if not ratios:
        why = (
            f"gap within noise for {', '.join(undefined)}" if undefined else "no attacks requested"
        )
        return {"attack_recovered_ratio": Metric.null("fraction", "worst case over attacks", why)}
    worst = max(ratios, key=lambda k: ratios[k])
    m = out[f"attack_{worst}_recovered_ratio"]
    note = f"; undefined (gap within noise): {', '.join(undefined)}" if undefined else ""
    return {
        "attack_recovered_ratio": Metric(
            value=ratios[worst],
            unit="fraction",
            meter=f"worst case over {len(ratios)} attacks: {worst}{note}",
            higher_is_better=False,
            n=len(ratios),
            std=m.std,
            ci_low=m.ci_low,
            ci_high=m.ci_high,
        )
    }


def _membership_metrics(mia: dict[str, float], members: Any) -> dict[str, Metric]:
    meter = "loss-threshold membership inference, AUROC (0.5 = chance)"
    if not isinstance(members, tuple):
        reason = str(members)
        return {
            "mia_auroc": Metric.null("AUROC", meter, reason),
            "mia_auroc_original": Metric.null("AUROC", meter, reason),
        }
    attacks = {k: v for k, v in mia.items() if k != "original"}
    out = {
        "mia_auroc_original": (
            Metric(value=mia["original"], unit="AUROC", meter=meter + ", the original model")
            if "original" in mia
            else Metric.null("AUROC", meter, "the model's outputs are not class logits")
        )
    }
    if attacks:
        worst = max(attacks, key=lambda k: attacks[k])
        out["mia_auroc"] = Metric(
            value=attacks[worst],
            unit="AUROC",
            meter=f"{meter}, best over the attackers' models: {worst}",
        )
    else:
        out["mia_auroc"] = Metric.null("AUROC", meter, "no attack produced a classifier")
    return out
