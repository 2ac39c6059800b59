"""Curves over a suite's swept axis: a metric against a workload option, a method
hyperparameter or training steps, mean and 95% interval over seeds, and its descents.

An experiment with ``axis:`` (``records.Axis``) has every run carry it. A figure is one
axis of one kind; a curve is one configuration: everything a run's id covers except the
seed and the axis's own option or hyperparameter (method, the other hyperparameters,
workload, the other options, device, budget, protocol options, attacks). A curve is drawn
for each configuration at least one of whose runs declares the axis, and takes every run
of that configuration that sets the axis's option or hyperparameter (so a run recorded
before the suite named its axis, and resumed since, still counts). For ``steps`` the x
values are those of each run's curve named by the axis's metric (``eval_loss``: one
point per evaluation).

At each x: the mean over seeds and a Student-t 95% interval (n >= 2; one seed gives no
band, and such a point can neither be nor witness a peak); then
``descent.find_descents`` on the means and half-widths, oriented so that a peak is a
worsening (a dip of a higher-is-better metric).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from benchmark.kinds import KIND_INFO
from benchmark.metrics.intervals import mean_interval
from benchmark.records import Axis, RunRecord, hparams_label
from benchmark.report.descent import MAX_JUDGED_POINTS, Descents, find_descents

LOG_RATIO = 8.0  # auto scale: log when every x is positive and max/min reaches this


@dataclass(frozen=True)
class CurvePoint:
    """The runs at one x: their values (one per seed), mean and 95% t-interval."""

    x: float
    values: tuple[float, ...]
    seeds: tuple[int, ...]
    # The runs' own 95% half-widths of the metric (a test set's sampling error), where
    # their records carry one: the band is never narrower than their mean.
    run_half_widths: tuple[float, ...] = ()

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / len(self.values)

    @property
    def interval(self) -> tuple[float, float] | None:
        """Student-t 95% interval of the mean over seeds; None with one seed."""
        return mean_interval(self.values) if self.n >= 2 else None

    @property
    def half_width(self) -> float | None:
        """The seeds' t-interval half-width, floored by the runs' own mean half-width
        (seeds that agree to the last digit still measured on a finite test set)."""
        ci = self.interval
        if ci is None:
            return None
        seeds = (ci[1] - ci[0]) / 2
        runs = (
            math.fsum(self.run_half_widths) / len(self.run_half_widths)
            if self.run_half_widths
            else 0.0
        )
        return max(seeds, runs)


@dataclass
class AxisCurve:
    """One configuration's line: its points in order of x and the descents found."""

    method: str
    hparams: dict[str, Any]
    workload: str
    options: dict[str, Any]
    device: str
    points: list[CurvePoint]
    descents: Descents
    left_out: int = 0  # runs of this configuration not drawn (not ok, or no value)
    protocol: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    attacks: list[str] = field(default_factory=list)

    @property
    def configuration(self) -> str:
        """Method, hyperparameters, workload, options, device, and the protocol options
        and budget where there are any."""
        hp = hparams_label(self.hparams)
        opts = hparams_label(self.options)
        wl = self.workload if opts == "defaults" else f"{self.workload}[{opts}]"
        method = self.method if hp == "defaults" else f"{self.method} [{hp}]"
        extra = [self.device]
        if self.protocol:
            extra.append(f"protocol {hparams_label(self.protocol)}")
        if self.budget:
            extra.append(f"budget {hparams_label(self.budget)}")
        if self.attacks:
            extra.append(f"attacks {','.join(self.attacks)}")
        return f"{method} on {wl} ({'; '.join(extra)})"

    @property
    def seeds(self) -> str:
        """Seeds per point: ``3`` or ``1-3``."""
        ns = sorted({p.n for p in self.points})
        return str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


@dataclass
class AxisFigure:
    """Every curve of one axis of one kind: what one plot draws."""

    kind: str
    axis: Axis
    metric: str
    unit: str
    higher_is_better: bool
    scale: str  # "log" or "linear", resolved
    curves: list[AxisCurve]
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.metric} against {self.axis.x_label} ({self.kind}, {self.axis.name})"


def _x_of(record: RunRecord, axis: Axis) -> Any:
    if axis.source == "workload":
        return record.spec.workload_options.get(axis.key or "")
    if axis.source == "method":
        return record.spec.hparams.get(axis.key or "")
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _direction(records: list[RunRecord], kind: str, metric: str) -> tuple[bool, str | None]:
    """(higher is better, note): what the records' metric declares, else the kind's
    headline direction when the metric is the headline, else lower (a loss)."""
    declared = {
        r.metrics[metric].higher_is_better
        for r in records
        if metric in r.metrics and r.metrics[metric].higher_is_better is not None
    }
    if len(declared) == 1:
        return declared.pop(), None
    info = KIND_INFO.get(kind)
    if info is not None and info.primary == metric:
        return info.higher_is_better, None
    return False, f"{metric} does not declare a direction: peaks are read as maxima (a loss)"


