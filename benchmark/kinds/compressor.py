"""The compressor kind: a method turns a trained model into a smaller or faster one; the
protocol (``benchmark.protocols.compressor``) measures quality, stored size and latency
before and after, and decides from the tensors whether the result is physically smaller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from benchmark.kinds.definition import KindDef, KindInfo, MetricDecl, phase_metrics
from benchmark.kinds.workload import ClassifierWorkload, QualityIntervals

if TYPE_CHECKING:
    from torch import nn


@runtime_checkable
class Compressor(Protocol):
    """What a compressor factory builds: ``compress`` returns a real smaller/faster model."""

    def compress(self, model: nn.Module, ctx: Any) -> nn.Module: ...


@runtime_checkable
class ReportsInfo(Protocol):
    """Optional: what the method says about its own run (a quantizer: integer arithmetic is
    simulated; WGSEF: how many groups its prox zeroed), kept in the record's
    ``info["method"]``; reports print its ``note`` and ``arithmetic``."""

    info: Mapping[str, Any]


_Q = "the workload's quality unit (fraction, perplexity)"
_QDIR = "workload"  # the workload's QualityMetric says which way is better
METRICS: tuple[MetricDecl, ...] = (
    MetricDecl(
        "quality_before",
        _Q,
        _QDIR,
        "the workload's quality figure of the original model on the test split.",
        "workload.evaluate before compression, with the workload's 95% interval over the test "
        "items where it gives one (quality_interval).",
    ),
    MetricDecl(
        "quality_after",
        _Q,
        _QDIR,
        "the quality of the compressed model on the test split; the kind's headline.",
        "workload.evaluate on the compressed model, interval as for quality_before.",
    ),
    MetricDecl(
        "quality_delta",
        _Q,
        _QDIR,
        "how much quality compression cost (after minus before).",
        "quality_after - quality_before on the test split.",
    ),
    MetricDecl(
        "val_quality_before",
        _Q,
        _QDIR,
        "the original model's quality on the validation split.",
        "workload.evaluate(split='val') for workloads with a validation split.",
        absent="the workload has no validation split",
    ),
    MetricDecl(
        "val_quality_after",
        _Q,
        _QDIR,
        "the compressed model's quality on the validation split, on which grid winners are chosen.",
        "workload.evaluate(split='val') on the compressed model.",
        absent="the workload has no validation split",
    ),
    MetricDecl(
        "params_before",
        "parameters",
        "none",
        "the original model's stored parameters.",
        "sum of numel over model.parameters().",
    ),
    MetricDecl(
        "params_after",
        "parameters",
        "none",
        "the compressed model's stored parameters.",
        "sum of numel over the compressed model's parameters.",
    ),
    MetricDecl(
        "params_kept_ratio",
        "fraction",
        "lower",
        "the share of parameters still stored.",
        "params_after / params_before.",
    ),
    MetricDecl(
        "nonzero_params_ratio",
        "fraction",
        "lower",
        "the share of parameters that are non-zero after compression (a mask leaves zeros stored).",
        "count_nonzero over the compressed parameters / params_before.",
    ),
    MetricDecl(
        "bytes_before",
        "bytes",
        "none",
        "the original model's stored bytes.",
        "bytes of every parameter and buffer storage (quantized tensors count their bytes).",
    ),
    MetricDecl(
        "bytes_after",
        "bytes",
        "none",
        "the compressed model's stored bytes.",
        "bytes of every parameter and buffer storage of the compressed model.",
    ),
    MetricDecl(
        "bytes_kept_ratio",
        "fraction",
        "lower",
        "the share of bytes still stored.",
        "bytes_after / bytes_before.",
    ),
    MetricDecl(
        "latency_before",
        "s",
        "lower",
        "the original model's forward time on a batch of 64 real inputs.",
        "median of repeated calls timed interleaved with the compressed model's (one call of "
        "each in turn), after 3 warm-up calls, with p10/p90.",
    ),
    MetricDecl(
        "latency_after",
        "s",
        "lower",
        "the compressed model's forward time on the same batch.",
        "median of the interleaved timing, as latency_before.",
    ),
    MetricDecl(
        "latency_speedup",
        "x",
        "higher",
        "how much faster the compressed model runs.",
        "median latency before / after; null when the model is masked-dense (zeros still "
        "stored and computed) or was not made smaller.",
    ),
    MetricDecl(
        "compression_time",
        "s",
        "lower",
        "how long the method took to compress.",
        "host clock around compress(), with device synchronisation.",
    ),
    *phase_metrics("compress", "the method compressed the model"),
)

KIND = KindDef(
    name="compressor",
    summary="Turning a trained model into a physically smaller or faster one.",
    built="benchmark.kinds.compressor:Compressor",
    run="benchmark.protocols.compressor:run",
    capabilities={"info": ReportsInfo},
    workload=ClassifierWorkload,
    workload_capabilities={"quality_interval": QualityIntervals},
    ranking=KindInfo(
        primary="quality_after",
        higher_is_better=True,
        columns=(
            "quality_before",
            "quality_after",
            "params_kept_ratio",
            "bytes_kept_ratio",
            "latency_speedup",
            "compression_time",
        ),
    ),
    plot="benchmark.kinds.compressor_plot:compressor_scatter",
    metrics=METRICS,
)
