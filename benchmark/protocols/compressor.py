"""How one compressor run is executed and scored.

Quality, stored parameters and bytes, and latency are measured before and after on the
same inputs; the two latencies are timed interleaved (one call of each in turn), so a
neighbour's load on a shared machine weighs on both alike. Whether the result is
*physically* smaller is decided here from the tensors, not from what the compressor
claims: a model that still stores (and computes) every weight but has zeros is
"masked-dense", and its speed-up is reported as null with that reason.

Quality is measured on the workload's test split (``quality_before``/``quality_after``,
with the workload's 95% interval over the test items in ``ci_low``/``ci_high`` and their
number in ``n``) and, where the workload has one, on its validation split
(``val_quality_before``/``val_quality_after``), which a leaderboard chooses grid winners
on. Calibration and fine-tuning batches come from the train split only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmark.kinds import ContractError
from benchmark.kinds.compressor import ReportsInfo
from benchmark.kinds.workload import QualityIntervals, has_validation
from benchmark.measure.meters import phase
from benchmark.measure.tensors import module_bytes
from benchmark.measure.timing import clock_label, synchronize, time_interleaved
from benchmark.protocols.base import ProtocolResult, RunContext
from benchmark.records import Budget, Metric

LATENCY_BATCH = 64
CALIBRATION_SAMPLES = 512
FINETUNE_SAMPLES = 2048


@dataclass
class CompressionContext:
    """What a compressor may use besides the model."""

    calibration_batches: list[tuple[Any, torch.Tensor]]
    finetune_batches: list[tuple[Any, torch.Tensor]]
    loss: Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]
    budget: Budget
    device: torch.device
    seed: int


@dataclass(frozen=True)
class Footprint:
    params: int
    nbytes: int
    nonzero: int


def footprint(model: nn.Module) -> Footprint:
    """Every parameter and buffer actually stored (quantized tensors count their bytes)."""
    weights = list(model.parameters())
    return Footprint(
        params=sum(p.numel() for p in weights),
        nbytes=module_bytes(model),
        nonzero=sum(int(torch.count_nonzero(p)) for p in weights),
    )


def quality_metric(wl: Any, value: float, split: str = "test") -> Metric:
    """The workload's quality figure on a split, with its 95% interval over that split's
    items where the workload gives one (``quality_interval``)."""
    q = wl.quality
    ci = wl.quality_interval(value, split) if isinstance(wl, QualityIntervals) else None
    return Metric(
        value=value,
        unit=q.unit,
        meter=q.meter + ("" if split == "test" else ", validation split"),
        n=ci.n if ci is not None else None,
        ci_low=ci.low if ci is not None else None,
        ci_high=ci.high if ci is not None else None,
        higher_is_better=q.higher_is_better,
    )


def _json_safe(value: Any) -> Any:
    """A method's ``info`` as plain JSON (tensors and other objects as strings)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def run(ctx: RunContext) -> ProtocolResult:
    wl, device, spec = ctx.workload, ctx.device, ctx.spec
    q = wl.quality
    model = wl.model(device)
    inputs = wl.example_inputs(LATENCY_BATCH, device)
    timer = clock_label(device)  # host clock: compression time
    event_timer = clock_label(device, cuda_events=True)  # time_interleaved: latencies

    quality_before = wl.evaluate(model, device)
    validation = has_validation(wl)
    val_before = wl.evaluate(model, device, split="val") if validation else None
    before = footprint(model)
    ctx.progress(0, quality=quality_before)

    compressor = ctx.build_method()
    cctx = CompressionContext(
        calibration_batches=wl.labelled_batches(
            "train", CALIBRATION_SAMPLES, 64, spec.seed, device
        ),
        finetune_batches=wl.labelled_batches("train", FINETUNE_SAMPLES, 64, spec.seed + 1, device),
        loss=wl.loss,
        budget=spec.budget,
        device=device,
        seed=spec.seed,
    )
    ctx.say("compressing")
    with phase("compress", device) as compress_phase:
        synchronize(device)
        t0 = time.perf_counter()
        compressed = compressor.compress(copy.deepcopy(model), cctx)
        synchronize(device)
        compression_time = time.perf_counter() - t0
    if not isinstance(compressed, nn.Module):
        raise ContractError(f"compress() returned {type(compressed).__name__}, not an nn.Module")
    compressed.eval()
    ctx.say("measuring the compressed model")
    quality_after = wl.evaluate(compressed, device)
    val_after = wl.evaluate(compressed, device, split="val") if validation else None
    after = footprint(compressed)
    ctx.progress(
        1,
        quality=quality_after,
        compression_time=compression_time,
        params_kept_ratio=after.params / before.params,
    )
    ctx.say("timing the original and the compressed model, interleaved")
    model.eval()
    with torch.inference_mode():
        lat_before, lat_after = time_interleaved(
            [lambda: model(inputs), lambda: compressed(inputs)],
            device=device,
            warmup=3,
            repeats=20,
            min_total_s=0.3,
        )

    masked = after.params >= before.params and after.nbytes >= before.nbytes
    representation = (
        "masked-dense"
        if masked and after.nonzero < after.params
        else ("unchanged" if masked else "physical")
    )
    metrics: dict[str, Metric] = {
        "quality_before": quality_metric(wl, quality_before),
        "quality_after": quality_metric(wl, quality_after),
        "quality_delta": Metric(
            value=quality_after - quality_before,
            unit=q.unit,
            meter=q.meter,
            higher_is_better=q.higher_is_better,
        ),
        "params_before": Metric(value=float(before.params), unit="parameters", meter="model"),
        "params_after": Metric(value=float(after.params), unit="parameters", meter="model"),
        "params_kept_ratio": Metric(
            value=after.params / before.params,
            unit="fraction",
            meter="stored parameters after/before",
            higher_is_better=False,
        ),
        "nonzero_params_ratio": Metric(
            value=after.nonzero / before.params,
            unit="fraction",
            meter="non-zero parameters after / parameters before",
            higher_is_better=False,
        ),
        "bytes_before": Metric(value=float(before.nbytes), unit="bytes", meter="tensor storage"),
        "bytes_after": Metric(value=float(after.nbytes), unit="bytes", meter="tensor storage"),
        "bytes_kept_ratio": Metric(
            value=after.nbytes / before.nbytes,
            unit="fraction",
            meter="stored bytes after/before",
            higher_is_better=False,
        ),
        "latency_before": lat_before.metric("s", f"{event_timer}, batch {LATENCY_BATCH}"),
        "latency_after": lat_after.metric("s", f"{event_timer}, batch {LATENCY_BATCH}"),
        "compression_time": Metric(
            value=compression_time, unit="s", meter=timer, higher_is_better=False
        ),
    }
    if representation == "physical":
        metrics["latency_speedup"] = Metric(
            value=lat_before.median / lat_after.median,
            unit="x",
            n=lat_after.n,
            meter="median latency before/after",
            higher_is_better=True,
        )
    else:
        why = (
            "masked-dense: zeros are still stored and computed"
            if masked and representation == "masked-dense"
            else "the model was not made smaller"
        )
        metrics["latency_speedup"] = Metric.null("x", "median latency before/after", why)
    if val_before is not None and val_after is not None:
        metrics["val_quality_before"] = quality_metric(wl, val_before, "val")
        metrics["val_quality_after"] = quality_metric(wl, val_after, "val")
    metrics.update(compress_phase.metrics())
    ci = wl.quality_interval(quality_after, "test") if isinstance(wl, QualityIntervals) else None
    info = {
        "representation": representation,
        "quality_metric": q.name,
        "latency_batch": LATENCY_BATCH,
        # What the validation split holds (None: the workload has none, so no val_ figures).
        "validation": wl.validation if validation else None,
        "quality_interval": ci.method if ci is not None else "none: the workload gives none",
        # What the method says about its own run (e.g. a quantizer: integer arithmetic is
        # simulated; WGSEF: how many groups its prox zeroed): reports print ``note`` and
        # ``arithmetic`` beside the row.
        "method": _json_safe(
            (compressor.info if isinstance(compressor, ReportsInfo) else None) or {}
        ),
    }
    return ProtocolResult(metrics=metrics, info=info)
