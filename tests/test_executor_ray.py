"""The Ray executor: each spec a Ray task, records come back to the driver's store.

Runs a local Ray instance (2 CPUs); the same failure classes as the local executor must
come back as records, and the driver must be the one that writes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmark import store
from benchmark.host import Registry
from tests.test_executor import REPO, spec

ray = pytest.importorskip("ray", reason="Ray is the 'distributed' extra")

pytestmark = pytest.mark.slow


@pytest.fixture
def local_ray(example_dist: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    # Ray workers inherit the driver's environment when the instance starts: the
    # third-party example and the test fixtures must be importable there.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([example_dist, REPO]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_runs_each_spec_and_the_driver_writes_the_records(
    tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmark.executors.distributed import RayExecutor

    observed = tmp_path / "observed.txt"
    monkeypatch.setenv("MB_TEST_OBSERVER_FILE", str(observed))
    plugins = ["tests.fixtures.faulty_methods", "tests.fixtures.observer"]
    registry = Registry(extra_plugins=plugins)
    specs = [spec("signsgd"), spec("faulty-raise"), spec("faulty-exit")]
    results = tmp_path / "results"
    records = RayExecutor(results, registry, plugins=plugins).run(specs)

    status = {r.spec.method: r for r in records}
    assert status["signsgd"].status == "ok", status["signsgd"].reason
    assert status["signsgd"].metrics["eval_loss"].value is not None
    assert status["faulty-raise"].status == "failed"
    assert "always fails" in (status["faulty-raise"].reason or "")
    assert status["faulty-exit"].status == "failed"
    assert "exited with code" in (status["faulty-exit"].reason or "")
    # the driver wrote every record and told the observer (which runs in this process)
    assert store.finished_ids(results) == {s.id for s in specs}
    assert len(observed.read_text().splitlines()) == len(specs)


def test_bench_run_executor_ray_without_ray_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from benchmark.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    suite = Path(REPO) / "suites" / "smoke.yaml"
    assert main(["run", str(suite), "--executor", "ray", "--results", str(tmp_path)]) == 2
