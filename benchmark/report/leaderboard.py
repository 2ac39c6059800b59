"""Leaderboards: one table per (kind, workload), ranked by the kind's primary metric.

What a reviewer can check in every table:

- Every metric cell is the mean with a 95% interval: Student t over seeds where there are
  three or more, the run's own test-set interval (``Metric.ci_low``/``ci_high``) where
  there is one run, none for two seeds (a t interval on one degree of freedom is
  ±12.7 standard errors of a spread two values cannot estimate). A standard deviation is
  never shown for one run.
- Ranks: ``=k`` marks a row whose primary interval overlaps that of row ``k``, the first
  row of its group (ties are only declared within rows of one verdict, for kinds that
  have one); ``k?`` a row without an interval, which can be declared neither tied nor
  distinct.
- Timing figures (``records.is_timing``) compare only when every ok run of the table
  shares one timing regime (``measure.environment.regime_key``); otherwise they are
  withheld (``n/a (mixed regimes)``, the regimes named once in the table's notes) and
  never rank or break ties.
- Grids: where records say which hyperparameters were tuned (``RunSpec.tuned``), each
  method *variant* (method, device and the fixed hyperparameters) gets one ranked row, its
  grid winner, chosen on the validation figure ``val_<primary>`` (the reported test metric
  only when no validation figure exists, and then said); every grid point is listed,
  unranked, in ``Table.points``. Records without ``tuned`` keep the older reading:
  categorical hyperparameters name a variant, numeric ones are taken as grid axes, and
  every configuration is ranked as its own row.

Runs that did not finish ``ok`` are listed under the ranking with their status and
reason, never dropped."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Any

from benchmark.kinds import KIND_INFO, KindInfo
from benchmark.measure.environment import describe_regime, regime_key
from benchmark.metrics.intervals import mean_interval, overlap
from benchmark.records import RunRecord, is_timing
from benchmark.store import hparams_label

FALLBACK = KindInfo(primary="", higher_is_better=True, columns=())

#: Fewest seeds for a seed-level interval. Two values give a t interval on one degree of
#: freedom (critical value 12.7) around a standard deviation estimated from two numbers:
#: too wide to separate anything and too unstable to be worth printing.
MIN_SEEDS_FOR_INTERVAL = 3
VALIDATION_PREFIX = "val_"
NO_VALIDATION = "chosen on the reported test metric: no validation figure"
MIXED = "mixed regimes"
UNRECORDED = "regime not recorded"


@dataclass
class Cell:
    mean: float | None
    std: float | None  # over seeds; None for a single run (one value has no spread)
    n: int
    reason: str | None = None  # why the figure is null
    ci: tuple[float, float] | None = None  # the 95% interval shown, where there is one
    ci_source: str | None = None  # "seeds" (Student t) or "run" (the run's own interval)
    note: str | None = None  # short text after "n/a" (e.g. "mixed regimes")


@dataclass
class Row:
    method: str
    hparams: str
    device: str
    seeds: list[int]
    cells: dict[str, Cell]
    records: list[RunRecord] = field(repr=False, default_factory=list)
    verdict: str | None = None  # the kind's label (e.g. "exposed"), when it has one
    validation: Cell | None = None  # the val_<primary> figure, where records report it
    variant: str = ""  # the method variant this configuration belongs to
    rank: int | None = None  # position in the ranked table; None for a grid point that lost
    rank_label: str = ""  # "3", "=1" (tied with row 1) or "4?" (no interval)
    tied: bool = False
    winner: bool = True  # this configuration is its variant's chosen one
    ranked: bool = True  # in the ranked table (False: a grid point folded into its winner)
    grid_points: int = 1  # configurations its variant tried (failed ones included)
    selected_on: str | None = None  # the metric the winner was chosen on (grids only)


@dataclass
class Variant:
    """A method with its fixed hyperparameters, tried at one or more grid points."""

    label: str
    points: list[Row]  # ok configurations
    tried: int  # configurations run, failed ones included
    axes: tuple[str, ...]  # the tuned hyperparameters (declared, or inferred numeric ones)
    declared: bool  # the records say what was tuned (RunSpec.tuned); False: inferred
    winner: Row | None = None
    selected_on: str = ""
    on_validation: bool = False
    selection_note: str = ""
    edges: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # hparams label -> statuses

    @property
    def collapsed(self) -> bool:
        """Whether the ranked table shows only this variant's winner."""
        return self.declared and self.tried > 1


