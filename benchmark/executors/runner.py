"""Execute one RunSpec in this process and turn whatever happens into a RunRecord.

This is the single place where a run's status is decided: a clean return is ``ok`` (a
metric its kind does not declare is set aside in ``info["undeclared_metrics"]``; with
``METHODBENCH_STRICT_METRICS`` set, as in the project's tests, the run is ``failed``
instead, its figures kept), ``Diverged`` is ``diverged``, an out-of-memory error is
``oom`` and any other exception is ``failed`` with its reason and traceback tail.
Executors (a process per run, Ray) only add what a process boundary can see: timeouts and
hard crashes.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from benchmark.host import Registry
from benchmark.kinds import ContractError, KindDef
from benchmark.protocols.base import Diverged, RunContext, seed_everything
from benchmark.provenance import run_fingerprint
from benchmark.records import RunRecord, RunSpec, Status

TRACEBACK_TAIL = 4000


def _environment(spec: RunSpec, registry: Registry) -> dict[str, object]:
    from benchmark.measure.environment import capture_environment

    env = capture_environment(spec.device)
    try:
        fingerprint, modules = run_fingerprint(spec, registry)
    except Exception as exc:  # an unknown method is reported by the run itself
        env["code"] = {"fingerprint": None, "reason": f"{type(exc).__name__}: {exc}"}
        return env
    env["code"] = {"fingerprint": fingerprint, "modules": list(modules)}
    if spec.code and spec.code != fingerprint:
        # The source changed between the suite's expansion and this run: the record is
        # stored under the id it was asked for, and says it.
        env["code"]["expected"] = spec.code
    return env


def _observer_notes(ctx: RunContext | None, info: dict[str, Any]) -> dict[str, Any]:
    """The run's info with what its progress observers cost and raised, when any observed
    it: ``observer_s``, the seconds spent in them (inside the run's measured phases, so a
    reader can tell whether they weighed on its time and memory figures), and
    ``observer_errors``: a logger's curves for the run are incomplete."""
    if ctx is None or not ctx.observer_calls:
        return info
    notes: dict[str, Any] = {"observer_s": ctx.observer_s, "observer_calls": ctx.observer_calls}
    if ctx.observer_errors:
        notes["observer_errors"] = list(ctx.observer_errors)
    return {**info, **notes}


# Set (to anything but "", "0") in the project's own tests and CI: a run that emits an
# undeclared metric then fails, its figures still in the record.
STRICT_METRICS_ENV = "METHODBENCH_STRICT_METRICS"


def strict_metrics() -> bool:
    return os.environ.get(STRICT_METRICS_ENV, "") not in ("", "0")


def _set_aside_undeclared(
    kind: KindDef, spec: RunSpec, registry: Registry, metrics: dict[str, Any], workload: Any
) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(declared metrics, undeclared ones, a warning or None). Every metric a protocol
    emits should be one its kind declares (``KindDef.metrics``, a family member naming
    one of the run's attacks, or one the workload adds, as an autoencoder's
    ``figure_units``), so that the glossary (``docs/METRICS.md``) says what every figure of
    a record is. One that is not costs the run nothing: it is kept, value and unit, in
    ``info["undeclared_metrics"]``, out of the ranked metrics, and the run's log says so."""
    attacks = tuple(spec.attacks) or tuple(registry.attacks)
    undeclared = kind.undeclared(metrics, workload, placeholders={"attack": attacks})
    if not undeclared:
        return metrics, {}, None
    kept = {name: m for name, m in metrics.items() if name not in undeclared}
    aside = {name: metrics[name] for name in undeclared}
    warning = (
        f"the {kind.name} protocol emitted metrics its kind does not declare: "
        f"{', '.join(undeclared)} (kept in info['undeclared_metrics']; declare them in the "
        "kind's metrics)"
    )
    return kept, aside, warning


def _classify(exc: BaseException) -> Status:
    if isinstance(exc, Diverged):
        return "diverged"
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return "oom"
    return "failed"


def execute(
    spec: RunSpec,
    registry: Registry,
    progress: Callable[[str], None] = lambda message: None,
    *,
    handed_at: float | None = None,
    launcher: str = "inline",
) -> RunRecord:
    """Run ``spec`` to completion here; never raises for a failure of the run itself.

    ``handed_at`` is the ``time.monotonic()`` at which an executor took the spec (another
    process's reading serves: the clock is the machine's). The record's ``harness`` says
    how long the harness took before the run's own work began (process start, imports,
    discovery, the environment capture) and, in ``protocol_end``, when that work ended, so
    the executor that stores it can add what it spends afterwards
    (``executors.local.finish_harness``).
    """
    t0 = time.perf_counter()
    entered = time.monotonic()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    environment = _environment(spec, registry)
    harness: dict[str, object] = {"launcher": launcher}
    ctx: RunContext | None = None
    try:
        method = registry.method(spec.kind, spec.method)
        wspec = registry.workload(spec.kind, spec.workload)
        # Importing the code is the harness's (a fork server has done it already).
        build_workload = wspec.load()
        method.load()
        for attack in spec.attacks:
            registry.attack(attack).load()
        kind = registry.kind(spec.kind)
        run_protocol = kind.load_run()
        # The run's own work starts here: everything before it is the harness's.
        harness["start_s"] = time.monotonic() - (entered if handed_at is None else handed_at)
        seed_everything(spec.seed)
        progress(f"building workload {spec.workload}")
        workload = build_workload(**{**dict(wspec.defaults), **spec.workload_options})
        ctx = RunContext(
            spec=spec,
            method=method,
            workload=workload,
            device=torch.device(spec.device),
            registry=registry,
            say=progress,
        )
        result = run_protocol(ctx)
        harness["protocol_end"] = time.monotonic()
    except BaseException as exc:  # a run never takes the suite down
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        harness["protocol_end"] = time.monotonic()
        return RunRecord(
            id=spec.id,
            spec=spec,
            status=_classify(exc),
            reason=f"{type(exc).__name__}: {exc}"[:2000],
            environment=environment,
            started_at=started,
            duration_s=time.perf_counter() - t0,
            log_tail="".join(traceback.format_exception(exc))[-TRACEBACK_TAIL:],
            harness=harness,
            info=_observer_notes(ctx, {}),
        )
    try:
        metrics, aside, warning = _set_aside_undeclared(
            kind, spec, registry, result.metrics, workload
        )
    except Exception as exc:  # a kind's check that raises must not lose the measurement
        metrics, aside = dict(result.metrics), {}
        warning = f"the kind's metric check raised {type(exc).__name__}: {exc}"[:2000]
    info = _observer_notes(ctx, result.info)
    if aside:
        info = {
            **info,
            "undeclared_metrics": {
                name: m.model_dump(mode="json", exclude_none=True) for name, m in aside.items()
            },
        }
    elif warning is not None:
        info = {**info, "metric_check_error": warning}
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    strict = warning is not None and strict_metrics()
    # Strict: the run fails as if the check had raised, its figures still in the record.
    refused = ContractError(f"{warning} [{STRICT_METRICS_ENV} is set]") if strict else None
    return RunRecord(
        id=spec.id,
        spec=spec,
        status="ok" if refused is None else "failed",
        reason=None if refused is None else f"{type(refused).__name__}: {refused}",
        metrics=metrics,
        curves=result.curves,
        info=info,
        environment=environment,
        started_at=started,
        duration_s=time.perf_counter() - t0,
        harness=harness,
    )
