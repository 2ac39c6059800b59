"""The security split kind's plot: the trusted side's share of online FLOPs (the cost)
against the worst attack's recovered ratio (the leak), the kind's verdict threshold
dashed. Imported only when a report draws (matplotlib, through the host's ``plt``, already
on the Agg backend); the kind's definition never imports it."""

from __future__ import annotations

from benchmark.report.leaderboard import Table
from benchmark.report.plots import plt, png, row_label, yerr


def security_scatter(table: Table) -> bytes | None:
    """Trusted FLOP share against the worst attack's recovered ratio: the good corner is
    bottom left. Rows with the verdict's bad label in red, its threshold dashed."""
    points = []
    for row in table.rows:
        x, y = row.cells.get("trusted_flops_share"), row.cells.get("attack_recovered_ratio")
        if x is not None and y is not None and x.mean is not None and y.mean is not None:
            points.append((x.mean, y.mean, row_label(row), row.verdict, yerr(y)))
    if not points:
        return None
    verdict = table.info.verdict
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for px, py, lab, v, err in points:
        exposed = verdict is not None and v == verdict.bad
        ax.scatter([px], [py], color="#c0392b" if exposed else "#2e86c1")
        if err is not None:
            ax.errorbar([px], [py], yerr=err, fmt="none", ecolor="grey", lw=0.8, capsize=2)
        ax.annotate(lab, (px, py), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if verdict is not None:
        ax.axhline(verdict.threshold, ls="--", color="grey", lw=0.8)
        ax.text(0.0, verdict.threshold, f" {verdict.bad} above", fontsize=7, va="bottom")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("trusted share of online FLOPs")
    ax.set_ylabel("attacker's recovered ratio (worst attack)")
    ax.set_title("security vs trusted cost (bottom left is best; bars: 95% intervals)")
    ax.grid(alpha=0.3)
    return png(fig)
