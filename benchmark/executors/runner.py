"""Execute one RunSpec in this process and turn whatever happens into a RunRecord.

This is the single place where a run's status is decided: a clean return is ``ok``,
``Diverged`` is ``diverged``, an out-of-memory error is ``oom`` and any other exception is
``failed`` with its reason and traceback tail. Executors (a process per run, Ray) only
add what a process boundary can see: timeouts and hard crashes.
"""

from __future__ import annotations

import datetime as dt
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
    """The run's info with what its progress observers raised, when one did: the record
    says that a logger's curves for it are incomplete."""
    if ctx is None or not ctx.observer_errors:
        return info
    return {**info, "observer_errors": list(ctx.observer_errors)}


def _check_declared(kind: KindDef, metrics: dict[str, Any], workload: Any) -> None:
    """Every metric a protocol emits must be one its kind declares (``KindDef.metrics``, or
    one the workload adds, as an autoencoder's ``figure_units``): the glossary
    (``docs/METRICS.md``) then says what every figure of every record is."""
    undeclared = kind.undeclared(metrics, workload)
    if undeclared:
        raise ContractError(
            f"the {kind.name} protocol emitted metrics its kind does not declare: "
            f"{', '.join(undeclared)} (declare them in the kind's metrics)"
        )


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
        _check_declared(kind, result.metrics, workload)
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
    return RunRecord(
        id=spec.id,
        spec=spec,
        status="ok",
        metrics=result.metrics,
        curves=result.curves,
        info=_observer_notes(ctx, result.info),
        environment=environment,
        started_at=started,
        duration_s=time.perf_counter() - t0,
        harness=harness,
    )
