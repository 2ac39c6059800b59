"""The plugin contract: the hooks a methodbench plugin may implement.

Registration hooks receive a ``register`` callback and call it once per thing they offer
(the style of ``llm`` and ``tox``). The host calls each plugin's implementation on its own,
so one plugin that raises is reported and skipped while the others still register.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import pluggy

from benchmark import PROJECT_NAME

if TYPE_CHECKING:
    from benchmark.kinds import AttackSpec, KindDef, MethodSpec, WorkloadSpec
    from benchmark.records import RunRecord, RunSpec

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def methodbench_register_kinds(register: Callable[[KindDef], None]) -> None:
    """Offer kinds: one ``KindDef`` per kind (its method contract, optional capabilities,
    workload contract, protocol, options, ranking, plot and metrics). Collected before
    methods and workloads, which must name a registered kind; the built-in four come
    through this hook too (``benchmark.kinds``)."""


@hookspec
def methodbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Offer methods (optimizers, compressors, security splits, detectors)."""


@hookspec
def methodbench_register_workloads(register: Callable[[WorkloadSpec], None]) -> None:
    """Offer workloads: a model, its data and its quality metric for one kind."""


@hookspec
def methodbench_register_attacks(register: Callable[[AttackSpec], None]) -> None:
    """Offer attacks that are run against every security split."""


@hookspec
def methodbench_run_finished(record: RunRecord) -> None:
    """Observe each finished run (loggers such as MLflow); called after the record is stored.

    Runs in the process that stores records (the ``bench run`` parent, the Ray driver), once
    per record, whatever its status. An observer that raises is reported as a warning
    beside the run and never changes the record, which is already stored."""


@hookspec
def methodbench_run_progress(spec: RunSpec, step: int, metrics: Mapping[str, float]) -> None:
    """Observe a run while it goes on: ``metrics`` is what the protocol knows at ``step``.

    Called from ``RunContext.progress`` in the process that executes the run (a run's own
    worker process, whether spawned or forked, which discovers plugins itself; inline and
    on a Ray node, that process), so a logger sees curves as they are drawn. ``spec``
    identifies the run (``id``, ``suite``, ``kind``, ``method``, ``hparams``, ``workload``,
    ``seed``). Steps are the kind's own: the optimizer's training step at each evaluation
    (``train_loss``, ``eval_loss``), a detector's phases (0 after fitting, 1 after
    scoring), a compressor's (0 the original, 1 the compressed model), a security split's
    (0 the split's equivalence, then one per attack). Calls come outside the timed steps
    (a step time, a latency never includes them) but inside a run's measured phases: an
    observer's time counts in a phase's duration, its allocations in the phase's peak and
    host-memory growth, its work in the phase's energy. So keep an observer cheap and
    buffer writes; the time all observers took is the record's ``info["observer_s"]``
    (with ``info["observer_calls"]``), for a reader to judge whether they weighed on the
    run's figures. An observer that raises is reported once in the run's log and its
    record's ``info["observer_errors"]`` and not called again for that run; the run goes
    on."""
