"""Records are written atomically; leaderboards rank in the kind's direction; compare judges."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from benchmark import store
from benchmark.records import Curve, Metric, RunRecord, RunSpec
from benchmark.report import build_leaderboard, write_reports
from benchmark.report.compare import compare, parse_rule


def record(
    method: str, seed: int, kind: str = "optimizer", status: str = "ok", **values: float | None
) -> RunRecord:
    spec = RunSpec(suite="s", kind=kind, method=method, workload="w", seed=seed)
    metrics = {
        k: Metric(
            value=v,
            unit="nats",
            meter="test",
            reason=None if v is not None else "meter unavailable",
        )
        for k, v in values.items()
    }
    curves = {"train_loss": Curve(x=[1, 2, 3], y=[3.0, 2.0, 1.0])} if kind == "optimizer" else {}
    if kind == "detector":
        curves = {"roc": Curve(x=[0, 0.5, 1], y=[0, 0.9, 1])}
    return RunRecord(
        id=spec.id,
        spec=spec,
        status=status,
        metrics=metrics,
        curves=curves,
        reason=None if status == "ok" else "boom",
    )


def test_atomic_write_leaves_nothing_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = record("a", 0, eval_loss=1.0)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        store.write_record(tmp_path, r)
    monkeypatch.undo()
    assert not (store.runs_dir(tmp_path) / f"{r.id}.json").exists()
    assert list(store.runs_dir(tmp_path).iterdir()) == []
    # A half-written temporary file from a killed writer is ignored by loaders.
    (store.runs_dir(tmp_path) / f".{r.id}.x.tmp").write_text('{"id": "half')
    assert store.load_records(tmp_path) == []
    store.write_record(tmp_path, r)
    assert [x.id for x in store.load_records(tmp_path)] == [r.id]


def test_corrupt_record_is_skipped_and_the_report_says_so(tmp_path: Path) -> None:
    store.write_record(tmp_path, record("a", 0, eval_loss=1.0))
    (store.runs_dir(tmp_path) / "bad.json").write_text("{not json")
    (store.runs_dir(tmp_path) / "odd.json").write_text('{"spec": 3}')
    records, unreadable = store.read_records(tmp_path)
    assert len(records) == 1
    assert [p.name for p, _ in unreadable] == ["bad.json", "odd.json"]
    paths = write_reports(tmp_path)
    md = paths["markdown"].read_text()
    assert "2 record files could not be read" in md and "bad.json" in md and "odd.json" in md


def test_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(store.StoreError, match="not writable"):
        store.check_writable(blocker / "r")


def test_records_frame() -> None:
    df = store.records_frame([record("a", 0, eval_loss=1.5)])
    assert df.loc[0, "eval_loss"] == 1.5 and df.loc[0, "eval_loss__unit"] == "nats"
    assert {"id", "kind", "method", "hparams", "seed", "status"} <= set(df.columns)


def test_records_frame_keeps_workload_options_and_each_metrics_interval() -> None:
    base = RunSpec(suite="s", kind="detector", method="msp", workload="mnist-cnn")
    noisy = base.model_copy(update={"workload_options": {"ood": "mnist-noise"}})
    auroc = Metric(value=0.9, unit="fraction", meter="t", n=500, ci_low=0.87, ci_high=0.93)
    records = [
        RunRecord(id=s.id, spec=s, status="ok", metrics={"auroc": auroc}) for s in (base, noisy)
    ]
    df = store.records_frame(records)
    assert list(df["workload_label"]) == ["mnist-cnn", "mnist-cnn[ood=mnist-noise]"]
    assert df.loc[1, "workload_options"] == '{"ood": "mnist-noise"}'
    assert (df.loc[0, "auroc__n"], df.loc[0, "auroc__ci_low"], df.loc[0, "auroc__ci_high"]) == (
        500,
        0.87,
        0.93,
    )


def test_current_records_keep_the_latest_code_version_of_each_experiment() -> None:
    spec = RunSpec(suite="s", kind="optimizer", method="m", workload="w", code="old")
    newer = spec.model_copy(update={"code": "new"})
    other_seed = newer.model_copy(update={"seed": 1})
    dropped_point = spec.model_copy(update={"hparams": {"lr": 0.05}})  # old grid point
    other_method = spec.model_copy(update={"method": "n"})  # its code did not change
    recs = [
        RunRecord(id=s.id, spec=s, status="ok", started_at=t)
        for s, t in (
            (newer, "2026-12-02T00:00:00"),
            (spec, "2026-12-01T00:00:00"),
            (other_seed, "2026-12-02T00:00:01"),
            (dropped_point, "2026-12-01T00:00:00"),
            (other_method, "2026-12-01T00:00:00"),
        )
    ]
    current, superseded = store.current_records(recs)
    assert sorted((r.spec.method, r.spec.code, r.spec.seed) for r in current) == [
        ("m", "new", 0),
        ("m", "new", 1),
        ("n", "old", 0),
    ]
    assert len(superseded) == 2


def test_leaderboard_ranks_by_direction_and_lists_failures() -> None:
    recs = [
        record("worse", 0, eval_loss=3.0),
        record("worse", 1, eval_loss=5.0),
        record("better", 0, eval_loss=1.0),
        record("better", 1, eval_loss=1.0),
        record("broken", 0, status="failed"),
        record("det-a", 0, kind="detector", auroc=0.7),
        record("det-b", 0, kind="detector", auroc=0.9),
    ]
    tables = {t.kind: t for t in build_leaderboard(recs)}
    opt = tables["optimizer"]
    assert [r.method for r in opt.rows] == ["better", "worse"]
    cell = opt.rows[1].cells["eval_loss"]
    assert cell.mean == 4.0 and cell.std == pytest.approx(2**0.5) and cell.n == 2
    assert [f.status for f in opt.failures] == ["failed"]
    assert [r.method for r in tables["detector"].rows] == ["det-b", "det-a"]
    assert "OOD is the positive class" in tables["detector"].ranking_note


def test_a_workload_whose_quality_is_lower_better_ranks_ascending() -> None:
    """A compressor's quality is accuracy on one workload and perplexity on another: the
    records' declared direction wins over the kind's default."""
    recs = [
        record("mild", 0, kind="compressor", quality_after=35.0),
        record("harsh", 0, kind="compressor", quality_after=3e5),
    ]
    for r in recs:
        r.metrics["quality_after"].higher_is_better = False
    (table,) = build_leaderboard(recs)
    assert [r.method for r in table.rows] == ["mild", "harsh"]
    assert not table.higher_is_better and "lower is better" in table.ranking_note


def test_reports_are_written(tmp_path: Path) -> None:
    for r in (
        record("a", 0, eval_loss=2.0, perplexity=None),
        record("b", 0, status="oom"),
        record("d", 0, kind="detector", auroc=0.8),
    ):
        store.write_record(tmp_path, r)
    paths = write_reports(tmp_path)
    md = paths["markdown"].read_text()
    assert "## optimizer on w" in md and "**oom**" in md
    assert "n/a because meter unavailable" in md
    assert 'src="data:image/png;base64,' in paths["html"].read_text()
    csv = pd.read_csv(paths["csv"])
    assert set(csv["method"]) >= {"a", "d"}


def test_mean_and_interval_share_a_scale() -> None:
    """Mean [95% interval], both in the mean's scale and unit, with the decimals that show
    the interval's width; the mean alone without an interval; never a ± spread."""
    from benchmark.report.leaderboard import Cell, format_cell

    assert format_cell(Cell(0.873, 0.01, 3, ci=(0.852, 0.893)), "fraction") == (
        "0.873 [0.852, 0.893]"
    )
    assert format_cell(Cell(2.841, 0.5067, 3, ci=(1.582, 4.100)), "s") == "2.8 [1.6, 4.1]"
    assert format_cell(Cell(0.0942, 0.0096, 3, ci=(0.0703, 0.1181)), "s") == "94 [70, 118] ms"
    assert format_cell(Cell(3 * 2**20, None, 1, ci=(2.5 * 2**20, 3.5 * 2**20)), "bytes") == (
        "3.00 [2.50, 3.50] MiB"
    )
    assert format_cell(Cell(3 * 2**20, 2**19, 2), "bytes") == "3 MiB"
    assert format_cell(Cell(2.841, None, 1), "s") == "2.841"
    assert format_cell(Cell(None, None, 0, "no meter"), "s") == "n/a"
    assert format_cell(Cell(None, None, 0, "x", note="mixed regimes"), "s") == (
        "n/a (mixed regimes)"
    )


