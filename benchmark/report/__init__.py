"""Leaderboards and regression verdicts from a results directory."""

from benchmark.report.leaderboard import Table, build_leaderboard
from benchmark.report.render import write_reports

__all__ = ["Table", "build_leaderboard", "write_reports"]
