"""The Python API: run a suite and read results without the command line.

``run_suite`` is what ``bench run`` does (both go through ``open_run``: the suite checked,
expanded and fingerprinted, the results directory held, finished runs skipped, the
executor and its jobs chosen, the reports written); ``load_results`` gives one row per
run with every metric's value, unit, sample count and interval, and the hyperparameters
and workload options as columns, for pandas, notebooks and plotting.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.executors.distributed import RayExecutor
    from benchmark.executors.local import InlineExecutor, LocalExecutor, RunEvents
    from benchmark.host import Registry
    from benchmark.records import RunRecord, RunSpec
    from benchmark.suite import Suite

    Executor = InlineExecutor | LocalExecutor | RayExecutor

from benchmark.suite import MAX_RUNS

HPARAM_PREFIX = "hparam."
OPTION_PREFIX = "option."


def plan_suite(
    suite: Suite | str | Path,
    registry: Registry,
    *,
    device: str | None = None,
    max_runs: int | None = MAX_RUNS,
) -> tuple[Suite, list[RunSpec]]:
    """A suite (or the path of its YAML) checked against the registry and expanded into its
    runs, each with its code fingerprint and so its final id: what ``bench run``, ``bench
    compare --against`` and ``run_suite`` all start from. ``max_runs`` None: no cap."""
    from benchmark.provenance import with_code
    from benchmark.suite import Suite as SuiteModel
    from benchmark.suite import check_names, expand, load_suite

    path: str | Path = "<suite>"
    if not isinstance(suite, SuiteModel):
        path = suite
        suite = load_suite(path)
    check_names(suite, registry, path)
    return suite, with_code(expand(suite, device=device, max_runs=max_runs), registry)


class ExecutorUnavailable(RuntimeError):
    """The executor asked for cannot run here (Ray not installed)."""


@dataclass
class SuiteRun:
    """A suite planned against a results directory that this process holds: the runs left
    to do, the executor that will do them and what the caller should tell its user about
    the choices made (jobs, threads, overrides). ``bench run`` prints these before its
    progress display; ``run_suite`` says nothing."""

    suite: Suite
    specs: list[RunSpec]
    todo: list[RunSpec]
    results_dir: Path
    executor: Executor
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.specs) - len(self.todo)

    @property
    def device(self) -> str:
        return self.specs[0].device if self.specs else "-"

    def execute(self, events: RunEvents | None = None) -> list[RunRecord]:
        """Run what is left; each record is stored as it lands."""
        return self.executor.run(self.todo, events)


@contextlib.contextmanager
def open_run(
    suite: Suite | str | Path,
    *,
    registry: Registry | None = None,
    results: str | Path | None = None,
    jobs: int | Literal["auto"] | None = None,
    device: str | None = None,
    plugins: Sequence[str] = (),
    rerun: bool = False,
    executor: Literal["local", "inline", "ray"] = "local",
    ray_address: str | None = None,
    max_runs: int | None = MAX_RUNS,
) -> Iterator[SuiteRun]:
    """Plan a suite and hold its results directory while the caller runs it: the one path
    ``bench run`` and ``run_suite`` share (planning, the directory's lock, resume, the
    executor and its jobs), so the two cannot drift apart.

    ``jobs``: None takes the suite's ``jobs`` (default 1); an int overrides it (a note says
    so); ``"auto"`` is one run per core with one thread each on a CPU, one at a time on a
    GPU (``executors.local.auto_jobs``). ``executor``: ``local`` (a process per run),
    ``inline`` (this process: no timeouts, memory figures include earlier runs) or ``ray``.
    """
    from benchmark import store
    from benchmark.host import Registry

    registry = registry or Registry(extra_plugins=list(plugins))
    planned, specs = plan_suite(suite, registry, device=device, max_runs=max_runs)
    results_dir = Path(results) if results is not None else Path("results") / planned.name
    store.check_writable(results_dir)
    with store.exclusive(results_dir):
        done = set() if rerun else store.finished_ids(results_dir)
        todo = [s for s in specs if s.id not in done]
        notes: list[str] = []
        chosen = _executor(
            executor, planned, specs, results_dir, registry, jobs, plugins, ray_address, notes
        )
        yield SuiteRun(planned, specs, todo, results_dir, chosen, notes)


def _executor(
    kind: str,
    suite: Suite,
    specs: list[RunSpec],
    results_dir: Path,
    registry: Registry,
    jobs: int | Literal["auto"] | None,
    plugins: Sequence[str],
    ray_address: str | None,
    notes: list[str],
) -> Executor:
    from benchmark.executors.local import InlineExecutor, LocalExecutor, auto_jobs

    if kind == "inline":
        notes.append(
            "--inline: runs share this process: no timeouts, and memory figures include "
            "earlier runs"
        )
        return InlineExecutor(results_dir, registry)
    if kind == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ExecutorUnavailable(
                "--executor ray needs Ray: pip install 'methodbench[distributed]'"
            )
        from benchmark.executors.distributed import RayExecutor

        return RayExecutor(results_dir, registry, address=ray_address, plugins=list(plugins))
    if kind != "local":
        raise ValueError(f"executor {kind!r}: expected 'local', 'inline' or 'ray'")
    threads: int | None = None
    if jobs == "auto":
        device = specs[0].device if specs else "cpu"
        n = auto_jobs(device, len(specs))
        threads = 1 if device == "cpu" else None
        pinned = "each pinned to its own core, " if n > 1 else ""
        notes.append(
            f"--jobs auto: {n} at a time, {pinned}"
            f"{'1 torch thread each' if threads else 'all threads'} (records name the "
            "cores, threads and concurrent runs)"
        )
    else:
        n = jobs or suite.jobs or 1
        if jobs and suite.jobs and jobs != suite.jobs:
            notes.append(
                f"--jobs {jobs} overrides the suite's jobs: {suite.jobs}; timings are "
                "recorded under the regime they ran in"
            )
    return LocalExecutor(
        results_dir, registry, jobs=n, plugins=list(plugins), threads_per_job=threads
    )


def run_suite(
    suite: Suite | str | Path,
    *,
    results: str | Path | None = None,
    jobs: int | Literal["auto"] | None = None,
    device: str | None = None,
    plugins: Sequence[str] = (),
    rerun: bool = False,
    report: bool = True,
    events: RunEvents | None = None,
    executor: Literal["local", "inline", "ray"] = "local",
    ray_address: str | None = None,
    max_runs: int | None = MAX_RUNS,
) -> list[RunRecord]:
    """Run a suite (a ``Suite`` or the path of its YAML) and return the records of the runs
    this call made (finished runs are skipped unless ``rerun``): what ``bench run`` does,
    through the same ``open_run``. ``results`` defaults to ``results/<suite name>``;
    ``device`` overrides the suite's (``auto``, ``cpu``, ``cuda``); ``jobs`` as in
    ``open_run``. Bad input raises ``SuiteError``, ``UnknownName`` or ``DeviceUnavailable``
    before anything runs. ``plugins``: modules loaded as plugins (as ``--plugin``), in this
    process, in every run's and for the reports, so a plugin kind's runs are ranked by its
    own definition."""
    with open_run(
        suite,
        results=results,
        jobs=jobs,
        device=device,
        plugins=plugins,
        rerun=rerun,
        executor=executor,
        ray_address=ray_address,
        max_runs=max_runs,
    ) as run:
        records = run.execute(events)
        if report:
            from benchmark.report import write_reports

            write_reports(run.results_dir, plugins=plugins)
    return records


def load_results(results_dir: str | Path, *, current: bool = True) -> pd.DataFrame:
    """One row per run of a results directory.

    Columns: the run's identity (suite, kind, method, workload, seed, device, status,
    reason, commit, dirty tree, timing regime, duration, harness overhead), each metric's
    value under its name with ``<metric>__unit``, ``__n``, ``__ci_low``, ``__ci_high``,
    ``__std`` and ``__reason``, and each hyperparameter as ``hparam.<name>`` and each
    workload option as ``option.<name>`` (the values the suite set; defaults are the
    method's). ``current``: only the records the leaderboards use (the newest code's per
    configuration); False: every record in the directory. An unreadable record raises
    ``StoreError`` naming it."""
    from benchmark import store

    if not Path(results_dir).is_dir():
        raise store.StoreError(f"{results_dir}: no such results directory")
    records, unreadable = store.read_records(results_dir)
    if unreadable:
        listed = "; ".join(f"{p.name} ({why})" for p, why in unreadable[:3])
        raise store.StoreError(f"{results_dir}: {len(unreadable)} unreadable record(s): {listed}")
    if current:
        records, _ = store.current_records(records)
    frame = store.records_frame(records)
    extra: list[dict[str, object]] = []
    for r in records:
        row: dict[str, object] = {}
        for name, value in r.spec.hparams.items():
            row[HPARAM_PREFIX + name] = _cell(value)
        for name, value in r.spec.workload_options.items():
            row[OPTION_PREFIX + name] = _cell(value)
        extra.append(row)
    if not records:
        return frame
    import pandas as pd

    return pd.concat([frame, pd.DataFrame(extra, index=frame.index)], axis=1)


def _cell(value: object) -> object:
    """Scalars as they are; lists and mappings as JSON text (a column of one type)."""
    if isinstance(value, list | tuple | dict):
        import json

        return json.dumps(value, sort_keys=True)
    return value