def test_grid_winners_are_named(tmp_path: Path) -> None:
    for seed in (0, 1):
        for lr, loss in ((0.1, 2.0), (0.01, 1.0), (0.001, 3.0)):
            spec = RunSpec(
                suite="s",
                kind="optimizer",
                method="sgd",
                hparams={"lr": lr},
                workload="w",
                seed=seed,
            )
            store.write_record(
                tmp_path,
                RunRecord(
                    id=spec.id,
                    spec=spec,
                    status="ok",
                    metrics={"eval_loss": Metric(value=loss, unit="nats", meter="test")},
                ),
            )
    md = write_reports(tmp_path)["markdown"].read_text()
    # Old records (no RunSpec.tuned): the grid is inferred, every point stays ranked, and
    # the winner is the best on the test metric, which the line says. Two seeds give no
    # interval, so no rank is established ("?").
    assert "Tuning, inferred" in md
    assert (
        "sgd: lr=0.01 (rank 1?; best of 3 grid points; "
        "chosen on the reported test metric: no validation figure)"
    ) in md
    for seed in (0, 1):
        spec = RunSpec(
            suite="s",
            kind="optimizer",
            method="sgd",
            hparams={"lr": 0.0001},
            workload="w",
            seed=seed,
        )
        store.write_record(
            tmp_path,
            RunRecord(
                id=spec.id,
                spec=spec,
                status="ok",
                metrics={"eval_loss": Metric(value=0.5, unit="nats", meter="test")},
            ),
        )
    md = write_reports(tmp_path)["markdown"].read_text()
    assert "EDGE: lr=0.0001 is the grid's lowest, widen the grid" in md
    # A categorical hyperparameter is a variant with its own winner, not a grid point.
    for lr, loss in ((0.1, 0.2), (0.01, 0.3)):
        spec = RunSpec(
            suite="s",
            kind="optimizer",
            method="sgd",
            hparams={"lr": lr, "nesterov": True},
            workload="w",
            seed=0,
        )
        store.write_record(
            tmp_path,
            RunRecord(
                id=spec.id,
                spec=spec,
                status="ok",
                metrics={"eval_loss": Metric(value=loss, unit="nats", meter="test")},
            ),
        )
    md = write_reports(tmp_path)["markdown"].read_text()
    assert "sgd [nesterov=True]: lr=0.1,nesterov=True (rank 1?; best of 2 grid points;" in md
    assert "sgd: lr=0.0001 (rank 3?; best of 4 grid points;" in md


