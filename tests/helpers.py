"""Build a RunContext for a protocol test without going through a suite."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from benchmark.host import Registry
from benchmark.protocols.base import RunContext
from benchmark.records import Budget, RunSpec


@cache
def registry() -> Registry:
    return Registry()


@cache
def workload(kind: str, name: str, **options: Any) -> Any:
    spec = registry().workload(kind, name)
    return spec.factory(**{**dict(spec.defaults), **options})


def context(
    kind: str,
    method: str,
    workload_name: str,
    *,
    hparams: dict | None = None,
    options: dict | None = None,
    steps: int | None = None,
    time_s: float | None = None,
    attacks: list[str] | None = None,
    protocol: dict | None = None,
    method_spec: Any = None,
) -> RunContext:
    spec = RunSpec(
        suite="test",
        kind=kind,
        method=method,
        hparams=hparams or {},
        workload=workload_name,
        workload_options=options or {},
        seed=0,
        device="cpu",
        budget=Budget(steps=steps, time_s=time_s),
        attacks=attacks or [],
        protocol=protocol or {},
    )
    return RunContext(
        spec=spec,
        method=method_spec or registry().method(kind, method),
        workload=workload(kind, workload_name, **(options or {})),
        device=torch.device("cpu"),
        registry=registry(),
    )
