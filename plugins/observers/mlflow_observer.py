"""Log every finished run to MLflow: one MLflow run per ``RunRecord``.

Opt in with ``bench run --observe mlflow SUITE`` (or ``--plugin
plugins.observers.mlflow_observer``; ``run_suite(..., plugins=[...])`` from Python); it needs
the extra, ``pip install 'methodbench[mlflow]'`` (``mlflow-skinny``).

Where: the store ``MLFLOW_TRACKING_URI`` names (a server, a database, a directory), else a
local file store ``./mlruns`` under the working directory (the full ``mlflow`` package's
``mlflow ui --backend-store-uri ./mlruns`` shows it). MLflow 3 keeps file stores in
maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; for a file store this observer sets
that for its own process unless the user set it, since a local directory is what needs no
server and no database driver (``mlflow-skinny`` has none). The experiment is the suite's
name.

What each MLflow run holds:

- params: ``kind``, ``method``, ``workload``, ``seed``, ``device``, ``suite``, ``commit``,
  each hyperparameter as ``hparam.<name>`` (the suite's, and the defaults too where the
  record carries the resolved set, as the optimizer's does), workload option as
  ``option.<name>``, protocol option as ``protocol.<name>`` and the budget as
  ``budget.<name>``;
- metrics: each final figure under its own name (null figures are left out, their reason
  kept as the tag ``reason.<name>``), with ``<name>.n``, ``.ci_low``, ``.ci_high``,
  ``.std``, ``.p10`` and ``.p90`` where the record has them, and the unit as the tag
  ``unit.<name>``;
- step curves: each record curve drawn against steps (the optimizer's ``train_loss``
  and ``eval_loss``) as the metric history ``curve/<name>``, logged once, here from the
  stored record (not from the progress hook: this observer lives in the process that
  stores records, and writing from inside a run would load the measured phases);
- status: ``FINISHED`` for ``ok``, ``KILLED`` for ``skipped``, ``FAILED`` otherwise, with
  the exact status and reason as tags; start and end times from the record;
- the record itself as the artifact ``record.json``.

A run's ``tags["methodbench.run_id"]`` is the record's id, so a search finds the MLflow runs
of one configuration; a ``--rerun`` adds a new MLflow run (another execution of it).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from benchmark import hookimpl

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from benchmark.records import RunRecord

INSTALL_HINT = "pip install 'methodbench[mlflow]'"
if importlib.util.find_spec("mlflow") is None:  # refuse to load: bench run exits 2 with this
    raise ImportError(f"the MLflow observer needs MLflow, which is not installed: {INSTALL_HINT}")

DEFAULT_STORE = "mlruns"
RUN_ID_TAG = "methodbench.run_id"
STATUS = {"ok": "FINISHED", "skipped": "KILLED"}  # every other status: FAILED
STATS = ("n", "ci_low", "ci_high", "std", "p10", "p90")
# MLflow's limits per log_batch call and per value.
MAX_PARAMS_OR_TAGS_PER_CALL = 100
MAX_METRICS_PER_CALL = 1000
MAX_VALUE_CHARS = 6000

T = TypeVar("T")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the directory ``./mlruns`` as a file URI."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (Path.cwd() / DEFAULT_STORE).as_uri()


def _client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme in ("", "file"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def _text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:MAX_VALUE_CHARS]


def params_of(record: RunRecord) -> dict[str, str]:
    """What identifies the run's configuration, as MLflow params (strings)."""
    spec = record.spec
    env = record.environment
    params: dict[str, object] = {
        "suite": spec.suite,
        "kind": spec.kind,
        "method": spec.method,
        "workload": spec.workload,
        "seed": spec.seed,
        "device": env.get("device_name") or spec.device,
        "commit": env.get("git_commit") or "unknown",
    }
    # The resolved hyperparameters (defaults included) where the protocol recorded them.
    hparams = record.info.get("hparams")
    for name, value in {**(hparams if isinstance(hparams, dict) else {}), **spec.hparams}.items():
        params[f"hparam.{name}"] = value
    params.update({f"option.{k}": v for k, v in spec.workload_options.items()})
    params.update({f"protocol.{k}": v for k, v in spec.protocol.items()})
    budget = spec.budget.model_dump(exclude_none=True)
    params.update({f"budget.{k}": v for k, v in budget.items()})
    return {k: _text(v) for k, v in params.items()}


