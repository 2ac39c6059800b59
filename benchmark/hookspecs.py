"""The plugin contract: the hooks a methodbench plugin may implement.

Registration hooks receive a ``register`` callback and call it once per thing they offer
(the style of ``llm`` and ``tox``). The host calls each plugin's implementation on its own,
so one plugin that raises is reported and skipped while the others still register.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

from benchmark import PROJECT_NAME

if TYPE_CHECKING:
    from benchmark.kinds import AttackSpec, MethodSpec, WorkloadSpec
    from benchmark.records import RunRecord

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


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
    """Observe each finished run (loggers such as MLflow); called after the record is stored."""
