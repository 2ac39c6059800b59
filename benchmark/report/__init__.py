"""Leaderboards and regression verdicts from a results directory."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from benchmark.report.leaderboard import Table, build_leaderboard
from benchmark.report.render import load_report

__all__ = ["Table", "build_leaderboard", "load_kinds", "write_reports"]


def load_kinds(plugins: Sequence[str] = ()) -> list[str]:
    """Discover plugins as ``bench`` does (built-ins, entry points under their allow and
    deny lists, then ``plugins`` by module name), so that the kinds they define rank,
    compare and track their own records in this process. A plugin that fails is reported,
    not raised: the records of every other kind can still be read. Returns one line per
    broken plugin (also issued as a ``UserWarning``)."""
    from benchmark.host import Registry

    registry = Registry(extra_plugins=list(plugins))
    problems = [
        f"plugin {p.name} ({p.source}) skipped: {'; '.join(p.errors)}"
        for p in registry.plugins.values()
        if not p.ok
    ]
    for line in problems:
        warnings.warn(line, stacklevel=2)
    return problems


def write_reports(
    results_dir: Path | str, out_dir: Path | str | None = None, *, plugins: Sequence[str] = ()
) -> dict[str, Path]:
    """LEADERBOARD.md, leaderboard.csv and report.html for ``results_dir`` (in ``out_dir``,
    default ``results_dir``), after loading every plugin (``load_kinds(plugins)``). Records
    of a kind still unknown are listed unranked, and a ``UserWarning`` names the kind."""
    from benchmark.kinds.registered import unregistered, unregistered_note

    load_kinds(plugins)
    report = load_report(results_dir)
    for kind in unregistered(r.spec.kind for r in report.records):
        warnings.warn(unregistered_note(kind), stacklevel=2)
    return report.write(out_dir or results_dir)