def final_metrics(record: RunRecord) -> dict[str, float]:
    """Each non-null figure under its name, its sample count and spread beside it."""
    out: dict[str, float] = {}
    for name, metric in record.metrics.items():
        if metric.value is None:
            continue
        out[name] = float(metric.value)
        for stat in STATS:
            value = getattr(metric, stat)
            if value is not None:
                out[f"{name}.{stat}"] = float(value)
    return out


def step_curves(record: RunRecord) -> dict[str, list[tuple[int, float]]]:
    """The record's curves drawn against whole steps (not a ROC curve's false-positive
    rates), as (step, value) pairs; points without a value are left out."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for name, curve in record.curves.items():
        if curve.x_label != "step" or any(float(x) != int(x) for x in curve.x):
            continue
        points = [
            (int(x), float(y)) for x, y in zip(curve.x, curve.y, strict=False) if y is not None
        ]
        if points:
            curves[f"curve/{name}"] = points
    return curves


def tags_of(record: RunRecord) -> dict[str, str]:
    tags: dict[str, object] = {
        RUN_ID_TAG: record.id,
        "methodbench.status": record.status,
        "methodbench.label": record.spec.label,
        "mlflow.runName": f"{record.spec.method} {record.spec.workload} seed={record.spec.seed}",
    }
    if record.reason:
        tags["methodbench.reason"] = record.reason
    if record.environment.get("git_dirty") is not None:
        tags["methodbench.git_dirty"] = str(record.environment["git_dirty"]).lower()
    for name, metric in record.metrics.items():
        tags[f"unit.{name}"] = metric.unit
        if metric.value is None and metric.reason:
            tags[f"reason.{name}"] = metric.reason
    return {k: _text(v) for k, v in tags.items()}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _times_ms(record: RunRecord) -> tuple[int | None, int | None]:
    if not record.started_at:
        return None, None
    start = dt.datetime.fromisoformat(record.started_at).timestamp()
    end = start + (record.duration_s or 0.0)
    return int(start * 1000), int(end * 1000)


def experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    from mlflow.exceptions import MlflowException

    try:
        return str(client.create_experiment(name))
    except MlflowException:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def log_record(record: RunRecord, uri: str | None = None) -> str:
    """Write ``record`` as a new MLflow run in the suite's experiment; its MLflow run id."""
    from mlflow.entities import Metric as MlflowMetric
    from mlflow.entities import Param, RunTag

    client = _client(uri or tracking_uri())
    start_ms, end_ms = _times_ms(record)
    run = client.create_run(experiment_id(client, record.spec.suite), start_time=start_ms)
    run_id = run.info.run_id
    at = end_ms or start_ms or 0
    try:
        params = [Param(k, v) for k, v in params_of(record).items()]
        tags = [RunTag(k, v) for k, v in tags_of(record).items()]
        metrics: list[Any] = [MlflowMetric(k, v, at, 0) for k, v in final_metrics(record).items()]
        for name, points in step_curves(record).items():
            metrics += [MlflowMetric(name, v, at, step) for step, v in points]
        for chunk in _chunks(params, MAX_PARAMS_OR_TAGS_PER_CALL):
            client.log_batch(run_id, params=list(chunk))
        for chunk in _chunks(tags, MAX_PARAMS_OR_TAGS_PER_CALL):
            client.log_batch(run_id, tags=list(chunk))
        for chunk in _chunks(metrics, MAX_METRICS_PER_CALL):
            client.log_batch(run_id, metrics=list(chunk))
        client.log_text(run_id, record.model_dump_json(indent=1), "record.json")
    except BaseException:
        client.set_terminated(run_id, "FAILED")  # no MLflow run left RUNNING forever
        raise
    client.set_terminated(run_id, STATUS.get(record.status, "FAILED"), end_time=end_ms)
    return str(run_id)


@hookimpl
def methodbench_run_finished(record: RunRecord) -> None:
    log_record(record)
