"""How one security-split run is executed and scored.

The split must reproduce the original model (max |hybrid − original| on the logits), and
its cost is measured: the trusted side's share of FLOPs (attributed by hooks on the
trusted leaf modules) and of parameter bytes, and the latency of hybrid inference, both
as measured here and as modelled for a deployment where the trusted device is slower and
activations cross a link. Each crossing between the two sides is counted with its bytes.

Then every attack (the experiment's ``attacks``, or all registered ones) receives what an
attacker on the untrusted device holds, ``split.untrusted_state()``, and returns its best
model. The attack is also run with an empty state, the "training from scratch" baseline
with the same samples, and the leak is scored as the share of the gap between that
baseline and the original model that the stolen weights close
(``attack_<name>_recovered_ratio``, 0 = nothing leaked, 1 = the model is recovered). The
primary metric ``attack_recovered_ratio`` is the worst case over attacks.

Protocol options (``protocol:`` in a suite): ``trusted_slowdown`` (how many times slower
the trusted device computes), ``link_latency_s`` (per crossing), ``link_bandwidth_Bps``.

A split may also have an ``offline`` module: work the trusted device does ahead of time,
independent of the inputs' values (SLIP's mask products W_D r). Its leaves are run inline
(so the hybrid output is exact) but kept out of the online figures: FLOPs and compute time
are attributed to sides by the innermost running module (``benchmark.measure.attribution``),
``offline_flops``/``offline_time`` report that work apart, the trusted share is taken over
the online FLOPs, and the modelled latency leaves it out. The measured latency includes it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.kinds import ContractError, SplitModel
from benchmark.measure.attribution import SideMeter
from benchmark.measure.tensors import leaf_modules, module_bytes, tensor_bytes
from benchmark.measure.timing import meter_name, synchronize, time_calls
from benchmark.protocols.base import ProtocolResult, RunContext
from benchmark.records import Budget, Metric

OPTIONS: dict[str, Any] = {
    "trusted_slowdown": 10.0,
    "link_latency_s": 1e-4,
    "link_bandwidth_Bps": 1e9,
}
BATCH = 64


class HybridModule(nn.Module):
    """Lets workload code that expects an nn.Module evaluate the hybrid forward."""

    def __init__(self, split: SplitModel) -> None:
        super().__init__()
        self._split = [split]  # not a submodule: its parts are registered below
        self.trusted = split.trusted
        self.untrusted = split.untrusted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._split[0].forward(x)


@dataclass
class AttackContext:
    """What an attacker has besides the stolen state."""

    fresh_model: Any  # (seed) -> nn.Module: the architecture at random initialisation
    labelled_batches: Any  # (n, batch_size) -> list of (inputs, labels) from the train split
    loss: Any
    device: torch.device
    seed: int
    budget: Budget


@dataclass
class Trace:
    trusted_s: float = 0.0
    total_s: float = 0.0
    crossings: int = 0
    crossing_bytes: int = 0
    offline_s: float = 0.0
    untrusted_s: float = 0.0


def _sides(split: SplitModel) -> dict[str, nn.Module]:
    """The split's parts as measured sides; ``offline`` only when the split has one."""
    sides = {"trusted": split.trusted, "untrusted": split.untrusted}
    offline = getattr(split, "offline", None)
    if isinstance(offline, nn.Module):
        sides["offline"] = offline
    return sides


