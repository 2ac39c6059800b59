"""Faults injected into the run loop: a killed or terminated parent, two runs into one
directory, a worker that floods its pipes, observers and plugins that misbehave. Each test
fails on the loop as it was before these were handled."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from benchmark import store
from benchmark.cli import main
from benchmark.executors.capped_log import HEAD_BYTES, TAIL_BYTES
from benchmark.executors.local import InlineExecutor, LocalExecutor, SilentEvents
from benchmark.host import Registry
from benchmark.records import Budget, RunSpec

REPO = str(Path(__file__).resolve().parent.parent)
FAULTS = "tests.fixtures.faulty_methods"

SUITE = """\
name: faults
experiments:
  - kind: optimizer
    workloads: [least-squares]
    methods: [signsgd, faulty-sleep]
    budget: {{steps: 10}}
    timeout_s: {timeout}
"""


def _workers_of(parent: int) -> list[psutil.Process]:
    """The run processes of a ``bench run``: spawned workers, or the children of its fork
    server."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if str(parent) not in cmd:
            continue
        if "benchmark.executors.worker" in cmd:
            found.append(proc)
        elif "benchmark.executors.forkserver" in cmd:
            # The server is the parent's child; its forked runs share its command line.
            with contextlib.suppress(psutil.Error):
                if proc.ppid() == parent:
                    found += proc.children()
    return [p for p in found if _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _bench(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark.cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def faults_env(tmp_path: Path, example_dist: str) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([example_dist, REPO]),
        "TMPDIR": str(tmp),
    }


def _wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_dead_parent_leaves_no_worker_and_resume_keeps_every_record(
    tmp_path: Path, faults_env: dict[str, str], how: signal.Signals
) -> None:
    suite = tmp_path / "faults.yaml"
    suite.write_text(SUITE.format(timeout=120))
    results = tmp_path / "results"
    args = ["run", str(suite), "--results", str(results), "--plugin", FAULTS, "--no-report"]
    parent = _bench(args, faults_env)
    # signsgd finishes first; then the sleeping run's worker is up.
    _wait_for(lambda: store.record_paths(results), 120, "the first record")
    (worker,) = _wait_for(lambda: _workers_of(parent.pid), 60, "the sleeping worker")
    finished = {p.name: p.read_bytes() for p in store.record_paths(results)}
    parent.send_signal(how)
    parent.wait(timeout=30)
    killed_at = time.monotonic()
    # The worker must not outlive its parent by more than a second.
    while worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() - killed_at < 1.0, "the worker outlived its parent"
        time.sleep(0.02)
    handoffs = list(Path(faults_env["TMPDIR"]).glob("methodbench-*"))
    if how == signal.SIGTERM:
        assert parent.returncode == 143  # handled like Ctrl-C (cleaned up), 128 + SIGTERM
        assert not handoffs
    # Resume (the sleeper now times out quickly): every finished record is intact, the
    # stale handoff folder of the killed parent is gone, the suite completes.
    suite.write_text(SUITE.format(timeout=3))
    resumed = _bench(args, faults_env)
    assert resumed.wait(timeout=180) == 0, resumed.stderr.read() if resumed.stderr else ""
    after = {p.name: p.read_bytes() for p in store.record_paths(results)}
    assert all(after[name] == data for name, data in finished.items())
    statuses = sorted(json.loads(data)["status"] for data in after.values())
    assert statuses == ["ok", "timeout"]
    assert not list(Path(faults_env["TMPDIR"]).glob("methodbench-*"))


def test_a_second_run_into_a_held_directory_exits_2(
    tmp_path: Path, example_dist: str, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "faults.yaml"
    suite.write_text(SUITE.format(timeout=5))
    results = tmp_path / "results"
    store.check_writable(results)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from benchmark import store\n"
            "with store.exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(results),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        code = main(["run", str(suite), "--results", str(results), "--plugin", FAULTS])
        err = capsys.readouterr().err
        assert code == 2 and "in use by another bench run" in err
        assert not store.record_paths(results)
    finally:
        holder.kill()
        holder.wait()
    with store.exclusive(results):  # released when its holder died
        pass


def _spec(method: str, **kw: object) -> RunSpec:
    return RunSpec(
        suite="t",
        kind="optimizer",
        method=method,
        workload="least-squares",
        budget=Budget(steps=5),
        timeout_s=120,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.slow
def test_a_flood_of_output_is_read_in_chunks_and_the_log_keeps_head_and_tail(
    tmp_path: Path, faults_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", faults_env["PYTHONPATH"])
    registry = Registry(extra_plugins=[FAULTS])
    (record,) = LocalExecutor(tmp_path, registry, plugins=[FAULTS]).run([_spec("faulty-chatter")])
    assert record.status == "ok", record.reason
    log = (tmp_path / "logs" / f"{record.id}.log").read_bytes()
    assert len(log) <= HEAD_BYTES + TAIL_BYTES + 400  # 12 MB were printed
    assert b"bytes of output left out" in log
    # The end of the output survives (stdout and stderr interleave in any order).
    assert b"last words" in log[-TAIL_BYTES:]


def test_an_observer_that_raises_is_reported_to_the_user(
    tmp_path: Path, example_dist: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MB_TEST_OBSERVER_RAISE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([example_dist, REPO]))
    warned: list[str] = []

    class Recording(SilentEvents):
        def warn(self, spec: RunSpec, message: str) -> None:
            warned.append(message)

    registry = Registry(extra_plugins=["tests.fixtures.observer"])
    (record,) = LocalExecutor(tmp_path, registry).run([_spec("signsgd")], Recording())
    assert record.status == "ok"
    assert warned and "observer tests.fixtures.observer raised" in warned[0]
    assert "must not stop the suite" in warned[0]


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("tests.fixtures.misspelt_hook", "did you mean 'methodbench_register_methods'"),
        ("tests.fixtures.unmarked_hook", "lacks the @hookimpl marker"),
        ("tests.fixtures.no_hooks", "implements no methodbench hook"),
    ],
)
def test_a_plugin_that_registers_nothing_by_mistake_is_not_listed_ok(
    module: str, expected: str
) -> None:
    info = Registry(extra_plugins=[module]).plugins[module]
    assert not info.ok and expected in " ".join(info.errors)


def test_a_named_plugin_that_fails_is_an_error_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(timeout=5))
    for module in ("tests.fixtures.broken_import", "tests.fixtures.unmarked_hook"):
        code = main(["validate", str(suite), "--plugin", module])
        err = capsys.readouterr().err
        assert code == 2 and f"--plugin {module}" in err and "Traceback" not in err


def test_the_deny_list_matches_names_as_pip_normalises_them(
    example_dist: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "example" in Registry().plugins
    for spelling in ("METHODBENCH_EXAMPLE", "methodbench.example", "Methodbench-Example"):
        monkeypatch.setenv("METHODBENCH_DISABLE_PLUGINS", spelling)
        assert "example" not in Registry().plugins, spelling


def test_two_distributions_with_one_entry_point_name_each_keep_their_row(
    example_dist: str,
) -> None:
    import importlib

    site = Path(example_dist)
    (site / "othermb").mkdir()
    (site / "othermb" / "__init__.py").write_text("")
    info = site / "othermb-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: othermb\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text("[methodbench]\nexample = othermb\n")
    (info / "top_level.txt").write_text("othermb\n")
    importlib.invalidate_caches()
    rows = [p for p in Registry().plugins.values() if p.source == "entry-point"]
    by_dist = {p.distribution: p for p in rows}
    assert set(by_dist) == {"methodbench-example", "othermb"}
    assert by_dist["methodbench-example"].ok and by_dist["methodbench-example"].registered
    assert not by_dist["othermb"].ok  # implements no hook: its own error, its own row


def test_a_plugin_printing_at_import_does_not_corrupt_json_listing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plugins", "--json", "--plugin", "tests.fixtures.noisy_import"]) == 0
    out, err = capsys.readouterr()
    listing = json.loads(out)
    assert any(p["name"] == "tests.fixtures.noisy_import" for p in listing["plugins"])
    assert "hello from a noisy plugin" in err


def test_a_run_that_finished_before_an_interrupt_keeps_its_record(
    tmp_path: Path, faults_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the executor sleeps between polls, after the worker wrote its record
    and exited: the record is stored, not deleted with the handoff folder."""
    monkeypatch.setenv("PYTHONPATH", faults_env["PYTHONPATH"])

    def exited(pid: int) -> bool:
        # Waitable, without reaping it: psutil's "zombie" is already shown while the
        # main thread is gone and the others still tear down (up to ~0.5 s here).
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def interrupted(self: LocalExecutor) -> None:
        # Only the executor's own wait is interrupted (patching time.sleep would also
        # interrupt the store's file lock and the cleanup that must store the record).
        (worker,) = psutil.Process().children()  # one run: spawned, no server
        deadline = time.monotonic() + 120
        while not exited(worker.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalExecutor, "_wait_a_little", interrupted)
    registry = Registry(extra_plugins=[FAULTS])
    with pytest.raises(KeyboardInterrupt):
        LocalExecutor(tmp_path, registry, plugins=[FAULTS]).run([_spec("signsgd")])
    (stored,) = store.load_records(tmp_path)
    assert stored.status == "ok" and stored.spec.method == "signsgd", stored.reason


def _sleepers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if (proc.info["cmdline"] or [])[:2] == ["sleep", "417"]:
            found.append(proc)
    return found


@pytest.mark.slow
def test_what_a_run_started_dies_with_it_and_a_lingering_worker_keeps_its_record(
    tmp_path: Path, faults_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin's helper process is killed with its run (it would hold the pipes open and
    steal CPU from the next timed run); a worker whose plugin left a non-daemon thread
    running still ends as soon as its record is written."""
    monkeypatch.setenv("PYTHONPATH", faults_env["PYTHONPATH"])
    registry = Registry(extra_plugins=[FAULTS])
    executor = LocalExecutor(tmp_path, registry, plugins=[FAULTS])
    started = time.monotonic()
    spawn, linger = executor.run([_spec("faulty-spawn"), _spec("faulty-linger")])
    assert spawn.status == "ok" and linger.status == "ok", (spawn.reason, linger.reason)
    assert time.monotonic() - started < 60  # the lingering thread sleeps 120 s
    for proc in _sleepers():  # gone, or a zombie its init has not reaped yet
        assert proc.status() == psutil.STATUS_ZOMBIE


def test_a_plugin_or_observer_calling_sys_exit_does_not_stop_bench(
    tmp_path: Path,
    example_dist: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plugins", "--json", "--plugin", "tests.fixtures.exiting_plugin"]) == 0
    listing = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert "SystemExit" in " ".join(listing["tests.fixtures.exiting_plugin"]["errors"])
    monkeypatch.setenv("MB_TEST_OBSERVER_EXIT", "1")
    warned: list[str] = []

    class Recording(SilentEvents):
        def warn(self, spec: RunSpec, message: str) -> None:
            warned.append(message)

    registry = Registry(extra_plugins=["tests.fixtures.observer"])
    records = InlineExecutor(tmp_path, registry).run(
        [_spec("signsgd"), _spec("signsgd", seed=1)], Recording()
    )
    assert [r.status for r in records] == ["ok", "ok"]  # the suite went on
    assert len(warned) == 2 and "SystemExit" in warned[0]


def test_a_log_cut_inside_a_character_still_reads() -> None:
    """The capped log cuts bytes, not characters (and a plugin may print bytes that are
    not UTF-8): reading its tail must never raise, or an ok Ray run would turn failed."""
    import tempfile

    from benchmark.executors.capped_log import CappedLog, read_tail

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.log"
        log = CappedLog(path, head_bytes=5, tail_bytes=5)
        log.write("abcdé".encode() + b"\xff" + "ééééé".encode())
        log.close()
        text = read_tail(path, 4000)
        assert text is not None and "bytes of output left out" in text


def test_a_fifo_among_the_records_does_not_block_the_report(tmp_path: Path) -> None:
    from benchmark.report import write_reports

    store.write_record(tmp_path, _record_for("signsgd"))
    os.mkfifo(store.runs_dir(tmp_path) / "a.json")
    md = write_reports(tmp_path)["markdown"].read_text()
    assert "signsgd" in md


def _record_for(method: str):  # type: ignore[no-untyped-def]
    from benchmark.records import Metric, RunRecord

    spec = _spec(method)
    metric = Metric(value=1.0, unit="nats", meter="test")
    return RunRecord(id=spec.id, spec=spec, status="ok", metrics={"eval_loss": metric})
