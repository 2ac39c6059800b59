"""Write a results directory's leaderboard as Markdown, CSV and a self-contained HTML page
(plots embedded as base64 PNG, no external files)."""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path

import pandas as pd

from benchmark import store
from benchmark.fileio import atomic_write_text
from benchmark.records import RunRecord
from benchmark.report.leaderboard import Row, Table, build_leaderboard, format_cell
from benchmark.report.plots import PLOTS


def _header_lines(records: list[RunRecord]) -> list[str]:
    suites = sorted({r.spec.suite for r in records})
    devices = sorted(
        {str(r.environment.get("device_name")) for r in records if r.environment.get("device_name")}
    )
    torch_versions = sorted(
        {str(r.environment.get("torch")) for r in records if r.environment.get("torch")}
    )
    commits = sorted(
        {
            str(r.environment.get("git_commit"))[:10]
            for r in records
            if r.environment.get("git_commit")
        }
    )
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    return [
        f"Suite: {', '.join(suites) or '-'}. Runs: {len(records)} "
        f"({', '.join(f'{n} {s}' for s, n in sorted(by_status.items()))}). "
        f"Written {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        f"Devices: {', '.join(devices) or '-'}. torch: {', '.join(torch_versions) or '-'}. "
        f"git: {', '.join(commits) or '-'}.",
    ]


def _columns(table: Table) -> list[str]:
    verdict = [table.verdict_column] if table.verdict_column else []
    return verdict + [f"{c} ({table.units[c]})" if c in table.units else c for c in table.columns]


def _row_cells(table: Table) -> list[list[str]]:
    out = []
    for i, row in enumerate(table.rows, 1):
        cells = [format_cell(row.cells[c], table.units.get(c, "")) for c in table.columns]
        verdict = [row.verdict or "n/a"] if table.verdict_column else []
        out.append(
            [str(i), row.method, row.hparams, row.device, str(len(row.seeds)), *verdict, *cells]
        )
    return out


def _null_notes(table: Table) -> list[str]:
    notes = []
    for row in table.rows:
        for c in table.columns:
            cell = row.cells[c]
            if cell.mean is None:
                notes.append(f"{row.method} [{row.hparams}] {c}: n/a because {cell.reason}")
    return notes


def render_markdown(records: list[RunRecord], tables: list[Table]) -> str:
    lines = ["# Leaderboard", "", *_header_lines(records), ""]
    for t in tables:
        lines += [f"## {t.title}", "", f"_{t.ranking_note}._", ""]
        head = ["#", "method", "hparams", "device", "seeds", *_columns(t)]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        lines += ["| " + " | ".join(cells) + " |" for cells in _row_cells(t)]
        for f in t.failures:
            lines.append(f"| - | {f.label} | **{f.status}** | {f.reason or ''} |")
        tuning = _tuning_lines(t)
        if tuning:
            lines += [
                "",
                f"Tuning (each method's best grid point by mean {t.primary}):",
                *[f"- {x}" for x in tuning],
            ]
        notes = _null_notes(t)
        if notes:
            lines += ["", *[f"- {n}" for n in notes]]
        lines.append("")
    return "\n".join(lines)


def _tuning_lines(table: Table) -> list[str]:
    """For methods run on a grid: the winner, its rank overall, the grid's size, and a
    warning when the winner sits on the edge of a numeric axis (the grid may not bracket
    the optimum, so the method may be under-tuned).

    Categorical hyperparameters (strings, booleans) name a *variant* of a method (SUMO with
    Newton-Schulz instead of the SVD), not a point of its grid: each variant gets its own
    winner."""
    rows_by_method: dict[str, list[tuple[int, Row]]] = {}
    for rank, row in enumerate(table.rows, 1):
        hparams = row.records[0].spec.hparams if row.records else {}
        variant = ",".join(
            f"{k}={v}" for k, v in sorted(hparams.items()) if isinstance(v, str | bool)
        )
        label = f"{row.method} [{variant}]" if variant else row.method
        rows_by_method.setdefault(label, []).append((rank, row))
    out = []
    for method, ranked in rows_by_method.items():
        if len(ranked) < 2:
            continue
        best_rank, best = ranked[0]
        spec_hparams = [r.records[0].spec.hparams for _, r in ranked if r.records]
        edges = []
        for key, value in best.records[0].spec.hparams.items() if best.records else []:
            values = {h.get(key) for h in spec_hparams}
            numeric = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if len(numeric) == len(values) > 2 and value in (min(numeric), max(numeric)):
                side = "lowest" if value == min(numeric) else "highest"
                edges.append(f"{key}={value} is the grid's {side}")
        note = f"; EDGE: {', '.join(edges)}, widen the grid" if edges else ""
        out.append(
            f"{method}: {best.hparams} (rank {best_rank}; best of {len(ranked)} grid points{note})"
        )
    return out


def render_csv(tables: list[Table]) -> pd.DataFrame:
    rows = []
    for t in tables:
        for rank, row in enumerate(t.rows, 1):
            entry: dict[str, object] = {
                "kind": t.kind,
                "workload": t.workload,
                "rank": rank,
                "method": row.method,
                "hparams": row.hparams,
                "device": row.device,
                "seeds": len(row.seeds),
                "primary": t.primary,
            }
            if t.verdict_column:
                entry[t.verdict_column] = row.verdict
            for c in t.columns:
                entry[c] = row.cells[c].mean
                entry[f"{c}__std"] = row.cells[c].std
                entry[f"{c}__unit"] = t.units.get(c)
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
    return pd.DataFrame(rows)


def render_html(records: list[RunRecord], tables: list[Table]) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>methodbench leaderboard</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:nth-child(2),td:nth-child(3){text-align:left}.bad{color:#a00}"
        "img{max-width:100%}</style></head><body><h1>methodbench leaderboard</h1>",
        *[f"<p>{esc(line)}</p>" for line in _header_lines(records)],
    ]
    for t in tables:
        parts.append(f"<h2>{esc(t.title)}</h2><p><em>{esc(t.ranking_note)}</em></p><table>")
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
        notes = _null_notes(t)
        if notes:
            parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
        plot = PLOTS.get(t.kind)
        png = plot(t) if plot else None
        if png:
            data = base64.b64encode(png).decode()
            parts.append(f"<img alt='{esc(t.title)}' src=\"data:image/png;base64,{data}\">")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(results_dir: Path | str, out_dir: Path | str | None = None) -> dict[str, Path]:
    records = store.load_records(results_dir)
    tables = build_leaderboard(records)
    out = Path(out_dir or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / "LEADERBOARD.md",
        "csv": out / "leaderboard.csv",
        "html": out / "report.html",
    }
    atomic_write_text(paths["markdown"], render_markdown(records, tables))
    atomic_write_text(paths["csv"], render_csv(tables).to_csv(index=False))
    atomic_write_text(paths["html"], render_html(records, tables))
    return paths