def test_compare_rules() -> None:
    """The store's records through compare (its verdicts are pinned in test_compare.py):
    exact single values against a relative and an absolute rule, and a failed seed."""
    old = [record("a", 0, eval_loss=1.0, auroc=0.9)]
    same = [record("a", 0, eval_loss=1.05, auroc=0.9)]
    worse = [record("a", 0, eval_loss=1.2, auroc=0.8)]
    rule = parse_rule("eval_loss:+10%")
    assert not compare(old, same, [rule]).failed
    result = compare(old, worse, [rule, parse_rule("auroc:-5%")])
    assert result.failed
    assert {r.metric for r in result.rows if r.verdict == "regressed"} == {"eval_loss", "auroc"}
    assert not compare(old, worse, [parse_rule("eval_loss:+0.5")]).failed
    failing = [record("a", 0, status="failed")]
    assert next(r.verdict for r in compare(old, failing, []).rows) == "status changed"


@pytest.mark.parametrize("bad", ["eval_loss+10%", "eval_loss:10%", ":+1%", "x:+ten%"])
def test_rule_syntax_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="expected METRIC"):
        parse_rule(bad)


def test_a_methods_own_note_is_printed_beside_its_row(tmp_path: Path) -> None:
    """A quantizer says its integer arithmetic is simulated; the leaderboard must say so
    where the row is read, in Markdown and in HTML."""
    note = "simulated: int8 bytes real, no speed-up claimed"
    for seed in (0, 1):
        r = record("int8-ptq", seed, kind="compressor", quality_after=0.9)
        r = r.model_copy(update={"info": {"method": {"arithmetic": note}}})
        store.write_record(tmp_path, r)
    store.write_record(tmp_path, record("other", 0, kind="compressor", quality_after=0.8))
    paths = write_reports(tmp_path)
    md = paths["markdown"].read_text()
    assert md.count(note) == 1 and f"int8-ptq [defaults] arithmetic: {note}" in md
    assert note in paths["html"].read_text()


def test_markdown_cells_cannot_break_the_table(tmp_path: Path) -> None:
    spec = RunSpec(
        suite="s",
        kind="optimizer",
        method="m",
        workload="w",
        hparams={"tag": "a|b\n| injected | row |<script>x</script>"},
    )
    bad = RunRecord(
        id=spec.id, spec=spec, status="failed", reason="boom | x\n| - | evil |", metrics={}
    )
    store.write_record(tmp_path, bad)
    store.write_record(tmp_path, record("m", 0, eval_loss=1.0))
    md = write_reports(tmp_path)["markdown"].read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md
    table_lines = [line for line in md.splitlines() if line.startswith("| - |")]
    assert len(table_lines) == 1 and "\\|" in table_lines[0]
    assert not any(
        line.startswith("| injected") or line.startswith("| - | evil") for line in md.splitlines()
    )


def test_csv_cells_cannot_start_a_formula_and_counts_stay_whole(tmp_path: Path) -> None:
    spec = RunSpec(suite="s", kind="optimizer", method="=cmd|'/c calc'!A1", workload="w")
    store.write_record(
        tmp_path, RunRecord(id=spec.id, spec=spec, status="failed", reason="@x", metrics={})
    )
    store.write_record(tmp_path, record("m", 0, eval_loss=1.0))
    store.write_record(tmp_path, record("+SUM(A1)", 0, eval_loss=2.0))
    path = write_reports(tmp_path)["csv"]
    text = path.read_text()
    frame = pd.read_csv(path, dtype=str)
    assert not any(str(v).startswith(("=", "+", "@")) for v in frame.values.ravel())
    assert "'@x" in text and "'+SUM(A1)" in text
    assert frame.loc[frame["method"] == "m", "rank"].iloc[0] == "1"  # not "1.0"
    assert frame.loc[frame["method"] == "m", "seeds"].iloc[0] == "1"
