"""Leaderboards a reviewer would accept: intervals instead of n = 1 spreads, ties where
intervals overlap, timings compared only within one regime, grid winners chosen on
validation and ranked on test, tuning budgets shown."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pandas as pd
import pytest
from scipy import stats

from benchmark import store
from benchmark.kinds import KIND_INFO
from benchmark.records import Metric, RunRecord, RunSpec, is_timing
from benchmark.report import build_leaderboard
from benchmark.report.leaderboard import format_cell
from benchmark.report.render import render_csv, render_html, render_markdown, write_reports


def regime(threads: int = 1, concurrent: int = 2) -> dict[str, Any]:
    return {
        "device_name": "AMD EPYC",
        "torch_threads": threads,
        "concurrent_runs": concurrent,
        "pinned": False,
        "cpu_affinity": None,
    }


def env(
    threads: int = 1, concurrent: int = 2, commit: str = "a" * 40, dirty: bool = False
) -> dict[str, Any]:
    return {
        "regime": regime(threads, concurrent),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def run(
    method: str,
    seed: int = 0,
    *,
    kind: str = "optimizer",
    hparams: dict[str, Any] | None = None,
    tuned: tuple[str, ...] | None = (),
    environment: dict[str, Any] | None = None,
    metrics: dict[str, Metric] | None = None,
    **values: float,
) -> RunRecord:
    spec = RunSpec(
        suite="s",
        kind=kind,
        method=method,
        hparams=hparams or {},
        workload="w",
        seed=seed,
        tuned=tuned,
    )
    units = {"step_time": "s", "tokens_per_s": "tokens/s", "auroc": "AUROC"}
    ms = {k: Metric(value=v, unit=units.get(k, "nats"), meter="test") for k, v in values.items()}
    ms.update(metrics or {})
    return RunRecord(
        id=spec.id,
        spec=spec,
        status="ok",
        metrics=ms,
        environment=env() if environment is None else environment,
    )


def labels(table) -> list[tuple[str, str]]:
    return [(row.method, row.rank_label) for row in table.rows]


# --------------------------------------------------------------------------- uncertainty


def test_seed_interval_for_three_seeds_is_the_student_t_interval() -> None:
    losses = [2.31, 2.47, 2.36]
    (table,) = build_leaderboard([run("a", s, eval_loss=v) for s, v in enumerate(losses)])
    cell = table.rows[0].cells["eval_loss"]
    mean = sum(losses) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in losses) / 2)
    half = stats.t.ppf(0.975, df=2) * sd / math.sqrt(3)
    assert cell.ci_source == "seeds"
    assert cell.ci == pytest.approx((mean - half, mean + half), rel=1e-12)
    lo, hi = (f"{x:.2f}" for x in (mean - half, mean + half))
    md = render_markdown([], [table])
    assert f"{mean:.2f} [{lo}, {hi}]" in md
    assert "over seeds (Student t) in 1 row" in table.ranking_note


def test_one_run_shows_its_own_interval_and_never_a_spread() -> None:
    with_ci = Metric(value=0.873, unit="AUROC", meter="t", ci_low=0.852, ci_high=0.893)
    recs = [
        run("a", kind="detector", metrics={"auroc": with_ci}),
        run("b", kind="detector", auroc=0.7),
        run("c", 0, eval_loss=2.0),
        run("c", 1, eval_loss=2.2),
    ]
    tables = build_leaderboard(recs)
    md = render_markdown(recs, tables)
    html = render_html(recs, tables)
    assert "±" not in md and "±" not in html
    assert "0.873 [0.852, 0.893]" in md
    det = next(t for t in tables if t.kind == "detector")
    assert det.rows[0].cells["auroc"].std is None and det.rows[0].cells["auroc"].ci_source == "run"
    assert det.rows[1].cells["auroc"].ci is None
    # Two seeds without test-set intervals: the mean alone (no seed interval), and the
    # note says so.
    opt = next(t for t in tables if t.kind == "optimizer")
    assert opt.rows[0].cells["eval_loss"].ci is None
    assert "n = 2: the mean of the two runs' test-set half-widths" in opt.ranking_note
    assert "else no interval" in opt.ranking_note
    assert "| 2.1 |" in md
    csv = render_csv(tables)
    one = csv[(csv.method == "a")].iloc[0]
    assert one["auroc__ci_low"] == 0.852 and one["auroc__ci_high"] == 0.893
    assert one["auroc__std"] is None or math.isnan(one["auroc__std"])


# --------------------------------------------------------------------------- ties


def test_a_tie_is_marked_when_intervals_overlap_and_not_otherwise() -> None:
    recs = [run("best", s, eval_loss=v) for s, v in enumerate([1.00, 1.01, 1.02])]
    recs += [run("close", s, eval_loss=v) for s, v in enumerate([1.01, 1.02, 1.03])]
    recs += [run("far", s, eval_loss=v) for s, v in enumerate([2.00, 2.01, 2.02])]
    recs += [run("unknown", s, eval_loss=v) for s, v in enumerate([1.5, 1.6])]
    (table,) = build_leaderboard(recs)
    assert labels(table) == [("best", "=1"), ("close", "=1"), ("unknown", "3?"), ("far", "4")]
    assert [row.tied for row in table.rows] == [True, True, False, False]
    csv = render_csv([table])
    assert list(csv["rank_label"]) == ["=1", "=1", "3?", "4"]
    assert list(csv["tied"]) == [True, True, False, False]
    assert "| =1 | best |" in render_markdown(recs, [table])


def test_single_run_intervals_decide_ties_too() -> None:
    def det(method: str, value: float, lo: float, hi: float) -> RunRecord:
        m = Metric(value=value, unit="AUROC", meter="t", ci_low=lo, ci_high=hi)
        return run(method, kind="detector", metrics={"auroc": m})

    (table,) = build_leaderboard(
        [det("a", 0.90, 0.88, 0.92), det("b", 0.87, 0.85, 0.89), det("c", 0.80, 0.78, 0.82)]
    )
    assert labels(table) == [("a", "=1"), ("b", "=1"), ("c", "3")]
    (table,) = build_leaderboard([det("a", 0.90, 0.89, 0.91), det("b", 0.87, 0.86, 0.88)])
    assert labels(table) == [("a", "1"), ("b", "2")]


def test_security_ties_only_within_one_verdict() -> None:
    def split(method: str, value: float, lo: float, hi: float) -> RunRecord:
        m = Metric(value=value, unit="fraction", meter="t", ci_low=lo, ci_high=hi)
        return run(method, kind="security_split", metrics={"attack_recovered_ratio": m})

    recs = [
        split("safe", 0.10, 0.05, 0.15),
        split("safe-too", 0.12, 0.08, 0.17),
        split("leaky", 0.55, 0.52, 0.60),
        split("leakier", 0.58, 0.53, 0.62),
        split("unsure", 0.45, 0.41, 0.53),
    ]
    (table,) = build_leaderboard(recs)
    order = [(row.method, row.verdict, row.rank_label) for row in table.rows]
    # "unsure" overlaps "leaky" but has another verdict: never tied across verdicts.
    assert order == [
        ("safe", "protected", "=1"),
        ("safe-too", "protected", "=1"),
        ("unsure", "inconclusive", "3"),
        ("leaky", "exposed", "=4"),
        ("leakier", "exposed", "=4"),
    ]


# --------------------------------------------------------------------------- timing regimes


def _timed(fast_env: dict[str, Any]) -> list[RunRecord]:
    """Two methods with the same loss; "fast" has the lower step time, in ``fast_env``."""
    recs = []
    for s in range(3):
        recs.append(run("slow", s, eval_loss=1.0 + s * 0.01, step_time=0.09))
        recs.append(run("fast", s, environment=fast_env, eval_loss=1.0 + s * 0.01, step_time=0.01))
    return recs


def test_timings_in_mixed_regimes_are_withheld_and_never_rank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A kind that breaks ties on step time (lower is better), all losses in one bin.
    info = dataclasses.replace(
        KIND_INFO["optimizer"], tiebreak=(("step_time", False),), primary_bin=10.0
    )
    monkeypatch.setitem(KIND_INFO, "optimizer", info)
    (same,) = build_leaderboard(_timed(env()))
    assert [row.method for row in same.rows] == ["fast", "slow"]  # same regime: it counts
    assert same.timing_note is None and same.regime is not None
    md = render_markdown([], [same])
    # Three identical step times and no test-set interval: the mean, never "[10, 10]".
    identical = "(no interval: seeds identical, no test-set interval)"
    assert f"| 10 {identical} |" in md and f"| 90 {identical} |" in md
    assert "| step_time (ms) |" in md  # the column's one unit, in its header
    assert "[10, 10]" not in md
    assert "mixed regimes" not in md

    (mixed,) = build_leaderboard(_timed(env(threads=2, concurrent=1)))
    assert [row.method for row in mixed.rows] == ["slow", "fast"], "timing broke a tie"
    assert mixed.rows[0].cells["step_time"].mean is None
    md = render_markdown([], [mixed])
    assert "n/a (mixed regimes)" in md and " ms" not in md
    assert "2 torch thread(s), 1 concurrent run(s)" in md  # the reason names both regimes
    assert "1 torch thread(s), 2 concurrent run(s)" in md
    assert "then step_time" not in mixed.ranking_note
    # A faster time in the other regime changes nothing.
    faster = _timed(env(threads=2, concurrent=1))
    for r in faster:
        if r.spec.method == "fast":
            r.metrics["step_time"] = Metric(value=1e-6, unit="s", meter="test")
    (again,) = build_leaderboard(faster)
    assert labels(again) == labels(mixed)
    # A record without a regime compares with nothing, not even with another such record.
    (partly,) = build_leaderboard(_timed({}))
    assert "unrecorded regime [3 runs]" in (partly.timing_note or "")
    unrecorded = _timed({})
    for r in unrecorded:
        r.environment = {}
    (unknown,) = build_leaderboard(unrecorded)
    assert "n/a (regime not recorded)" in render_markdown([], [unknown])
    csv = render_csv([mixed])
    assert csv["step_time"].isna().all() and csv["timing_regime"].str.startswith("mixed").all()


def test_header_names_commits_cleanliness_and_regimes() -> None:
    clean = [run("a", s, eval_loss=1.0, environment=env(commit="c" * 40)) for s in range(2)]
    md = render_markdown(clean, build_leaderboard(clean))
    assert f"one clean commit {'c' * 10}" in md
    assert "Timing regime: AMD EPYC, 1 torch thread(s), 2 concurrent run(s) [all 2 runs]" in md
    two = [*clean, run("b", eval_loss=1.0, environment=env(2, 1, "d" * 40, dirty=True))]
    md = render_markdown(two, build_leaderboard(two))
    assert "records from 2 commits" in md and "one clean commit" not in md
    assert "1 run from a tree with uncommitted changes (dirty)" in md
    assert "Timing regimes (2)" in md


# --------------------------------------------------------------------------- grids


def _grid(
    method: str, points: dict[float, tuple[float, float | None]], **fixed: Any
) -> list[RunRecord]:
    """Three seeds per lr: (test loss, validation loss or None)."""
    recs = []
    for lr, (test, val) in points.items():
        for s in range(3):
            metrics = {"eval_loss": Metric(value=test + 0.001 * s, unit="nats", meter="t")}
            if val is not None:
                metrics["val_eval_loss"] = Metric(value=val + 0.001 * s, unit="nats", meter="t")
            recs.append(run(method, s, hparams={"lr": lr, **fixed}, tuned=("lr",), metrics=metrics))
    return recs


def test_the_winner_is_chosen_on_validation_not_on_the_ranked_test_metric() -> None:
    # lr=0.01 is best on test but worse on validation: it must not be the winner.
    recs = _grid("adamw", {0.001: (3.0, 3.0), 0.003: (2.5, 2.4), 0.01: (2.2, 2.6)})
    recs += _grid("sgd", {0.1: (2.8, 2.8)})
    (table,) = build_leaderboard(recs)
    assert [(r.method, r.hparams) for r in table.rows] == [("adamw", "lr=0.003"), ("sgd", "lr=0.1")]
    winner = table.rows[0]
    assert winner.winner and winner.grid_points == 3 and winner.selected_on == "val_eval_loss"
    assert len(table.points) == 4 and sum(not p.ranked for p in table.points) == 2
    md = render_markdown(recs, [table])
    assert "| grid points | chosen on |" in md
    assert "| adamw | lr=0.003 | cpu | 3 | 3 | val_eval_loss |" in md
    assert "All grid points" in md
    points = md.split("All grid points")[1]
    for lr in ("0.001", "0.003", "0.01"):
        assert f"| adamw | lr={lr} |" in points
    assert "adamw: lr=0.003 (rank 1; best of 3 grid points; chosen on val_eval_loss)" in md
    assert "unequal tuning budgets: 3 grid points for adamw; 1 grid point for sgd" in md
    csv = render_csv([table])
    row = csv[(csv.method == "adamw") & (csv.hparams == "lr=0.01")].iloc[0]
    assert not row["winner"] and not row["ranked"] and pd.isna(row["rank"])
    assert row["grid_points"] == 3 and row["val_eval_loss"] == pytest.approx(2.601)
    html = render_html(recs, [table])
    assert "All grid points" in html and "val_eval_loss" in html


def test_without_a_validation_figure_the_test_metric_decides_and_says_so() -> None:
    recs = _grid("adamw", {0.001: (3.0, None), 0.003: (2.5, None), 0.01: (2.2, None)})
    recs += _grid("muon", {0.01: (2.4, None), 0.02: (2.6, None), 0.05: (2.9, None)})
    (table,) = build_leaderboard(recs)
    assert [(r.method, r.hparams) for r in table.rows] == [
        ("adamw", "lr=0.01"),
        ("muon", "lr=0.01"),
    ]
    md = render_markdown(recs, [table])
    assert "chosen on the reported test metric: no validation figure" in md
    assert "EDGE: lr=0.01 is the grid's highest" in md  # adamw's winner at its grid's edge
    assert "EDGE: lr=0.01 is the grid's lowest" in md
    assert "equal tuning budgets: 3 grid points per variant" in table.ranking_note


def test_fixed_hyperparameters_name_separate_variants() -> None:
    recs = _grid("sumo", {0.001: (2.0, 2.0), 0.003: (2.1, 1.9)}, orthogonalizer="svd")
    recs += _grid("sumo", {0.001: (2.3, 2.3), 0.003: (2.2, 2.2)}, orthogonalizer="ns")
    (table,) = build_leaderboard(recs)
    assert sorted(r.variant for r in table.rows) == [
        "sumo [orthogonalizer=ns]",
        "sumo [orthogonalizer=svd]",
    ]
    svd = next(r for r in table.rows if r.variant == "sumo [orthogonalizer=svd]")
    assert svd.hparams == "lr=0.003,orthogonalizer=svd"


def test_html_escapes_untrusted_text() -> None:
    recs = _grid("adamw", {0.1: (1.0, 1.0), 0.2: (1.1, 1.1)}, note="<script>x</script>")
    html = render_html(recs, build_leaderboard(recs))
    assert "<script>x" not in html and "&lt;script&gt;x" in html


def test_a_grid_point_that_failed_counts_in_the_budget_and_is_listed() -> None:
    recs = _grid("adamw", {0.001: (3.0, 3.0), 0.003: (2.5, 2.4)})
    spec = RunSpec(
        suite="s",
        kind="optimizer",
        method="adamw",
        hparams={"lr": 0.1},
        workload="w",
        tuned=("lr",),
    )
    recs.append(RunRecord(id=spec.id, spec=spec, status="diverged", reason="loss 1e7"))
    (table,) = build_leaderboard(recs)
    assert [r.grid_points for r in table.rows] == [3]
    md = render_markdown(recs, [table])
    assert "best of 3 grid points, 1 not ok; chosen on val_eval_loss" in md
    assert "| adamw | lr=0.1 |  |  | not ok: diverged |" in md.split("All grid points")[1]


def test_equal_validation_is_broken_by_grid_order_not_by_test() -> None:
    # Two points with exactly the same validation figures: the smaller lr wins whichever
    # of the two is better on the test metric.
    for better_on_test in (0.001, 0.01):
        other = 0.01 if better_on_test == 0.001 else 0.001
        recs = _grid("adamw", {better_on_test: (2.0, 2.5), other: (3.0, 2.5)})
        (table,) = build_leaderboard(recs)
        assert [r.hparams for r in table.rows] == ["lr=0.001"], better_on_test


# --------------------------------------------------------------------------- partial seeds


def test_a_mean_over_only_some_seeds_says_how_many() -> None:
    target = {"steps_to_target": Metric(value=14.0, unit="steps", meter="t")}
    recs = [
        run("a", 0, eval_loss=2.0, metrics=target),
        run(
            "a",
            1,
            eval_loss=2.1,
            metrics={"steps_to_target": Metric(value=16.4, unit="steps", meter="t")},
        ),
        run(
            "a",
            2,
            eval_loss=2.2,
            metrics={"steps_to_target": Metric.null("steps", "t", "target not reached")},
        ),
    ]
    (table,) = build_leaderboard(recs)
    cell = table.rows[0].cells["steps_to_target"]
    assert cell.partial and (cell.n, cell.runs) == (2, 3) and cell.mean == pytest.approx(15.2)
    assert format_cell(cell, "steps") == "15.2 (2/3 seeds)"
    md = render_markdown(recs, [table])
    assert "| 15.2 (2/3 seeds) |" in md
    assert "steps_to_target: mean over 2 of 3 seeds" in md and "target not reached" in md
    assert "(k/n seeds)" in table.ranking_note
    assert not table.rows[0].cells["eval_loss"].partial
    csv = render_csv([table])
    assert csv["steps_to_target__n"].iloc[0] == 2 and csv["steps_to_target__runs"].iloc[0] == 3


def test_a_grid_point_missing_seeds_never_wins_over_a_complete_one() -> None:
    # lr=0.01 has the best validation mean, but over 2 seeds: its third diverged. lr=0.003
    # is second best on validation, but one seed reported no validation figure. lr=0.001
    # is complete: it wins.
    recs = _grid("adamw", {0.001: (2.5, 2.5), 0.003: (2.2, 2.2), 0.01: (2.0, 2.0)})
    recs = [r for r in recs if not (r.spec.hparams["lr"] == 0.01 and r.spec.seed == 2)]
    for r in recs:
        if r.spec.hparams["lr"] == 0.003 and r.spec.seed == 2:
            r.metrics["val_eval_loss"] = Metric.null("nats", "t", "evaluation failed")
    spec = RunSpec(
        suite="s",
        kind="optimizer",
        method="adamw",
        hparams={"lr": 0.01},
        workload="w",
        seed=2,
        tuned=("lr",),
    )
    recs.append(RunRecord(id=spec.id, spec=spec, status="diverged", reason="loss 1e7"))
    (table,) = build_leaderboard(recs)
    assert [r.hparams for r in table.rows] == ["lr=0.001"]
    points = {p.hparams: p.incomplete for p in table.points}
    assert points == {"lr=0.001": None, "lr=0.003": "2/3 seeds", "lr=0.01": "2/3 seeds"}
    md = render_markdown(recs, [table])
    grid = md.split("All grid points")[1]
    assert "| adamw | lr=0.01 | cpu | 2/3 |" in grid
    assert "incomplete (2/3 seeds), not preferred" in grid
    assert "2 grid point(s) with fewer seeds than the others not preferred" in md
    # Every point incomplete: the best of them still wins, and the note says so.
    recs = [r for r in recs if not (r.spec.hparams["lr"] == 0.001 and r.spec.seed == 2)]
    (table,) = build_leaderboard(recs)
    assert [r.hparams for r in table.rows] == ["lr=0.01"]


# --------------------------------------------------------------------------- ties


def _det(method: str, value: float, lo: float, hi: float) -> RunRecord:
    m = Metric(value=value, unit="AUROC", meter="t", ci_low=lo, ci_high=hi)
    return run(method, kind="detector", metrics={"auroc": m})


def test_ties_are_checked_against_every_row_above_not_a_group_head() -> None:
    # C overlaps A (and B); B overlaps neither A nor anything above it.
    recs = [_det("A", 0.955, 0.95, 0.96), _det("B", 0.91, 0.90, 0.92), _det("C", 0.745, 0.50, 0.99)]
    (table,) = build_leaderboard(recs)
    assert labels(table) == [("A", "=1"), ("B", "2"), ("C", "=1")]
    assert [r.tied for r in table.rows] == [True, False, True]
    # D overlaps B only: tied with row 2, never with row 1 through B.
    recs.append(_det("D", 0.89, 0.88, 0.905))
    (table,) = build_leaderboard(recs)
    assert labels(table) == [("A", "=1"), ("B", "=2"), ("D", "=2"), ("C", "=1")]
    assert "the highest row above it" in table.ranking_note


# --------------------------------------------------------------------------- intervals


def _quality(values: list[float], half: float | None = None, **kw: Any) -> list[RunRecord]:
    out = []
    for s, v in enumerate(values):
        ci = {"ci_low": v - half, "ci_high": v + half} if half is not None else {}
        m = Metric(value=v, unit="fraction", meter="workload accuracy", **ci)
        out.append(run("c", s, kind="compressor", metrics={"quality_after": m}, **kw))
    return out


def test_seed_and_test_set_intervals_combine_with_three_seeds() -> None:
    values = [0.80, 0.82, 0.81]
    (table,) = build_leaderboard(_quality(values, half=0.03))
    cell = table.rows[0].cells["quality_after"]
    mean = sum(values) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / 2)
    seed_half = stats.t.ppf(0.975, df=2) * sd / math.sqrt(3)
    half = math.sqrt(seed_half**2 + 0.03**2)
    assert cell.ci_source == "seeds+test"
    assert cell.ci == pytest.approx((mean - half, mean + half), rel=1e-9)
    assert "combined with the runs' test-set interval in 1 row" in table.ranking_note


def test_two_seeds_use_their_test_set_intervals_only() -> None:
    recs = _quality([0.80, 0.84])
    recs[0].metrics["quality_after"].ci_low, recs[0].metrics["quality_after"].ci_high = 0.78, 0.82
    recs[1].metrics["quality_after"].ci_low, recs[1].metrics["quality_after"].ci_high = 0.80, 0.88
    (table,) = build_leaderboard(recs)
    cell = table.rows[0].cells["quality_after"]
    assert cell.ci_source == "test" and cell.ci == pytest.approx((0.79, 0.85))
    assert "test-set only, 2 seeds in 1 row" in table.ranking_note
    (bare,) = build_leaderboard(_quality([0.80, 0.84]))
    assert bare.rows[0].cells["quality_after"].ci is None


def test_identical_seeds_without_a_test_set_interval_have_no_interval() -> None:
    (table,) = build_leaderboard(_quality([0.8, 0.8, 0.8]))
    cell = table.rows[0].cells["quality_after"]
    assert cell.ci is None and cell.no_interval
    assert (
        format_cell(cell, "fraction") == "0.8 (no interval: seeds identical, no test-set interval)"
    )
    assert table.rows[0].rank_label == "1?"
    (with_test,) = build_leaderboard(_quality([0.8, 0.8, 0.8], half=0.02))
    assert with_test.rows[0].cells["quality_after"].ci == pytest.approx((0.78, 0.82))


def test_intervals_are_clipped_to_the_metric_range() -> None:
    (table,) = build_leaderboard(_quality([0.97, 1.0, 1.0], half=0.02))
    lo, hi = table.rows[0].cells["quality_after"].ci
    assert hi == 1.0 and lo < 0.97
    times = [
        run("t", s, step_time=v, environment=env()) for s, v in enumerate([0.001, 0.002, 0.05])
    ]
    (table,) = build_leaderboard(times)
    assert table.rows[0].cells["step_time"].ci[0] == 0.0
    # A delta is not a fraction in [0, 1]: it may be negative.
    deltas = [
        run(
            "d",
            s,
            kind="compressor",
            metrics={
                "quality_after": Metric(value=0.5, unit="fraction", meter="m"),
                "quality_delta": Metric(value=v, unit="fraction", meter="m"),
            },
        )
        for s, v in enumerate([-0.02, -0.01, 0.0])
    ]
    (table,) = build_leaderboard(deltas)
    from benchmark.report.leaderboard import _cell

    assert _cell(table.rows[0].records, "quality_delta").ci[0] < -0.02


# --------------------------------------------------------------------------- timing


def test_ratios_of_clock_readings_are_timings() -> None:
    def m(unit: str, meter: str) -> Metric:
        return Metric(value=1.2, unit=unit, meter=meter)

    # The meters the protocols write (compressor.py, security_split.py).
    assert is_timing(m("x", "median latency before/after"), "latency_speedup")
    assert is_timing(
        m("x", "median hybrid / original, timed interleaved (one call of each in turn)"),
        "latency_overhead",
    )
    assert is_timing(m("x", "modelled / measured original"), "modelled_latency_overhead")
    assert is_timing(m("s", "perf_counter"), "fit_time")
    assert is_timing(m("x", "cuda-event, batch 32"))
    assert not is_timing(
        m("x", "(trusted online + trusted-side offline FLOPs) / the original model's FLOPs"),
        "trusted_flops_vs_original",
    )
    assert not is_timing(m("fraction", "stored parameters after/before"), "params_kept_ratio")
    assert not is_timing(m("fraction", "workload accuracy"), "quality_after")

    # In a table: a latency speedup across two regimes is withheld like the latencies.
    recs = []
    for s, environment in enumerate([env(), env(threads=2, concurrent=1)]):
        recs.append(
            run(
                "p",
                s,
                kind="compressor",
                environment=environment,
                metrics={
                    "quality_after": Metric(value=0.9, unit="fraction", meter="m"),
                    "params_kept_ratio": Metric(value=0.5, unit="fraction", meter="m"),
                    "latency_speedup": m("x", "median latency before/after"),
                },
            )
        )
    (table,) = build_leaderboard(recs)
    assert "latency_speedup" in table.timing_columns
    assert "params_kept_ratio" not in table.timing_columns
    assert table.rows[0].cells["latency_speedup"].mean is None
    assert table.rows[0].cells["params_kept_ratio"].mean == 0.5


def test_the_regime_names_no_cores() -> None:
    def pinned(core: int) -> dict[str, Any]:
        e = env(concurrent=2)
        e["regime"] = {**e["regime"], "pinned": True, "cpu_affinity": [core]}
        return e

    recs = [run("a", s, eval_loss=1.0, step_time=0.1, environment=pinned(s)) for s in range(2)]
    (table,) = build_leaderboard(recs)
    md = render_markdown(recs, [table])
    assert table.regime == "AMD EPYC, 1 torch thread(s), 2 concurrent run(s), pinned, 1 core each"
    assert "pinned, 1 core each [all 2 runs]" in md
    assert "cores [" not in md and "[0]" not in md


# --------------------------------------------------------------------------- header, variants


def test_the_header_counts_superseded_records(tmp_path: Any) -> None:
    for code, started in (("old", "2026-01-01T00:00:00"), ("new", "2026-01-02T00:00:00")):
        spec = RunSpec(suite="s", kind="optimizer", method="m", workload="w", code=code)
        rec = RunRecord(
            id=spec.id,
            spec=spec,
            status="ok",
            started_at=started,
            metrics={"eval_loss": Metric(value=1.0, unit="nats", meter="t")},
        )
        store.write_record(tmp_path, rec)
    paths = write_reports(tmp_path)
    line = (
        "1 older record (superseded by newer code or a newer run of the same configuration) "
        "left out."
    )
    assert line in paths["markdown"].read_text()
    assert line in paths["html"].read_text()
    assert "older record" not in render_markdown([], [])


def test_operating_points_with_nothing_tuned_are_rows_not_grid_points() -> None:
    """``tuned == ()``: every configuration (a pruning amount from a ``variants:`` axis) is
    its own ranked row, never a grid point; ``None`` (older records) keeps the inference."""

    def prune(tuned: tuple[str, ...] | None) -> list[RunRecord]:
        return [
            run(
                "prune",
                s,
                kind="compressor",
                hparams={"amount": amount},
                tuned=tuned,
                metrics={"quality_after": Metric(value=q + 0.001 * s, unit="fraction", meter="m")},
            )
            for amount, q in ((0.3, 0.9), (0.5, 0.8), (0.7, 0.6))
            for s in range(3)
        ]

    (table,) = build_leaderboard(prune(()))
    assert [r.hparams for r in table.rows] == ["amount=0.3", "amount=0.5", "amount=0.7"]
    assert all(r.grid_points == 1 and r.selected_on is None for r in table.rows)
    md = render_markdown([], [table])
    for text in ("grid point", "best of", "EDGE", "Tuning", "All grid points"):
        assert text not in md, text
    assert "nothing tuned: every configuration is its own row" in table.ranking_note
    (old,) = build_leaderboard(prune(None))
    assert len(old.rows) == 3
    md = render_markdown([], [old])
    assert "Tuning, inferred" in md and "EDGE: amount=0.3 is the grid's lowest" in md
