"""The leaderboard as a terminal reads it: one compact rich table per leaderboard table,
printed at the end of ``bench run`` and by ``bench leaderboard``.

The Markdown (``render.render_markdown``) has every column, every interval and every
note, and is written to ``LEADERBOARD.md``; printed whole it wrapped into an unreadable
wall in a terminal. The summary keeps what decides a ranking: the rank, the method (its
hyperparameters beneath), the primary metric with its 95% interval, the verdict where the
kind has one, and as many further figures (means only, in the column's one unit) as fit
the console's width: first the kind's tie-breaks, then its columns in the kind's order.

The widths are reckoned here, never left to rich (which cuts the last column of a row
too wide): rank, method name and verdict first; where the room is short the method's
hyperparameters wrap narrower, then the primary drops its interval (a line says so);
a verdict and a method's name are never cut at 50 columns and more.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table as RichTable
from rich.text import Text

from benchmark.report.leaderboard import Row, Table, format_cell, format_value

#: Further figures shown at most, however wide the terminal: a summary, not the table.
MAX_EXTRA_COLUMNS = 4
#: The widest the method column grows for its hyperparameters (they wrap beyond it).
HPARAMS_WIDTH = 28
_PAD = 3  # the gap between two columns (padding, separator, padding) in SIMPLE_HEAD


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
    """The width a column takes, without padding: its longest header line (as
    ``_wrap_name`` wrapped it) or cell."""
    lines = [len(line) for line in header.splitlines()]
    return max([*lines, *(len(c) for c in cells)], default=0)


def _wrap_name(name: str, room: int, breaks: str = "_ ") -> str:
    """``name`` on lines of at most ``room`` characters, broken after ``breaks``
    (``attack_recovered_ratio`` reads ``attack_`` / ``recovered_`` / ``ratio``); a piece
    longer than ``room`` stays whole (the method column gives way)."""
    lines: list[str] = []
    for piece in re.findall(rf"[^{breaks}]+[{breaks}]*|[{breaks}]+", name):
        if lines and len(lines[-1]) + len(piece.rstrip()) <= room:
            lines[-1] += piece
        else:
            lines.append(piece)
    return "\n".join(line.rstrip() for line in lines)


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


@dataclass(frozen=True)
class _Primary:
    """How the primary column is printed at one width."""

    header: str  # wrapped after underscores where the room asks for it
    cells: list[str]
    interval: bool  # False: the means alone, the intervals left out for room
    method: int  # the room left for the method column


def _primary(table: Table, room: int, names: int) -> _Primary:
    """The primary with its interval where the method's longest name still fits beside
    it in ``room`` (the width less the rank, the verdict and the gaps), else its means
    alone; its header wraps after underscores to the room the names leave it."""
    unit, scale = table.units.get(table.primary, ""), table.scale(table.primary)
    cells = [row.cells[table.primary] for row in table.rows]
    full = [format_cell(c, unit, scale) for c in cells]
    bare = [format_value(c.mean, unit, scale, suffix=False) for c in cells]
    header = _header(table, table.primary)
    for interval, shown in ((True, full), (False, bare)):
        cell = max((len(c) for c in shown), default=0)
        head = _wrap_name(header, max(cell, room - _PAD - names))
        if not interval and _width(head, shown) + _PAD + names > room:
            # Still short: the header folds inside its pieces before a method's name does
            # (the title above names the primary whole).
            head = _fold(head, max(cell, room - _PAD - names, 4))
        wide = _width(head, shown)
        if wide + _PAD + names <= room or not interval:
            return _Primary(head, shown, interval, max(room - _PAD - wide, 1))
    raise AssertionError("unreachable: the means alone are always returned")


def _fold(text: str, room: int) -> str:
    """Each line of ``text`` cut into pieces of at most ``room`` characters."""
    return "\n".join(
        line[i : i + room] for line in text.splitlines() for i in range(0, len(line), room)
    )


def summary_table(table: Table, width: int) -> Group:
    """One leaderboard table in at most ``width`` columns: its title; the rank, the method
    (its hyperparameters wrapped beneath it, at most ``HPARAMS_WIDTH`` wide), the primary
    with its interval and the verdict, then further figures while they fit; the runs
    that were not ok. Where the room is short the method column narrows first (down to
    its longest name), then the primary loses its interval (said beneath the table);
    the verdict is never cut. Title and caption wrap at ``width``, not at the table's."""
    ranks = [row.rank_label for row in table.rows]
    verdicts = [row.verdict or "n/a" for row in table.rows] if table.verdict_column else []
    names = max([len(row.method) for row in table.rows] + [len("method")])
    hparams = [len(_hparams(row)) for row in table.rows if row.hparams != "defaults"]
    wanted = max(names, min(max(hparams, default=0), HPARAMS_WIDTH))
    fixed = _width("#", ranks) + _PAD
    verdict = _wrap_name(table.verdict_column or "", _width("", verdicts), breaks=" ")
    if table.verdict_column:
        fixed += _width(verdict, verdicts) + _PAD
    primary = _primary(table, width - fixed, names)
    method = min(wanted, primary.method)
    used = fixed + method + _PAD + _width(primary.header, primary.cells)
    columns: list[tuple[str, list[str]]] = []
    for shown, c in enumerate(_extras(table) if primary.interval else []):
        unit, scale = table.units.get(c, ""), table.scale(c)
        cells = [format_value(row.cells[c].mean, unit, scale, suffix=False) for row in table.rows]
        # Headers wrap at spaces only: "latency_per_sample (ms)" over four lines is unread.
        header = _wrap_name(_header(table, c), _width("", cells), breaks=" ")
        if shown == MAX_EXTRA_COLUMNS or used + _PAD + _width(header, cells) > width:
            break
        columns.append((header, cells))
        used += _PAD + _width(header, cells)
    out = RichTable(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    out.add_column("#", justify="right", no_wrap=True)
    out.add_column("method", width=method, overflow="fold")
    # Every header is wrapped here, to the widths reckoned above: rich never widens one.
    out.add_column(primary.header, no_wrap=True)
    if table.verdict_column:
        out.add_column(verdict, no_wrap=True)
    for header, _ in columns:
        out.add_column(header, justify="right", no_wrap=True)
    for i, row in enumerate(table.rows):
        # Labels, hyperparameters and figures are text, never rich markup ("[lr=0.1]").
        out.add_row(
            Text(ranks[i]),
            _method(row),
            Text(primary.cells[i]),
            *([Text(verdicts[i])] if verdicts else []),
            *(Text(cells[i]) for _, cells in columns),
        )
    direction = "higher" if table.higher_is_better else "lower"
    parts: list[RenderableType] = [
        Text(f"{table.title}: ranked by {table.primary} ({direction} is better)"),
        Text(),
        out,
    ]
    if not primary.interval:
        parts.append(
            Text(f"{table.primary}: means only (no room for the 95% intervals)", style="dim")
        )
    if table.failures:
        failed = ", ".join(f"{f.label} ({f.status})" for f in table.failures)
        parts.append(Text(f"not ok: {failed}"))
    return Group(*parts)


def print_summary(console: Console, tables: Sequence[Table], markdown: str | None = None) -> None:
    """Every ranked table's summary at the console's width, then where the full one is.

    A table whose kind is unknown (``Table.unranked``) is in the files, listed in name
    order; the summary is a ranking, so it leaves such a table out."""
    for table in (t for t in tables if t.unranked is None):
        # Wrapped at the console's width even where the console soft-wraps text (bench's).
        console.print(summary_table(table, console.width), soft_wrap=False)
        console.print(soft_wrap=False)
    if markdown:
        console.print(
            Text(f"every column, interval and note: {markdown}", style="dim"), soft_wrap=False
        )
