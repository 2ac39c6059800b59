"""The optimizer kind's plot: each of its step curves (``KIND.step_curves``: training and
evaluation loss per step), one line per ranked row, mean over seeds. The y axis carries
the unit the records' curves carry (nats for a language model, an autoencoder's MSE), not
an assumed one. Imported only when a report draws (matplotlib, through the host's
``plt``, already on the Agg backend); the kind's definition never imports it."""

from __future__ import annotations

from benchmark.kinds.optimizer import KIND
from benchmark.report.leaderboard import Table
from benchmark.report.plots import curve_axis_label, mean_curve, plt, png, row_label

# A curve with at most this many points is drawn with markers (an evaluation every N
# steps), a longer one as a plain line (a per-step training loss).
MARKED_POINTS = 50


def optimizer_curves(table: Table) -> bytes | None:
    keys = [
        k for k in KIND.step_curves if any(mean_curve(row, k) is not None for row in table.rows)
    ]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for row in table.rows:
            curve = mean_curve(row, key)
            if curve is not None:
                marker = "o" if len(curve[0]) <= MARKED_POINTS else None
                ax.plot(*curve, label=row_label(row), marker=marker)
        ax.set_xlabel("step")
        ax.set_ylabel(curve_axis_label(table.rows, key))
        ax.set_title(f"{key.replace('_', ' ')}, mean over seeds")
        ax.legend(fontsize=7)
    return png(fig)
