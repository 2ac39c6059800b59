"""What every kind's protocol receives and returns.

A protocol module (``benchmark/protocols/<kind>.py``) exposes ``run(ctx) -> ProtocolResult``.
It builds the method through ``ctx.build_method()`` (which checks the kind's contract),
measures, and returns metrics and curves. It never catches the failures that decide a
run's status: the executor turns ``Diverged``, out-of-memory and any other exception into
a record with that status.
"""

from __future__ import annotations

import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from benchmark.kinds import check_built
from benchmark.records import Curve, Metric, RunSpec

if TYPE_CHECKING:
    from pluggy import HookImpl

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
    """Everything a protocol needs for one run.

    Two ways to say how a run goes: ``say(text)`` is the status line a person watches
    (``bench run`` shows it live), ``progress(step, **metrics)`` gives figures to the
    plugins that observe runs (``methodbench_run_progress``: loggers, trackers)."""

    spec: RunSpec
    method: MethodSpec
    workload: Any
    device: torch.device
    registry: Registry
    say: Callable[[str], None] = field(default=lambda message: None)
    # What observers of this run's progress raised, one line each (the runner puts them
    # in the record's info).
    observer_errors: list[str] = field(default_factory=list)
    # Wall time spent inside progress observers, and their calls: the calls sit inside
    # the run's measured phases (memory, energy, a phase's time), so the record says how
    # much of those was the observers' (``info["observer_s"]``).
    observer_s: float = 0.0
    observer_calls: int = 0
    # The progress observers still called; None until first looked up.
    _observers: list[HookImpl] | None = field(default=None, init=False, repr=False)

    def progress(self, step: int, **metrics: float | None) -> None:
        """Hand ``metrics`` at ``step`` to every ``methodbench_run_progress`` observer.

        Free when no plugin observes progress (the usual case): the implementations are
        looked up once per run and an empty list returns at once, so a protocol may call
        this at every evaluation. An observer that raises is reported once (stderr, which
        is the run's log, and ``observer_errors``) and not called again for this run:
        a logger's failure never changes a run's outcome. The time spent in observers
        adds up in ``observer_s`` (the record's ``info["observer_s"]``)."""
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(
                f"progress(step, **metrics) takes an integer step, got {step!r}; "
                "a status line goes to ctx.say(text)"
            )
        observers = self._observers
        if observers is None:
            hook = self.registry.pm.hook.methodbench_run_progress
            observers = self._observers = list(hook.get_hookimpls())
        if not observers:
            return
        started = time.perf_counter()
        try:
            self._notify(observers, step, metrics)
        finally:
            self.observer_s += time.perf_counter() - started
            self.observer_calls += 1

    def _notify(self, observers: list[HookImpl], step: int, metrics: dict[str, Any]) -> None:
        # None: a figure this step does not have (an attack's undefined ratio).
        values = {name: float(v) for name, v in metrics.items() if v is not None}
        for impl in list(observers):
            # As pluggy calls it: an implementation may take any subset of the arguments.
            given = {"spec": self.spec, "step": step, "metrics": dict(values)}
            try:
                impl.function(*(given[name] for name in impl.argnames))
            except (Exception, SystemExit) as exc:  # an observer never ends the run
                observers.remove(impl)
                where = traceback.extract_tb(exc.__traceback__)
                at = f" ({where[-1].filename}:{where[-1].lineno})" if where else ""
                line = (
                    f"progress observer {impl.plugin_name} raised at step {step}: "
                    f"{type(exc).__name__}: {exc}{at}; not called again in this run"
                )
                self.observer_errors.append(line)
                print(line, file=sys.stderr, flush=True)

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
