"""Leaderboards: one table per (kind, workload), configurations ranked by the kind's
primary metric, mean ± std over seeds. Runs that did not finish ``ok`` are listed under
the ranking with their status and reason, never dropped."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

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


@dataclass
class Row:
    method: str
    hparams: str
    device: str
    seeds: list[int]
    cells: dict[str, Cell]
    records: list[RunRecord] = field(repr=False, default_factory=list)


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

    @property
    def title(self) -> str:
        return f"{self.kind} on {self.workload}"

    @property
    def ranking_note(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        note = f"ranked by {self.primary} ({direction}); mean ± std over seeds"
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
    return Cell(statistics.fmean(present), std, len(present))


def build_leaderboard(records: list[RunRecord]) -> list[Table]:
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.spec.kind, r.spec.workload), []).append(r)
    tables = []
    for (kind, workload), recs in sorted(groups.items()):
        info = KIND_INFO.get(kind, FALLBACK)
        ok = [r for r in recs if r.status == "ok"]
        primary = info.primary or (next(iter(ok[0].metrics), "") if ok else "")
        columns = [primary] + [c for c in info.columns if c != primary]
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
        sign = -1.0 if info.higher_is_better else 1.0

        def rank_key(row: Row, _sign: float = sign, _p: str = primary) -> tuple[int, float]:
            v = row.cells[_p].mean if _p in row.cells else None
            return (1, 0.0) if v is None or math.isnan(v) else (0, _sign * v)

        rows.sort(key=rank_key)
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
                higher_is_better=info.higher_is_better,
                columns=columns,
                units=units,
                rows=rows,
                failures=failures,
            )
        )
    return tables


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
    if cell.n > 1 and cell.std:
        divisor, suffix = scale
        text = text.removesuffix(f" {suffix}") if suffix else text
        text += f" ± {cell.std / divisor:.3g}" + (f" {suffix}" if suffix else "")
    return text