def _unit(records: list[RunRecord], metric: str, steps: bool) -> str:
    for r in records:
        if steps and metric in r.curves and r.curves[metric].unit:
            return r.curves[metric].unit
        if metric in r.metrics:
            return r.metrics[metric].unit
    return ""


def _scale(axis: Axis, xs: list[float]) -> tuple[str, str | None]:
    positive = bool(xs) and min(xs) > 0
    if axis.scale == "log":
        if positive:
            return "log", None
        return "linear", "a log scale was asked for but some x are <= 0: drawn linear"
    if axis.scale == "linear" or not positive:
        return "linear", None
    return ("log" if max(xs) / min(xs) >= LOG_RATIO else "linear"), None


def _configuration(record: RunRecord, axis: Axis) -> str:
    """The run's content without its seed and the axis's own option or hyperparameter."""
    content = record.spec.model_dump(
        exclude={"suite", "timeout_s", "tuned", "axis", "code", "seed"}
    )
    if axis.source == "workload":
        content["workload_options"].pop(axis.key, None)
    elif axis.source == "method":
        content["hparams"].pop(axis.key, None)
    content["budget"] = {k: v for k, v in content["budget"].items() if v is not None}
    return json.dumps(content, sort_keys=True, default=str)


def _declarations(records: list[RunRecord]) -> dict[tuple[str, Axis], list[RunRecord]]:
    out: dict[tuple[str, Axis], list[RunRecord]] = {}
    for r in records:
        if r.spec.axis is not None:
            out.setdefault((r.spec.kind, r.spec.axis), []).append(r)
    return out


def judged_indices(xs: Sequence[float], limit: int = MAX_JUDGED_POINTS) -> list[int]:
    """At most ``limit`` of the points at ``xs`` (increasing), spread evenly on a log scale
    of x (training changes fastest early: an epoch-wise curve's first minimum lies in its
    first percent of steps), the first and last included."""
    n = len(xs)
    if n <= limit:
        return list(range(n))
    positive = [i for i, x in enumerate(xs) if x > 0]
    if len(positive) < 2:
        return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    logs = np.log([xs[i] for i in positive])
    chosen = {0, n - 1}
    for target in np.linspace(logs[0], logs[-1], limit - len(chosen)):
        chosen.add(positive[int(np.argmin(np.abs(logs - target)))])
    return sorted(chosen)


def _judge(points: list[CurvePoint], *, lower_is_better: bool, thin: bool) -> Descents:
    """Descents of a curve; a step axis (hundreds of evaluations) is judged on at most
    ``MAX_JUDGED_POINTS`` of its points, so that comparing every point with every other
    does not make false peaks by multiplicity. Peak indices refer to ``points``."""
    keep = judged_indices([p.x for p in points]) if thin else list(range(len(points)))
    sub = [points[i] for i in keep]
    found = find_descents(
        [p.x for p in sub],
        [p.mean for p in sub],
        [p.half_width for p in sub],
        lower_is_better=lower_is_better,
    )
    if len(keep) == len(points):
        return found
    peaks = tuple(
        replace(p, index=keep[p.index], rise_from=keep[p.rise_from], fall_to=keep[p.fall_to])
        for p in found.peaks
    )
    return replace(found, peaks=peaks)


