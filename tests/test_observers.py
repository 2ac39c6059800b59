"""The progress hook: ``RunContext.progress(step, **metrics)`` reaches every
``methodbench_run_progress`` observer in the run's own process, each protocol reports at
its natural points, an observer that raises is reported once and dropped without ending
the run, and with no observer the call does nothing."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import benchmark
from benchmark import hookimpl
from benchmark.executors.local import InlineExecutor, LocalExecutor
from benchmark.host import Registry
from benchmark.protocols.base import RunContext
from benchmark.records import Budget, RunSpec
from tests import helpers

REPO = str(Path(__file__).resolve().parent.parent)
OBSERVER = "tests.fixtures.progress_observer"
SUITE = """
name: observed
device: cpu
seeds: [0, 1]
experiments:
  - kind: optimizer
    workloads: [ae-synthetic]
    methods: [adamw]
    budget: {steps: 6, eval_every: 2}
"""


def _spec(seed: int = 0) -> RunSpec:
    return RunSpec(
        suite="observed",
        kind="optimizer",
        method="adamw",
        workload="ae-synthetic",
        seed=seed,
        device="cpu",
        budget=Budget(steps=6),
        protocol={"eval_every": 2},
    )


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, dict[str, float]]] = []

    @hookimpl
    def methodbench_run_progress(self, spec: RunSpec, step: int, metrics: dict) -> None:
        self.calls.append((spec.id, step, dict(metrics)))


class Failing:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def methodbench_run_progress(self, step: int) -> None:  # a subset of the arguments
        self.calls += 1
        raise ValueError(f"logger broke at {step}")


def _bare_context(*observers: object) -> RunContext:
    registry = Registry(builtins=False, entry_points=False)
    for i, observer in enumerate(observers):
        registry.pm.register(observer, name=f"observer-{i}")
    return RunContext(
        spec=_spec(), method=None, workload=None, device=torch.device("cpu"), registry=registry
    )  # type: ignore[arg-type]


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Workers import the fixture observer; it writes where the test reads."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    )
    out = tmp_path / "progress.jsonl"
    monkeypatch.setenv("MB_TEST_PROGRESS_FILE", str(out))
    return out


def test_observers_get_each_evaluation_while_the_run_goes_in_its_own_process(
    tmp_path: Path, on_path: Path
) -> None:
    suite = tmp_path / "observed.yaml"
    suite.write_text(SUITE)
    records = benchmark.run_suite(suite, results=tmp_path / "r", plugins=[OBSERVER], report=False)
    assert len(records) == 2 and all(r.status == "ok" for r in records), [r.reason for r in records]
    lines = _lines(on_path)
    pids = {line["pid"] for line in lines}
    assert os.getpid() not in pids and len(pids) == 2  # each run's own worker process
    for record in records:
        seen = [line for line in lines if line["run"] == record.id]
        assert [line["step"] for line in seen] == [0, 2, 4, 6]
        # The figures are the curves the record ends with, step by step.
        assert [line["metrics"]["eval_loss"] for line in seen] == record.curves["eval_loss"].y
        train = record.curves["train_loss"].y
        assert "train_loss" not in seen[0]["metrics"]
        assert [line["metrics"]["train_loss"] for line in seen[1:]] == [
            train[1],
            train[3],
            train[5],
        ]
        assert "observer_errors" not in record.info
        assert record.info["observer_calls"] == 4 and record.info["observer_s"] >= 0


class Slow:
    """An observer that takes ``delay`` seconds a call (a tracker on a slow network)."""

    def __init__(self, delay: float) -> None:
        self.delay, self.calls = delay, 0

    @hookimpl
    def methodbench_run_progress(self, step: int) -> None:
        self.calls += 1
        time.sleep(self.delay)


def test_the_time_observers_take_inside_a_run_is_in_its_record(tmp_path: Path) -> None:
    """Progress calls sit inside the run's measured phases: the record says how long the
    observers took there, at least what the slow one slept."""
    registry = Registry()
    slow = Slow(0.05)
    registry.pm.register(slow, name="slow-observer")
    [record] = InlineExecutor(tmp_path / "r", registry).run([_spec()])
    assert record.status == "ok", record.reason
    assert slow.calls == record.info["observer_calls"] == 4  # steps 0, 2, 4, 6
    assert record.info["observer_s"] >= slow.calls * slow.delay
    assert record.info["observer_s"] < record.duration_s
    registry.pm.unregister(name="slow-observer")
    [quiet] = InlineExecutor(tmp_path / "quiet", registry).run([_spec(seed=1)])
    assert "observer_s" not in quiet.info  # nobody observed: nothing to say


def test_an_observer_that_raises_is_reported_once_and_the_run_goes_on(
    tmp_path: Path, on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MB_TEST_PROGRESS_RAISE", "1")
    results = tmp_path / "r"
    registry = Registry(extra_plugins=[OBSERVER])
    [record] = LocalExecutor(results, registry, plugins=[OBSERVER]).run([_spec()])
    assert record.status == "ok", record.reason
    assert len(record.curves["eval_loss"].y) == 4  # the run went on to its end
    [error] = record.info["observer_errors"]
    assert OBSERVER in error and "at step 0" in error and "must not stop the run" in error
    assert len(_lines(on_path)) == 1  # called once, then no more
    log = (results / "logs" / f"{record.id}.log").read_text()
    assert log.count("not called again in this run") == 1


def test_a_failing_observer_is_dropped_and_the_others_still_called(
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing, recorder = Failing(), Recorder()
    ctx = _bare_context(failing, recorder)
    for step in (0, 1, 2):
        ctx.progress(step, loss=1.0 / (step + 1), undefined=None)
    assert failing.calls == 1
    assert [(s, m) for _, s, m in recorder.calls] == [
        (0, {"loss": 1.0}),
        (1, {"loss": 0.5}),
        (2, {"loss": 1 / 3}),
    ]
    [error] = ctx.observer_errors
    assert "observer-0" in error and "ValueError: logger broke at 0" in error
    assert capsys.readouterr().err.count("logger broke") == 1


def test_without_observers_progress_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _bare_context()
    ctx.progress(0, loss=1.0)
    assert ctx._observers == []  # looked up once ...
    # A plugin manager that cannot be asked: a second lookup would raise.
    monkeypatch.setattr(ctx.registry, "pm", None)

    class Unconvertible:
        def __float__(self) -> float:
            raise AssertionError("a figure was converted with nobody to hand it to")

    ctx.progress(1, loss=Unconvertible())  # type: ignore[arg-type]  # ... and nothing done


def test_a_status_line_given_as_a_step_is_refused() -> None:
    with pytest.raises(TypeError, match=r"ctx\.say"):
        _bare_context().progress("fitting")  # type: ignore[arg-type]


def test_an_unknown_observer_name_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmark.cli import main

    suite = tmp_path / "observed.yaml"
    suite.write_text(SUITE)
    assert main(["run", str(suite), "--results", str(tmp_path / "r"), "--observe", "mlfow"]) == 2
    err = capsys.readouterr().err
    assert "no such observer (did you mean 'mlflow'?)" in err and "shipped: mlflow" in err
    assert not (tmp_path / "r" / "runs").exists()


def test_a_progress_observer_plugin_is_listed_as_ok() -> None:
    registry = Registry(extra_plugins=[OBSERVER])
    assert registry.plugins[OBSERVER].ok, registry.plugins[OBSERVER].errors


ATTACK = "untrusted-only"


@pytest.mark.parametrize(
    ("kind", "method", "workload", "attacks", "expected", "finals"),
    [
        (
            "detector",
            "ae-recon",
            "ae-anomaly-synthetic",
            [],
            [(0, {"fit_time"}), (1, {"auroc", "fpr_at_95_tpr"})],
            {"auroc": "auroc"},
        ),
        (
            "compressor",
            "magnitude-prune",
            "digits-cnn",
            [],
            [(0, {"quality"}), (1, {"quality", "compression_time", "params_kept_ratio"})],
            {"quality": "quality_after", "compression_time": "compression_time"},
        ),
        (
            "security_split",
            "layer-split",
            "digits-cnn",
            [ATTACK],
            [
                (0, {"max_abs_output_diff", "quality", "quality_original"}),
                (1, {f"attack_{ATTACK}_quality", f"attack_{ATTACK}_recovered_ratio"}),
            ],
            {
                f"attack_{ATTACK}_quality": f"attack_{ATTACK}_quality",
                f"attack_{ATTACK}_recovered_ratio": f"attack_{ATTACK}_recovered_ratio",
            },
        ),
    ],
)
def test_each_protocol_reports_its_phases(
    kind: str,
    method: str,
    workload: str,
    attacks: list[str],
    expected: list[tuple[int, set[str]]],
    finals: dict[str, str],
) -> None:
    recorder = Recorder()
    registry = Registry()
    registry.pm.register(recorder, name="recorder")
    base = helpers.context(kind, method, workload, attacks=attacks)
    ctx = dataclasses.replace(base, registry=registry)
    result = importlib.import_module(f"benchmark.protocols.{kind}").run(ctx)
    assert [(step, set(metrics)) for _, step, metrics in recorder.calls] == expected
    # What the last phase reports is what the record ends with.
    last = recorder.calls[-1][2]
    for name, metric in finals.items():
        assert last[name] == pytest.approx(result.metrics[metric].value), name
