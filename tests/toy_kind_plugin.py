"""A fifth kind from a plugin, loaded as a third party's module is (``--plugin``): the proof
that a kind is one place. It registers the kind "toy" (its contract, protocol, ranking and
metrics), one method and one workload, and nothing in the host names it.

A toy method guesses a number; the workload holds the number to guess; the protocol
reports how far off the guess is (``error``, the headline, lower is better) and the guess.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from benchmark import hookimpl
from benchmark.kinds import KindDef, KindInfo, MethodSpec, MetricDecl, WorkloadSpec


@runtime_checkable
class Guesser(Protocol):
    """What a toy method's factory builds."""

    def guess(self) -> float: ...


class Constant:
    """Guesses ``value``; with ``leak`` its run also reports a metric the kind does not
    declare (so the runner's check has something to refuse)."""

    def __init__(self, value: float = 0.0, leak: bool = False) -> None:
        self.value = value
        self.leak = leak

    def guess(self) -> float:
        return self.value


class Target:
    """The number to guess."""

    def __init__(self, target: float = 1.0) -> None:
        self.target = target


def run_toy(ctx: Any) -> Any:
    """The toy protocol: build the method (checked against ``Guesser``), score its guess."""
    from benchmark.protocols.base import ProtocolResult
    from benchmark.records import Metric

    guesser = ctx.build_method()
    guess = float(guesser.guess())
    error = abs(guess - float(ctx.workload.target))
    # The guess first: a report that ranks a kind it does not know by the record's first
    # metric would rank by the guess (and higher-is-better), which the tests catch.
    metrics = {
        "guess": Metric(value=guess, unit="units", meter="the method's guess"),
        "error": Metric(
            value=error, unit="units", meter="|guess - target|", higher_is_better=False
        ),
    }
    if guesser.leak:
        metrics["secret_figure"] = Metric(value=1.0, unit="units", meter="undeclared")
    return ProtocolResult(metrics=metrics, info={"target": ctx.workload.target})


KIND = KindDef(
    name="toy",
    summary="Guessing a number (a test kind from a plugin).",
    built="tests.toy_kind_plugin:Guesser",
    run="tests.toy_kind_plugin:run_toy",
    ranking=KindInfo(
        primary="error", higher_is_better=False, columns=("error", "guess"), notes=("toy note",)
    ),
    metrics=(
        MetricDecl("error", "units", "lower", "how far the guess is.", "|guess - target|."),
        MetricDecl("guess", "units", "none", "the method's guess.", "guess() of the method."),
    ),
)


@hookimpl
def methodbench_register_kinds(register):  # type: ignore[no-untyped-def]
    register(KIND)


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="toy",
            name="constant",
            factory="tests.toy_kind_plugin:Constant",
            defaults={"value": 0.0, "leak": False},
        )
    )


@hookimpl
def methodbench_register_workloads(register):  # type: ignore[no-untyped-def]
    register(
        WorkloadSpec(
            kind="toy",
            name="target",
            factory="tests.toy_kind_plugin:Target",
            defaults={"target": 1.0},
        )
    )