@dataclass
class Failure:
    label: str
    status: str
    reason: str | None


@dataclass
class Table:
    kind: str
    workload: str
    primary: str
    higher_is_better: bool
    columns: list[str]
    units: dict[str, str]
    rows: list[Row]
    failures: list[Failure]
    verdict_column: str | None = None
    info: KindInfo = FALLBACK
    points: list[Row] = field(default_factory=list)  # every ok configuration
    variants: list[Variant] = field(default_factory=list)
    timing_columns: list[str] = field(default_factory=list)
    regime: str | None = None  # the one timing regime, when timings compare
    timing_note: str | None = None  # why timing columns are withheld, when they are

    @property
    def timing_withheld(self) -> str | None:
        """Why timing columns read n/a, in short: mixed regimes, or no regime recorded."""
        if not self.timing_note:
            return None
        return UNRECORDED if self.timing_note.startswith(UNRECORDED) else MIXED

    @property
    def title(self) -> str:
        return f"{self.kind} on {self.workload}"

    @property
    def validation_metric(self) -> str:
        return VALIDATION_PREFIX + self.primary

    @property
    def collapsed(self) -> bool:
        """Whether some variant's grid points were folded into its winner's row."""
        return any(v.collapsed for v in self.variants)

    @property
    def interval_note(self) -> str:
        counts: dict[str, int] = {}
        for row in self.rows:
            cell = row.cells.get(self.primary)
            if cell is None or cell.mean is None:
                continue
            src = cell.ci_source if cell.ci is not None else "none"
            counts[src] = counts.get(src, 0) + 1
        names = {
            "seeds": "over seeds (Student t)",
            "run": "the single run's own test-set interval",
            "none": "none",
        }
        shown = ", ".join(
            f"{names[k]} in {n} row{'s' if n != 1 else ''}"
            for k, n in sorted(counts.items(), key=lambda kv: list(names).index(kv[0]))
        )
        return (
            f"cells: mean [95% interval], over seeds (Student t) where n >= "
            f"{MIN_SEEDS_FOR_INTERVAL}, the run's own test-set interval where n = 1, "
            "the mean alone where n = 2 (no interval); never a std"
            + (f"; {self.primary} intervals: {shown}" if shown else "")
        )

    @property
    def tie_note(self) -> str:
        scope = ", within one verdict" if self.info.verdict is not None else ""
        return (
            f"rank =k: tied with row k (their {self.primary} intervals overlap{scope}); "
            "k?: no interval, so neither tied with nor distinct from the rows above"
        )

    @property
    def tuning_note(self) -> str:
        if not self.variants:
            return ""
        budgets: dict[int, list[str]] = {}
        for v in self.variants:
            budgets.setdefault(v.tried, []).append(v.label)
        inferred = not any(v.declared for v in self.variants)
        if set(budgets) == {1}:
            text = "no grids: every variant ran one configuration"
        elif len(budgets) == 1:
            (n,) = budgets
            text = f"equal tuning budgets: {n} grid points per variant"
        else:
            text = "unequal tuning budgets: " + "; ".join(
                f"{n} grid point{'s' if n != 1 else ''} for {', '.join(labels)}"
                for n, labels in sorted(budgets.items(), reverse=True)
            )
        if inferred and set(budgets) != {1}:
            text += (
                " (inferred: the records do not say which hyperparameters were tuned; "
                "every configuration is ranked as its own row)"
            )
        collapsed = [v for v in self.variants if v.collapsed]
        on_test = [v.label for v in collapsed if not v.on_validation]
        if collapsed and len(on_test) == len(collapsed):
            text += (
                f"; one row per grid variant, its winner {NO_VALIDATION} ({self.primary}), "
                "so a larger grid has more chances at the top"
            )
        elif collapsed:
            text += (
                f"; one row per grid variant, its winner chosen on {self.validation_metric} "
                f"(validation) and ranked on {self.primary} (test)"
            )
            if on_test:
                text += f"; except {', '.join(on_test)}: {NO_VALIDATION}"
        return text

    @property
    def ranking_note(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        note = f"ranked by {self.primary} ({direction}"
        if self.info.primary_bin:
            note += f", in bins of {self.info.primary_bin:g}"
        note += ")"
        for metric, higher in self.info.tiebreak:
            if metric in self.timing_columns and self.timing_note:
                continue
            note += f", then {metric} ({'higher' if higher else 'lower'} is better)"
        v = self.info.verdict
        if v is not None:
            note += f"; {v.bad} when {v.metric} >= {v.threshold:g}, ranked below the rest"
            if v.uncertain:
                note += f" ({v.uncertain} when only its 95% interval reaches it)"
            note += f"; {v.missing} when it is unknown in any run, ranked last"
        note += f"; {self.interval_note}; {self.tie_note}"
        if self.timing_note:
            note += (
                f"; timing columns ({', '.join(self.timing_columns)}) n/a: "
                f"{self.timing_withheld}, not compared or ranked"
            )
        if self.tuning_note:
            note += f"; {self.tuning_note}"
        if self.kind == "detector":
            note += "; OOD is the positive class"
        return note


# --------------------------------------------------------------------------- cells


def _cell(records: list[RunRecord], metric: str) -> Cell:
    values = [r.metrics[metric].value for r in records if metric in r.metrics]
    present = [v for v in values if v is not None]
    if not present:
        reasons = {r.metrics[metric].reason for r in records if metric in r.metrics}
        reason = "; ".join(sorted(x for x in reasons if x)) or "not reported"
        return Cell(None, None, 0, reason)
    n = len(present)
    mean = statistics.fmean(present)
    if n >= MIN_SEEDS_FOR_INTERVAL:
        return Cell(
            mean, statistics.stdev(present), n, ci=mean_interval(present), ci_source="seeds"
        )
    if n == 2:
        return Cell(mean, statistics.stdev(present), n)
    m = next(
        r.metrics[metric]
        for r in records
        if metric in r.metrics and r.metrics[metric].value is not None
    )
    if m.ci_low is not None and m.ci_high is not None:
        return Cell(mean, None, 1, ci=(m.ci_low, m.ci_high), ci_source="run")
    return Cell(mean, None, 1)


def _timing(ok: list[RunRecord], columns: list[str]) -> tuple[list[str], str | None, str | None]:
    """(timing columns, the one regime's description or None, why timings are withheld or
    None)."""
    timing = [c for c in columns if any(c in r.metrics and is_timing(r.metrics[c]) for r in ok)]
    if not ok:
        return timing, None, None
    keys = {regime_key(r.environment) for r in ok}
    if len(keys) == 1 and None not in keys:
        return timing, describe_regime(ok[0].environment), None
    if not timing:
        return timing, None, None
    counts: dict[str, int] = {}
    for r in ok:
        desc = describe_regime(r.environment)
        counts[desc] = counts.get(desc, 0) + 1
    listed = "; ".join(
        f"{d} [{n} run{'s' if n != 1 else ''}]"
        for d, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    if keys == {None}:
        return timing, None, f"{UNRECORDED} in any of the {len(ok)} ok runs"
    return timing, None, f"{MIXED}: {listed}"


# --------------------------------------------------------------------------- building


def build_leaderboard(records: list[RunRecord]) -> list[Table]:
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.spec.kind, r.spec.workload_label), []).append(r)
    return [_build_table(kind, workload, recs) for (kind, workload), recs in sorted(groups.items())]


