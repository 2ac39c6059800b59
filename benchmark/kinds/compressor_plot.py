"""The compressor kind's plot: quality after compression against the fraction of
parameters kept, one point per ranked row with its 95% interval. Imported only when a
report draws (matplotlib); the kind's definition never imports it."""

from __future__ import annotations

from benchmark.report.leaderboard import Table
from benchmark.report.plots import scatter


def compressor_scatter(table: Table) -> bytes | None:
    return scatter(
        table,
        "params_kept_ratio",
        "quality_after",
        "parameters kept (fraction)",
        "quality after compression",
    )
