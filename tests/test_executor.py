"""Runs end in the right status and the suite goes on: process isolation, timeouts, resume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmark import store
from benchmark.executors.local import InlineExecutor, LocalExecutor
from benchmark.host import Registry
from benchmark.records import Budget, RunSpec

REPO = str(Path(__file__).resolve().parent.parent)


def spec(method: str, *, timeout_s: float | None = 120, steps: int = 20, **hp: object) -> RunSpec:
    return RunSpec(
        suite="t",
        kind="optimizer",
        method=method,
        hparams=dict(hp),
        workload="least-squares",
        seed=0,
        device="cpu",
        budget=Budget(steps=steps),
        timeout_s=timeout_s,
    )


@pytest.fixture
def plugins_on_path(example_dist: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([example_dist, REPO]))
    return ["tests.fixtures.faulty_methods", "tests.fixtures.observer"]


def test_every_failure_becomes_a_record_and_the_suite_goes_on(
    tmp_path: Path, plugins_on_path: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    observed = tmp_path / "observed.txt"
    monkeypatch.setenv("MB_TEST_OBSERVER_FILE", str(observed))
    registry = Registry(extra_plugins=plugins_on_path)
    specs = [
        spec("signsgd"),
        spec("faulty-raise"),
        spec("faulty-explode"),
        spec("faulty-exit"),
        spec("faulty-sleep", timeout_s=8),
        spec("faulty-oom"),
        spec("faulty-not-an-optimizer"),
    ]
    results = tmp_path / "results"
    records = LocalExecutor(results, registry, jobs=2, plugins=plugins_on_path).run(specs)
    status = {r.spec.method: r for r in records}
    assert status["signsgd"].status == "ok", status["signsgd"].reason
    assert status["signsgd"].metrics["eval_loss"].value is not None
    assert status["faulty-raise"].status == "failed"
    assert "always fails" in status["faulty-raise"].reason
    assert "Traceback" in (status["faulty-raise"].log_tail or "")
    assert status["faulty-explode"].status == "diverged"
    assert status["faulty-exit"].status == "failed"
    assert "exited with code 3" in status["faulty-exit"].reason
    assert status["faulty-sleep"].status == "timeout"
    assert status["faulty-oom"].status == "oom"
    assert status["faulty-not-an-optimizer"].status == "failed"
    assert "torch.optim.Optimizer" in status["faulty-not-an-optimizer"].reason
    stored = {r.id: r.status for r in store.load_records(results)}
    assert stored == {r.id: r.status for r in records}
    seen = observed.read_text().split("\n")
    assert len([line for line in seen if line]) == len(specs)


def test_resume_skips_finished_and_rerun_redoes(tmp_path: Path, example_dist: str) -> None:
    from benchmark.cli import main

    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: resume\nexperiments:\n  - kind: optimizer\n    workloads: [least-squares]\n"
        "    methods:\n      - name: signsgd\n        grid: {lr: [0.01, 0.02]}\n"
        "    budget: {steps: 10}\n"
    )
    results = tmp_path / "r"
    args = ["run", str(suite), "--results", str(results), "--inline", "--no-report"]
    assert main(args) == 0
    first = {r.id: r.started_at for r in store.load_records(results)}
    assert len(first) == 2
    mtimes = {p.name: p.stat().st_mtime_ns for p in (results / "runs").glob("*.json")}
    assert main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (results / "runs").glob("*.json")} == mtimes
    assert main([*args, "--rerun"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (results / "runs").glob("*.json")} != mtimes


def test_observer_errors_do_not_stop_runs(
    tmp_path: Path, example_dist: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MB_TEST_OBSERVER_RAISE", "1")
    registry = Registry(extra_plugins=["tests.fixtures.observer"])
    records = InlineExecutor(tmp_path, registry).run([spec("signsgd", steps=5)])
    assert records[0].status == "ok"
    assert store.load_records(tmp_path)[0].id == records[0].id


def test_a_display_error_at_start_leaves_no_orphaned_worker(
    tmp_path: Path, plugins_on_path: list[str]
) -> None:
    import psutil

    from benchmark.executors.local import SilentEvents

    class Boom(SilentEvents):
        def started(self, spec: RunSpec) -> None:
            raise RuntimeError("display failed")

    executor = LocalExecutor(tmp_path, Registry(), plugins=plugins_on_path)
    with pytest.raises(RuntimeError, match="display failed"):
        executor.run([spec("signsgd")], Boom())
    # The worker was started, then tracked before the display could fail, so it is killed.
    assert not psutil.Process().children(recursive=True)
