"""The plots of the HTML report: the shared drawing helpers, each registered kind's plot
(``KindDef.plot``, a ``module:attribute`` the kind owns, imported when a report draws it)
and the figures of a suite's axis. No kind's figures are named here: a kind's plot lives
beside its definition (``benchmark/kinds/<kind>_plot.py`` for the built-in four)."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from benchmark.kinds import get_kind, registered_kinds
from benchmark.records import hparams_label
from benchmark.report.curves import AxisCurve, AxisFigure
from benchmark.report.leaderboard import Cell, Row, Table


def png(fig: plt.Figure) -> bytes:
    """The figure as PNG bytes (laid out tight), closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def row_label(row: Row) -> str:
    """A leaderboard row's legend label: the method, its hyperparameters in brackets."""
    return row.method if row.hparams == "defaults" else f"{row.method}[{row.hparams}]"


def mean_curve(row: Row, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The row's curve ``key`` averaged over its seeds (cut to the shortest), or None."""
    curves = [r.curves[key] for r in row.records if key in r.curves and r.curves[key].x]
    if not curves:
        return None
    n = min(len(c.x) for c in curves)
    x = np.asarray(curves[0].x[:n], dtype=float)
    ys = np.asarray([[np.nan if v is None else v for v in c.y[:n]] for c in curves], dtype=float)
    return x, np.nanmean(ys, axis=0)


def curve_axis_label(rows: Iterable[Row], key: str) -> str:
    """The y label of curve ``key``: its ``y_label`` and the unit its records carry
    (``Curve.unit``; for records that predate it, the unit of the metric of the same name),
    never an assumed one. Units that differ between rows are all named."""
    labels: dict[str, None] = {}
    units: dict[str, None] = {}
    for row in rows:
        for r in row.records:
            curve = r.curves.get(key)
            if curve is None:
                continue
            labels[curve.y_label or key] = None
            metric = r.metrics.get(key)
            unit = curve.unit or (metric.unit if metric is not None else "")
            if unit:
                units[unit] = None
    text = " / ".join(labels) or key
    return f"{text} ({', '.join(units)})" if units else text


def yerr(cell: Cell) -> list[list[float]] | None:
    """The cell's 95% interval as matplotlib's asymmetric error bar, where it has one."""
    if cell.ci is None or cell.mean is None:
        return None
    return [[max(cell.mean - cell.ci[0], 0.0)], [max(cell.ci[1] - cell.mean, 0.0)]]


def scatter(table: Table, x: str, y: str, xlabel: str, ylabel: str) -> bytes | None:
    """One point per ranked row at the means of columns ``x`` and ``y``, with ``y``'s 95%
    interval as a bar; None where no row has both."""
    points = [(row.cells.get(x), row.cells.get(y), row_label(row)) for row in table.rows]
    points = [
        (a.mean, b.mean, lab, yerr(b))
        for a, b, lab in points
        if a is not None and b is not None and a.mean is not None and b.mean is not None
    ]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for px, py, lab, err in points:
        ax.scatter([px], [py])
        if err is not None:
            ax.errorbar([px], [py], yerr=err, fmt="none", ecolor="grey", lw=0.8, capsize=2)
        ax.annotate(lab, (px, py), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_title("bars: 95% intervals where shown in the table", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return png(fig)


class _KindPlots(Mapping[str, Callable[[Table], bytes | None]]):
    """``PLOTS``: each registered kind's plot (``KindDef.plot``), imported when drawn."""

    def __getitem__(self, kind: str) -> Callable[[Table], bytes | None]:
        found = get_kind(kind)
        plot = found.load_plot() if found is not None else None
        if plot is None:
            raise KeyError(kind)
        return plot

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, d in registered_kinds().items() if d.plot is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


PLOTS: Mapping[str, Callable[[Table], bytes | None]] = _KindPlots()


def _curve_labels(curves: list[AxisCurve]) -> list[str]:
    """Legend labels: the method, and of the rest of each configuration only what differs
    between the figure's curves (the table beside the figure names them in full)."""
    parts = [
        {
            "hparams": hparams_label(c.hparams),
            "workload": c.workload,
            "options": hparams_label(c.options),
            "device": c.device,
            "protocol": hparams_label(c.protocol),
            "budget": hparams_label(c.budget),
            "attacks": ",".join(c.attacks),
        }
        for c in curves
    ]
    varying = [k for k in parts[0] if len({p[k] for p in parts}) > 1]
    labels = []
    for c, p in zip(curves, parts, strict=True):
        shown = [f"{k} {p[k]}" if k in ("protocol", "budget") else p[k] for k in varying]
        if "hparams" not in varying and p["hparams"] != "defaults":
            shown.insert(0, p["hparams"])
        label = c.method + (f" [{'; '.join(shown)}]" if shown else "")
        tag = c.descents.descent_type if c.descents.judged else "peaks not judged"
        labels.append(textwrap.shorten(f"{label}: {tag}", 110, placeholder=" ..."))
    return labels


def axis_curves(figure: AxisFigure) -> bytes | None:
    """A metric against a suite's axis: one line per configuration (mean over seeds), its
    95% t-band shaded where a point has two or more seeds, log x where the axis is, and
    each real peak marked (a triangle and a dotted vertical line)."""
    curves = [c for c in figure.curves if c.points]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, label in zip(curves, _curve_labels(curves), strict=True):
        x = np.asarray([p.x for p in c.points], dtype=float)
        y = np.asarray([p.mean for p in c.points], dtype=float)
        lo = np.asarray([np.nan if p.interval is None else p.interval[0] for p in c.points])
        hi = np.asarray([np.nan if p.interval is None else p.interval[1] for p in c.points])
        (line,) = ax.plot(x, y, marker="o", ms=3, label=label)
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        for peak in c.descents.peaks:
            ax.axvline(peak.x, color=line.get_color(), ls=":", lw=1)
            ax.plot([peak.x], [peak.value], marker="v", ms=9, color=line.get_color(), ls="none")
    if figure.scale == "log":
        ax.set_xscale("log")
        xs = sorted({p.x for c in curves for p in c.points})
        if len(xs) <= 12:  # a sweep's own values as ticks (8, 16, 32), not powers of ten
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
    ax.set_xlabel(figure.axis.x_label + (" (log scale)" if figure.scale == "log" else ""))
    unit = f" ({figure.unit})" if figure.unit else ""
    ax.set_ylabel(f"{figure.metric}{unit}")
    ax.set_title(
        f"{figure.metric} against {figure.axis.x_label}: mean over seeds, 95% t-band; peaks marked",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # the legend sits below
    plt.close(fig)
    return buf.getvalue()
