"""The detector kind's plot: each ranked row's ROC curve (its first seed's, OOD the
positive class) with its AUROC in the legend. Imported only when a report draws
(matplotlib, through the host's ``plt``, already on the Agg backend); the kind's
definition never imports it."""

from __future__ import annotations

from benchmark.report.leaderboard import Table, format_cell
from benchmark.report.plots import plt, png, row_label


def detector_roc(table: Table) -> bytes | None:
    drawn = False
    fig, ax = plt.subplots(figsize=(5, 5))
    for row in table.rows:
        rec = next((r for r in row.records if "roc" in r.curves), None)
        if rec is None:
            continue
        c = rec.curves["roc"]
        auroc = row.cells.get("auroc")
        tag = f" (AUROC {format_cell(auroc, '')})" if auroc and auroc.mean is not None else ""
        ax.plot(c.x, c.y, label=row_label(row) + tag)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate (ID flagged)")
    ax.set_ylabel("true positive rate (OOD flagged)")
    ax.set_title("ROC, OOD positive (first seed)")
    ax.legend(fontsize=7)
    return png(fig)
