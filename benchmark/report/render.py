"""Write a results directory's leaderboard as Markdown, CSV and a self-contained HTML page
(plots embedded as base64 PNG, no external files)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark import store
from benchmark.fileio import atomic_write_text
from benchmark.measure.environment import describe_regime
from benchmark.records import RunRecord
from benchmark.report.curves import AxisFigure, build_curves, curves_frame, curves_json
from benchmark.report.leaderboard import (
    Cell,
    Row,
    Table,
    build_leaderboard,
    format_cell,
    grid_order,
    regime_counts,
)
from benchmark.report.plots import PLOTS, axis_curves


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _code_line(records: list[RunRecord]) -> str:
    """Which commit(s) the records come from and whether the tree was clean:
    "one clean commit <sha>" or "records from N commits ..." with the dirty runs counted."""
    commits: dict[str, int] = {}
    for r in records:
        sha = r.environment.get("git_commit")
        if sha:
            commits[str(sha)[:10]] = commits.get(str(sha)[:10], 0) + 1
    missing = sum(1 for r in records if not r.environment.get("git_commit"))
    dirty = sum(1 for r in records if r.environment.get("git_dirty") is True)
    unknown = sum(1 for r in records if r.environment.get("git_dirty") is None)
    if not commits:
        return "Code: no git commit recorded."
    tree = []
    if dirty:
        tree.append(f"{_plural(dirty, 'run')} from a tree with uncommitted changes (dirty)")
    if unknown:
        tree.append(f"clean state not recorded for {_plural(unknown, 'run')}")
    if missing:
        tree.append(f"no commit recorded for {_plural(missing, 'run')}")
    if len(commits) == 1:
        (sha,) = commits
        if not tree:
            return f"Code: one clean commit {sha} (all {_plural(len(records), 'run')})."
        return f"Code: one commit {sha}; {'; '.join(tree)}."
    listed = ", ".join(
        f"{sha} ({_plural(n, 'run')})"
        for sha, n in sorted(commits.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    state = "; ".join(tree) if tree else "every tree clean"
    return f"Code: records from {len(commits)} commits: {listed}; {state}."


def _regime_line(records: list[RunRecord]) -> str:
    """The timing regime(s) of the records, each described without naming cores (runs
    pinned to different cores share a regime; the line says how many cores each had)."""
    counts = regime_counts(records)
    if len(counts) == 1:
        ((desc, n),) = counts.items()
        if desc == describe_regime({}):
            return f"Timing regime: not recorded [all {_plural(n, 'run')}]; timings read n/a."
        return f"Timing regime: {desc} [all {_plural(n, 'run')}]."
    listed = "; ".join(
        f"{d} [{_plural(n, 'run')}]" for d, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )
    return (
        f"Timing regimes ({len(counts)}): {listed}. Timings compare only within a table "
        "whose runs share one."
    )


def _superseded_line(superseded: int) -> str | None:
    if not superseded:
        return None
    return (
        f"{_plural(superseded, 'older record')} (superseded by newer code or a newer run "
        "of the same configuration) left out."
    )


def _unreadable_line(unreadable: Sequence[tuple[Path, str]]) -> str | None:
    if not unreadable:
        return None
    shown = "; ".join(f"{p.name} ({why})" for p, why in unreadable[:3])
    more = f"; and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
    return (
        f"{_plural(len(unreadable), 'record file')} could not be read and "
        f"{'is' if len(unreadable) == 1 else 'are'} not in this report: {shown}{more}."
    )


def _harness_line(records: list[RunRecord]) -> str | None:
    """What the harness itself cost per run (process start, imports, environment capture,
    the record's way back), so that a slower harness shows up in every report."""
    values = sorted(r.harness_overhead_s for r in records if r.harness_overhead_s is not None)
    if not values:
        return None
    launchers = sorted({str(r.harness.get("launcher")) for r in records if r.harness})
    return (
        f"Harness overhead per run: median {statistics.median(values):.2f} s, max "
        f"{values[-1]:.2f} s (n={len(values)}; {', '.join(launchers)})."
    )


def _header_lines(
    records: list[RunRecord],
    superseded: int = 0,
    unreadable: Sequence[tuple[Path, str]] = (),
) -> list[str]:
    suites = sorted({r.spec.suite for r in records})
    devices = sorted(
        {str(r.environment.get("device_name")) for r in records if r.environment.get("device_name")}
    )
    torch_versions = sorted(
        {str(r.environment.get("torch")) for r in records if r.environment.get("torch")}
    )
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    lines = [
        f"Suite: {', '.join(suites) or '-'}. Runs: {len(records)} "
        f"({', '.join(f'{n} {s}' for s, n in sorted(by_status.items()))}). "
        f"Written {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
    ]
    for left_out in (_superseded_line(superseded), _unreadable_line(unreadable)):
        if left_out:
            lines.append(left_out)
    return [
        *lines,
        f"Devices: {', '.join(devices) or '-'}. torch: {', '.join(torch_versions) or '-'}.",
        _code_line(records),
        _regime_line(records),
        *filter(None, [_harness_line(records)]),
    ]


def _timing_line(table: Table) -> str | None:
    if not table.timing_columns:
        return None
    cols = ", ".join(table.timing_columns)
    if table.timing_note:
        return (
            f"Timing columns ({cols}): n/a, {table.timing_note}; not compared, not used for "
            "ranking or tie-breaking."
        )
    return f"Timing columns ({cols}) compare: every run in one regime, {table.regime}."


def _columns(table: Table) -> list[str]:
    verdict = [table.verdict_column] if table.verdict_column else []
    tuning = ["grid points", "chosen on"] if table.collapsed else []
    return tuning + verdict + [_header(table, c) for c in table.columns]


def _header(table: Table, column: str) -> str:
    """A metric's header with the one unit its whole column is printed in."""
    unit = table.unit_label(column)
    return f"{column} ({unit})" if unit else column


def _chosen_on(table: Table, row: Row) -> str:
    """The metric a ranked row was chosen on over its variant's grid: "-" without a grid,
    "- (every point ranked)" for a grid whose points all stand in the table (older records
    that do not say what was tuned)."""
    if row.grid_points <= 1:
        return "-"
    variant = next((v for v in table.variants if any(p is row for p in v.points)), None)
    if variant is None or not variant.collapsed:
        return "- (every point ranked)"
    if variant.on_validation:
        return variant.selected_on
    return f"{variant.selected_on} (test: no validation figure)"


def _seeds(row: Row) -> str:
    """Seeds with an ok run, "2/3" where the configuration ran more (the others failed)."""
    ok = len(row.seeds)
    return f"{ok}/{row.seeds_run}" if row.seeds_run > ok else str(ok)


def _row_cells(table: Table) -> list[list[str]]:
    out = []
    scales = {c: table.scale(c) for c in table.columns}  # one unit per column
    for row in table.rows:
        cells = [
            format_cell(row.cells[c], table.units.get(c, ""), scales[c]) for c in table.columns
        ]
        verdict = [row.verdict or "n/a"] if table.verdict_column else []
        tuning = [str(row.grid_points), _chosen_on(table, row)] if table.collapsed else []
        out.append(
            [
                row.rank_label,
                row.method,
                row.hparams,
                row.device,
                _seeds(row),
                *tuning,
                *verdict,
                *cells,
            ]
        )
    return out


def _row_label(row: Row) -> str:
    return f"{row.method} [{row.hparams}]"


def _null_notes(table: Table) -> list[str]:
    """Why a figure is n/a where its peers in the table have one, and which means cover
    only some seeds (the others null): such a mean is not a mean over every seed, e.g.
    steps to target over the seeds that reached it.

    A column no row reports is not in the table (``Table.dropped``): it gets one line,
    and only where the records say why. The n/a cells of a shown column are grouped, one
    line per reason and set of rows (the columns they share it for listed together), so
    six methods without p-values make one line, not twelve."""
    notes = [
        f"{c}: no row has a value (n/a because {why}); column left out"
        for c, why in table.dropped.items()
        if why
    ]
    partial = []
    for row in table.rows:
        cells = [(c, row.cells[c]) for c in table.columns]
        if row.validation is not None:
            cells.append((table.validation_metric, row.validation))
        for c, cell in cells:
            if cell.partial:
                partial.append(
                    f"{_row_label(row)} {c}: mean over {cell.n} of {cell.runs} "
                    f"seeds, the only ones with a value (null in the others: {cell.reason}); "
                    "not comparable with a mean over every seed"
                )
    return notes + _grouped_nulls(table) + partial


def _grouped_nulls(table: Table) -> list[str]:
    """One line per (reason, rows): "cols: n/a for rows because reason"; withheld
    figures (timings across regimes, ``Cell.note``) are said by ``_timing_line``."""
    by_column: dict[tuple[str, str], list[str]] = {}  # (column, reason) -> row labels
    for c in table.columns:
        for row in table.rows:
            cell = row.cells[c]
            if cell.mean is None and cell.note is None:
                by_column.setdefault((c, cell.reason or "not reported"), []).append(_row_label(row))
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (c, why), rows in by_column.items():
        groups.setdefault((why, tuple(rows)), []).append(c)
    return [
        f"{', '.join(cols)}: n/a for {', '.join(rows)} because {why}"
        for (why, rows), cols in groups.items()
    ]


METHOD_NOTE_KEYS = ("note", "arithmetic")


def _method_notes(table: Table) -> list[str]:
    """What a method says about its own figures (``info.method.note`` / ``.arithmetic`` in
    its records, e.g. "integer arithmetic simulated in float"), once per ranked row."""
    notes = []
    for row in table.rows:
        said = {
            f"{key}: {r.info['method'][key]}"
            for r in row.records
            if isinstance(r.info.get("method"), dict)
            for key in METHOD_NOTE_KEYS
            if r.info["method"].get(key)
        }
        notes += [f"{row.method} [{row.hparams}] {text}" for text in sorted(said)]
    return notes


def _tuning_lines(table: Table) -> list[tuple[str, list[str]]]:
    """For variants run on a grid: (heading, lines) naming each winner, the metric it was
    chosen on, its rank, the grid's size, and a warning when the winner sits on the edge of
    a numeric axis (the grid may not bracket the optimum, so the method may be
    under-tuned). Declared grids (``RunSpec.tuned``) and inferred ones (older records:
    categorical hyperparameters name a variant, numeric ones are read as grid axes) get
    a heading each."""
    sections = []
    for declared, heading in (
        (True, "Tuning (each variant's winner over the hyperparameters its suite tuned):"),
        (
            False,
            "Tuning, inferred (the records do not say which hyperparameters were tuned: "
            "categorical ones name a variant, numeric ones are read as grid axes; every "
            "point is ranked above as its own row):",
        ),
    ):
        lines = []
        for v in table.variants:
            if v.declared != declared or v.tried < 2 or v.winner is None:
                continue
            w = v.winner
            failed = v.tried - len(v.points)
            size = f"best of {_plural(v.tried, 'grid point')}"
            if failed:
                size += f", {failed} not ok"
            edge = f"; EDGE: {', '.join(v.edges)}, widen the grid" if v.edges else ""
            lines.append(
                f"{v.label}: {w.hparams} (rank {w.rank_label}; {size}; {v.selection_note}{edge})"
            )
        if lines:
            sections.append((heading, lines))
    return sections


def _points_head(table: Table) -> list[str]:
    unit = table.unit_label(table.primary)
    vunit = table.unit_label(table.validation_metric) or unit
    return [
        "variant",
        "hparams",
        "device",
        "seeds",
        f"{table.primary} (test{', ' + unit if unit else ''})",
        f"{table.validation_metric} (validation{', ' + vunit if vunit else ''})",
        "chosen",
    ]


def _points_cells(table: Table) -> list[list[str]]:
    """Every configuration of the variants whose grid points were folded into one ranked
    row, unranked, with its test and validation figures."""
    out = []
    unit = table.units.get(table.primary, "")
    vunit = table.units.get(table.validation_metric, unit)
    scale, vscale = table.scale(table.primary), table.scale(table.validation_metric)
    for v in table.variants:
        if not v.collapsed:
            continue
        for row in sorted(v.points, key=lambda r: grid_order(r, v.axes)):
            val = (
                format_cell(row.validation, vunit, vscale) if row.validation is not None else "n/a"
            )
            chosen = [f"winner (rank {row.rank_label})"] if row.winner else []
            if row.incomplete:
                chosen.append(f"incomplete ({row.incomplete}), not preferred")
            out.append(
                [
                    v.label,
                    row.hparams,
                    row.device,
                    _seeds(row),
                    format_cell(row.cells[table.primary], unit, scale),
                    val,
                    "; ".join(chosen),
                ]
            )
        for hparams, statuses in sorted(v.failed.items()):
            out.append([v.label, hparams, "", "", f"not ok: {statuses}", "", ""])
    return out


def md_cell(text: object) -> str:
    """A Markdown table cell that stays one cell: hyperparameter values, failure reasons
    and plugin-declared names are user text, and a ``|`` or a newline in them would split
    the row or start a new one, raw HTML would render. Escaped, never interpreted."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|")
    out = out.replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace("](", "]\\(")  # no link or image: `[x](url)`, `![x](url)`
    return " ".join(out.splitlines())


def md_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"


# Spreadsheet programs evaluate a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula get a leading ``'`` (OWASP's
    advice); counts stay whole numbers (nullable) when failure rows leave gaps."""
    out = frame.copy()

    def neutral(v: object) -> object:
        risky = isinstance(v, str) and v.lstrip(" ").startswith(_FORMULA_START) and v != "-"
        return f"'{v}" if risky else v

    for col in out.columns:
        # rank_label is ours ("=1": tied with row 1), never user text: left as written.
        text = out[col].dtype == object or pd.api.types.is_string_dtype(out[col])
        if text and col != "rank_label":
            out[col] = out[col].map(neutral)
        count = col in ("rank", "seeds", "seeds_run", "grid_points") or col.endswith(
            ("__n", "__runs")
        )
        whole = pd.api.types.is_float_dtype(out[col]) and (out[col].dropna() % 1 == 0).all()
        if count and whole:
            out[col] = out[col].astype("Int64")
    return out


POINTS_HEADING = (
    "All grid points (unranked: every configuration tried, with its test and validation "
    "figures; the ranked table shows each variant's winner):"
)


CURVES_HEADING = "Curves and descents"
CURVES_NOTE = (
    "Each curve is one configuration: the mean over seeds at each x with a Student-t 95% "
    "interval (two or more seeds; one seed: no band). A peak is real when both its rise "
    "from a point before it (since the previous real peak) and its fall to a point after "
    "it (before the curve climbs higher) exceed the two points' combined half-widths; "
    "n real peaks make an (n+1)-fold descent: one peak is double descent, two triple. "
    "Per-x figures: curves.csv and curves.json."
)
CURVES_HEAD = ["curve", "points", "seeds", "n_peaks", "peaks at (x: mean)", "descent"]


def _curve_cells(figure: AxisFigure) -> list[list[str]]:
    """One row per curve of a figure: its configuration, points, seeds per point, real
    peaks with their x and mean, and the descent type (or why it was not judged)."""
    rows = []
    for c in figure.curves:
        peaks = "; ".join(f"{p.x:g}: {p.value:.4g}" for p in c.descents.peaks) or "-"
        kind = c.descents.descent_type
        if not c.descents.judged:
            kind += f" ({c.descents.reason})"
        if c.left_out:
            kind += f"; {_plural(c.left_out, 'run')} left out (not ok or no {figure.metric})"
        rows.append(
            [c.configuration, str(len(c.points)), c.seeds, str(c.descents.n_peaks), peaks, kind]
        )
    return rows


def _figure_heading(figure: AxisFigure) -> str:
    return f"{figure.title}, x {figure.scale}"


def render_markdown(
    records: list[RunRecord],
    tables: list[Table],
    superseded: int = 0,
    unreadable: Sequence[tuple[Path, str]] = (),
    figures: Sequence[AxisFigure] = (),
) -> str:
    """``superseded``: how many older records (``store.current_records``) were left out;
    ``unreadable``: record files that could not be read, with why; ``figures``: the
    suite's axes (``curves.build_curves``), listed after the tables."""
    header = [md_cell(line) for line in _header_lines(records, superseded, unreadable)]
    lines = ["# Leaderboard", "", *header, ""]
    for t in tables:
        lines += [f"## {md_cell(t.title)}", "", f"_{t.ranking_note}._", ""]  # the note is ours
        timing = _timing_line(t)
        if timing:
            lines += [timing, ""]
        head = ["#", "method", "hparams", "device", "seeds", *_columns(t)]
        lines.append(md_row(head))
        lines.append("|" + "---|" * len(head))
        lines += [md_row(cells) for cells in _row_cells(t)]
        for f in t.failures:
            lines.append(
                f"| - | {md_cell(f.label)} | **{md_cell(f.status)}** | {md_cell(f.reason or '')} |"
            )
        for heading, tuning in _tuning_lines(t):
            lines += ["", heading, *[f"- {md_cell(x)}" for x in tuning]]
        points = _points_cells(t)
        if points:
            phead = _points_head(t)
            lines += ["", POINTS_HEADING, "", md_row(phead)]
            lines.append("|" + "---|" * len(phead))
            lines += [md_row(cells) for cells in points]
        notes = _null_notes(t) + _method_notes(t)
        if notes:
            lines += ["", *[f"- {md_cell(n)}" for n in notes]]
        lines.append("")
    if figures:
        lines += [f"## {CURVES_HEADING}", "", f"_{CURVES_NOTE}_", ""]
    for f in figures:
        lines += [f"### {md_cell(_figure_heading(f))}", "", md_row(CURVES_HEAD)]
        lines.append("|" + "---|" * len(CURVES_HEAD))
        lines += [md_row(cells) for cells in _curve_cells(f)]
        if f.notes:
            lines += ["", *[f"- {md_cell(n)}" for n in f.notes]]
        lines.append("")
    return "\n".join(lines)


def _cell_fields(prefix: str, cell: Cell | None, unit: str | None) -> dict[str, object]:
    cell = cell or Cell(None, None, 0, "not reported")
    return {
        prefix: cell.mean,
        f"{prefix}__ci_low": cell.ci[0] if cell.ci else None,
        f"{prefix}__ci_high": cell.ci[1] if cell.ci else None,
        f"{prefix}__ci_source": cell.ci_source if cell.ci else None,
        f"{prefix}__n": cell.n,
        f"{prefix}__runs": cell.runs,
        f"{prefix}__std": cell.std,
        f"{prefix}__unit": unit,
        f"{prefix}__reason": cell.reason if cell.mean is None else None,
    }


def _declared_columns(table: Table) -> list[str]:
    """Every column of the table's kind, in the kind's order, those the Markdown leaves
    out because no row reports them (``Table.dropped``) included: a tool reading the CSV
    gets the same columns whatever the data, and each null's ``__reason``."""
    every = [c for row in (table.points or table.rows) for c in row.cells]
    return list(dict.fromkeys([*every, *table.columns, *table.dropped]))


def render_csv(tables: list[Table]) -> pd.DataFrame:
    """One row per configuration: the ranked rows in order, then the grid points folded
    into their variant's winner (``ranked`` False, no rank), then the runs that did not
    finish. Each metric has its mean, 95% interval bounds and source, n, std, unit and
    the reason for a null; every column the kind declares is there (``_declared_columns``),
    even one the Markdown drops because no row reports it."""
    rows = []
    for t in tables:
        timing = t.timing_note or (f"one regime: {t.regime}" if t.regime else None)
        ranked = [r for r in t.rows]
        folded = [r for r in t.points if not r.ranked]
        for row in ranked + folded:
            entry: dict[str, object] = {
                "kind": t.kind,
                "workload": t.workload,
                "rank": row.rank if row.ranked else None,
                "rank_label": row.rank_label if row.ranked else None,
                "tied": row.tied if row.ranked else None,
                "ranked": row.ranked,
                "method": row.method,
                "hparams": row.hparams,
                "device": row.device,
                "seeds": len(row.seeds),
                "seeds_run": row.seeds_run,
                "incomplete": row.incomplete,
                "variant": row.variant,
                "grid_points": row.grid_points,
                "winner": row.winner,
                "selected_on": row.selected_on,
                "primary": t.primary,
                "timing_regime": timing,
            }
            if t.verdict_column:
                entry[t.verdict_column] = row.verdict
            for c in _declared_columns(t):
                entry.update(_cell_fields(c, row.cells.get(c), t.units.get(c)))
            if t.primary:  # an unranked table (kind unknown) has no headline to validate
                entry.update(
                    _cell_fields(
                        t.validation_metric, row.validation, t.units.get(t.validation_metric)
                    )
                )
            rows.append(entry)
        for f in t.failures:
            rows.append(
                {
                    "kind": t.kind,
                    "workload": t.workload,
                    "rank": None,
                    "method": f.label,
                    "status": f.status,
                    "reason": f.reason,
                }
            )
    return csv_safe(pd.DataFrame(rows))


def render_html(
    records: list[RunRecord],
    tables: list[Table],
    superseded: int = 0,
    unreadable: Sequence[tuple[Path, str]] = (),
    figures: Sequence[AxisFigure] = (),
) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>methodbench leaderboard</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:nth-child(2),td:nth-child(3){text-align:left}.bad{color:#a00}"
        "img{max-width:100%}</style></head><body><h1>methodbench leaderboard</h1>",
        *[f"<p>{esc(line)}</p>" for line in _header_lines(records, superseded, unreadable)],
    ]
    for t in tables:
        parts.append(f"<h2>{esc(t.title)}</h2><p><em>{esc(t.ranking_note)}</em></p>")
        timing = _timing_line(t)
        if timing:
            parts.append(f"<p>{esc(timing)}</p>")
        parts.append("<table>")
        head = ["#", "method", "hparams", "device", "seeds", *_columns(t)]
        parts.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
        for cells in _row_cells(t):
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        for f in t.failures:
            parts.append(
                f"<tr class='bad'><td>-</td><td colspan='{len(head) - 1}'>"
                f"{esc(f.label)}: <b>{esc(f.status)}</b> {esc(f.reason or '')}</td></tr>"
            )
        parts.append("</table>")
        for heading, tuning in _tuning_lines(t):
            parts.append(
                f"<p>{esc(heading)}</p><ul>"
                + "".join(f"<li>{esc(x)}</li>" for x in tuning)
                + "</ul>"
            )
        points = _points_cells(t)
        if points:
            parts.append(f"<p>{esc(POINTS_HEADING)}</p><table>")
            parts.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in _points_head(t)) + "</tr>")
            for cells in points:
                parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
            parts.append("</table>")
        notes = _null_notes(t) + _method_notes(t)
        if notes:
            parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
        plot = PLOTS.get(t.kind)
        png = plot(t) if plot else None
        if png:
            data = base64.b64encode(png).decode()
            parts.append(f"<img alt='{esc(t.title)}' src=\"data:image/png;base64,{data}\">")
    if figures:
        parts.append(f"<h2>{esc(CURVES_HEADING)}</h2><p><em>{esc(CURVES_NOTE)}</em></p>")
    for f in figures:
        parts.append(f"<h3>{esc(_figure_heading(f))}</h3><table>")
        parts.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in CURVES_HEAD) + "</tr>")
        for cells in _curve_cells(f):
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        if f.notes:
            parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in f.notes) + "</ul>")
        png = axis_curves(f)
        if png:
            data = base64.b64encode(png).decode()
            parts.append(
                f"<img class='axis-curve' alt='{esc(f.title)}' "
                f'src="data:image/png;base64,{data}">'
            )
    parts.append("</body></html>")
    return "\n".join(parts)