def trace_hybrid(split: SplitModel, x: torch.Tensor, device: torch.device) -> Trace:
    """Time spent on each side, and the crossings between sides, for one forward.

    Inputs start and outputs end on the untrusted host (where the application runs).
    Execution enters the trusted side when a trusted leaf starts; it returns to the
    untrusted side when an untrusted leaf finishes without a trusted leaf having run
    inside it (a wrapper that only delegates to a trusted layer is not untrusted work).
    Offline leaves (input-independent precomputation) neither cross nor count as online
    time. Time is charged to the innermost running module's side; time outside every
    side's modules counts as untrusted (the host application).
    """
    trace = Trace()
    sides = _sides(split)
    trusted_ids = {id(m) for m in leaf_modules(split.trusted)}
    offline_ids = {id(m) for m in leaf_modules(sides["offline"])} if "offline" in sides else set()
    side = ["untrusted"]
    open_untrusted: list[list[Any]] = []  # [module id, input bytes, delegated to trusted]
    handles = []

    def pre(module: nn.Module, args: Any) -> None:
        if id(module) in offline_ids:
            return
        if id(module) in trusted_ids:
            for frame in open_untrusted:
                frame[2] = True
            if side[0] == "untrusted":
                trace.crossings += 1
                trace.crossing_bytes += tensor_bytes(args)
                side[0] = "trusted"
        else:
            open_untrusted.append([id(module), tensor_bytes(args), False])

    def post(module: nn.Module, args: Any, out: Any) -> None:
        if id(module) in trusted_ids or id(module) in offline_ids:
            return
        _, nbytes, delegated = open_untrusted.pop()
        if not delegated and side[0] == "trusted":
            trace.crossings += 1
            trace.crossing_bytes += nbytes
            side[0] = "untrusted"

    leaves = {id(m): m for root in sides.values() for m in leaf_modules(root)}
    for leaf in leaves.values():
        handles.append(leaf.register_forward_pre_hook(pre))
        handles.append(leaf.register_forward_hook(post))

    def clock() -> float:
        synchronize(device)
        return time.perf_counter()

    meter = SideMeter(sides, clock)
    try:
        with torch.inference_mode(), meter.installed():
            out = split.forward(x)
    finally:
        for h in handles:
            h.remove()
    t = meter.totals
    trace.total_s = t["total"]
    trace.trusted_s = t["trusted"]
    trace.offline_s = t.get("offline", 0.0)
    trace.untrusted_s = t["untrusted"] + t["unattributed"]
    if side[0] == "trusted":
        trace.crossings += 1
        trace.crossing_bytes += tensor_bytes(out)
    return trace


def count_flops_by_side(split: SplitModel, fn: Any) -> dict[str, int]:
    """FLOPs of ``fn()`` per side (innermost running module), plus ``"total"``."""
    with FlopCounterMode(display=False) as counter:
        meter = SideMeter(_sides(split), lambda: float(counter.get_total_flops()))
        with meter.installed():
            fn()
    return {k: int(v) for k, v in meter.totals.items()}


