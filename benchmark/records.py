"""Plain-data records that travel between the suite, the executors, the store and reports.

A ``RunSpec`` is everything needed to reproduce one run; its id is a hash of that content,
so re-running a suite skips finished runs and a remote worker needs nothing but the spec.
A ``RunRecord`` is the spec plus what happened: status, metrics with units and meters,
curves and the environment.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from benchmark.hashing import short_hash

Status = Literal["ok", "failed", "diverged", "oom", "timeout", "skipped"]
STATUSES: tuple[str, ...] = ("ok", "failed", "diverged", "oom", "timeout", "skipped")


# Longest integer a hyperparameter may have (decimal digits): beyond what any method needs,
# within what JSON readers agree on.
MAX_INT_DIGITS = 30


def non_json_paths(value: Any, where: str = "") -> list[str]:
    """Where a value that JSON cannot carry faithfully hides in a hyperparameter (``a.b[2]``).

    A spec travels as JSON to its worker and its id is a hash of its JSON: NaN/infinity
    (written as null), dates, sets and bytes (written as strings or refused) and mapping
    keys that are not strings would make the worker run something other than what the
    record says, under another id. They are refused wherever a spec is made."""
    at = where or "value"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int):
        digits = len(str(abs(value))) if abs(value) < 10**MAX_INT_DIGITS else MAX_INT_DIGITS + 1
        return (
            [] if digits <= MAX_INT_DIGITS else [f"{at}: an integer over {MAX_INT_DIGITS} digits"]
        )
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{at} = {value} (not a finite number)"]
    if isinstance(value, dict):
        bad = [f"{at}: key {k!r} is not a string" for k in value if not isinstance(k, str)]
        inner = ((v, f"{where}.{k}" if where else str(k)) for k, v in value.items())
        return bad + [p for v, path in inner for p in non_json_paths(v, path)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in non_json_paths(v, f"{where}[{i}]")]
    return [f"{at}: a {type(value).__name__}, which JSON cannot carry"]


def refuse_non_json(value: dict[str, Any]) -> dict[str, Any]:
    bad = non_json_paths(value)
    if bad:
        raise ValueError(
            f"not a plain JSON value: {'; '.join(bad)} (hyperparameters and options travel "
            "as JSON: numbers must be finite, keys strings, and dates, sets or bytes "
            "written as strings)"
        )
    return value


class Budget(BaseModel):
    """Limits for one run: training/fine-tuning steps and wall-clock seconds."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(default=None, ge=1)
    time_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)


# What an axis may name: a workload option, a method hyperparameter, or the steps of a
# curve the run records (epoch-wise curves).
AXIS_NAME = r"^(steps|(workload|method)\.[A-Za-z_][A-Za-z0-9_\-]*)$"


class Axis(BaseModel):
    """The variable an experiment's report draws a metric against (``axis:`` in a suite).

    ``name`` is ``workload.<option>``, ``method.<hparam>`` or ``steps`` (the x values of
    the run's curve named ``metric``); ``metric`` is what is drawn (None: the kind's
    headline); ``scale`` ``auto`` is log when every x is positive and max/min >= 8;
    ``label`` names the x axis (None: the option, hyperparameter, or "step")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    metric: str | None = Field(default=None, min_length=1)
    scale: Literal["auto", "log", "linear"] = "auto"
    label: str | None = None

    @field_validator("name")
    @classmethod
    def _known_source(cls, name: str) -> str:
        if not re.match(AXIS_NAME, name):
            raise ValueError(
                f"an axis is workload.<option>, method.<hyperparameter> or steps, not {name!r}"
            )
        return name

    @property
    def source(self) -> str:
        """``workload``, ``method`` or ``steps``."""
        return self.name.split(".", 1)[0]

    @property
    def key(self) -> str | None:
        """The option or hyperparameter named; None for ``steps``."""
        return self.name.split(".", 1)[1] if "." in self.name else None

    @property
    def x_label(self) -> str:
        return self.label or self.key or "step"


def mapping_label(values: Mapping[str, object]) -> str:
    """``k=v`` pairs sorted by key and joined by commas: the one way hyperparameters,
    workload options, protocol options and budgets are written in labels, legends, table
    cells and comparison keys, so the same run reads the same everywhere."""
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))


def hparams_label(hparams: Mapping[str, object]) -> str:
    """A table cell for a mapping: its ``mapping_label``, or ``defaults`` when empty."""
    return mapping_label(hparams) or "defaults"


def bracketed(name: str, values: Mapping[str, object]) -> str:
    """``name[k=v,...]``, or the bare name when ``values`` is empty."""
    label = mapping_label(values)
    return f"{name}[{label}]" if label else name


class RunSpec(BaseModel):
    """One run: a method with its hyperparameters on a workload, with one seed on one device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    kind: str
    method: str
    hparams: dict[str, Any] = Field(default_factory=dict)
    workload: str
    workload_options: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    budget: Budget = Field(default_factory=Budget)
    timeout_s: float | None = None
    attacks: list[str] = Field(default_factory=list)
    protocol: dict[str, Any] = Field(default_factory=dict)
    # Hash of the source that decides the run's outcome (the method's plugin modules, the
    # kind's protocol, the workload): part of the id, so a code change re-runs what it
    # touched and resume never reuses a record made by older code. Empty: not computed.
    code: str = ""
    # The hyperparameters that come from the suite's grid (tuned), as opposed to fixed
    # ones and variants; reports pick one winner per method variant over them. () when
    # nothing was tuned; None only in records that predate the field (reports then infer).
    # Not part of the id: the same configuration is the same run whether a grid or a
    # fixed value named it.
    tuned: tuple[str, ...] | None = None
    # The experiment's ``axis:`` (what its report draws the metric against), carried so
    # that a results directory alone can be reported. Not part of the id, like ``tuned``:
    # drawing a run on a curve does not change the run.
    axis: Axis | None = None

    @field_validator("hparams", "workload_options", "protocol")
    @classmethod
    def _finite(cls, values: dict[str, Any]) -> dict[str, Any]:
        return refuse_non_json(values)

    def content(self, *, with_code: bool = True) -> str:
        """The run's content as canonical JSON: everything but the suite's name, the timeout,
        which hyperparameters were tuned and the report's axis; without ``code``, the
        experiment whatever code measured it."""
        exclude = {"suite", "timeout_s", "tuned", "axis"} | (set() if with_code else {"code"})
        content = self.model_dump(exclude=exclude)
        return json.dumps(
            content, sort_keys=True, default=str, separators=(",", ":"), allow_nan=False
        )

    @property
    def id(self) -> str:
        """Content hash: the same run (whatever suite file it came from) has the same id."""
        return short_hash(self.content())

    @property
    def workload_label(self) -> str:
        """The workload and its options: runs on ``mnist-cnn`` with ``ood: mnist-noise`` and
        with the default OOD set are different experiments, never seeds of one."""
        return bracketed(self.workload, self.workload_options)

    @property
    def label(self) -> str:
        """Short human label: method, the hyperparameters that differ from nothing, seed."""
        method = bracketed(f"{self.kind}/{self.method}", self.hparams)
        return f"{method} on {self.workload} seed={self.seed}"


