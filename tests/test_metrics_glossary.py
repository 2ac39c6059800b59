"""The metric glossary: each kind declares its metrics once (``KindDef.metrics``);
``docs/METRICS.md`` is rendered from them, every leaderboard column is one of them, and
every metric in the committed records is declared (the runner sets new undeclared ones
aside, and fails their run in the tests' strict mode: ``tests/test_toy_kind.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from benchmark.host import Registry
from benchmark.kinds import ContractError, KindDef, KindInfo, MetricDecl, Option, check_kind
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


def test_a_family_member_must_name_one_of_the_runs_attacks() -> None:
    """With the run's attacks as the placeholder's values, a misspelt figure or a name that
    only parses as a family member with an odd attack name is undeclared."""
    kind = get_kind("security_split")
    assert kind is not None
    attacks = {"attack": ("finetune-1024", "traffic-64")}
    fine = [
        "attack_finetune-1024_quality",
        "attack_finetune-1024_scratch_quality",
        "attack_traffic-64_recovered_ratio",
        "attack_traffic-64_mia_auroc",
        "attack_recovered_ratio",
    ]
    assert kind.undeclared(fine, placeholders=attacks) == []
    odd = [
        "attack_typo_recoverd_ratio_quality",
        "attack_quality_vs_original",
        "attack_recovered_ratio_quality",
        "attack_finetune-64_quality",
    ]
    assert kind.undeclared(odd, placeholders=attacks) == sorted(odd)
    # Only an attack really named so makes one declared.
    name = ["attack_quality_vs_original"]
    assert kind.undeclared(name, placeholders={"attack": ["quality"]}) == []
    assert kind.undeclared(name, placeholders={"attack": ["quality_vs"]}) == name
    # No attacks at all: no family member.
    assert kind.undeclared(fine[:1], placeholders={"attack": ()}) == fine[:1]


def test_a_name_two_families_match_belongs_to_the_more_specific_one() -> None:
    kind = get_kind("security_split")
    assert kind is not None
    for placeholders in (None, {"attack": ["finetune-1024"]}):
        got = kind.declaration("attack_finetune-1024_scratch_quality", placeholders)
        assert got is not None and got.name == "attack_<attack>_scratch_quality"
        got = kind.declaration("attack_finetune-1024_quality", placeholders)
        assert got is not None and got.name == "attack_<attack>_quality"
    # An attack named "finetune-1024_scratch" does run: its quality is the plain family's.
    got = kind.declaration(
        "attack_finetune-1024_scratch_quality", {"attack": ["finetune-1024_scratch"]}
    )
    assert got is not None and got.name == "attack_<attack>_quality"


def _toy(**changes: object) -> KindDef:
    base: dict[str, object] = {
        "name": "odd",
        "summary": "",
        "built": "tests.toy_kind_plugin:Guesser",
        "run": "tests.toy_kind_plugin:run_toy",
        "ranking": KindInfo(primary="error", higher_is_better=False, columns=("error",)),
        "metrics": (MetricDecl("error", "u", "lower", "m.", "h."),),
    }
    return KindDef(**{**base, **changes})  # type: ignore[arg-type]


def test_a_step_curve_must_be_a_declared_metric() -> None:
    with pytest.raises(ContractError, match=r"step curves \['train_loss'\]"):
        check_kind(_toy(step_curves=("error", "train_loss")))
    check_kind(_toy(step_curves=("error",)))
    optimizer = get_kind("optimizer")
    assert optimizer is not None and "train_loss" in optimizer.step_curves
    assert optimizer.declaration("train_loss") is not None


def test_a_protocol_option_needs_a_readable_type() -> None:
    with pytest.raises(ContractError, match="must be an Option"):
        check_kind(_toy(options={"every": 3}))
    with pytest.raises(ContractError, match=r"option 'every' \(numpy.int64\).*namespace"):
        check_kind(_toy(options={"every": Option("numpy.int64", 3, "d")}))
    check_kind(_toy(options={"every": Option("PositiveInt | None", None, "d")}))


def test_phase_figures_go_the_way_their_meters_record() -> None:
    """Memory, power and energy are lower-is-better in the records (the meters set
    higher_is_better=False), and so in the declarations."""
    for name in ("optimizer", "compressor"):
        kind = get_kind(name)
        assert kind is not None
        phase = [d for d in kind.metrics if "_cuda_peak_" in d.name or "_gpu_" in d.name]
        assert len(phase) == 7
        assert {d.direction for d in phase} == {"lower"}


def test_the_glossary_lists_each_workloads_own_figures() -> None:
    text = builtin_glossary()
    optimizer = text[text.index("## optimizer") : text.index("## compressor")]
    for workload in ("ae-mnist", "ae-synthetic"):
        for figure in ("train_mse", "clean_train_mse"):
            assert f"| {workload} | `{figure}` | MSE (squared data units) |" in optimizer
    assert "tiny-llama" not in optimizer  # no figures of its own


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
        # A family member must name one of the run's attacks (every registered one when
        # the suite named none).
        attacks = {"attack": r["spec"].get("attacks") or list(registry.attacks)}
        for name in r.get("metrics") or {}:
            if name in figures[key] or name in RETIRED:
                continue
            if kind.declaration(name, attacks) is None:
                problems.append(f"{kind_name}/{workload}: {name}")
    assert sorted(set(problems)) == []


def test_a_kinds_option_default_its_own_type_refuses_is_reported_at_validate() -> None:
    from benchmark.suite import protocol_option_problems

    bad = _toy(options={"every": Option("PositiveInt", 0, "d")})
    check_kind(bad)  # discovery stays cheap: no pydantic there
    ((name, message),) = protocol_option_problems(bad, {})
    assert name == "every" and "own default" in message and "greater than 0" in message
    assert protocol_option_problems(bad, {"every": 3}) == []  # set by the suite: fine
