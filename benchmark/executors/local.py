"""Run specs on this machine: each in its own process, up to ``jobs`` at a time.

The parent is the only writer of the results store. A worker hands its record back
through a file; when a worker dies without one (a crash, the out-of-memory killer) or
outlives its timeout, the parent writes the record that says so, and the suite goes on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import filelock

from benchmark import store
from benchmark.executors.capped_log import CappedLog, pump, read_tail
from benchmark.executors.forkclient import (
    ForkedProcess,
    ForkServer,
    ForkServerError,
    forkserver_supported,
)
from benchmark.executors.worker import PROGRESS_PREFIX
from benchmark.host import Registry
from benchmark.records import RunRecord, RunSpec, Status

LOG_TAIL = 4000


class RunEvents(Protocol):
    """What an executor tells its caller (the CLI shows it as a progress display)."""

    def started(self, spec: RunSpec) -> None: ...

    def progress(self, spec: RunSpec, message: str) -> None: ...

    def finished(self, record: RunRecord) -> None: ...

    def warn(self, spec: RunSpec, message: str) -> None: ...


class SilentEvents:
    """Shows nothing: for library callers and tests."""

    def started(self, spec: RunSpec) -> None:
        return None

    def progress(self, spec: RunSpec, message: str) -> None:
        return None

    def finished(self, record: RunRecord) -> None:
        return None

    def warn(self, spec: RunSpec, message: str) -> None:
        return None


def finish_harness(
    record: RunRecord, *, now: float | None = None, server_share_s: float = 0.0
) -> RunRecord:
    """Add the harness's time after the protocol returned (the record's way back to the
    executor) and the per-run total, ``harness_overhead_s``, which a report shows so a
    regression of the harness itself is seen. ``now``: the executor's ``time.monotonic()``
    as it hands the record to the store (the store's own write is not included)."""
    end = record.harness.get("protocol_end")
    start = record.harness.get("start_s")
    if not isinstance(end, int | float) or not isinstance(start, int | float):
        return record
    end_s = max(0.0, (time.monotonic() if now is None else now) - end)
    harness = {k: v for k, v in record.harness.items() if k != "protocol_end"}
    harness["end_s"] = end_s
    total = float(start) + end_s
    if server_share_s:
        harness["server_start_share_s"] = server_share_s
        total += server_share_s
    return record.model_copy(update={"harness": harness, "harness_overhead_s": total})


def _finish(
    results_dir: Path, registry: Registry, record: RunRecord, events: RunEvents
) -> RunRecord:
    store.write_record(results_dir, record)
    events.finished(record)
    # An observer that raises is reported where the user looks (never fatal: the record
    # is already stored).
    for problem in registry.notify_run_finished(record):
        events.warn(record.spec, problem)
    return record


class InlineExecutor:
    """Runs specs one after another in this process: for debugging and fast tests.

    No process boundary means no timeout enforcement and memory figures that include
    earlier runs; ``bench run --inline`` says so.
    """

    def __init__(self, results_dir: Path, registry: Registry) -> None:
        self.results_dir = Path(results_dir)
        self.registry = registry

    def run(self, specs: Sequence[RunSpec], events: RunEvents | None = None) -> list[RunRecord]:
        from benchmark.executors.runner import execute

        events = events or SilentEvents()
        records = []
        for spec in specs:
            events.started(spec)
            handed = time.monotonic()
            record = execute(
                spec, self.registry, lambda m, s=spec: events.progress(s, m), handed_at=handed
            )
            records.append(_finish(self.results_dir, self.registry, finish_harness(record), events))
        return records


class _Process(Protocol):
    """What the executor uses of a run's process: a ``Popen`` or a ``ForkedProcess``."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int | None: ...


@dataclass
class _Running:
    spec: RunSpec
    proc: _Process
    record_path: Path
    log_path: Path
    log: CappedLog
    started: float
    started_at: str
    readers: list[threading.Thread] = field(default_factory=list)
    timed_out: bool = False
    last: list[str] = field(default_factory=list)
    slot: int | None = None
    stored: bool = False
    streams: list[IO[bytes]] = field(default_factory=list)


def core_slots(jobs: int, cores: Sequence[int]) -> list[list[int]]:
    """``jobs`` disjoint sets of cores, as equal as the cores allow (never empty): each
    concurrent run is pinned to its own, so two runs never share a core and every run of a
    suite is timed under the same conditions."""
    cores = sorted(cores)
    jobs = max(1, min(jobs, len(cores)))
    size = len(cores) // jobs
    return [cores[i * size : (i + 1) * size] for i in range(jobs)]


def auto_jobs(device: str, runs: int) -> int:
    """``--jobs auto``: on a CPU one run per core this process may use (each pinned to its
    core with one torch thread, so every run of the suite is timed alike), never more than
    the suite has runs (all of them, not the ones a resume has left: a resumed suite keeps
    its regime); on a GPU one, since runs sharing a device would time each other."""
    if device != "cpu":
        return 1
    return max(1, min(len(available_cores()), runs))


def available_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


class LocalExecutor:
    """A process per run; ``jobs`` processes at a time; per-run timeout from the spec.

    With ``pin`` (the default where the OS supports affinity) and more than one job, each
    worker is pinned to its own slot of cores with as many torch threads as the slot has,
    and every record names the slot and the number of concurrent runs (its timing regime).
    """

    def __init__(
        self,
        results_dir: Path,
        registry: Registry | None,
        *,
        jobs: int = 1,
        plugins: Sequence[str] = (),
        threads_per_job: int | None = None,
        poll_s: float = 0.1,
        pin: bool = True,
        concurrency_known: bool = True,
        source: Path | None = None,
        forkserver: bool = True,
    ) -> None:
        self.results_dir = Path(results_dir)
        # Another checkout whose `benchmark` and `plugins` the workers import (an A/B run
        # of a git revision): first on their path, and their working directory.
        self.source = None if source is None else Path(source)
        self.registry = registry
        self.jobs = max(1, jobs)
        self.plugins = list(plugins)
        cores = available_cores()
        self.pin = pin and self.jobs > 1 and hasattr(os, "sched_setaffinity")
        self.slots = core_slots(self.jobs, cores) if self.pin else []
        if self.pin:
            self.jobs = len(self.slots)
        self.threads = threads_per_job or max(1, len(cores) // self.jobs)
        self._free_slots = list(range(len(self.slots)))
        # What records call their concurrency: this executor's job slots (how many runs
        # may overlap), or 0 = unknown (a Ray node runs other tasks besides ours).
        self.concurrency = self.jobs if concurrency_known else 0
        self.poll_s = poll_s
        self.log_dir = self.results_dir / "logs"
        # Runs are forked from a warm server (torch and the plugins imported once) unless
        # the workers must import another checkout (``source``) or the OS cannot.
        self.use_forkserver = forkserver and source is None and forkserver_supported()
        self._server: ForkServer | None = None
        self.launcher = "subprocess"
        self._server_share_s = 0.0
        self._events: RunEvents | None = None

    def run(self, specs: Sequence[RunSpec], events: RunEvents | None = None) -> list[RunRecord]:
        """Run ``specs``, write each record to the store and tell the observers."""
        events = events or SilentEvents()
        registry = self.registry
        if registry is None:
            raise ValueError("LocalExecutor.run needs a Registry to notify observers")
        return self.collect(specs, events, lambda r: _finish(self.results_dir, registry, r, events))

    def collect(
        self,
        specs: Sequence[RunSpec],
        events: RunEvents,
        on_record: Callable[[RunRecord], RunRecord],
    ) -> list[RunRecord]:
        """Run ``specs`` and hand each record to ``on_record`` as it lands.

        The Ray executor calls this on a cluster node with an ``on_record`` that only
        collects, so the driver stays the single writer of the store.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pending = list(specs)
        running: list[_Running] = []
        records: list[RunRecord] = []
        remove_stale_handoffs()
        with (
            tempfile.TemporaryDirectory(prefix=f"{HANDOFF_PREFIX}{os.getpid()}-") as handoff,
            _owned(Path(handoff)),
            self._serving(specs, Path(handoff), events),
        ):
            try:
                while pending or running:
                    while pending and len(running) < self.jobs:
                        spec = pending.pop(0)
                        run = self._launch(spec, Path(handoff), events)
                        running.append(run)  # tracked before anything else can raise
                        events.started(spec)
                    self._wait_a_little()
                    for run in list(running):
                        if run.proc.poll() is None:
                            limit = run.spec.timeout_s
                            if limit is not None and time.monotonic() - run.started > limit:
                                run.timed_out = True
                                _kill(run.proc)
                            continue
                        records.append(on_record(self._collect(run)))
                        run.stored = True
                        # Untracked only once its record is stored: an interrupt before
                        # that finds it below and still stores what it finished.
                        running.remove(run)
                        if run.slot is not None:
                            self._free_slots.append(run.slot)
            finally:
                # Interrupted: a run that finished (its record file is complete: it is
                # renamed into place whole) is stored, even while its process still tears
                # down; the others are stopped, with whatever they started.
                for run in running:
                    if run.stored:
                        continue
                    if run.record_path.exists():
                        try:
                            records.append(on_record(self._collect(run)))
                            continue
                        except Exception:  # its record could not be stored: stop it
                            pass  # below, like a run that had not finished
                    _kill(run.proc)
                    for reader in run.readers:
                        reader.join(timeout=1)
                    run.log.close()
        return records

    @contextlib.contextmanager
    def _serving(
        self, specs: Sequence[RunSpec], handoff: Path, events: RunEvents
    ) -> Iterator[None]:
        """The fork server for this batch of runs, when one is used; a server that cannot
        start leaves the runs to fresh interpreters, with a warning."""
        self._server, self.launcher, self._events = None, "subprocess", events
        self._server_share_s = 0.0
        # One run gains nothing from a server (it would pay the server's start and the
        # fork): a Ray task, which hands each node one spec, spawns its run.
        if self.use_forkserver and len(specs) >= 2:
            try:
                self._server = ForkServer(self._preload(specs), handoff / "forkserver.log")
                self.launcher = "forkserver"
                # Each run's record carries its share of the server's start-up.
                self._server_share_s = self._server.start_s / len(specs)
            except (ForkServerError, OSError) as exc:
                events.warn(specs[0], f"{exc}; starting a fresh interpreter per run instead")
        try:
            yield
        finally:
            server, self._server = self._server, None
            if server is not None:
                server.close()

    def _wait_a_little(self) -> None:
        """Sleep up to ``poll_s``; with a fork server, wake as soon as a run ends (so the
        record's way back does not wait out a poll interval)."""
        server = self._server
        if server is not None and not server.closed:
            server.wait_change(self.poll_s)
        else:
            time.sleep(self.poll_s)

    def _fallback(self, spec: RunSpec, message: str) -> None:
        """Stop using the fork server for the rest of this batch."""
        server, self._server, self.launcher = self._server, None, "subprocess"
        self._server_share_s = 0.0
        if server is not None:
            server.close()
        if self._events is not None:
            self._events.warn(spec, message)

    def _preload(self, specs: Sequence[RunSpec]) -> list[str]:
        """The modules the runs will import: each kind's protocol and the modules of the
        methods, workloads and attacks they name (known without importing them)."""
        from benchmark.kinds import get_kind

        kinds = [get_kind(spec.kind) for spec in specs]
        modules = {kind.run_module for kind in kinds if kind is not None}
        if self.registry is not None:
            for spec in specs:
                with contextlib.suppress(LookupError):
                    modules.add(self.registry.method(spec.kind, spec.method).module or "")
                with contextlib.suppress(LookupError):
                    modules.add(self.registry.workload(spec.kind, spec.workload).module or "")
                for attack in spec.attacks:
                    with contextlib.suppress(LookupError):
                        modules.add(self.registry.attack(attack).module or "")
        return sorted(m for m in modules if m)

    def _start_process(
        self, spec: RunSpec, spec_path: Path, record_path: Path, slot: int | None
    ) -> tuple[_Process, IO[bytes], IO[bytes]]:
        """The run's process and its stdout and stderr: forked by the server when there is
        one, else a fresh interpreter."""
        handed = time.monotonic()
        cpus = ",".join(map(str, self.slots[slot])) if slot is not None else ""
        if self._server is not None:
            env_path = spec_path.with_name(f"{spec.id}.env.json")
            env_path.write_text(json.dumps(dict(os.environ)))
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            args = {
                "spec": str(spec_path),
                "record": str(record_path),
                "env_file": str(env_path),
                "threads": self.threads,
                "concurrent": self.concurrency,
                "cpus": cpus,
                "plugins": self.plugins,
                "handed_at": handed,
            }
            try:
                forked: ForkedProcess = self._server.start(spec.id, args, out_w, err_w)
            except ForkServerError as exc:
                for fd in (out_r, err_r):
                    os.close(fd)
                # The rest of the suite starts a fresh interpreter per run (the regime
                # each record names says so), rather than stopping here.
                self._fallback(spec, f"{exc}; starting a fresh interpreter per run instead")
                return self._start_process(spec, spec_path, record_path, slot)
            except BaseException:
                for fd in (out_r, err_r):
                    os.close(fd)
                raise
            finally:
                os.close(out_w)
                os.close(err_w)
            return forked, os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb")
        cmd = [
            sys.executable,
            "-m",
            "benchmark.executors.worker",
            "--spec",
            str(spec_path),
            "--record",
            str(record_path),
            "--threads",
            str(self.threads),
            "--concurrent",
            str(self.concurrency),
            "--parent",
            str(os.getpid()),
            "--handed-at",
            repr(handed),
        ]
        if cpus:
            cmd += ["--cpus", cpus]
        for plugin in self.plugins:
            cmd += ["--plugin", plugin]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.source is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.source), os.environ.get("PYTHONPATH", "")) if p
            )
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            cwd=self.source,
        )
        assert proc.stdout is not None and proc.stderr is not None
        return proc, proc.stdout, proc.stderr

    def _launch(self, spec: RunSpec, handoff: Path, events: RunEvents) -> _Running:
        spec_path = handoff / f"{spec.id}.spec.json"
        spec_path.write_text(spec.model_dump_json())
        record_path = handoff / f"{spec.id}.record.json"
        log_path = self.log_dir / f"{spec.id}.log"
        slot = self._free_slots.pop(0) if self.pin else None
        try:
            proc, stdout, stderr = self._start_process(spec, spec_path, record_path, slot)
        except BaseException:
            if slot is not None:
                self._free_slots.append(slot)
            raise
        log = CappedLog(log_path)
        run = _Running(
            spec=spec,
            proc=proc,
            record_path=record_path,
            log_path=log_path,
            log=log,
            started=time.monotonic(),
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            slot=slot,
        )

        def progress(line: bytes, spec: RunSpec = spec) -> bool:
            text = line.decode(errors="replace")
            if not text.startswith(PROGRESS_PREFIX):
                return False
            events.progress(spec, text[len(PROGRESS_PREFIX) :].rstrip())
            return True

        run.streams = [stdout, stderr]
        run.readers = [
            threading.Thread(target=pump, args=(stdout, log, progress), daemon=True),
            threading.Thread(target=pump, args=(stderr, log), daemon=True),
        ]
        for reader in run.readers:
            reader.start()
        return run

    def _collect(self, run: _Running) -> RunRecord:
        # Whatever the worker started goes with it (a plugin's subprocess would keep the
        # pipes open, and its CPU use would leak into the next run's timings).
        _kill_group(run.proc)
        for reader in run.readers:
            reader.join(timeout=5)
        for stream in run.streams:
            with contextlib.suppress(OSError):
                stream.close()
        run.log.close()
        duration = time.monotonic() - run.started
        # The spec handed to the worker is no longer needed (a suite of thousands of runs
        # would otherwise hold every spec in /tmp until it ends).
        run.record_path.with_name(f"{run.spec.id}.spec.json").unlink(missing_ok=True)
        if run.record_path.exists():
            # A complete record wins even past the timeout: the worker wrote it, then
            # hung on its way out (a plugin's non-daemon thread).
            try:
                record = RunRecord.model_validate_json(run.record_path.read_bytes())
                run.record_path.unlink(missing_ok=True)
                return finish_harness(record, server_share_s=self._server_share_s)
            except ValueError:
                pass  # half a record cannot happen (atomic rename); a corrupt one is a failure
        tail = read_tail(run.log_path, LOG_TAIL)
        status: Status
        code = run.proc.returncode
        lost = getattr(run.proc, "lost", None)
        if run.timed_out:
            status, reason = "timeout", f"exceeded its timeout of {run.spec.timeout_s:g} s"
        elif lost:
            status, reason = "failed", f"the run's process was lost: {lost}"
        elif code == -signal.SIGKILL:
            status = "oom"
            reason = (
                "the run's process was killed by SIGKILL; on this machine that is the "
                "kernel's out-of-memory killer (see the log)"
            )
        elif code is not None and code < 0:
            status, reason = "failed", f"the run's process died from signal {-code}"
        else:
            status, reason = "failed", f"the run's process exited with code {code} and no record"
        return RunRecord(
            id=run.spec.id,
            spec=run.spec,
            status=status,
            reason=reason,
            started_at=run.started_at,
            duration_s=duration,
            log_tail=tail,
        )


