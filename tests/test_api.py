"""The Python API: ``benchmark.run_suite`` runs a suite as ``bench run`` does, and
``benchmark.load_results`` / ``bench export`` give one row per run with every metric's
value, unit, n and interval and the hyperparameters and options as columns."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import benchmark
from benchmark.cli import main
from benchmark.store import StoreError

SUITE = """
name: api
device: cpu
seeds: [0, 1]
experiments:
  - kind: optimizer
    workloads:
      - name: least-squares
    methods:
      - name: signsgd
        hparams: {lr: 0.01}
    budget: {steps: 5}
"""


@pytest.fixture
def suite(tmp_path: Path, example_dist: str) -> Path:
    path = tmp_path / "api.yaml"
    path.write_text(SUITE)
    return path


def test_run_suite_then_load_results(suite: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    records = benchmark.run_suite(suite, results=results)
    assert sorted(r.spec.seed for r in records) == [0, 1]
    assert all(r.status == "ok" for r in records), [r.reason for r in records]
    assert (results / "LEADERBOARD.md").exists()
    assert benchmark.run_suite(suite, results=results) == []  # resumed: nothing left to run

    frame = benchmark.load_results(results)
    assert len(frame) == 2 and set(frame["seed"]) == {0, 1}
    row = frame.iloc[0]
    assert row["status"] == "ok" and row["method"] == "signsgd" and row["device"] == "cpu"
    assert row["hparam.lr"] == 0.01
    by_id = {r.id: r for r in records}
    for _, r in frame.iterrows():
        metric = by_id[r["id"]].metrics["eval_loss"]
        assert r["eval_loss"] == metric.value
        assert r["eval_loss__unit"] == metric.unit
        assert r["eval_loss__n"] == metric.n or pd.isna(r["eval_loss__n"])
    assert "git_commit" in frame.columns and "harness_overhead_s" in frame.columns


def test_bench_export_writes_csv_and_parquet(
    suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    benchmark.run_suite(suite, results=results, report=False)
    assert main(["export", str(results)]) == 0
    csv = pd.read_csv(results / "results.csv")
    assert len(csv) == 2 and "hparam.lr" in csv.columns and "eval_loss__ci_low" in csv.columns
    pytest.importorskip("pyarrow")
    out = tmp_path / "r.parquet"
    assert main(["export", str(results), "--format", "parquet", "--out", str(out)]) == 0
    assert pd.read_parquet(out)["seed"].tolist() == csv["seed"].tolist()


def test_load_results_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such results directory"):
        benchmark.load_results(tmp_path / "nope")
    runs = tmp_path / "r" / "runs"
    runs.mkdir(parents=True)
    (runs / "bad.json").write_text(json.dumps({"id": "x"}))
    with pytest.raises(StoreError, match=r"bad\.json"):
        benchmark.load_results(tmp_path / "r")


def test_the_api_is_imported_lazily() -> None:
    import subprocess
    import sys

    code = "import benchmark, sys; print('pandas' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"]
    assert callable(benchmark.run_suite) and callable(benchmark.load_results)
    with pytest.raises(AttributeError):
        benchmark.no_such_thing  # noqa: B018


def test_bench_run_goes_through_the_apis_open_run(
    suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench run`` and ``run_suite`` share one path (planning, lock, resume, executor and
    jobs): the command calls ``open_run`` with what its flags say."""
    import contextlib

    import benchmark.api as api

    calls: list[dict[str, object]] = []
    real = api.open_run

    @contextlib.contextmanager
    def spy(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls.append(kwargs)
        with real(*args, **kwargs) as run:  # type: ignore[arg-type]
            yield run

    monkeypatch.setattr(api, "open_run", spy)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--jobs", "2", "--no-report"]) == 0
    (call,) = calls
    assert call["jobs"] == 2 and call["executor"] == "local" and call["results"] == str(results)
    assert len(list((results / "runs").glob("*.json"))) == 2


def test_jobs_auto_and_an_override_are_said(suite: Path, tmp_path: Path) -> None:
    with benchmark.api.open_run(suite, results=tmp_path / "a", jobs="auto") as run:
        assert run.executor.jobs == 2 and run.executor.threads == 1  # 2 runs, CPU
        assert any("--jobs auto" in note for note in run.notes)
        assert len(run.todo) == 2 and run.skipped == 0
    suite.write_text(SUITE.replace("name: api\n", "name: api\njobs: 1\n"))
    with benchmark.api.open_run(suite, results=tmp_path / "b", jobs=2) as run:
        assert any("overrides the suite's jobs: 1" in note for note in run.notes)
    slurm = benchmark.api.open_run(suite, results=tmp_path / "c", executor="slurm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected 'local'"), slurm:
        pass
