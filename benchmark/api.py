"""The Python API: run a suite and read results without the command line.

``run_suite`` does what ``bench run`` does for the local executor (the suite checked,
expanded and fingerprinted, the results directory held, finished runs skipped, each run in
its own process, the reports written); ``load_results`` gives one row per run with every
metric's value, unit, sample count and interval, and the hyperparameters and workload
options as columns, for pandas, notebooks and plotting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.executors.local import RunEvents
    from benchmark.host import Registry
    from benchmark.records import RunRecord, RunSpec
    from benchmark.suite import Suite

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


def run_suite(
    suite: Suite | str | Path,
    *,
    results: str | Path | None = None,
    jobs: int = 1,
    device: str | None = None,
    plugins: Sequence[str] = (),
    rerun: bool = False,
    report: bool = True,
    events: RunEvents | None = None,
) -> list[RunRecord]:
    """Run a suite (a ``Suite`` or the path of its YAML) and return the records of the runs
    this call made (finished runs are skipped unless ``rerun``). ``results`` defaults to
    ``results/<suite name>``; ``device`` overrides the suite's (``auto``, ``cpu``,
    ``cuda``). Bad input raises ``SuiteError``, ``UnknownName`` or ``DeviceUnavailable``
    before anything runs. ``plugins``: modules loaded as plugins (as ``--plugin``), in this
    process, in every run's and for the reports, so a plugin kind's runs are ranked by its
    own definition."""
    from benchmark import store
    from benchmark.executors.local import LocalExecutor
    from benchmark.host import Registry

    registry = Registry(extra_plugins=list(plugins))
    suite, specs = plan_suite(suite, registry, device=device)
    results_dir = Path(results) if results is not None else Path("results") / suite.name
    store.check_writable(results_dir)
    with store.exclusive(results_dir):
        done = set() if rerun else store.finished_ids(results_dir)
        todo = [s for s in specs if s.id not in done]
        executor = LocalExecutor(results_dir, registry, jobs=jobs, plugins=list(plugins))
        records = executor.run(todo, events)
        if report:
            from benchmark.report import write_reports

            write_reports(results_dir, plugins=plugins)
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
