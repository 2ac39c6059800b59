"""The leaderboard as a terminal reads it: one compact rich table per leaderboard table,
printed at the end of ``bench run`` and by ``bench leaderboard``.

The Markdown (``render.render_markdown``) has every column, every interval and every
note, and is written to ``LEADERBOARD.md``; printed whole it wrapped into an unreadable
wall in a terminal. The summary keeps what decides a ranking: the rank, the method (its
hyperparameters beneath), the primary metric with its 95% interval, the verdict where the
kind has one, and as many further figures (means only, in the column's one unit) as fit
the console's width: first the kind's tie-breaks, then its columns in the kind's order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from benchmark.report.leaderboard import Row, Table, format_cell, format_value

#: Further figures shown at most, however wide the terminal: a summary, not the table.
MAX_EXTRA_COLUMNS = 4
#: The widest the method column grows for its hyperparameters (they wrap beyond it).
HPARAMS_WIDTH = 28
_PAD = 3  # a column's padding and separator in the SIMPLE_HEAD box


def _hparams(row: Row) -> str:
    """The hyperparameters with a space after each comma, so they wrap between values."""
    return re.sub(r",(?=\S)", ", ", row.hparams)


def _method(row: Row) -> Text:
    text = Text(row.method)
    if row.hparams != "defaults":
        text.append(f"\n{_hparams(row)}", style="dim")
    return text


def _header(table: Table, column: str) -> str:
    unit = table.unit_label(column)
    return f"{column} ({unit})" if unit and unit not in ("fraction", "AUROC") else column


def _width(header: str, cells: Sequence[str]) -> int:
    """The width a column asks for: its longest header word or cell, plus padding (rich
    wraps headers at spaces)."""
    words = [len(w) for w in header.split()]
    return max([*words, *(len(c) for c in cells)], default=0) + _PAD


def _extras(table: Table) -> list[str]:
    """The columns after the primary, most telling first: the kind's tie-breaks, then its
    other columns in the kind's order; only those some ranked row has a figure for."""
    skip = {table.primary, table.info.verdict.metric if table.info.verdict else ""}
    order = [m for m, _ in table.info.tiebreak] + list(table.columns)
    return [
        c
        for c in dict.fromkeys(order)
        if c in table.columns
        and c not in skip
        and any(row.cells[c].mean is not None for row in table.rows)
    ]


def summary_table(table: Table, width: int) -> RichTable:
    """One leaderboard table in at most ``width`` columns: the rank, the method (its
    hyperparameters wrapped beneath it, at most ``HPARAMS_WIDTH`` wide), the primary with
    its interval and the verdict, never wrapped, then further figures while they fit."""
    unit, scale = table.units.get(table.primary, ""), table.scale(table.primary)
    primary = [format_cell(row.cells[table.primary], unit, scale) for row in table.rows]
    ranks = [row.rank_label for row in table.rows]
    names = max([len(row.method) for row in table.rows] + [len("method")])
    hparams = [len(_hparams(row)) for row in table.rows if row.hparams != "defaults"]
    method_width = max(names, min(max(hparams, default=0), HPARAMS_WIDTH))
    used = _width("#", ranks) + method_width + _PAD
    used += _width(_header(table, table.primary), primary)
    columns: list[tuple[str, list[str]]] = []
    if table.verdict_column:
        verdicts = [row.verdict or "n/a" for row in table.rows]
        columns.append((table.verdict_column, verdicts))
        used += _width(table.verdict_column, verdicts)
    for shown, c in enumerate(_extras(table)):
        unit, scale = table.units.get(c, ""), table.scale(c)
        cells = [format_value(row.cells[c].mean, unit, scale, suffix=False) for row in table.rows]
        if shown == MAX_EXTRA_COLUMNS or used + _width(_header(table, c), cells) > width:
            break
        columns.append((_header(table, c), cells))
        used += _width(_header(table, c), cells)
    direction = "higher" if table.higher_is_better else "lower"
    out = RichTable(
        title=Text(f"{table.title}: ranked by {table.primary} ({direction} is better)"),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title_justify="left",
    )
    out.add_column("#", justify="right", no_wrap=True)
    out.add_column(
        "method", min_width=min(names, width // 3), max_width=method_width, overflow="fold"
    )
    out.add_column(_header(table, table.primary), no_wrap=True)
    for header, _ in columns:
        out.add_column(header, justify="right", no_wrap=True)
    for i, row in enumerate(table.rows):
        # Labels, hyperparameters and figures are text, never rich markup ("[lr=0.1]").
        out.add_row(
            Text(ranks[i]),
            _method(row),
            Text(primary[i]),
            *(Text(cells[i]) for _, cells in columns),
        )
    if table.failures:
        failed = ", ".join(f"{f.label} ({f.status})" for f in table.failures)
        out.caption = Text(f"not ok: {failed}")
        out.caption_justify = "left"
    return out


def print_summary(console: Console, tables: Sequence[Table], markdown: str | None = None) -> None:
    """Every table's summary at the console's width, then where the full one is."""
    for table in tables:
        # Wrapped at the console's width even where the console soft-wraps text (bench's).
        console.print(summary_table(table, console.width), soft_wrap=False)
    if markdown:
        console.print(
            Text(f"every column, interval and note: {markdown}", style="dim"), soft_wrap=False
        )
