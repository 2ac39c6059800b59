"""Leaderboards people can read: no column that no row reports, an n/a note only where a
row lacks what its peers report (one line per reason), one unit per column, and a summary
at the end of `bench run` that fits an 80-column terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from benchmark import store
from benchmark.records import Metric, RunRecord, RunSpec
from benchmark.report import build_leaderboard
from benchmark.report.render import render_csv, render_markdown
from benchmark.report.summary import print_summary

ENV = {
    "regime": {
        "device_name": "cpu",
        "torch_threads": 1,
        "concurrent_runs": 1,
        "pinned": False,
        "cpu_affinity": None,
    }
}


def detector(
    method: str, seed: int = 0, hparams: dict | None = None, **metrics: Metric
) -> RunRecord:
    spec = RunSpec(
        suite="s", kind="detector", method=method, hparams=hparams or {}, workload="w", seed=seed
    )
    base = {"auroc": Metric(value=0.9 - 0.01 * len(method), unit="fraction", meter="test")}
    return RunRecord(
        id=spec.id, spec=spec, status="ok", metrics={**base, **metrics}, environment=ENV
    )


def fraction(v: float) -> Metric:
    return Metric(value=v, unit="fraction", meter="test")


def seconds(v: float) -> Metric:
    return Metric(value=v, unit="s", meter="perf_counter")


def notes(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("- ")]


def test_a_column_no_row_reports_is_left_out() -> None:
    """No detector here filters (target_f1) or is handed an oracle (labels_used): the
    kind's columns for those are not printed, and no row gets an n/a note for them."""
    recs = [detector("msp", aupr_in=fraction(0.8)), detector("energy", aupr_in=fraction(0.7))]
    (table,) = build_leaderboard(recs)
    assert "target_f1" not in table.columns and "labels_used" not in table.columns
    assert "type1_error_at_alpha" not in table.columns
    assert table.columns[:2] == ["auroc", "aupr_in"]
    md = render_markdown(recs, [table])
    assert "target_f1" not in md and "labels_used" not in md
    assert "n/a" not in md and notes(md) == []
    # A column every row reports as null stays out too, with the records' reason, once.
    null = Metric.null("labels", "oracle", "the workload has no label oracle")
    recs = [detector("msp", labels_used=null), detector("energy", labels_used=null)]
    (table,) = build_leaderboard(recs)
    assert "labels_used" not in table.columns
    md = render_markdown(recs, [table])
    assert notes(md) == [
        "- labels_used: no row has a value (n/a because the workload has no label oracle); "
        "column left out"
    ]


def test_the_csv_keeps_every_declared_column_with_its_null_reasons() -> None:
    """The Markdown drops a column no row reports; leaderboard.csv keeps every column the
    kind declares, in the kind's order, so a tool reads the same columns whatever the
    data, and the reason each null has."""
    null = Metric.null("labels", "oracle", "the workload has no label oracle")
    plain = [detector("msp"), detector("energy")]
    oracle = [detector("msp", labels_used=fraction(0.4)), detector("energy", labels_used=null)]
    none = [detector("msp", labels_used=null), detector("energy", labels_used=null)]
    frames = [render_csv(build_leaderboard(recs)) for recs in (plain, oracle, none)]
    assert list(frames[0].columns) == list(frames[1].columns) == list(frames[2].columns)
    (table,) = build_leaderboard(none)
    assert "labels_used" in table.dropped  # left out of the Markdown, not of the CSV
    csv = frames[2]
    for column in ("target_f1", "labels_used", "type1_error_at_alpha"):
        assert column in csv.columns and f"{column}__reason" in csv.columns
    assert list(csv["labels_used__reason"]) == ["the workload has no label oracle"] * 2
    assert all(isinstance(why, str) and why for why in csv["target_f1__reason"])
    assert list(csv["labels_used__unit"]) == ["labels"] * 2
    assert csv.columns.get_loc("auroc") < csv.columns.get_loc("target_f1")


def test_a_row_lacking_what_its_peers_report_keeps_the_column_and_one_note() -> None:
    """One detector has p-values, two have none: the Type-I column stays, reads n/a in
    the two rows, and one line says why for both rows and both p-value columns (the
    reason the kind declares for a detector without the metric, ``MetricDecl.absent``)."""
    recs = [
        detector("statistical", type1_error_at_alpha=fraction(0.05), power_at_alpha=fraction(0.9)),
        detector("msp"),
        detector("knn", hparams={"k": 50}),
    ]
    (table,) = build_leaderboard(recs)
    assert {"type1_error_at_alpha", "power_at_alpha"} <= set(table.columns)
    md = render_markdown(recs, [table])
    rows = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| ")}
    assert rows["msp"].count("| n/a") == 2 and rows["knn"].count("| n/a") == 2
    assert "n/a" not in rows["statistical"]
    assert notes(md) == [
        "- type1_error_at_alpha, power_at_alpha: n/a for msp [defaults], knn [k=50] "
        "because the detector gives no p-values"
    ]


