"""The metric glossary: each kind declares its metrics once (``KindDef.metrics``);
``docs/METRICS.md`` is rendered from them, every leaderboard column is one of them, and
every metric in the committed records is declared (the runner refuses new undeclared ones:
``tests/test_toy_kind.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from benchmark.host import Registry
from benchmark.kinds import ContractError, KindDef, KindInfo, MetricDecl, check_kind
from benchmark.kinds.glossary import builtin_glossary
from benchmark.kinds.registered import BUILTIN_KINDS, get_kind

REPO = Path(__file__).resolve().parent.parent
BUILTINS = [m.rpartition(".")[2] for m in BUILTIN_KINDS]

# Metric names in committed records that no kind declares any more, with the reason. Empty:
# every committed record's metrics are declared today; a rename adds its old name here.
RETIRED: dict[str, str] = {}


def test_docs_metrics_is_the_generated_glossary() -> None:
    committed = (REPO / "docs" / "METRICS.md").read_text()
    assert committed == builtin_glossary(), (
        "docs/METRICS.md is stale: python -m benchmark.kinds.glossary > docs/METRICS.md"
    )


@pytest.mark.parametrize("name", BUILTINS)
def test_every_ranking_column_is_a_declared_metric(name: str) -> None:
    kind = get_kind(name)
    assert kind is not None
    assert kind.undeclared(kind.ranking.metric_names()) == []
    check_kind(kind)
    assert kind.declaration(kind.ranking.primary) is not None


def test_a_ranking_that_reads_an_undeclared_metric_is_refused() -> None:
    kind = KindDef(
        name="odd",
        summary="",
        built="tests.toy_kind_plugin:Guesser",
        run="tests.toy_kind_plugin:run_toy",
        ranking=KindInfo(primary="error", higher_is_better=False, columns=("error", "speed")),
        metrics=(MetricDecl("error", "u", "lower", "m.", "h."),),
    )
    with pytest.raises(ContractError, match=r"undeclared metrics \['speed'\]"):
        check_kind(kind)


def test_a_family_declares_one_metric_per_attack_and_nothing_else() -> None:
    kind = get_kind("security_split")
    assert kind is not None
    declared = ["attack_finetune-1024_recovered_ratio", "attack_traffic-64_quality"]
    assert kind.undeclared(declared) == []
    assert kind.undeclared(["attack__quality", "attacks_x_quality", "recovered_ratio"]) == [
        "attack__quality",
        "attacks_x_quality",
        "recovered_ratio",
    ]
    assert kind.declaration("attack_recovered_ratio").name == "attack_recovered_ratio"


def test_workload_figures_count_as_declared_for_that_workload_only() -> None:
    kind = get_kind("optimizer")
    assert kind is not None

    class WithFigures:
        figure_units: ClassVar[dict[str, str]] = {"train_mse": "MSE"}

    assert kind.undeclared(["eval_loss", "train_mse"], WithFigures()) == []
    assert kind.undeclared(["eval_loss", "train_mse"], object()) == ["train_mse"]


def _records() -> list[dict]:
    paths = sorted(REPO.glob("results/*/runs/*.json"))
    return [json.loads(p.read_text()) for p in paths]


def test_every_metric_of_the_committed_records_is_declared() -> None:
    records = _records()
    assert len(records) > 100, "the committed results are where this looks"
    registry = Registry()
    figures: dict[tuple[str, str], set[str]] = {}
    problems = []
    for r in records:
        kind_name, workload = r["spec"]["kind"], r["spec"]["workload"]
        kind = registry.kind(kind_name)
        key = (kind_name, workload)
        if key not in figures:
            # A workload's own figures (an autoencoder's figure_units) are declared by it:
            # read off its factory (a class) without building the workload.
            factory = registry.workload(kind_name, workload).load()
            figures[key] = set(getattr(factory, "figure_units", {}))
        for name in r.get("metrics") or {}:
            if name in figures[key] or name in RETIRED:
                continue
            if kind.declaration(name) is None:
                problems.append(f"{kind_name}/{workload}: {name}")
    assert sorted(set(problems)) == []