def _build_table(kind: str, workload: str, recs: list[RunRecord]) -> Table:
    info = KIND_INFO.get(kind, FALLBACK)
    ok = [r for r in recs if r.status == "ok"]
    primary = info.primary or (next(iter(ok[0].metrics), "") if ok else "")
    extra = [m for m, _ in info.tiebreak] + ([info.verdict.metric] if info.verdict else [])
    columns = [primary] + [c for c in (*info.columns, *extra) if c != primary]
    columns = list(dict.fromkeys(columns))
    units: dict[str, str] = {}
    validation = VALIDATION_PREFIX + primary
    for r in ok:
        for c in [*columns, validation]:
            if c in r.metrics:
                units.setdefault(c, r.metrics[c].unit)
    timing, regime, timing_note = _timing(ok, columns)

    configs: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in ok:
        configs.setdefault(_config_key(r), []).append(r)
    points = []
    for (m, h, d), rs in configs.items():
        cells = {c: _cell(rs, c) for c in columns}
        if timing_note:
            for c in timing:
                short = UNRECORDED if timing_note.startswith(UNRECORDED) else MIXED
                cells[c] = Cell(None, None, 0, reason=timing_note, note=short)
        has_val = any(validation in r.metrics for r in rs)
        points.append(
            Row(
                method=m,
                hparams=h,
                device=d,
                seeds=sorted(r.spec.seed for r in rs),
                cells=cells,
                records=rs,
                validation=_cell(rs, validation) if has_val else None,
            )
        )
    for row in points:
        row.verdict = _verdict(info, row)
    higher = _declared_direction(ok, primary, info.higher_is_better)
    rank_info = replace(info, higher_is_better=higher)

    def key(row: Row) -> tuple[float, ...]:
        return _rank_key(row, rank_info, primary)

    points.sort(key=key)
    devices = {row.device for row in points}
    variants = _variants(points, [r for r in recs if r.status != "ok"], len(devices) > 1)
    for v in variants:
        _choose_winner(v, key, validation, higher)
    ranked = [row for row in points if row.ranked]  # points are in rank order already
    _label_ranks(ranked, primary, info.verdict is not None)
    for v in variants:
        v.edges = _edges(v)
    failures = [
        Failure(label=r.spec.label, status=r.status, reason=r.reason)
        for r in recs
        if r.status != "ok"
    ]
    return Table(
        kind=kind,
        workload=workload,
        primary=primary,
        higher_is_better=higher,
        columns=columns,
        units=units,
        rows=ranked,
        failures=failures,
        verdict_column=info.verdict.column if info.verdict else None,
        info=info,
        points=points,
        variants=variants,
        timing_columns=timing,
        regime=regime,
        timing_note=timing_note,
    )


