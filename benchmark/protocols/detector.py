"""How one detector run is executed and scored (OpenOOD's metrics, OOD positive, plus the
ID-positive FPR95 and OpenOOD's trapezoid AUPR for comparing with published tables).

The detector is fitted on in-distribution training batches, then scores the held-out
in-distribution test set and the out-of-distribution set. A detector that also offers
``pvalue`` gets the Type-I error at alpha on in-distribution inputs: the fraction of them
it would flag, which a calibrated test keeps at alpha, and the power at alpha: the fraction
of out-of-distribution inputs it flags at that level. A detector that filters (``predict``,
True = OOD) also gets precision, recall and F1 of the in-distribution targets it keeps,
and a workload that hands out labels through an ``oracle`` gets ``labels_used``. A
workload whose test data are drawn per run (``bind_run_seed``, e.g. audit-sim) is handed
the run's seed before anything is drawn, so a suite's seeds replicate the data too.

Conventions (``benchmark.metrics.ood``): ``aupr_in``/``aupr_out`` are average precision
(scikit-learn's step sum), ``aupr_in_trapezoid``/``aupr_out_trapezoid`` the trapezoid
area OpenOOD reports as AUPR; ``fpr_at_95_tpr`` is OOD-positive (OpenOOD: ID inputs
flagged when 95% of OOD inputs are), ``fpr_at_95_tpr_id`` ID-positive (the MSP, ODIN and
energy papers: OOD inputs accepted when 95% of ID inputs are).

Intervals (95%, over the test items; ``n`` is the number of items behind each figure):
``auroc`` DeLong's (in = negative, OOD = positive; n = n_in + n_out); the proportions
Wilson's: ``fpr_at_95_tpr`` over the n_in in-distribution items and ``fpr_at_95_tpr_id``
over the n_out OOD items (at the threshold the other side's scores fix; that threshold's
own sampling variation is not included), ``type1_error_at_alpha`` over n_in,
``power_at_alpha`` over n_out (for audit-sim: over the audit datasets, one test each),
``target_precision`` over the kept items and ``target_recall`` over the targets.
``aupr_*`` and ``target_f1`` carry none. A workload with a validation split (``validation``)
also gets ``val_auroc`` (with its DeLong interval), from the same fitted detector on
validation in/out sets disjoint from the test sets and from the fit data: a leaderboard
chooses grid winners on it and ranks on the test ``auroc``.

Calibration. The fit data are the model's training inputs, on which a model is more
typical than on new inputs, so a p-value calibrated on them promises nothing about the
held-out test inputs. A detector whose ``fit`` takes ``calibration_batches`` gets the
half of the in-distribution validation split there (bare inputs; which half is drawn
from the run's seed); its ``val_auroc`` is then computed on the other half only, so no
validation figure is read off the data it calibrated on. Without a validation split it
gets none and calibrates as it can (the detector's ``calibration_source`` goes to
``info["calibration"]``). Every detector with ``pvalue`` also gets
``type1_error_at_5pct`` and ``type1_error_at_1pct``: the share of in-distribution test
inputs with p <= 0.05 (0.01; every rate here counts p <= level, the detectors' own
rejection rule), Wilson interval over n_in. What that interval does not hold: the
conformal guarantee P(p <= α) <= α is an average over calibration sets. For one
calibration set of n_cal inputs the rate is itself random around α (a Beta law, sd about
sqrt(α(1 - α)/n_cal): 0.02 at n_cal = 125), so one run's interval can lie above α for a
valid test; validity is read over seeds, which redraw the calibration half.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from benchmark.kinds.detector import CalibrationSource, Filters, LabelOracle, PValues, RunSeeded
from benchmark.kinds.workload import has_validation
from benchmark.measure.timing import Stats, clock_label, synchronize
from benchmark.metrics.intervals import auroc_interval, wilson
from benchmark.metrics.ood import auroc, ood_metrics
from benchmark.protocols.base import Diverged, ProtocolResult, RunContext
from benchmark.records import Curve, Metric

DEFAULT_ALPHA = 0.05
TYPE1_LEVELS = {"type1_error_at_5pct": 0.05, "type1_error_at_1pct": 0.01}


def _seeded_halves(batches: Iterable[Any], seed: int) -> tuple[list[Any], list[Any]]:
    """Two disjoint halves of a stream of batches (tensors or mappings of tensors), the
    rows assigned by a permutation drawn from ``seed``: the run's seed then varies which
    validation inputs calibrate, so a suite's seeds replicate the calibration draw too.
    Each half keeps the split's order."""

    def take(batch: Any, rows: torch.Tensor) -> Any:
        if isinstance(batch, Mapping):
            return {k: v[rows] for k, v in batch.items()}
        return batch[rows]

    listed = list(batches)
    sizes = [len(next(iter(b.values()))) if isinstance(b, Mapping) else len(b) for b in listed]
    total = sum(sizes)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    first_half = torch.zeros(total, dtype=torch.bool)
    first_half[order[: (total + 1) // 2]] = True
    one, other, seen = [], [], 0
    for batch, n in zip(listed, sizes, strict=True):
        index = torch.arange(n)
        mine = first_half[seen : seen + n]
        if mine.any():
            one.append(take(batch, index[mine]))
        if (~mine).any():
            other.append(take(batch, index[~mine]))
        seen += n
    return one, other


def rejected(p: np.ndarray, level: float) -> int:
    """How many p-values reject at ``level``: p <= level, compared in float32 like the
    p-values themselves, so that a conformal p = k/(n+1) equal to the level counts (the
    detectors' own ``flag`` rule)."""
    return int(np.sum(p <= np.float32(level)))


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


def proportion(
    successes: float, n: int, meter: str, higher_is_better: bool, unit: str = "fraction"
) -> Metric:
    """successes / n with its Wilson interval and n (null when there are no items)."""
    if n <= 0:
        return Metric.null(unit, meter, "no items")
    low, high = wilson(successes, n)
    return Metric(
        value=successes / n,
        unit=unit,
        meter=meter,
        n=n,
        ci_low=low,
        ci_high=high,
        higher_is_better=higher_is_better,
    )


def auroc_metric(s_in: np.ndarray, s_out: np.ndarray, meter: str) -> Metric:
    """AUROC (OOD positive) with DeLong's interval; n = n_in + n_out. Null when a side is
    empty; no interval with fewer than 2 on a side."""
    if len(s_in) == 0 or len(s_out) == 0:
        return Metric.null("fraction", meter, f"{len(s_in)} in and {len(s_out)} out items")
    ci = auroc_interval(s_in, s_out) if min(len(s_in), len(s_out)) >= 2 else (None, None)
    return Metric(
        value=auroc(s_in, s_out),
        unit="fraction",
        meter=meter,
        n=len(s_in) + len(s_out),
        ci_low=ci[0],
        ci_high=ci[1],
        higher_is_better=True,
    )


def _target_metrics(detector, model, wl, device) -> dict[str, Metric]:  # type: ignore[no-untyped-def]
    """Precision, recall and F1 of the in-distribution targets a filtering detector keeps
    (``predict`` False = keep); the positive class here is the target, not OOD."""
    kept_in, _ = _scores(detector.predict, model, wl.test_batches("in", device), device)
    kept_out, _ = _scores(detector.predict, model, wl.test_batches("out", device), device)
    tp, fp = float(np.sum(kept_in == 0)), float(np.sum(kept_out == 0))
    fn = float(len(kept_in)) - tp
    meter = "predict() on held-out targets (in) and false positives (out)"
    none = Metric.null("fraction", meter, "no targets kept or present")
    kept, targets = int(tp + fp), int(tp + fn)
    return {
        "target_precision": proportion(tp, kept, meter, True) if kept else none,
        "target_recall": proportion(tp, targets, meter, True) if targets else none,
        "target_f1": Metric(
            value=2 * tp / (2 * tp + fp + fn), unit="fraction", meter=meter, higher_is_better=True
        )
        if tp + fp + fn
        else none,
    }


def run(ctx: RunContext) -> ProtocolResult:
    wl, device = ctx.workload, ctx.device
    if isinstance(wl, RunSeeded):
        wl.bind_run_seed(ctx.spec.seed)
    model = wl.model(device)
    detector = ctx.build_method()
    ctx.say("fitting")
    synchronize(device)
    t0 = time.perf_counter()
    validation = has_validation(wl)
    val_in: list[Any] | None = None
    if validation and "calibration_batches" in inspect.signature(detector.fit).parameters:
        calibration, val_in = _seeded_halves(wl.test_batches("in", device, "val"), ctx.spec.seed)
        detector.fit(model, wl.fit_batches(device), calibration_batches=calibration)
    else:
        detector.fit(model, wl.fit_batches(device))
    synchronize(device)
    fit_time = time.perf_counter() - t0
    ctx.progress(0, fit_time=fit_time)
    ctx.say("scoring")
    s_in, lat_in = _scores(detector.score, model, wl.test_batches("in", device), device)
    s_out, lat_out = _scores(detector.score, model, wl.test_batches("out", device), device)
    m = ood_metrics(s_in, s_out)
    ctx.progress(1, auroc=m["auroc"], fpr_at_95_tpr=m["fpr_at_95_tpr"])
    timer = clock_label(device)
    # The first batch carries warm-up (lazy initialisation, caches); it is not timed.
    latencies = (lat_in[1:] + lat_out[1:]) or lat_in + lat_out
    metrics = {"auroc": auroc_metric(s_in, s_out, "benchmark.metrics.ood, DeLong interval")}
    aupr_meter = {
        "": "benchmark.metrics.ood, average precision (step sum, not OpenOOD's trapezoid)",
        "_trapezoid": "benchmark.metrics.ood, trapezoid area under the PR points (OpenOOD's)",
    }
    for name in ("aupr_in", "aupr_out"):
        for suffix, meter in aupr_meter.items():
            metrics[name + suffix] = Metric(
                value=m[name + suffix], unit="fraction", meter=meter, higher_is_better=True
            )
    metrics["fpr_at_95_tpr"] = proportion(
        round(m["fpr_at_95_tpr"] * len(s_in)),
        len(s_in),
        "benchmark.metrics.ood, OOD positive (ID flagged at 95% of OOD flagged), Wilson "
        "interval over the in-distribution items",
        higher_is_better=False,
    )
    metrics["fpr_at_95_tpr_id"] = proportion(
        round(m["fpr_at_95_tpr_id"] * len(s_out)),
        len(s_out),
        "benchmark.metrics.ood, ID positive (OOD accepted at 95% of ID accepted), Wilson "
        "interval over the OOD items",
        higher_is_better=False,
    )
    if validation:
        ctx.say("scoring the validation split")
        held = wl.test_batches("in", device, "val") if val_in is None else val_in
        v_in, _ = _scores(detector.score, model, held, device)
        v_out, _ = _scores(detector.score, model, wl.test_batches("out", device, "val"), device)
        metrics["val_auroc"] = auroc_metric(
            v_in,
            v_out,
            "benchmark.metrics.ood on the validation split, DeLong interval"
            + ("" if val_in is None else " (in: the half the detector did not calibrate on)"),
        )
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
        # What the validation split holds (None: the workload has none, so no val_auroc).
        "validation": wl.validation if validation else None,
    }
    if isinstance(detector, PValues):
        alpha = float(ctx.hparams.get("alpha", DEFAULT_ALPHA))
        p_in, _ = _scores(detector.pvalue, model, wl.test_batches("in", device), device)
        p_out, _ = _scores(detector.pvalue, model, wl.test_batches("out", device), device)
        metrics["type1_error_at_alpha"] = proportion(
            rejected(p_in, alpha), len(p_in), f"ID p-values <= {alpha:g}, Wilson", False
        )
        metrics["power_at_alpha"] = proportion(
            rejected(p_out, alpha), len(p_out), f"OOD p-values <= {alpha:g}, Wilson", True
        )
        for name, level in TYPE1_LEVELS.items():
            metrics[name] = proportion(
                rejected(p_in, level),
                len(p_in),
                f"ID test p-values <= {level:g}, Wilson interval over the ID test items",
                False,
            )
        info["alpha"] = alpha
    source = detector.calibration_source if isinstance(detector, CalibrationSource) else None
    if source is not None:
        info["calibration"] = source
    if isinstance(detector, Filters):
        metrics.update(_target_metrics(detector, model, wl, device))
        info["target_class"] = f"{wl.in_name} (kept = predict False)"
    oracle = wl.oracle if isinstance(wl, LabelOracle) else None
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