@dataclass
class Report:
    """A results directory's current records and what the reports are made of."""

    records: list[RunRecord]
    tables: list[Table]
    superseded: int
    unreadable: Sequence[tuple[Path, str]]
    figures: Sequence[AxisFigure]

    def write(self, out: Path | str) -> dict[str, Path]:
        """LEADERBOARD.md, leaderboard.csv, report.html (and the curves, where some record
        has an axis) in ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": out / "LEADERBOARD.md",
            "csv": out / "leaderboard.csv",
            "html": out / "report.html",
        }
        left = (self.records, self.tables, self.superseded, self.unreadable, self.figures)
        atomic_write_text(paths["markdown"], render_markdown(*left))
        atomic_write_text(paths["csv"], render_csv(self.tables).to_csv(index=False))
        atomic_write_text(paths["html"], render_html(*left))
        if self.figures:  # only suites with an axis have curves
            paths["curves_json"] = out / "curves.json"
            paths["curves_csv"] = out / "curves.csv"
            text = json.dumps(curves_json(self.figures), indent=2)
            atomic_write_text(paths["curves_json"], text)
            frame = csv_safe(curves_frame(self.figures))
            atomic_write_text(paths["curves_csv"], frame.to_csv(index=False))
        return paths


def load_report(results_dir: Path | str) -> Report:
    """The current records of ``results_dir`` (superseded ones counted, unreadable ones
    named) with their leaderboard tables and curves."""
    everything, unreadable = store.read_records(results_dir)
    records, superseded = store.current_records(everything)
    return Report(
        records, build_leaderboard(records), len(superseded), unreadable, build_curves(records)
    )


def write_reports(results_dir: Path | str, out_dir: Path | str | None = None) -> dict[str, Path]:
    return load_report(results_dir).write(out_dir or results_dir)
