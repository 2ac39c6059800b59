"""What every kind's protocol receives and returns.

A protocol module (``benchmark/protocols/<kind>.py``) exposes ``run(ctx) -> ProtocolResult``.
It builds the method through ``ctx.build_method()`` (which checks the kind's contract),
measures, and returns metrics and curves. It never catches the failures that decide a
run's status: the executor turns ``Diverged``, out-of-memory and any other exception into
a record with that status.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from benchmark.kinds import check_built
from benchmark.records import Curve, Metric, RunSpec

if TYPE_CHECKING:
    from benchmark.host import Registry
    from benchmark.kinds import MethodSpec


def seed_everything(seed: int) -> None:
    """Seed every generator a method or a workload may draw from: Python's ``random``,
    numpy's global state and torch (all devices). Seeding torch alone left numpy-based
    samplers (detectors' splits, few-shot selection) on whatever state the process had."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def method_seed(run_seed: int, given: Any) -> int:
    """The seed a randomised method receives: the run's seed, offset by the method's own
    ``seed`` hyperparameter when a suite gives one (so two seeds of a suite draw different
    projections, and a suite can still ask for a different stream)."""
    offset = 0 if given is None else int(given)
    return run_seed + offset


class Diverged(RuntimeError):
    """The method produced a non-finite loss or output; the run's status becomes 'diverged'."""


@dataclass
class RunContext:
    """Everything a protocol needs for one run."""

    spec: RunSpec
    method: MethodSpec
    workload: Any
    device: torch.device
    registry: Registry
    progress: Callable[[str], None] = field(default=lambda message: None)

    @property
    def hparams(self) -> dict[str, Any]:
        """The method's defaults overlaid with the suite's hyperparameters; a method that
        declares a ``seed`` hyperparameter gets the run's seed (offset by the given one)."""
        resolved = {**dict(self.method.defaults), **self.spec.hparams}
        if "seed" in self.method.defaults:
            resolved["seed"] = method_seed(self.spec.seed, self.spec.hparams.get("seed"))
        return resolved

    def build_method(self, *leading: Any) -> Any:
        """Call the method's factory with the resolved hyperparameters and check the result."""
        obj = self.method.load()(*leading, **self.hparams)
        check_built(self.method, obj)
        return obj


@dataclass
class ProtocolResult:
    metrics: dict[str, Metric] = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