def test_a_missing_metric_without_a_declared_reason_is_not_reported() -> None:
    """aupr_in declares no reason for its absence: a row without it reads "not reported";
    a row that lacks target_f1 gets the kind's reason for it."""
    recs = [
        detector("a", aupr_in=fraction(0.8), target_f1=fraction(0.7)),
        detector("b"),
    ]
    (table,) = build_leaderboard(recs)
    md = render_markdown(recs, [table])
    assert sorted(notes(md)) == [
        "- aupr_in: n/a for b [defaults] because not reported",
        "- target_f1: n/a for b [defaults] because the detector does not predict "
        "(no keep/reject decision)",
    ]


def test_a_null_with_a_reason_is_noted_with_that_reason() -> None:
    recs = [
        detector("a", fit_time=seconds(2.0)),
        detector("b", fit_time=Metric.null("s", "perf_counter", "fit skipped: nothing to fit")),
    ]
    (table,) = build_leaderboard(recs)
    md = render_markdown(recs, [table])
    assert notes(md) == ["- fit_time: n/a for b [defaults] because fit skipped: nothing to fit"]


@pytest.mark.parametrize(
    ("values", "header", "cells"),
    [
        ((37.85, 0.02419), "fit_time (s)", ("37.85", "0.02419")),
        ((0.3785, 0.02419), "fit_time (ms)", ("378.5", "24.19")),
        ((3.785e-4, 2.419e-5), "fit_time (µs)", ("378.5", "24.19")),
    ],
)
def test_a_column_prints_in_one_unit_said_once_in_its_header(
    values: tuple[float, float], header: str, cells: tuple[str, str]
) -> None:
    recs = [detector(m, fit_time=seconds(v)) for m, v in zip(("slow", "fast"), values, strict=True)]
    (table,) = build_leaderboard(recs)
    md = render_markdown(recs, [table])
    head = next(line for line in md.splitlines() if line.startswith("| # |"))
    assert f"| {header} |" in head
    rows = [line for line in md.splitlines() if line.split(" | ")[1:2] in (["slow"], ["fast"])]
    got = sorted(line.rstrip(" |").rsplit(" | ", 1)[1] for line in rows)
    assert got == sorted(cells)
    assert " ms |" not in md and " s |" not in md and " µs |" not in md


def test_bytes_and_large_counts_read_in_one_scale_without_exponents() -> None:
    recs = [
        detector("a", peak=Metric(value=3 * 2**30, unit="bytes", meter="m")),
        detector("b", peak=Metric(value=512 * 2**10, unit="bytes", meter="m")),
    ]
    (table,) = build_leaderboard(recs)
    assert table.unit_label("auroc") == "fraction"
    from benchmark.report.leaderboard import column_scale, format_value

    assert column_scale([3 * 2**30, 512 * 2**10], "bytes") == (2**30, "GiB")
    assert format_value(34837.0, "tokens/s", column_scale([34837.0], "tokens/s")) == "34837"


def _summary(tables: list, width: int = 80) -> str:
    buf = io.StringIO()
    # bench's console soft-wraps text; the summary must still fit.
    console = Console(width=width, file=buf, soft_wrap=True, color_system=None)
    print_summary(console, tables, "results/x/LEADERBOARD.md")
    return buf.getvalue()


def _wide_records() -> list[RunRecord]:
    long = {"orthogonalizer": "newton-schulz", "rank": 16, "update_gap": 50, "lr": 0.003}
    recs = []
    for method, hp in (("statistical-ood", long), ("msp", {}), ("mahalanobis", {"x": 1})):
        for seed in range(3):
            recs.append(
                detector(
                    method,
                    seed,
                    hparams=hp,
                    auroc=fraction(0.9 - 0.01 * len(method) + 0.005 * seed),
                    aupr_in=fraction(0.8 + 0.01 * seed),
                    fpr_at_95_tpr=fraction(0.3),
                    fit_time=seconds(37.85 + seed),
                    latency_per_sample=seconds(0.0242),
                )
            )
    return recs


@pytest.mark.parametrize("width", [80, 60])
def test_the_terminal_summary_fits_the_width_and_names_every_row(width: int) -> None:
    tables = build_leaderboard(_wide_records())
    out = _summary(tables, width)
    assert max(len(line) for line in out.splitlines()) <= width, out
    for method in ("statistical-ood", "msp", "mahalanobis"):
        assert method in out
    assert "auroc" in out and "[" in out  # the primary with its interval
    assert "| # |" not in out  # not the Markdown
    assert "results/x/LEADERBOARD.md" in out