def _config_key(r: RunRecord) -> tuple[str, str, str]:
    return (r.spec.method, hparams_label(r.spec.hparams), r.spec.device)


def _tuned(records: list[RunRecord]) -> tuple[str, ...]:
    return tuple(sorted({k for r in records for k in r.spec.tuned}))


def _variant_of(
    method: str, device: str, hparams: dict[str, Any], tuned: tuple[str, ...], devices: bool
) -> tuple[tuple[Any, ...], str, tuple[str, ...]]:
    """(key, label, axes) of a configuration's variant. Declared (``tuned`` non-empty): the
    fixed hyperparameters name the variant. Inferred: categorical ones (strings, booleans)
    name it and the numeric ones are taken as its grid axes."""
    if tuned:
        fixed = {k: v for k, v in sorted(hparams.items()) if k not in tuned}
        axes = tuned
    else:
        fixed = {k: v for k, v in sorted(hparams.items()) if isinstance(v, str | bool)}
        axes = tuple(k for k in sorted(hparams) if k not in fixed)
    text = ",".join(f"{k}={v}" for k, v in fixed.items())
    label = f"{method} [{text}]" if text else method
    if devices:
        label += f" on {device}"
    key = (bool(tuned), method, device, text, tuned)
    return key, label, axes


def _variants(points: list[Row], failed: list[RunRecord], devices: bool) -> list[Variant]:
    variants: dict[tuple[Any, ...], Variant] = {}
    tried: dict[tuple[Any, ...], set[str]] = {}
    for row in points:
        tuned = _tuned(row.records)
        key, label, axes = _variant_of(
            row.method, row.device, row.records[0].spec.hparams, tuned, devices
        )
        v = variants.setdefault(key, Variant(label, [], 0, axes, declared=bool(tuned)))
        v.points.append(row)
        tried.setdefault(key, set()).add(row.hparams)
    for r in failed:
        tuned = tuple(sorted(r.spec.tuned))
        key, _, _ = _variant_of(r.spec.method, r.spec.device, r.spec.hparams, tuned, devices)
        if key in tried:
            label = hparams_label(r.spec.hparams)
            tried[key].add(label)
            if label not in {row.hparams for row in variants[key].points}:
                statuses = variants[key].failed.get(label)
                variants[key].failed[label] = (
                    r.status
                    if statuses is None or r.status in statuses.split(", ")
                    else f"{statuses}, {r.status}"
                )
    for key, v in variants.items():
        v.tried = len(tried[key])
        for row in v.points:
            row.variant = v.label
            row.grid_points = v.tried
    return list(variants.values())