HANDOFF_PREFIX = "methodbench-"


OWNER_LOCK = ".owner"


@contextlib.contextmanager
def _owned(folder: Path) -> Iterator[None]:
    """Hold a kernel lock on ``folder/.owner`` while the folder is in use: the lock dies
    with its holder, so a later run can tell an abandoned folder from a live one even
    where process ids say nothing (another container sharing /tmp, a reused pid)."""
    lock = filelock.FileLock(str(folder / OWNER_LOCK))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def remove_stale_handoffs() -> None:
    """Delete handoff folders whose owner is gone (a killed parent cannot clean its own):
    a folder is abandoned when its owner lock can be taken at once."""
    import shutil

    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{HANDOFF_PREFIX}*-*"):
        marker = folder / OWNER_LOCK
        if not folder.is_dir() or not marker.exists():
            continue  # not ours, or its owner is still creating it
        lock = filelock.FileLock(str(marker))
        try:
            lock.acquire(timeout=0)
        except (filelock.Timeout, OSError):
            continue  # alive (or not ours to touch)
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            lock.release()


def _kill_group(proc: _Process) -> None:
    """SIGKILL the run's whole process group (the worker leads its own session), even
    when the worker itself has already exited."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _kill(proc: _Process) -> None:
    _kill_group(proc)
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
