"""Leaderboards: one table per (kind, workload), configurations ranked by the kind's
primary metric, mean ± std over seeds. Runs that did not finish ``ok`` are listed under
the ranking with their status and reason, never dropped."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace

from benchmark.kinds import KIND_INFO, KindInfo
from benchmark.records import RunRecord
from benchmark.store import hparams_label

FALLBACK = KindInfo(primary="", higher_is_better=True, columns=())


@dataclass
class Cell:
    mean: float | None
    std: float | None
    n: int
    reason: str | None = None  # why the figure is null
    ci: tuple[float, float] | None = None  # a single run's 95% interval, where it has one


@dataclass
class Row:
    method: str
    hparams: str
    device: str
    seeds: list[int]
    cells: dict[str, Cell]
    records: list[RunRecord] = field(repr=False, default_factory=list)
    verdict: str | None = None  # the kind's label (e.g. "exposed"), when it has one


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

    @property
    def title(self) -> str:
        return f"{self.kind} on {self.workload}"

    @property
    def ranking_note(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        note = f"ranked by {self.primary} ({direction}"
        if self.info.primary_bin:
            note += f", in bins of {self.info.primary_bin:g}"
        note += ")"
        for metric, higher in self.info.tiebreak:
            note += f", then {metric} ({'higher' if higher else 'lower'} is better)"
        v = self.info.verdict
        if v is not None:
            note += f"; {v.bad} when {v.metric} >= {v.threshold:g}, ranked below the rest"
            if v.uncertain:
                note += f" ({v.uncertain} when only its 95% interval reaches it)"
            note += f"; {v.missing} when it is unknown in any run, ranked last"
        note += "; mean ± std over seeds"
        if self.kind == "detector":
            note += "; OOD is the positive class"
        return note


def _cell(records: list[RunRecord], metric: str) -> Cell:
    values = [r.metrics[metric].value for r in records if metric in r.metrics]
    present = [v for v in values if v is not None]
    if not present:
        reasons = {r.metrics[metric].reason for r in records if metric in r.metrics}
        reason = "; ".join(sorted(x for x in reasons if x)) or "not reported"
        return Cell(None, None, 0, reason)
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    ci = None
    if len(present) == 1:
        m = next(
            r.metrics[metric]
            for r in records
            if metric in r.metrics and r.metrics[metric].value is not None
        )
        if m.ci_low is not None and m.ci_high is not None:
            ci = (m.ci_low, m.ci_high)
    return Cell(statistics.fmean(present), std, len(present), ci=ci)


def build_leaderboard(records: list[RunRecord]) -> list[Table]:
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.spec.kind, r.spec.workload_label), []).append(r)
    tables = []
    for (kind, workload), recs in sorted(groups.items()):
        info = KIND_INFO.get(kind, FALLBACK)
        ok = [r for r in recs if r.status == "ok"]
        primary = info.primary or (next(iter(ok[0].metrics), "") if ok else "")
        extra = [m for m, _ in info.tiebreak] + ([info.verdict.metric] if info.verdict else [])
        columns = [primary] + [c for c in (*info.columns, *extra) if c != primary]
        columns = list(dict.fromkeys(columns))
        units: dict[str, str] = {}
        for r in ok:
            for c in columns:
                if c in r.metrics:
                    units.setdefault(c, r.metrics[c].unit)
        configs: dict[tuple[str, str, str], list[RunRecord]] = {}
        for r in ok:
            key = (r.spec.method, hparams_label(r.spec.hparams), r.spec.device)
            configs.setdefault(key, []).append(r)
        rows = [
            Row(
                method=m,
                hparams=h,
                device=d,
                seeds=sorted(r.spec.seed for r in rs),
                cells={c: _cell(rs, c) for c in columns},
                records=rs,
            )
            for (m, h, d), rs in configs.items()
        ]
        for row in rows:
            row.verdict = _verdict(info, row)
        higher = _declared_direction(ok, primary, info.higher_is_better)
        rank_info = replace(info, higher_is_better=higher)
        rows.sort(key=lambda row, _info=rank_info, _p=primary: _rank_key(row, _info, _p))
        failures = [
            Failure(label=r.spec.label, status=r.status, reason=r.reason)
            for r in recs
            if r.status != "ok"
        ]
        tables.append(
            Table(
                kind=kind,
                workload=workload,
                primary=primary,
                higher_is_better=higher,
                columns=columns,
                units=units,
                rows=rows,
                failures=failures,
                verdict_column=info.verdict.column if info.verdict else None,
                info=info,
            )
        )
    return tables


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
    """(bad verdict, missing primary, primary (binned), tie-breaks...), all ascending."""

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


def format_cell(cell: Cell, unit: str) -> str:
    """Mean ± std, both in the mean's scale so the two read together."""
    if cell.mean is None:
        return "n/a"
    scale = _scale(cell.mean, unit)
    text = format_value(cell.mean, unit, scale)
    divisor, suffix = scale
    if cell.n > 1 and cell.std:
        text = text.removesuffix(f" {suffix}") if suffix else text
        text += f" ± {cell.std / divisor:.3g}" + (f" {suffix}" if suffix else "")
    elif cell.ci is not None:
        lo, hi = (v / divisor for v in cell.ci)
        text += f" [{lo:.3g}, {hi:.3g}]"
    return text