def _choose_winner(v: Variant, rank_key: Any, validation: str, higher: bool) -> None:
    """The grid point with the best mean validation figure (direction: the primary's);
    the best on the ranked test metric only where no point has a validation figure."""
    with_val = [
        row for row in v.points if row.validation is not None and row.validation.mean is not None
    ]
    if with_val:

        def val(row: Row) -> float:
            mean = row.validation.mean if row.validation is not None else None
            assert mean is not None
            return -mean if higher else mean

        v.winner = min(with_val, key=val)
        v.selected_on, v.on_validation = validation, True
        v.selection_note = f"chosen on {validation}"
        if len(with_val) < len(v.points):
            v.selection_note += (
                f" ({len(v.points) - len(with_val)} grid point(s) without one not eligible)"
            )
    else:
        v.winner = min(v.points, key=rank_key)
        v.selected_on, v.on_validation = validation.removeprefix(VALIDATION_PREFIX), False
        v.selection_note = NO_VALIDATION
    for row in v.points:
        row.winner = row is v.winner
        row.ranked = row.winner or not v.collapsed
        row.selected_on = v.selected_on if v.tried > 1 else None


def _edges(v: Variant) -> list[str]:
    """A winner on the edge of a numeric grid axis (with more than two values): the grid
    may not bracket the optimum, so the method may be under-tuned."""
    if v.winner is None or len(v.points) < 2:
        return []
    spec_hparams = [row.records[0].spec.hparams for row in v.points]
    edges = []
    for key in v.axes:
        value = v.winner.records[0].spec.hparams.get(key)
        values = {h.get(key) for h in spec_hparams}
        numeric = [x for x in values if isinstance(x, int | float) and not isinstance(x, bool)]
        if len(numeric) == len(values) > 2 and value in (min(numeric), max(numeric)):
            side = "lowest" if value == min(numeric) else "highest"
            edges.append(f"{key}={value} is the grid's {side}")
    return edges


def _label_ranks(rows: list[Row], primary: str, by_verdict: bool) -> None:
    """Position and label of each ranked row. A row whose primary interval overlaps that
    of the head of its group (the first row with an interval since the last distinct one,
    within one verdict) is tied with it: both read ``=k``. A row without an interval reads
    ``k?`` and never heads a group."""
    head: Row | None = None
    head_ci: tuple[float, float] = (0.0, 0.0)
    group: object = object()
    for pos, row in enumerate(rows, 1):
        row.rank, row.tied = pos, False
        this_group = row.verdict if by_verdict else None
        if this_group != group:
            head, group = None, this_group
        cell = row.cells.get(primary)
        ci = cell.ci if cell is not None and cell.mean is not None else None
        if ci is None:
            row.rank_label = f"{pos}?"
        elif head is not None and overlap(ci, head_ci):
            row.rank_label, row.tied = f"={head.rank}", True
            head.rank_label, head.tied = f"={head.rank}", True
        else:
            head, head_ci, row.rank_label = row, ci, str(pos)


def _declared_direction(records: list[RunRecord], metric: str, default: bool) -> bool:
    """The direction the records' own metric declares, where they agree: a compressor's
    quality is accuracy on one workload and perplexity on another, so the kind's default
    direction only holds where the records say nothing."""
    declared = {
        r.metrics[metric].higher_is_better
        for r in records
        if metric in r.metrics and r.metrics[metric].higher_is_better is not None
    }
    return declared.pop() if len(declared) == 1 else default


