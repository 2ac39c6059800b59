"""Runs forked from a warm server: still a process per run (statuses, timeouts, the
environment as it is now), with the harness's own cost recorded in every record, and a
server that dies fails its runs instead of hanging the suite."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from benchmark.executors.forkclient import forkserver_supported
from benchmark.executors.local import LocalExecutor, auto_jobs
from benchmark.host import Registry
from benchmark.records import Budget, RunSpec

REPO = str(Path(__file__).resolve().parent.parent)
pytestmark = pytest.mark.skipif(not forkserver_supported(), reason="the fork server is Linux-only")


def spec(method: str, *, seed: int = 0, timeout_s: float = 120, steps: int = 10) -> RunSpec:
    return RunSpec(
        suite="t",
        kind="optimizer",
        method=method,
        hparams={"lr": 0.01},
        workload="least-squares",
        seed=seed,
        device="cpu",
        budget=Budget(steps=steps),
        timeout_s=timeout_s,
    )


@pytest.fixture
def plugins(example_dist: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([example_dist, REPO]))
    return ["tests.fixtures.faulty_methods"]


def _harness_ok(record) -> None:  # type: ignore[no-untyped-def]
    h = record.harness
    assert h["start_s"] >= 0 and h["end_s"] >= 0 and "protocol_end" not in h
    # A forked run also carries its share of the server's start-up.
    share = h.get("server_start_share_s", 0.0)
    assert (share > 0) == (h["launcher"] == "forkserver")
    assert math.isclose(record.harness_overhead_s, h["start_s"] + h["end_s"] + share)
    assert record.environment["regime"]["launcher"] == h["launcher"]


def test_runs_are_forked_and_record_the_harness_overhead(
    tmp_path: Path, plugins: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(extra_plugins=plugins)
    specs = [spec("signsgd", seed=0), spec("signsgd", seed=1), spec("faulty-raise")]
    records = LocalExecutor(tmp_path, registry, plugins=plugins).run(specs)
    by_seed = {(r.spec.method, r.spec.seed): r for r in records}
    for key in (("signsgd", 0), ("signsgd", 1)):
        record = by_seed[key]
        assert record.status == "ok", record.reason
        assert record.harness["launcher"] == "forkserver"
        _harness_ok(record)
    failed = by_seed[("faulty-raise", 0)]
    assert failed.status == "failed" and "always fails" in (failed.reason or "")
    _harness_ok(failed)  # a run that raised still says what the harness cost
    # Disabled: a fresh interpreter per run, recorded as such.
    monkeypatch.setenv("METHODBENCH_FORKSERVER", "0")
    (spawned,) = LocalExecutor(tmp_path / "b", registry, plugins=plugins).run([spec("signsgd")])
    assert spawned.status == "ok" and spawned.harness["launcher"] == "subprocess"
    _harness_ok(spawned)


def test_timeouts_crashes_and_exits_keep_their_statuses(tmp_path: Path, plugins: list[str]) -> None:
    registry = Registry(extra_plugins=plugins)
    specs = [spec("faulty-sleep", timeout_s=4), spec("faulty-exit"), spec("signsgd")]
    records = LocalExecutor(tmp_path, registry, jobs=2, plugins=plugins).run(specs)
    status = {r.spec.method: r for r in records}
    assert status["faulty-sleep"].status == "timeout"
    assert status["faulty-exit"].status == "failed"
    assert "exited with code 3" in (status["faulty-exit"].reason or "")
    assert status["signsgd"].status == "ok"
    assert not list(psutil.Process().children(recursive=True)), "a run outlived its suite"


def test_the_preload_names_what_the_runs_use(plugins: list[str]) -> None:
    registry = Registry(extra_plugins=plugins)
    tiny = spec("adamw").model_copy(update={"workload": "tiny-llama"})
    modules = LocalExecutor(Path("."), registry)._preload([tiny])
    assert "plugins.optimizers.adamw" in modules
    assert "plugins.workloads.text" in modules
    assert "benchmark.protocols.optimizer" in modules


def test_a_dead_server_fails_its_runs_and_the_suite_ends(
    tmp_path: Path, plugins: list[str]
) -> None:
    registry = Registry(extra_plugins=plugins)
    executor = LocalExecutor(tmp_path, registry, plugins=plugins)
    out: list = []
    thread = threading.Thread(
        target=lambda: out.extend(
            executor.run([spec("faulty-sleep", timeout_s=100), spec("signsgd")])
        )
    )
    thread.start()
    deadline = time.monotonic() + 120
    server = None
    while time.monotonic() < deadline and server is None:
        for child in psutil.Process().children():
            if "benchmark.executors.forkserver" in " ".join(child.cmdline()) and child.children():
                server = child
        time.sleep(0.1)
    assert server is not None, "no run was forked"
    (worker,) = server.children()
    os.kill(server.pid, signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive()
    record, after = out
    assert record.status == "failed" and "fork server" in (record.reason or "")
    worker.wait(timeout=5)  # killed with its server (PR_SET_PDEATHSIG)
    # The rest of the batch is not lost: it falls back to a fresh interpreter per run.
    assert after.status == "ok" and after.harness["launcher"] == "subprocess"


def test_a_single_run_is_spawned_not_served(tmp_path: Path, plugins: list[str]) -> None:
    registry = Registry(extra_plugins=plugins)
    (record,) = LocalExecutor(tmp_path, registry, plugins=plugins).run([spec("signsgd")])
    assert record.status == "ok" and record.harness["launcher"] == "subprocess"


def test_jobs_auto_is_a_core_per_run_on_cpu_and_one_on_a_gpu() -> None:
    cores = len(os.sched_getaffinity(0))
    assert auto_jobs("cpu", 100) == cores
    assert auto_jobs("cpu", 1) == 1
    assert auto_jobs("cuda", 100) == 1