COMMITTED = Path(__file__).resolve().parent.parent / "results"


@pytest.mark.parametrize("width", [50, 60, 80])
@pytest.mark.parametrize("results", ["security", "smoke", "detectors"])
def test_the_summary_of_committed_results_never_cuts_a_verdict_or_a_method(
    results: str, width: int
) -> None:
    """Each row's line holds its rank, its whole method name and its whole verdict; no
    line is wider than the terminal. The method column narrows (hyperparameters wrap)
    before the primary loses its interval: at 60 columns and more every interval stays."""
    from benchmark.report.leaderboard import format_cell
    from benchmark.report.render import load_report

    for table in load_report(COMMITTED / results).tables:
        out = _summary([table], width)
        lines = out.splitlines()
        assert max(len(line) for line in lines) <= width, out
        scale = table.scale(table.primary)
        rest = iter(lines)
        for row in table.rows:
            line = next((x for x in rest if x.split()[:2] == [row.rank_label, row.method]), None)
            assert line is not None, (table.title, row.method, out)
            if table.verdict_column:
                assert (row.verdict or "n/a") in line.split(), (line, out)
            cell = format_cell(row.cells[table.primary], table.units[table.primary], scale)
            if width >= 60:
                assert cell in line, (cell, out)
        if width >= 60:
            assert "means only" not in out


def test_a_narrow_terminal_drops_the_primary_interval_and_says_so() -> None:
    """At 50 columns a long method name, a long primary name and a long verdict leave no
    room for "0.960 [0.920, 1.000]": the means alone, a line saying so, the primary's header
    folded before a method's name is; the verdicts and the names whole."""
    recs = []
    for method, value in (("shield-intermediate", 0.96), ("all-trusted", 0.0)):
        spec = RunSpec(suite="s", kind="security_split", method=method, workload="w")
        ratio = Metric(
            value=value, unit="fraction", meter="m", ci_low=max(value - 0.04, 0), ci_high=1.0
        )
        recs.append(
            RunRecord(
                id=spec.id,
                spec=spec,
                status="ok",
                metrics={"attack_recovered_ratio": ratio},
                environment=ENV,
            )
        )
    out = _summary(build_leaderboard(recs), 50)
    assert max(len(line) for line in out.splitlines()) <= 50, out
    assert "[" not in out.split("every column")[0], out
    assert "attack_recovered_ratio: means only" in " ".join(out.split())
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line[:1] in ("1", "2")}
    assert rows["all-trusted"][-1] == "inconclusive", out
    assert rows["shield-intermediate"][-2:] == ["0.96", "exposed"], out
    wide = _summary(build_leaderboard(recs), 80)
    assert "0.960 [0.920, 1.000]" in wide and "means only" not in wide


def test_a_table_whose_runs_all_failed_keeps_its_title_and_caption_whole() -> None:
    """No ok row leaves a table a few columns wide; its title and its "not ok" line wrap
    at the terminal's width, not the table's (no word on a line of its own)."""
    recs = []
    for method in ("msp", "energy"):
        spec = RunSpec(suite="s", kind="detector", method=method, workload="mnist-cnn")
        recs.append(RunRecord(id=spec.id, spec=spec, status="failed", reason="boom"))
    out = _summary(build_leaderboard(recs), 80)
    lines = [line.rstrip() for line in out.splitlines()]
    assert "detector on mnist-cnn: ranked by auroc (higher is better)" in lines, out
    (caption,) = [line for line in lines if line.startswith("not ok:")]
    assert "detector/msp on mnist-cnn seed=0 (failed)" in caption, out
    assert "detector/energy" in caption, out


def test_the_summary_has_the_verdict_and_prints_user_text_literally() -> None:
    spec = RunSpec(
        suite="s", kind="security_split", method="slip", hparams={"tag": "[red]x[/]"}, workload="w"
    )
    rec = RunRecord(
        id=spec.id,
        spec=spec,
        status="ok",
        metrics={"attack_recovered_ratio": Metric(value=0.9, unit="fraction", meter="m")},
        environment=ENV,
    )
    out = _summary(build_leaderboard([rec]))
    assert "exposed" in out and "verdict" in out
    assert "[red]x[/]" in out


def test_bench_leaderboard_prints_the_summary_not_the_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmark import cli

    for r in _wide_records():
        store.write_record(tmp_path, r)
    monkeypatch.setattr(cli, "console", Console(width=80, soft_wrap=True, color_system=None))
    assert cli.main(["leaderboard", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| # |" not in out and "statistical-ood" in out
    assert max(len(line) for line in out.splitlines() if "reports:" not in line) <= 80
    md = (tmp_path / "LEADERBOARD.md").read_text()
    assert "| # | method |" in md and "latency_per_sample (ms)" in md
