"""The MLflow observer against a real local MLflow store: one MLflow run per record with its
params, final metrics, step curves, status and the record as an artifact, read back with
``MlflowClient``; ``MLFLOW_TRACKING_URI`` honoured; a clear error without the extra."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmark import store
from benchmark.cli import main
from benchmark.executors.local import InlineExecutor
from benchmark.host import Registry
from benchmark.records import Budget, RunRecord, RunSpec

mlflow_tracking = pytest.importorskip("mlflow.tracking")

MODULE = "plugins.observers.mlflow_observer"
SUITE = """
name: mlflow-observed
device: cpu
seeds: [0, 1]
experiments:
  - kind: optimizer
    workloads:
      - name: ae-synthetic
        options: {hidden_width: 16}
    methods:
      - name: adamw
        hparams: {lr: 0.01}
    budget: {steps: 6, eval_every: 2}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory (the default store is ./mlruns), no tracking URI set, and
    the file-store switch the observer sets for its process put back afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    yield tmp_path
    if before is None:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
    else:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = before


def _client(store_dir: Path) -> mlflow_tracking.MlflowClient:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # reading a file store, as the observer does
    return mlflow_tracking.MlflowClient(tracking_uri=store_dir.as_uri())


def _runs(client: mlflow_tracking.MlflowClient, experiment: str) -> list:  # type: ignore[type-arg]
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return list(client.search_runs([found.experiment_id]))


def test_bench_run_observe_mlflow_round_trips_every_record(workdir: Path) -> None:
    suite = workdir / "suite.yaml"
    suite.write_text(SUITE)
    results = workdir / "results"
    args = ["run", str(suite), "--results", str(results), "--observe", "mlflow", "--no-report"]
    assert main(args) == 0
    records = {r.id: r for r in store.load_records(results)}
    assert len(records) == 2 and all(r.status == "ok" for r in records.values())

    client = _client(workdir / "mlruns")
    runs = _runs(client, "mlflow-observed")
    assert sorted(run.data.tags["methodbench.run_id"] for run in runs) == sorted(records)
    for run in runs:
        record = records[run.data.tags["methodbench.run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["methodbench.status"] == "ok"
        params = run.data.params
        assert params["method"] == "adamw" and params["workload"] == "ae-synthetic"
        assert params["seed"] == str(record.spec.seed) and params["kind"] == "optimizer"
        assert params["hparam.lr"] == "0.01" and params["option.hidden_width"] == "16"
        assert params["hparam.weight_decay"] == str(record.info["hparams"]["weight_decay"])
        assert params["protocol.eval_every"] == "2" and params["budget.steps"] == "6"
        assert params["commit"] == (record.environment["git_commit"] or "unknown")
        assert params["device"] == record.environment["device_name"]

        finals = {k: m for k, m in record.metrics.items() if m.value is not None}
        assert finals and "eval_loss" in finals
        for name, metric in finals.items():
            assert run.data.metrics[name] == metric.value, name
            assert run.data.tags[f"unit.{name}"] == metric.unit
            if metric.n is not None:
                assert run.data.metrics[f"{name}.n"] == metric.n
        for name, metric in record.metrics.items():
            if metric.value is None:
                assert name not in run.data.metrics
                assert run.data.tags[f"reason.{name}"] == metric.reason

        for curve in ("train_loss", "eval_loss"):
            history = client.get_metric_history(run.info.run_id, f"curve/{curve}")
            points = sorted((m.step, m.value) for m in history)
            expected = record.curves[curve]
            assert len(points) > 1
            assert points == [(int(x), y) for x, y in zip(expected.x, expected.y, strict=True)]

        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["record.json"]
        local = client.download_artifacts(run.info.run_id, "record.json", str(workdir))
        assert RunRecord.model_validate(json.loads(Path(local).read_text())) == record


def _one_run(workdir: Path) -> RunRecord:
    spec = RunSpec(
        suite="elsewhere",
        kind="optimizer",
        method="adamw",
        workload="ae-synthetic",
        seed=3,
        device="cpu",
        budget=Budget(steps=4),
    )
    registry = Registry(extra_plugins=[MODULE])
    [record] = InlineExecutor(workdir / "results", registry).run([spec])
    return record


def test_the_tracking_uri_in_the_environment_is_honoured(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = workdir / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere.as_uri())
    record = _one_run(workdir)
    assert record.status == "ok", record.reason
    assert not (workdir / "mlruns").exists()
    [run] = _runs(_client(elsewhere), "elsewhere")
    assert run.data.tags["methodbench.run_id"] == record.id
    assert run.data.metrics["eval_loss"] == record.metrics["eval_loss"].value


def test_a_failed_run_is_a_failed_mlflow_run_with_its_reason(workdir: Path) -> None:
    from plugins.observers.mlflow_observer import log_record

    spec = RunSpec(suite="failures", kind="optimizer", method="adamw", workload="ae-synthetic")
    record = RunRecord(
        id=spec.id,
        spec=spec,
        status="oom",
        reason="OutOfMemoryError: 3 GiB more",
        started_at="2025-01-02T03:04:05+00:00",
        duration_s=2.5,
    )
    run_id = log_record(record)
    run = _client(workdir / "mlruns").get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["methodbench.status"] == "oom"
    assert run.data.tags["methodbench.reason"] == record.reason
    assert run.data.metrics == {}
    assert run.info.end_time - run.info.start_time == 2500


def test_without_the_extra_the_observer_refuses_with_the_pip_command(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def no_mlflow(name: str, *args: object, **kwargs: object) -> object:
        return None if name == "mlflow" else real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", no_mlflow)
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    suite = workdir / "suite.yaml"
    suite.write_text(SUITE)
    assert main(["run", str(suite), "--results", str(workdir / "r"), "--observe", "mlflow"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'methodbench[mlflow]'" in err and MODULE in err
    assert not (workdir / "r" / "runs").exists()  # refused before anything ran