def build_curves(records: list[RunRecord]) -> list[AxisFigure]:
    """One figure per (kind, axis) the records declare, in the order first seen."""
    figures = []
    for (kind, axis), declaring in _declarations(records).items():
        steps = axis.source == "steps"
        drawn = {_configuration(r, axis) for r in declaring}
        metric = axis.metric or (KIND_INFO[kind].primary if kind in KIND_INFO else "")
        groups: dict[str, list[RunRecord]] = {}
        for r in records:
            if r.spec.kind != kind or not (steps or _number(_x_of(r, axis)) is not None):
                continue
            key = _configuration(r, axis)
            if key in drawn:
                groups.setdefault(key, []).append(r)
        candidates = [r for runs in groups.values() for r in runs]
        higher, direction_note = _direction(candidates, kind, metric)
        curves = []
        for key, runs in sorted(groups.items()):
            config = json.loads(key)
            at: dict[float, list[tuple[int, float]]] = {}
            own: dict[float, list[float]] = {}
            left_out = 0
            for r in runs:
                if r.status != "ok":
                    left_out += 1
                    continue
                if steps:
                    c = r.curves.get(metric)
                    pts = [] if c is None else list(zip(c.x, c.y, strict=False))
                    pts = [(float(x), float(y)) for x, y in pts if _number(y) is not None]
                else:
                    value = r.value(metric)
                    x = _number(_x_of(r, axis))
                    pts = [] if value is None or x is None else [(x, float(value))]
                    m = r.metrics.get(metric)
                    if pts and m is not None and m.ci_low is not None and m.ci_high is not None:
                        own.setdefault(pts[0][0], []).append((m.ci_high - m.ci_low) / 2)
                if not pts:
                    left_out += 1
                for x, y in pts:
                    at.setdefault(x, []).append((r.spec.seed, y))
            points = [
                CurvePoint(
                    x=x,
                    values=tuple(v for _, v in sorted(at[x])),
                    seeds=tuple(s for s, _ in sorted(at[x])),
                    run_half_widths=tuple(own.get(x, ())),
                )
                for x in sorted(at)
            ]
            if points:
                descents = _judge(points, lower_is_better=not higher, thin=steps)
            else:
                descents = Descents(peaks=(), judged=False, reason=f"no run reports {metric}")
            curves.append(
                AxisCurve(
                    method=config["method"],
                    hparams=config["hparams"],
                    workload=config["workload"],
                    options=config["workload_options"],
                    device=config["device"],
                    points=points,
                    descents=descents,
                    left_out=left_out,
                    protocol=config["protocol"],
                    budget=config["budget"],
                    attacks=config["attacks"],
                )
            )
        xs = sorted({p.x for c in curves for p in c.points})
        scale, scale_note = _scale(axis, xs)
        notes = [n for n in (scale_note, direction_note) if n]
        if not xs:
            notes.append(f"no run of this axis reports {metric}")
        if any(p.n == 1 for c in curves for p in c.points):
            notes.append("points with one seed have no band and cannot be or witness a peak")
        figures.append(
            AxisFigure(
                kind=kind,
                axis=axis,
                metric=metric,
                unit=_unit(candidates, metric, steps),
                higher_is_better=higher,
                scale=scale,
                curves=curves,
                notes=notes,
            )
        )
    return figures


def curves_json(figures: list[AxisFigure]) -> list[dict[str, Any]]:
    """The figures as plain data: per curve its points (x, n, mean, 95% interval, seeds)
    and descents (n_peaks, n_descents, descent_type, peaks)."""
    out = []
    for f in figures:
        out.append(
            {
                "kind": f.kind,
                "axis": f.axis.model_dump(),
                "metric": f.metric,
                "unit": f.unit,
                "higher_is_better": f.higher_is_better,
                "scale": f.scale,
                "notes": f.notes,
                "curves": [
                    {
                        "method": c.method,
                        "hparams": c.hparams,
                        "workload": c.workload,
                        "workload_options": c.options,
                        "device": c.device,
                        "configuration": c.configuration,
                        "left_out": c.left_out,
                        "points": [
                            {
                                "x": p.x,
                                "n": p.n,
                                "mean": p.mean,
                                "ci_low": None if p.interval is None else p.interval[0],
                                "ci_high": None if p.interval is None else p.interval[1],
                                "half_width": p.half_width,
                                "seeds": list(p.seeds),
                                "values": list(p.values),
                            }
                            for p in c.points
                        ],
                        "n_peaks": c.descents.n_peaks,
                        "n_descents": c.descents.n_descents,
                        "descent_type": c.descents.descent_type,
                        "initial_descent": c.descents.initial_descent,
                        "judged": c.descents.judged,
                        "reason": c.descents.reason,
                        "peaks": [
                            {
                                "x": p.x,
                                "value": p.value,
                                "rise_from_x": c.points[p.rise_from].x,
                                "fall_to_x": c.points[p.fall_to].x,
                                "rise": p.rise,
                                "fall": p.fall,
                            }
                            for p in c.descents.peaks
                        ],
                    }
                    for c in f.curves
                ],
            }
        )
    return out


def curves_frame(figures: list[AxisFigure]) -> pd.DataFrame:
    """One row per (curve, x): the point's n, mean and interval, whether it is a real
    peak, and the curve's n_peaks, n_descents, descent type and peak locations."""
    rows = []
    for f in figures:
        for c in f.curves:
            peaks = {p.index for p in c.descents.peaks}
            for i, p in enumerate(c.points):
                ci = p.interval
                rows.append(
                    {
                        "kind": f.kind,
                        "axis": f.axis.name,
                        "metric": f.metric,
                        "unit": f.unit,
                        "method": c.method,
                        "hparams": hparams_label(c.hparams),
                        "workload": c.workload,
                        "workload_options": hparams_label(c.options),
                        "device": c.device,
                        "x": p.x,
                        "n": p.n,
                        "mean": p.mean,
                        "ci_low": None if ci is None else ci[0],
                        "ci_high": None if ci is None else ci[1],
                        "is_peak": i in peaks,
                        "n_peaks": c.descents.n_peaks,
                        "n_descents": c.descents.n_descents,
                        "descent_type": c.descents.descent_type,
                        "initial_descent": c.descents.initial_descent,
                        "peak_x": ";".join(f"{x:g}" for x in c.descents.peak_x),
                    }
                )
    return pd.DataFrame(rows)