class Metric(BaseModel):
    """One figure with its unit and the meter that produced it.

    ``value`` is null when the meter is unavailable or the figure does not apply; ``reason``
    then says why. Repeated measurements carry their sample count and spread.
    """

    model_config = ConfigDict(extra="forbid")

    value: float | None
    unit: str
    meter: str
    reason: str | None = None
    n: int | None = None
    p10: float | None = None
    p90: float | None = None
    std: float | None = None
    ci_low: float | None = None  # a 95% interval, where the meter gives one
    ci_high: float | None = None
    higher_is_better: bool | None = None

    @field_validator("value")
    @classmethod
    def _finite_or_null(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"metric value {v} is not finite: report null with a reason")
        return v

    @classmethod
    def null(cls, unit: str, meter: str, reason: str) -> Metric:
        return cls(value=None, unit=unit, meter=meter, reason=reason)


TIMING_UNITS_SUFFIX = "/s"
# Energy and power depend on the same conditions as a clock (load, clocks, concurrency).
REGIME_UNITS = ("J", "W")
# Words in a meter that name a clock, or timings a figure was computed from: a ratio of
# two latencies (unit "x": "median latency before/after", "median hybrid / original,
# timed interleaved") moves with the machine's load like the latencies themselves.
TIMING_METER = re.compile(r"\b(latency|latencies|perf_counter|cuda-event|timed|clock)\b")
# Words in a metric's name that say the same ("modelled_latency_overhead" = modelled /
# measured latency, whose meter says only "modelled / measured original").
TIMING_NAME_WORDS = frozenset({"latency", "time"})


def is_timing(metric: Metric, name: str = "") -> bool:
    """Whether a figure is a clock reading (seconds), a rate (per second), or derived from
    clock readings (its meter or its name says latency, perf_counter, cuda-event, timed,
    clock; e.g. a latency speedup or overhead in "x"): such figures depend on threads,
    concurrent runs and the machine, so they compare only within one timing regime. FLOP,
    byte and parameter ratios are not timings."""
    if metric.unit in ("s", *REGIME_UNITS) or metric.unit.endswith(TIMING_UNITS_SUFFIX):
        return True
    if TIMING_METER.search(metric.meter.lower()):
        return True
    return bool(TIMING_NAME_WORDS & set(name.lower().split("_")))


class Curve(BaseModel):
    """A series such as loss per step."""

    model_config = ConfigDict(extra="forbid")

    x: list[float]
    y: list[float | None]
    x_label: str = "step"
    y_label: str = ""
    unit: str = ""


class RunRecord(BaseModel):
    """What one run produced. Written once, atomically, as one JSON file."""

    model_config = ConfigDict(extra="forbid")

    id: str
    spec: RunSpec
    status: Status
    reason: str | None = None
    metrics: dict[str, Metric] = Field(default_factory=dict)
    curves: dict[str, Curve] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    started_at: str | None = None
    duration_s: float | None = None
    log_tail: str | None = None
    # Seconds the harness spent on this run outside the run's own work: from the executor
    # taking the spec to the workload's construction, and from the protocol's return to
    # the record reaching the executor. ``harness`` holds the parts and the launcher.
    harness_overhead_s: float | None = None
    harness: dict[str, Any] = Field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        m = self.metrics.get(metric)
        return None if m is None else m.value
