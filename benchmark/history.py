"""Results over commits: an append-only history per suite, trend plots and change points.

A comparison of two result sets says whether *this* change regressed; a history says
*when* a metric moved, which a slow drift over many small changes hides from every
pairwise comparison. Each ``add`` stores one line per configuration and headline metric:
the commit, whether the tree was clean, the date, the machine (device and timing regime)
and the figure with its interval. A re-run of a commit on the same machine replaces its
lines, so a history holds one point per (commit, machine, configuration, metric).

Only clean commits go in (a dirty tree's figures belong to no commit), and runs that do
not say their commit are left out. Change points: each series (one configuration, metric
and machine, in the order its runs were taken) is cut
by PELT (Killick, Fearnhead & Eckley, JASA 2012, arXiv:1101.1438) from ``ruptures``, with
the L2 cost, segments of at least two commits (one odd point is an outlier, not a step)
and the penalty 6·σ²·ln(n), where σ is the noise level estimated from the series itself:
the median absolute first difference / (0.6745·√2), robust to the steps it looks for. The
factor 6 (three times BIC's) was chosen on simulated Gaussian series; its false-step and
detection rates are in ``docs/REGRESSION_TRACKING.md``. A step is reported at the first
commit of each new segment; a step at the newest commit is not reported until a second
commit confirms it (with one point after it, the two-commit segment would put it one
commit too early). Where the series itself shows no noise (deterministic re-runs), σ is
floored at the figures' own test-set standard error, so a change within that error is no
step. A single outlying commit can still read as two steps around it.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import store
from benchmark.fileio import atomic_write_text
from benchmark.kinds import KIND_INFO
from benchmark.measure.environment import describe_regime
from benchmark.records import RunRecord
from benchmark.report.compare import config_name, config_of


@dataclass(frozen=True)
class Point:
    """One figure of one configuration at one commit on one machine."""

    suite: str
    config: str
    metric: str
    commit: str
    clean: bool
    date: str
    machine: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    seeds: int = 1

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.suite, self.config, self.metric, self.commit, self.machine)


def _file(history_dir: Path, suite: str) -> Path:
    return history_dir / f"{suite}.jsonl"


def points_of(records: Iterable[RunRecord]) -> list[Point]:
    """The headline metric of each configuration, averaged over its ok seeds."""
    groups: dict[tuple[Any, ...], list[RunRecord]] = {}
    for r in records:
        if r.status != "ok":
            continue
        commit = str(r.environment.get("git_commit") or "unknown")
        machine = describe_regime(r.environment)
        groups.setdefault((r.spec.suite, config_of(r), commit, machine), []).append(r)
    out = []
    for (suite, config, commit, machine), runs in groups.items():
        info = KIND_INFO.get(config[0])
        metrics = [info.primary] if info and info.primary else []
        for metric in metrics:
            have = [r.metrics[metric] for r in runs if metric in r.metrics]
            values = [m.value for m in have if m.value is not None]
            if not values:
                continue
            lows = [m.ci_low for m in have if m.ci_low is not None]
            highs = [m.ci_high for m in have if m.ci_high is not None]
            dates = sorted(r.started_at or "" for r in runs)
            out.append(
                Point(
                    suite=suite,
                    config=config_name(config),
                    metric=metric,
                    commit=commit,
                    clean=not any(r.environment.get("git_dirty") for r in runs),
                    date=dates[0],
                    machine=machine,
                    value=statistics.fmean(values),
                    ci_low=statistics.fmean(lows) if len(lows) == len(values) else None,
                    ci_high=statistics.fmean(highs) if len(highs) == len(values) else None,
                    seeds=len(values),
                )
            )
    return out


def load(history_dir: Path) -> list[Point]:
    points = []
    for path in sorted(Path(history_dir).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                points.append(Point(**json.loads(line)))
    return points


def add(history_dir: Path, results_dir: Path) -> int:
    """Append the current records of ``results_dir``; returns how many points it holds now
    for those suites. A point of the same commit, machine, configuration and metric is
    replaced (a re-run), never duplicated."""
    history_dir = Path(history_dir)
    history_dir.mkdir(parents=True, exist_ok=True)
    new = [
        p
        for p in points_of(store.current_records(store.load_records(results_dir))[0])
        if p.clean and p.commit != "unknown"
    ]
    total = 0
    for suite in sorted({p.suite for p in new}):
        path = _file(history_dir, suite)
        old = load_file(path)
        fresh = {p.key: p for p in new if p.suite == suite}
        kept = [p for p in old if p.key not in fresh] + list(fresh.values())
        lines = [json.dumps(p.__dict__, sort_keys=True) for p in kept]
        atomic_write_text(path, "\n".join(lines) + "\n")
        total += len(kept)
    return total


def load_file(path: Path) -> list[Point]:
    if not path.is_file():
        return []
    return [Point(**json.loads(x)) for x in path.read_text().splitlines() if x.strip()]


# --------------------------------------------------------------------------- change points


PENALTY_FACTOR = 6.0


def noise_level(values: list[float]) -> float:
    """σ from the median absolute first difference (a step moves one difference only)."""
    diffs = [abs(b - a) for a, b in itertools.pairwise(values)]
    if not diffs:
        return 0.0
    return statistics.median(diffs) / (0.6745 * math.sqrt(2))


def change_points(values: list[float], floor: float = 0.0) -> list[int]:
    """Indices where a new segment starts (a step happened between i-1 and i); ``floor``:
    the smallest noise level to assume (e.g. the figures' test-set standard error)."""
    import numpy as np
    import ruptures

    n = len(values)
    if n < 3:
        return []
    sigma = max(noise_level(values), floor)
    if sigma == 0:
        scale = max(abs(v) for v in values) or 1.0
        sigma = 1e-9 * scale  # exact repeats: any real change is a step
    penalty = PENALTY_FACTOR * sigma**2 * math.log(n)
    signal = np.asarray(values, dtype=float).reshape(-1, 1)
    ends = ruptures.Pelt(model="l2", min_size=2, jump=1).fit(signal).predict(pen=penalty)
    steps = [e for e in ends if e < n]
    if steps and steps[-1] == n - 2:
        # The last segment holds the last two commits. If the older of the two sits with
        # the segment before, only the newest moved: unconfirmed, not reported yet.
        start = steps[-2] if len(steps) > 1 else 0
        before = statistics.fmean(values[start : n - 2])
        if abs(values[n - 2] - before) < abs(values[n - 1] - values[n - 2]):
            steps.pop()
    return steps


@dataclass
class Series:
    suite: str
    config: str
    metric: str
    machine: str
    points: list[Point]
    steps: list[int]


def series(points: list[Point]) -> list[Series]:
    """One series per (suite, configuration, metric, machine), in date order."""
    grouped: dict[tuple[str, str, str, str], list[Point]] = {}
    for p in points:
        grouped.setdefault((p.suite, p.config, p.metric, p.machine), []).append(p)
    out = []
    for (suite, config, metric, machine), ps in sorted(grouped.items()):
        ps = sorted(ps, key=lambda p: p.date)
        errors = [
            (p.ci_high - p.ci_low) / (2 * 1.959963984540054)
            for p in ps
            if p.ci_low is not None and p.ci_high is not None
        ]
        floor = statistics.fmean(errors) if errors else 0.0
        steps = change_points([p.value for p in ps], floor)
        out.append(Series(suite, config, metric, machine, ps, steps))
    return out


# --------------------------------------------------------------------------- page


def _plot(s: Series) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6))
    xs = list(range(len(s.points)))
    ys = [p.value for p in s.points]
    ax.plot(xs, ys, marker="o", lw=1)
    for i, p in enumerate(s.points):
        if p.ci_low is not None and p.ci_high is not None:
            ax.vlines(i, p.ci_low, p.ci_high, lw=0.8, alpha=0.6)
    for step in s.steps:
        ax.axvline(step - 0.5, color="red", ls="--", lw=1)
    ax.set_xticks(xs, [p.commit[:7] for p in s.points], rotation=45, fontsize=7)
    ax.set_ylabel(s.metric)
    ax.set_title(f"{s.config}", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_page(history_dir: Path, out: Path | None = None) -> Path:
    """``index.html``: per series a trend plot (95% intervals as bars, red dashes at the
    steps found) and the commits where a step happened."""
    history_dir = Path(history_dir)
    all_series = series(load(history_dir))
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>methodbench history</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}</style></head><body>",
        "<h1>History</h1>",
        f"<p>{len(all_series)} series; steps found by PELT (ruptures, L2 cost, penalty "
        "6&sigma;&sup2;ln n, segments of 2 or more commits, &sigma; from the median absolute "
        "first difference).</p>",
    ]
    for s in all_series:
        parts.append(f"<h2>{esc(s.suite)}: {esc(s.config)} &middot; {esc(s.metric)}</h2>")
        parts.append(f"<p>machine: {esc(s.machine)}; {len(s.points)} commits</p>")
        if s.steps:
            moved = ", ".join(
                f"{esc(s.points[i].commit[:10])} ({s.points[i - 1].value:.4g} -> "
                f"{s.points[i].value:.4g})"
                for i in s.steps
            )
            parts.append(f"<p><b>steps at</b>: {moved}</p>")
        parts.append(f"<img alt='{esc(s.config)}' src='data:image/png;base64,{_plot(s)}'>")
    parts.append("</body></html>")
    target = Path(out) if out else history_dir / "index.html"
    atomic_write_text(target, "\n".join(parts))
    return target
