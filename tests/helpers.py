"""Build a RunContext for a protocol test without going through a suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from benchmark.host import Registry
from benchmark.protocols.base import RunContext
from benchmark.records import Budget, RunSpec


@cache
def registry() -> Registry:
    return Registry()


@cache
def workload(kind: str, name: str, **options: Any) -> Any:
    spec = registry().workload(kind, name)
    return spec.load()(**{**dict(spec.defaults), **options})


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


# --------------------------------------------------------------------------- devices


FACTORIES: tuple[Callable[..., Any], ...] = (
    torch.empty,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.arange,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.randperm,
    torch.tensor,
    torch.linspace,
    torch.eye,
)


class ImplicitDevice(TorchFunctionMode):
    """Records factory calls that leave the device to the default (the host)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **kwargs)


@contextmanager
def implicit_device_calls() -> Iterator[list[str]]:
    mode = ImplicitDevice()
    with mode:
        yield mode.calls
