"""How one detector run is executed and scored (OpenOOD's metrics, OOD positive).

The detector is fitted on in-distribution training batches, then scores the held-out
in-distribution test set and the out-of-distribution set. A detector that also offers
``pvalue`` gets the Type-I error at alpha on in-distribution inputs: the fraction of them
it would flag, which a calibrated test keeps at alpha, and the power at alpha: the fraction
of out-of-distribution inputs it flags at that level. A detector that filters (``predict``,
True = OOD) also gets precision, recall and F1 of the in-distribution targets it keeps,
and a workload that hands out labels through an ``oracle`` gets ``labels_used``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmark.measure.timing import Stats, meter_name, synchronize
from benchmark.metrics.ood import ood_metrics
from benchmark.protocols.base import Diverged, ProtocolResult, RunContext
from benchmark.records import Curve, Metric

DEFAULT_ALPHA = 0.05


def _scores(fn, model, batches, device):  # type: ignore[no-untyped-def]
    values, per_sample = [], []
    with torch.inference_mode():
        for batch in batches:
            synchronize(device)
            t0 = time.perf_counter()
            out = fn(model, batch)
            out = torch.as_tensor(out).detach().float().reshape(-1).cpu()
            synchronize(device)
            per_sample.append((time.perf_counter() - t0) / max(len(out), 1))
            values.append(out.numpy())
    scores = np.concatenate(values) if values else np.zeros(0)
    if not np.all(np.isfinite(scores)):
        raise Diverged(f"{int((~np.isfinite(scores)).sum())} non-finite scores")
    return scores, per_sample


def _target_metrics(detector, model, wl, device) -> dict[str, Metric]:  # type: ignore[no-untyped-def]
    """Precision, recall and F1 of the in-distribution targets a filtering detector keeps
    (``predict`` False = keep); the positive class here is the target, not OOD."""
    kept_in, _ = _scores(detector.predict, model, wl.test_batches("in", device), device)
    kept_out, _ = _scores(detector.predict, model, wl.test_batches("out", device), device)
    tp, fp = float(np.sum(kept_in == 0)), float(np.sum(kept_out == 0))
    fn = float(len(kept_in)) - tp
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    meter = "predict() on held-out targets (in) and false positives (out)"
    return {
        name: Metric(value=v, unit="fraction", meter=meter, higher_is_better=True)
        if v is not None
        else Metric.null("fraction", meter, "no targets kept or present")
        for name, v in (
            ("target_precision", precision),
            ("target_recall", recall),
            ("target_f1", f1),
        )
    }


def run(ctx: RunContext) -> ProtocolResult:
    wl, device = ctx.workload, ctx.device
    model = wl.model(device)
    detector = ctx.build_method()
    ctx.progress("fitting")
    synchronize(device)
    t0 = time.perf_counter()
    detector.fit(model, wl.fit_batches(device))
    synchronize(device)
    fit_time = time.perf_counter() - t0
    ctx.progress("scoring")
    s_in, lat_in = _scores(detector.score, model, wl.test_batches("in", device), device)
    s_out, lat_out = _scores(detector.score, model, wl.test_batches("out", device), device)
    m = ood_metrics(s_in, s_out)
    timer = meter_name(device)
    # The first batch carries warm-up (lazy initialisation, caches); it is not timed.
    latencies = (lat_in[1:] + lat_out[1:]) or lat_in + lat_out
    metrics = {
        name: Metric(
            value=m[name],
            unit="fraction",
            meter="benchmark.metrics.ood",
            higher_is_better=name != "fpr_at_95_tpr",
        )
        for name in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr")
    }
    metrics["fit_time"] = Metric(value=fit_time, unit="s", meter=timer, higher_is_better=False)
    metrics["latency_per_sample"] = Stats.of(latencies).metric(
        "s", f"{timer} (median over batches of batch time / batch size, first batch excluded)"
    )
    info = {
        "in": wl.in_name,
        "out": wl.out_name,
        "n_in": len(s_in),
        "n_out": len(s_out),
        "positive_class": "OOD",
    }
    if hasattr(detector, "pvalue"):
        alpha = float(ctx.hparams.get("alpha", DEFAULT_ALPHA))
        p_in, _ = _scores(detector.pvalue, model, wl.test_batches("in", device), device)
        p_out, _ = _scores(detector.pvalue, model, wl.test_batches("out", device), device)
        metrics["type1_error_at_alpha"] = Metric(
            value=float(np.mean(p_in < alpha)),
            unit="fraction",
            n=len(p_in),
            meter=f"ID p-values < {alpha:g}",
            higher_is_better=False,
        )
        metrics["power_at_alpha"] = Metric(
            value=float(np.mean(p_out < alpha)),
            unit="fraction",
            n=len(p_out),
            meter=f"OOD p-values < {alpha:g}",
            higher_is_better=True,
        )
        info["alpha"] = alpha
    if hasattr(detector, "predict"):
        metrics.update(_target_metrics(detector, model, wl, device))
        info["target_class"] = f"{wl.in_name} (kept = predict False)"
    oracle = getattr(wl, "oracle", None)
    if oracle is not None:
        metrics["labels_used"] = Metric(
            value=float(oracle.used),
            unit="labels",
            meter="workload label oracle",
            higher_is_better=False,
        )
    curves = {
        "roc": Curve(x=m["roc_fpr"], y=m["roc_tpr"], x_label="FPR", y_label="TPR", unit="fraction")
    }
    return ProtocolResult(metrics=metrics, curves=curves, info=info)