def _verdict(info: KindInfo, row: Row) -> str | None:
    v = info.verdict
    if v is None:
        return None
    cell = row.cells.get(v.metric)
    if cell is None or cell.mean is None or math.isnan(cell.mean) or cell.n < len(row.records):
        reasons = [r.metrics[v.metric].reason or "" for r in row.records if v.metric in r.metrics]
        failed = not reasons or any(x.startswith(v.missing) for x in reasons)
        return v.missing if failed else "n/a"
    if cell.mean >= v.threshold:
        return v.bad
    if v.uncertain and cell.ci is not None and cell.ci[1] >= v.threshold:
        return v.uncertain
    return v.good


def _rank_key(row: Row, info: KindInfo, primary: str) -> tuple[float, ...]:
    """(bad verdict, missing primary, primary (binned), tie-breaks...), all ascending.
    Withheld figures (timings across regimes) are null in every row, so they order
    nothing."""

    def value(metric: str, higher: bool, step: float | None = None) -> tuple[float, float]:
        v = row.cells[metric].mean if metric in row.cells else None
        if v is None or math.isnan(v):
            return (1.0, 0.0)
        if step:
            v = math.floor(v / step + 1e-9)
        return (0.0, -v if higher else v)

    bad = 0.0
    if info.verdict is not None:
        v = info.verdict
        order = {v.uncertain or "": 0.5, v.bad: 1.0, "n/a": 1.5, v.missing: 2.0}
        bad = order.get(row.verdict or "", 0.0)
    key = [bad, *value(primary, info.higher_is_better, info.primary_bin)]
    for metric, higher in info.tiebreak:
        key += value(metric, higher)
    return tuple(key)


# --------------------------------------------------------------------------- formatting


def _scale(value: float, unit: str) -> tuple[float, str]:
    """(divisor, suffix) that reads best for ``value`` in ``unit``."""
    if unit == "bytes":
        for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= scale:
                return scale, name
        return 1, "B"
    if unit == "s" and abs(value) < 1:
        return (1e-3, "ms") if abs(value) >= 1e-3 else (1e-6, "µs")
    if unit == "FLOP":
        return 1e9, "GFLOP"
    return 1, ""


def format_value(value: float | None, unit: str, scale: tuple[float, str] | None = None) -> str:
    if value is None:
        return "n/a"
    divisor, suffix = scale or _scale(value, unit)
    if unit == "bytes" and suffix == "B":
        return f"{value:.0f} B"
    return f"{value / divisor:.4g}" + (f" {suffix}" if suffix else "")


def _interval_text(mean: float, lo: float, hi: float, integer: bool) -> str:
    """Mean and bounds with the decimals that show the interval's width to two significant
    figures (0.873 [0.852, 0.893]); four significant figures where that is unreadable."""
    half = max(abs(hi - mean), abs(mean - lo))
    if integer:
        return f"{mean:.0f} [{lo:.0f}, {hi:.0f}]"
    if half > 0 and math.isfinite(half):
        decimals = max(0, 1 - math.floor(math.log10(half)))
        if decimals <= 6:
            return f"{mean:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"
    return f"{mean:.4g} [{lo:.4g}, {hi:.4g}]"


def format_cell(cell: Cell, unit: str) -> str:
    """``mean [low, high]`` (the 95% interval) in the mean's scale and unit, the mean alone
    where there is no interval, ``n/a`` (with a short note, e.g. "mixed regimes") where
    the figure is null. Never a standard deviation: one run has none, and a spread is not
    an interval."""
    if cell.mean is None:
        return f"n/a ({cell.note})" if cell.note else "n/a"
    scale = _scale(cell.mean, unit)
    if cell.ci is None:
        return format_value(cell.mean, unit, scale)
    divisor, suffix = scale
    lo, hi = (v / divisor for v in cell.ci)
    text = _interval_text(cell.mean / divisor, lo, hi, unit == "bytes" and suffix == "B")
    return text + (f" {suffix}" if suffix else "")
