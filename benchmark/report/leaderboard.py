"""Leaderboards: one table per (kind, workload), ranked by the kind's primary metric.

What a reviewer can check in every table:

- Every metric cell is the mean with a 95% interval (``_cell``):
  - n >= 3 seeds: Student t over seeds; where the runs carry their own test-set interval
    (``Metric.ci_low``/``ci_high``) it is combined with it, half-width
    ``sqrt(t_half**2 + test_half**2)`` around the mean, ``test_half`` the mean half-width of
    the runs' own intervals: every seed is scored on the same fixed test set, so the test
    set's error does not average out over seeds and the seed spread alone omits it;
  - n = 2: the mean of the two runs' test-set half-widths around the mean ("test-set
    only, 2 seeds"), or no interval where the runs carry none (a t interval on one degree
    of freedom is +-12.7 standard errors of a spread two values cannot estimate);
  - n = 1: the run's own test-set interval;
  - seeds that agree exactly and carry no test-set interval: the mean alone, marked
    "no interval" (a zero-width interval would read as exact);
  - intervals are clipped to the metric's range where it is known (fractions and AUROC
    to [0, 1], perplexity to >= 1, times, rates, counts, bytes and ratios to >= 0;
    deltas are not clipped);
  - a mean over only the seeds that report a value (the others null) says so,
    ``15.2 [..] (2/3 seeds)``, and the notes under the table say why the rest are null.
  A standard deviation is never shown.
- Ranks (``_label_ranks``): ``=k`` marks a row whose primary interval overlaps that of
  the row at position ``k``, the highest-placed row above it that it overlaps (within one
  verdict, for kinds that have one); row ``k`` reads ``=k`` too, unless it is itself tied
  with a row above it. Overlap is not transitive, so a row is never tied with a row it does
  not overlap. A row that overlaps no row above it keeps its plain rank, ``k?`` a row
  without an interval, which can be declared neither tied nor distinct.
- Timing figures (``records.is_timing``: seconds, rates and ratios of clock readings)
  compare only when every ok run of the table shares one timing regime
  (``measure.environment.regime_key``); otherwise they are withheld (``n/a (mixed
  regimes)``, the regimes named once in the table's notes) and never rank or break ties.
- Grids: where records say which hyperparameters were tuned (``RunSpec.tuned`` a tuple),
  each method *variant* (method, device and the fixed hyperparameters) gets one ranked
  row, its grid winner, chosen on the validation figure ``val_<primary>`` (the reported
  test metric only when no validation figure exists, and then said); every grid point is
  listed, unranked, in ``Table.points``. Winner selection (``_choose_winner``): grid
  points whose figure covers fewer seeds than the variant's fullest point (a seed failed,
  diverged or reported null) are marked and lose to complete ones; among complete points
  the best mean wins, and exact ties go to the grid's order (the tuned hyperparameters'
  values ascending, then the configuration's label), never to the test metric.
  ``tuned == ()`` (nothing tuned: a plain method, or an operating point of ``variants:``
  axes such as a pruning amount) makes every configuration its own ranked row, with no
  tuning text. Records without ``tuned`` (``None``: they predate the field) keep the
  older reading: categorical hyperparameters name a variant, numeric ones are taken as
  grid axes, and every configuration is ranked as its own row.

Runs that did not finish ``ok`` are listed under the ranking with their status and
reason, never dropped.

A kind this process does not know (its plugin not loaded: ``bench leaderboard`` without
``--plugin``) has no ranking, columns or headline metric to read: its table lists every
configuration with every figure its records carry, unranked (rank "-", in name order),
and its note says why and how to load the plugin. Guessing a headline (the record's first
metric, say) would print a confident ranking that may run the wrong way."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from benchmark.kinds import KIND_INFO, KindInfo
from benchmark.kinds.registered import get_kind, unregistered_note
from benchmark.measure.environment import describe_regime, regime_key
from benchmark.measure.environment import regime as regime_of
from benchmark.metrics.intervals import mean_interval, overlap
from benchmark.records import Metric, RunRecord, hparams_label, is_timing

# The ranking of a table whose kind is unknown: none (``Table.unranked`` says why).
FALLBACK = KindInfo(primary="", higher_is_better=True, columns=())

#: Fewest seeds for a seed-level interval. Two values give a t interval on one degree of
#: freedom (critical value 12.7) around a standard deviation estimated from two numbers:
#: too wide to separate anything and too unstable to be worth printing.
MIN_SEEDS_FOR_INTERVAL = 3
VALIDATION_PREFIX = "val_"
NO_VALIDATION = "chosen on the reported test metric: no validation figure"
NONNEGATIVE_UNITS = frozenset(
    {"s", "x", "count", "bytes", "parameters", "FLOP", "steps", "labels", "J", "W", "nats"}
)
MIXED = "mixed regimes"
UNRECORDED = "regime not recorded"


@dataclass
class Cell:
    mean: float | None
    std: float | None  # over seeds; None for a single run (one value has no spread)
    n: int  # seeds with a value (the mean is over these)
    reason: str | None = None  # why the figure is null (in every seed, or in the others)
    ci: tuple[float, float] | None = None  # the 95% interval shown, where there is one
    # "seeds" (Student t), "seeds+test" (Student t combined with the runs' test-set
    # interval), "test" (two seeds: their test-set intervals only) or "run" (one run's own)
    ci_source: str | None = None
    note: str | None = None  # short text after "n/a" (e.g. "mixed regimes")
    runs: int | None = None  # ok runs of the configuration (None: as many as n)
    no_interval: str | None = None  # why a figure with n >= 3 has no interval

    @property
    def partial(self) -> bool:
        """The mean covers only some of the configuration's ok runs (the rest are null)."""
        return self.mean is not None and self.runs is not None and self.n < self.runs


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
    seeds_run: int = 0  # seeds this configuration ran, failed ones included
    incomplete: str | None = None  # "2/3 seeds": fewer seeds than its grid's fullest point


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
    incomplete: int = 0  # grid points with fewer seeds than the fullest, not preferred

    @property
    def collapsed(self) -> bool:
        """Whether the ranked table shows only this variant's winner."""
        return self.declared and self.tried > 1

    @property
    def tuned(self) -> bool:
        """Whether the variant has grid axes: declared ones, or inferred ones (older
        records). A configuration run with nothing tuned (``RunSpec.tuned == ()``: a plain
        method, or an operating point such as a pruning amount) has none."""
        return bool(self.axes) or not self.declared


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
    # Columns of the kind that no ok run of the table reports a value for, left out of the
    # table, with the reasons the records give for their nulls ("" where none carries it).
    dropped: dict[str, str] = field(default_factory=dict)
    # Why nothing is ranked (the kind is not registered, or declares no primary metric);
    # None for a ranked table.
    unranked: str | None = None

    def scale(self, column: str) -> tuple[float, str]:
        """The one (divisor, suffix) every cell of ``column`` is printed in, chosen from
        the column's largest mean (``column_scale``), so a column never mixes seconds with
        milliseconds and its unit is said once, in the header."""
        if column == self.validation_metric:
            cells = [row.validation for row in self.points or self.rows]
        else:
            cells = [row.cells.get(column) for row in self.points or self.rows]
        means = [c.mean for c in cells if c is not None]
        return column_scale(means, self.units.get(column, ""))

    def unit_label(self, column: str) -> str | None:
        """The unit ``column``'s cells are printed in, for its header (None: no unit)."""
        unit = self.units.get(column)
        if unit is None:
            return None
        return self.scale(column)[1] or unit

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
            src = (cell.ci_source or "none") if cell.ci is not None else "none"
            counts[src] = counts.get(src, 0) + 1
        names = {
            "seeds+test": "over seeds (Student t) combined with the runs' test-set interval",
            "seeds": "over seeds (Student t)",
            "test": "test-set only, 2 seeds",
            "run": "the single run's own test-set interval",
            "none": "none",
        }
        shown = ", ".join(
            f"{names[k]} in {n} row{'s' if n != 1 else ''}"
            for k, n in sorted(counts.items(), key=lambda kv: list(names).index(kv[0]))
        )
        partial = any(
            cell.partial
            for row in self.rows
            for cell in (*row.cells.values(), row.validation)
            if cell is not None
        )
        return (
            f"cells: mean [95% interval]; n >= {MIN_SEEDS_FOR_INTERVAL} seeds: Student t over "
            "seeds, where the runs carry a test-set interval combined with it as "
            "sqrt(t half-width^2 + mean test-set half-width^2) (the test set is shared by "
            "every seed, so its error does not average out); n = 2: the mean of the two "
            "runs' test-set half-widths (test-set only, 2 seeds), else no interval; n = 1: "
            "the run's own test-set interval; seeds that agree exactly with no test-set "
            "interval: the mean alone (no interval); clipped to the metric's range "
            "(fractions, AUROC [0, 1]; perplexity >= 1; times, counts, bytes, ratios >= 0); "
            "never a std"
            + (
                "; (k/n seeds): the mean over the k of n seeds that report the figure "
                "(null in the others, see the notes)"
                if partial
                else ""
            )
            + (f"; {self.primary} intervals: {shown}" if shown else "")
        )

    @property
    def tie_note(self) -> str:
        scope = " within one verdict" if self.info.verdict is not None else ""
        return (
            f"rank =k: its {self.primary} interval overlaps that of row k, the highest row "
            f"above it{scope} that it overlaps (row k reads =k too unless tied higher up; "
            "overlap is not transitive, so rows tied with the same k need not overlap each "
            "other); plain k: overlaps no row above it; "
            "k?: no interval, so neither tied with nor distinct from the rows above"
        )

    @property
    def tuning_note(self) -> str:
        if not self.variants:
            return ""
        budgets: dict[int, list[str]] = {}
        for v in self.variants:
            if v.tuned:
                budgets.setdefault(v.tried, []).append(v.label)
        inferred = not any(v.declared for v in self.variants)
        if not budgets:
            text = "nothing tuned: every configuration is its own row"
        elif set(budgets) == {1}:
            text = "no grids: every variant ran one configuration"
        elif len(budgets) == 1:
            (n,) = budgets
            text = f"equal tuning budgets: {n} grid points per variant"
        else:
            text = "unequal tuning budgets: " + "; ".join(
                f"{n} grid point{'s' if n != 1 else ''} for {', '.join(labels)}"
                for n, labels in sorted(budgets.items(), reverse=True)
            )
        untuned = sum(1 for v in self.variants if not v.tuned)
        if budgets and untuned:
            text += (
                f"; {untuned} configuration{'s' if untuned != 1 else ''} with nothing tuned, "
                "each its own row"
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
        if self.unranked is not None:
            note = f"NOT RANKED: {self.unranked}; rows in name order; {self.interval_note}"
            if self.timing_note:
                note += f"; timing columns n/a: {self.timing_withheld}, not compared"
            return note
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
        for kind_note in self.info.notes:
            note += f"; {kind_note}"
        return note


# --------------------------------------------------------------------------- cells


def _bounds(metric: str, unit: str) -> tuple[float | None, float | None]:
    """The range a metric's true value lies in, where its unit says: fractions and AUROC in
    [0, 1], perplexity >= 1, times, rates, counts, bytes and ratios >= 0. Deltas and
    differences (``quality_delta``) can be negative and ratios named ``*_vs_*`` can exceed 1,
    so they get no such bound."""
    words = set(metric.lower().split("_"))
    if words & {"delta", "diff", "change"}:
        return (-1.0, 1.0) if unit in ("fraction", "AUROC") else (None, None)
    if unit in ("fraction", "AUROC"):
        return (0.0, None) if "vs" in words else (0.0, 1.0)
    if unit in ("ppl", "perplexity"):
        return 1.0, None
    if unit in NONNEGATIVE_UNITS or unit.endswith("/s"):
        return 0.0, None
    return None, None


def _clip(
    ci: tuple[float, float], metric: str, unit: str, values: list[float]
) -> tuple[float, float]:
    """``ci`` clipped to the metric's range (``_bounds``); a bound that some run's own value
    already breaks is not the metric's range, and is dropped."""
    lo_b, hi_b = _bounds(metric, unit)
    if lo_b is not None and min(values) < lo_b:
        lo_b = None
    if hi_b is not None and max(values) > hi_b:
        hi_b = None
    lo, hi = ci
    if lo_b is not None:
        lo = max(lo, lo_b)
    if hi_b is not None:
        hi = min(hi, hi_b)
    return lo, hi


def _test_half(metrics: list[Metric]) -> float | None:
    """The mean half-width of the runs' own test-set intervals, over the runs that carry
    one; None where none does."""
    halves = [
        (m.ci_high - m.ci_low) / 2
        for m in metrics
        if m.ci_low is not None and m.ci_high is not None
    ]
    return statistics.fmean(halves) if halves else None


def _absent_reason(records: list[RunRecord], metric: str) -> str:
    """Why a run lacks ``metric`` altogether: what its kind declares (``MetricDecl.absent``,
    e.g. "the detector gives no p-values"), else "not reported"."""
    kind = get_kind(records[0].spec.kind) if records else None
    decl = kind.declaration(metric) if kind is not None else None
    return decl.absent if decl is not None and decl.absent else "not reported"


def _cell(records: list[RunRecord], metric: str) -> Cell:
    """Mean and 95% interval over the runs that report ``metric`` (the rules are in the
    module docstring); ``runs`` counts every run, so a mean over only some reads as such."""
    reported = [r.metrics[metric] for r in records if metric in r.metrics]
    with_value = [m for m in reported if m.value is not None]
    present = [float(m.value) for m in with_value if m.value is not None]
    runs = len(records)
    nulls = sorted({m.reason for m in reported if m.value is None and m.reason})
    missing = runs - len(reported)
    absent = _absent_reason(records, metric)
    why = "; ".join(nulls + ([absent] if missing else [])) or absent
    if not present:
        return Cell(None, None, 0, why, runs=runs)
    n = len(present)
    reason = why if n < runs else None
    mean = statistics.fmean(present)
    unit = with_value[0].unit
    test_half = _test_half(with_value)
    if n >= MIN_SEEDS_FOR_INTERVAL:
        std = statistics.stdev(present)
        lo, hi = mean_interval(present)
        seed_half = (hi - lo) / 2 if max(present) > min(present) else 0.0  # no round-off
        half = math.hypot(seed_half, test_half or 0.0)
        if half <= 0:
            return Cell(
                mean, std, n, reason, runs=runs, no_interval="seeds identical, no test-set interval"
            )
        ci = _clip((mean - half, mean + half), metric, unit, present)
        source = "seeds+test" if test_half else "seeds"
        return Cell(mean, std, n, reason, ci=ci, ci_source=source, runs=runs)
    if n == 2:
        std = statistics.stdev(present)
        if not test_half:
            return Cell(mean, std, n, reason, runs=runs)
        ci = _clip((mean - test_half, mean + test_half), metric, unit, present)
        return Cell(mean, std, n, reason, ci=ci, ci_source="test", runs=runs)
    m = with_value[0]
    if m.ci_low is not None and m.ci_high is not None:
        ci = _clip((m.ci_low, m.ci_high), metric, unit, present)
        return Cell(mean, None, 1, reason, ci=ci, ci_source="run", runs=runs)
    return Cell(mean, None, 1, reason, runs=runs)


def _pinned_cores(record: RunRecord) -> int | None:
    """How many cores a pinned run had; None for an unpinned run or where not recorded."""
    r = regime_of(record.environment)
    cores = r.get("cpu_affinity") if r is not None and r.get("pinned") else None
    return len(cores) if isinstance(cores, list) else None


def regime_counts(records: list[RunRecord]) -> dict[str, int]:
    """Runs per timing regime, described without naming cores: runs pinned to different
    cores share a regime (``regime_key`` holds whether a run was pinned, not where), so
    the description says how many cores each run had ("pinned, 1 core each", "pinned,
    2-3 cores each"), never which."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(describe_regime(r.environment), []).append(r)
    out = {}
    for desc, runs in groups.items():
        sizes = sorted({n for r in runs if (n := _pinned_cores(r)) is not None})
        if sizes:
            span = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
            desc += f", {span} core{'s' if sizes[-1] != 1 else ''} each"
        out[desc] = len(runs)
    return out


def _timing(ok: list[RunRecord], columns: list[str]) -> tuple[list[str], str | None, str | None]:
    """(timing columns, the one regime's description or None, why timings are withheld or
    None)."""
    timing = [c for c in columns if any(c in r.metrics and is_timing(r.metrics[c], c) for r in ok)]
    if not ok:
        return timing, None, None
    keys = {regime_key(r.environment) for r in ok}
    counts = regime_counts(ok)
    if len(keys) == 1 and None not in keys:
        return timing, ", ".join(counts), None  # one key: one description
    if not timing:
        return timing, None, None
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
    info = KIND_INFO.get(kind)
    if info is None:
        return _unranked_table(kind, workload, recs, unregistered_note(kind))
    if not info.primary:
        why = f"kind {kind!r} declares no primary metric to rank by"
        return _unranked_table(kind, workload, recs, why)
    ok = [r for r in recs if r.status == "ok"]
    primary = info.primary
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
    kept = (primary, info.verdict.metric if info.verdict else primary)
    shown, dropped = _reported(columns, kept, ok)

    points = _config_rows(recs, ok, columns, timing, timing_note, validation)
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
        columns=shown,
        units=units,
        rows=ranked,
        failures=failures,
        verdict_column=info.verdict.column if info.verdict else None,
        info=info,
        points=points,
        variants=variants,
        timing_columns=[c for c in timing if c in shown],
        regime=regime,
        timing_note=timing_note,
        dropped=dropped,
    )


def _config_rows(
    recs: list[RunRecord],
    ok: list[RunRecord],
    columns: list[str],
    timing: list[str],
    timing_note: str | None,
    validation: str | None,
) -> list[Row]:
    """One row per configuration (method, hyperparameters, device) of a table's ok runs,
    with its cells, its validation figure (``validation``: the metric grid winners are
    chosen on, None for none) and how many seeds were tried; timing cells are withheld
    (``timing_note``) where the runs' regimes differ."""
    configs: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in ok:
        configs.setdefault(_config_key(r), []).append(r)
    attempted: dict[tuple[str, str, str], set[int]] = {}
    for r in recs:
        attempted.setdefault(_config_key(r), set()).add(r.spec.seed)
    rows = []
    for (m, h, d), rs in configs.items():
        cells = {c: _cell(rs, c) for c in columns}
        if timing_note:
            short = UNRECORDED if timing_note.startswith(UNRECORDED) else MIXED
            for c in timing:
                cells[c] = Cell(None, None, 0, reason=timing_note, note=short)
        has_val = validation is not None and any(validation in r.metrics for r in rs)
        rows.append(
            Row(
                method=m,
                hparams=h,
                device=d,
                seeds=sorted(r.spec.seed for r in rs),
                cells=cells,
                records=rs,
                validation=_cell(rs, validation) if has_val and validation else None,
                seeds_run=len(attempted[(m, h, d)]),
            )
        )
    return rows


def _unranked_table(kind: str, workload: str, recs: list[RunRecord], why: str) -> Table:
    """The table of a kind without a ranking: every configuration, unranked, in name
    order, with every figure its ok runs report (in the order the records give them),
    timings withheld across regimes as in a ranked table."""
    ok = [r for r in recs if r.status == "ok"]
    columns = list(dict.fromkeys(m for r in ok for m in r.metrics))
    units: dict[str, str] = {}
    for r in ok:
        for c, m in r.metrics.items():
            units.setdefault(c, m.unit)
    timing, regime, timing_note = _timing(ok, columns)
    rows = sorted(
        _config_rows(recs, ok, columns, timing, timing_note, None),
        key=lambda row: (row.method, row.hparams, row.device),
    )
    for row in rows:
        row.rank_label, row.ranked = "-", False
    return Table(
        kind=kind,
        workload=workload,
        primary="",
        higher_is_better=True,
        columns=columns,
        units=units,
        rows=rows,
        failures=[Failure(r.spec.label, r.status, r.reason) for r in recs if r.status != "ok"],
        timing_columns=timing,
        regime=regime,
        timing_note=timing_note,
        unranked=why,
    )


def _reported(
    columns: list[str], keep: tuple[str, ...], ok: list[RunRecord]
) -> tuple[list[str], dict[str, str]]:
    """(the columns some ok run reports a value for, {left-out column: why}). A column
    no row reports (a detector without p-values has no Type-I error, a workload without
    a label oracle no ``labels_used``) would only add an n/a per row; it is left out,
    with the reasons the records give for their nulls. ``keep`` (the primary and the
    verdict's metric) stays: the ranking is read off it."""
    shown: list[str] = []
    dropped: dict[str, str] = {}
    for c in columns:
        metrics = [r.metrics[c] for r in ok if c in r.metrics]
        if c in keep or any(m.value is not None for m in metrics):
            shown.append(c)
        else:
            dropped[c] = "; ".join(sorted({m.reason for m in metrics if m.reason}))
    return shown, dropped


def _config_key(r: RunRecord) -> tuple[str, str, str]:
    return (r.spec.method, hparams_label(r.spec.hparams), r.spec.device)


def _tuned(records: list[RunRecord]) -> tuple[str, ...] | None:
    """The hyperparameters the records say were tuned; None where none of them says
    (records that predate ``RunSpec.tuned``: the reading is inferred)."""
    declared = [r.spec.tuned for r in records if r.spec.tuned is not None]
    if not declared:
        return None
    return tuple(sorted({k for t in declared for k in t}))


def _variant_of(
    method: str,
    device: str,
    hparams: dict[str, Any],
    tuned: tuple[str, ...] | None,
    devices: bool,
) -> tuple[tuple[Any, ...], str, tuple[str, ...]]:
    """(key, label, axes) of a configuration's variant. Declared (``tuned`` a tuple): the
    hyperparameters not tuned name the variant (all of them for ``()``: every configuration
    is its own variant, with no axes). Inferred (``None``): categorical ones (strings,
    booleans) name it and the numeric ones are taken as its grid axes."""
    if tuned is not None:
        fixed = {k: v for k, v in sorted(hparams.items()) if k not in tuned}
        axes = tuned
    else:
        fixed = {k: v for k, v in sorted(hparams.items()) if isinstance(v, str | bool)}
        axes = tuple(k for k in sorted(hparams) if k not in fixed)
    text = ",".join(f"{k}={v}" for k, v in fixed.items())
    label = f"{method} [{text}]" if text else method
    if devices:
        label += f" on {device}"
    key = (tuned is not None, method, device, text, tuned)
    return key, label, axes


def _variants(points: list[Row], failed: list[RunRecord], devices: bool) -> list[Variant]:
    variants: dict[tuple[Any, ...], Variant] = {}
    tried: dict[tuple[Any, ...], set[str]] = {}
    for row in points:
        tuned = _tuned(row.records)
        key, label, axes = _variant_of(
            row.method, row.device, row.records[0].spec.hparams, tuned, devices
        )
        v = variants.setdefault(key, Variant(label, [], 0, axes, declared=tuned is not None))
        v.points.append(row)
        tried.setdefault(key, set()).add(row.hparams)
    for r in failed:
        tuned = None if r.spec.tuned is None else tuple(sorted(r.spec.tuned))
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


def grid_order(row: Row, axes: tuple[str, ...]) -> tuple[Any, ...]:
    """A configuration's place in its grid: the tuned hyperparameters' values ascending
    (numbers before other values), then its label. Breaks exact ties between grid points
    without looking at any measured figure."""
    hp = row.records[0].spec.hparams if row.records else {}
    out: list[tuple[int, float, str]] = []
    for k in axes:
        x = hp.get(k)
        numeric = isinstance(x, int | float) and not isinstance(x, bool)
        out.append((0, float(x), "") if numeric else (1, 0.0, str(x)))  # type: ignore[arg-type]
    return (tuple(out), row.hparams)


def _choose_winner(v: Variant, rank_key: Any, validation: str, higher: bool) -> None:
    """The grid point with the best mean validation figure (direction: the primary's);
    the best on the ranked test metric only where no point has a validation figure.

    Complete points first: a point whose figure covers fewer seeds than the variant's
    fullest point (a seed failed, diverged, or reported null) is marked ``incomplete`` and
    wins only where no complete point has the figure, so the mean of a point's surviving
    seeds never beats a full one. Exact ties in the figure go to the grid's order
    (``grid_order``), never to the test metric."""
    with_val = [
        row for row in v.points if row.validation is not None and row.validation.mean is not None
    ]
    on_validation = bool(with_val)
    candidates = with_val or v.points
    v_primary = validation.removeprefix(VALIDATION_PREFIX)

    def covered(row: Row) -> int:
        """Seeds the figure the winner is chosen on covers."""
        cell = row.validation if on_validation else row.cells.get(v_primary)
        return cell.n if cell is not None and cell.mean is not None else 0

    full = max((max(row.seeds_run, len(row.records)) for row in v.points), default=0)
    v.incomplete = 0
    for row in v.points:
        row.incomplete = None
        if v.tried > 1 and covered(row) < full:
            row.incomplete = f"{covered(row)}/{full} seeds"
            v.incomplete += 1
    if on_validation:

        def val(row: Row) -> tuple[Any, ...]:
            mean = row.validation.mean if row.validation is not None else None
            assert mean is not None
            return (row.incomplete is not None, -mean if higher else mean, grid_order(row, v.axes))

        v.winner = min(candidates, key=val)
        v.selected_on, v.on_validation = validation, True
        v.selection_note = f"chosen on {validation}"
        if len(with_val) < len(v.points):
            v.selection_note += (
                f" ({len(v.points) - len(with_val)} grid point(s) without one not eligible)"
            )
    else:
        v.winner = min(
            candidates,
            key=lambda row: (row.incomplete is not None, rank_key(row), grid_order(row, v.axes)),
        )
        v.selected_on, v.on_validation = v_primary, False
        v.selection_note = NO_VALIDATION
    if v.incomplete:
        v.selection_note += (
            f"; {v.incomplete} grid point(s) with fewer seeds than the others not preferred"
        )
        if v.winner is not None and v.winner.incomplete:
            v.selection_note += f" (the winner itself covers {v.winner.incomplete})"
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
    of some row above it (within one verdict) reads ``=k``, ``k`` the position of the
    highest such row; row ``k`` reads ``=k`` too unless it is already tied with a row above
    it. Overlap is checked against every row above, not a group's head, and is not taken
    as transitive. A row that overlaps none keeps its plain position; one without an
    interval reads ``k?`` and is never tied with."""
    above: list[tuple[Row, tuple[float, float], object]] = []
    for pos, row in enumerate(rows, 1):
        row.rank, row.tied, row.rank_label = pos, False, str(pos)
        group = row.verdict if by_verdict else None
        cell = row.cells.get(primary)
        ci = cell.ci if cell is not None and cell.mean is not None else None
        if ci is None:
            row.rank_label = f"{pos}?"
            continue
        best = next((r for r, rci, g in above if g == group and overlap(ci, rci)), None)
        if best is not None:
            row.rank_label, row.tied = f"={best.rank}", True
            if not best.tied:
                best.rank_label, best.tied = f"={best.rank}", True
        above.append((row, ci, group))


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


def column_scale(values: Iterable[float | None], unit: str) -> tuple[float, str]:
    """One (divisor, suffix) for a whole column, the one its largest magnitude reads best
    in: milliseconds only when every value is below a second, so 37.85 s and 0.024 s
    print as 37.85 and 0.02419 under one "(s)", never as "37.85" beside "24.19 ms"."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    return _scale(max(finite), unit) if finite else (1, "")


def _number(value: float) -> str:
    """Four significant figures, without an exponent for large figures (12345, not
    1.234e+04)."""
    return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def format_value(
    value: float | None, unit: str, scale: tuple[float, str] | None = None, *, suffix: bool = True
) -> str:
    """``value`` in ``scale`` (default: the one it reads best in), followed by the scale's
    suffix unless ``suffix`` is False (a table column whose header carries the unit)."""
    if value is None:
        return "n/a"
    divisor, name = scale or _scale(value, unit)
    if unit == "bytes" and name == "B":
        return f"{value:.0f}" + (" B" if suffix else "")
    return _number(value / divisor) + (f" {name}" if name and suffix else "")


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


def format_cell(cell: Cell, unit: str, scale: tuple[float, str] | None = None) -> str:
    """``mean [low, high]`` (the 95% interval), the mean alone where there is no interval
    (marked "no interval" where three or more seeds agree exactly), ``(k/n seeds)`` after
    a mean over only the k seeds that report the figure, ``n/a`` (with a short note, e.g.
    "mixed regimes") where the figure is null. Never a standard deviation: one run has
    none, and a spread is not an interval.

    Without ``scale`` the cell is printed in the scale its mean reads best in, with the
    suffix ("94 [70, 118] ms"); with one (a table column's, ``Table.scale``) in that
    scale and without a suffix: the column's header says the unit once."""
    if cell.mean is None:
        return f"n/a ({cell.note})" if cell.note else "n/a"
    own = scale is None
    divisor, suffix = scale or _scale(cell.mean, unit)
    tags = []
    if cell.partial:
        tags.append(f"{cell.n}/{cell.runs} seeds")
    if cell.ci is None:
        if cell.no_interval:
            tags.append("no interval: " + cell.no_interval)
        text = format_value(cell.mean, unit, (divisor, suffix), suffix=own)
    else:
        lo, hi = (v / divisor for v in cell.ci)
        text = _interval_text(cell.mean / divisor, lo, hi, unit == "bytes" and suffix == "B")
        text += f" {suffix}" if suffix and own else ""
    return text + (f" ({'; '.join(tags)})" if tags else "")