def _median_trace(
    split: SplitModel, x: torch.Tensor, device: torch.device, repeats: int = 15
) -> Trace:
    for _ in range(3):
        trace_hybrid(split, x, device)
    traces = sorted(
        (trace_hybrid(split, x, device) for _ in range(repeats)), key=lambda t: t.total_s
    )
    return traces[len(traces) // 2]


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
    timer = meter_name(device)

    with torch.inference_mode():
        diff = float((hybrid(x).float() - original(x).float()).abs().max())
    quality_original = wl.evaluate(original, device)
    quality = wl.evaluate(hybrid, device)

    flops = count_flops_by_side(split, lambda: hybrid(x))
    online_flops = flops["total"] - flops.get("offline", 0)
    t_bytes, u_bytes = module_bytes(split.trusted), module_bytes(split.untrusted)

    with torch.inference_mode():
        lat_orig = time_calls(lambda: original(x), device=device, warmup=3, repeats=20)
        lat_hybrid = time_calls(lambda: hybrid(x), device=device, warmup=3, repeats=20)
    trace = _median_trace(split, x, device)
    untrusted_s = trace.untrusted_s
    transfer_s = (
        trace.crossings * opts["link_latency_s"] + trace.crossing_bytes / opts["link_bandwidth_Bps"]
    )
    modelled = untrusted_s + trace.trusted_s * opts["trusted_slowdown"] + transfer_s

    metrics: dict[str, Metric] = {
        "max_abs_output_diff": Metric(
            value=diff, unit="logit", meter="hybrid vs original", higher_is_better=False
        ),
        "quality": Metric(
            value=quality,
            unit=q.unit,
            meter=f"workload {q.name} (hybrid)",
            higher_is_better=q.higher_is_better,
        ),
        "quality_original": Metric(value=quality_original, unit=q.unit, meter=f"workload {q.name}"),
        "quality_delta": Metric(
            value=quality - quality_original, unit=q.unit, meter=f"workload {q.name}"
        ),
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
            meter="torch.utils.flop_counter, split.offline (input-independent precomputation)",
            higher_is_better=False,
        ),
        "offline_time": Metric(
            value=trace.offline_s, unit="s", meter=f"{timer}, hooks on split.offline"
        ),
        "trusted_bytes_share": Metric(
            value=t_bytes / max(t_bytes + u_bytes, 1),
            unit="fraction",
            meter="parameter and buffer bytes",
            higher_is_better=False,
        ),
        "latency_original": lat_orig.metric("s", f"{timer}, batch {BATCH}"),
        "latency_hybrid": lat_hybrid.metric("s", f"{timer}, batch {BATCH}"),
        "latency_overhead": Metric(
            value=lat_hybrid.median / lat_orig.median,
            unit="x",
            meter="median hybrid / original, measured",
            higher_is_better=False,
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
    metrics.update(_attacks(ctx, split, original, quality_original))
    info = {"deployment": opts, "quality_metric": q.name, "batch": BATCH}
    return ProtocolResult(metrics=metrics, info=info)


def recovered_ratio(q: Any, original: float, scratch: float, attacked: float) -> float:
    """How much of the gap between training from scratch and the original the attacker
    closes, on the quality's oriented scale (log for perplexity), clipped to [0, 1]; 1
    when the original is no better than scratch (nothing to protect)."""
    o, s, a = q.oriented(original), q.oriented(scratch), q.oriented(attacked)
    gap = o - s
    return 1.0 if gap <= 0 else min(max((a - s) / gap, 0.0), 1.0)


def _attacks(
    ctx: RunContext, split: SplitModel, original: nn.Module, quality_original: float
) -> dict[str, Metric]:
    wl, device, spec = ctx.workload, ctx.device, ctx.spec
    names = spec.attacks or sorted(ctx.registry.attacks)
    actx = AttackContext(
        fresh_model=lambda seed: wl.fresh_model(seed, device),
        labelled_batches=lambda n, bs: wl.labelled_batches("train", n, bs, spec.seed, device),
        loss=wl.loss,
        device=device,
        seed=spec.seed,
        budget=spec.budget,
    )
    stolen = {k: v.detach().clone() for k, v in split.untrusted_state().items()}
    q = wl.quality
    out: dict[str, Metric] = {
        "random_init_quality": Metric(
            value=wl.evaluate(actx.fresh_model(spec.seed), device),
            unit=q.unit,
            meter=f"workload {q.name}, random init",
        ),
    }
    ratios: list[float] = []
    errors: list[str] = []
    for name in names:
        aspec = ctx.registry.attack(name)
        ctx.progress(f"attack {name}")
        try:
            attack = aspec.factory(**dict(aspec.defaults))
            attacked = wl.evaluate(attack(dict(stolen), actx), device)
            scratch = wl.evaluate(attack({}, actx), device)
        except Exception as exc:
            if len(names) == 1:
                raise
            why = f"attack failed: {type(exc).__name__}: {exc}"
            errors.append(f"{name}: {why}")
            for key, unit in (("quality", q.unit), ("recovered_ratio", "fraction")):
                out[f"attack_{name}_{key}"] = Metric.null(unit, f"attack {name}", why)
            continue
        ratio = recovered_ratio(q, quality_original, scratch, attacked)
        ratios.append(ratio)
        meter = f"attack {name}"
        out[f"attack_{name}_quality"] = Metric(value=attacked, unit=q.unit, meter=meter)
        out[f"attack_{name}_scratch_quality"] = Metric(
            value=scratch, unit=q.unit, meter=f"{meter}, no stolen weights"
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
        out[f"attack_{name}_recovered_ratio"] = Metric(
            value=ratio,
            unit="fraction",
            higher_is_better=False,
            meter=f"{meter}: (attack - scratch) / (original - scratch), clipped to [0, 1]",
        )
    if ratios:
        out["attack_recovered_ratio"] = Metric(
            value=max(ratios),
            unit="fraction",
            meter="worst case over attacks",
            higher_is_better=False,
            n=len(ratios),
        )
    else:
        out["attack_recovered_ratio"] = Metric.null(
            "fraction", "attacks", "; ".join(errors) or "no attacks registered"
        )
    return out
