"""A kind is one place: a fifth kind registered by a plugin module
(``tests/toy_kind_plugin.py``, loaded as ``--plugin`` modules are, in the parent and in
every worker) runs through a suite to a leaderboard ranked by its own headline metric,
with nothing in the host naming it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmark.executors.local import InlineExecutor
from benchmark.host import Registry
from benchmark.records import RunSpec

PLUGIN = "tests.toy_kind_plugin"
REPO = Path(__file__).resolve().parent.parent

SUITE = """\
name: toy
seeds: [0]
device: cpu
experiments:
  - kind: {kind}
    workloads: [target]
    methods:
      - name: constant
        hparams: {{value: 3.0}}
      - name: constant
        hparams: {{value: 0.9}}
      - name: constant
        hparams: {{value: -0.5}}
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_plugin_kind_runs_through_a_suite_to_its_leaderboard(
    tmp_path: Path, jobs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmark.api import run_suite

    if jobs == 1:  # each run spawned; with 2 jobs, forked from the warm server
        monkeypatch.setattr("benchmark.executors.local.forkserver_supported", lambda: False)
    suite = tmp_path / "toy.yaml"
    suite.write_text(SUITE.format(kind="toy"))
    records = run_suite(suite, results=tmp_path / "res", jobs=jobs, plugins=[PLUGIN])
    assert [r.status for r in records] == ["ok"] * 3, [r.reason for r in records]
    launchers = {r.harness.get("launcher") for r in records}
    assert launchers == {"subprocess" if jobs == 1 else "forkserver"}
    board = (tmp_path / "res" / "LEADERBOARD.md").read_text()
    assert "## toy on target" in board
    assert "ranked by error (lower is better" in board and "toy note" in board
    rows = [line for line in board.splitlines() if re.match(r"^\| \d", line)]
    # Ranked by the toy kind's primary metric (|guess - 1|), not in the suite's order.
    assert [re.search(r"value=(-?[\d.]+)", r).group(1) for r in rows] == ["0.9", "-0.5", "3.0"]
    assert "| error (units) | guess (units) |" in board


@pytest.mark.parametrize("strict", [False, True])
def test_an_undeclared_metric_is_set_aside_and_fails_the_run_only_in_strict_mode(
    tmp_path: Path,
    strict: bool,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A finished measurement is never thrown away for an extra figure: the run stays ok
    with its declared metrics and the extra one set aside (value and unit) with a warning
    in its log; in strict mode (the tests' own, ``tests/conftest.py``) it fails with a
    ContractError naming the figure, its metrics and info still in the record."""
    import os

    assert os.environ.get("METHODBENCH_STRICT_METRICS") == "1", "conftest sets strict mode"
    monkeypatch.setenv("METHODBENCH_STRICT_METRICS", "1" if strict else "0")
    registry = Registry(extra_plugins=[PLUGIN])
    spec = RunSpec(
        suite="t",
        kind="toy",
        method="constant",
        hparams={"leak": True, "value": 3.0},
        workload="target",
        seed=0,
        device="cpu",
    )
    (record,) = InlineExecutor(tmp_path, registry).run([spec])
    assert "secret_figure" in capfd.readouterr().err
    if strict:
        assert record.status == "failed"
        assert (record.reason or "").startswith("ContractError: ")
        assert "secret_figure" in (record.reason or "")
    else:
        assert record.status == "ok" and record.reason is None
    assert record.value("error") == 2.0 and record.value("guess") == 3.0
    assert "secret_figure" not in record.metrics
    assert record.info["undeclared_metrics"]["secret_figure"]["value"] == 1.0
    assert record.info["undeclared_metrics"]["secret_figure"]["unit"] == "units"
    assert record.info["target"] == 1.0


def test_an_unknown_kind_in_a_suite_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    from benchmark.suite import SuiteError, check_names, load_suite

    path = tmp_path / "toy.yaml"
    path.write_text(SUITE.format(kind="tyo"))
    registry = Registry(extra_plugins=[PLUGIN])  # before the suite is read, as bench run does
    with pytest.raises(SuiteError, match=r"kind.*unknown kind 'tyo' \(did you mean 'toy'\?\)"):
        check_names(load_suite(path), registry, path)


def test_the_plugin_registers_its_kind_through_the_hook() -> None:
    registry = Registry(extra_plugins=[PLUGIN])
    info = registry.plugins[PLUGIN]
    assert info.ok, info.errors
    assert info.registered[0] == "kind toy"
    assert registry.kind("toy").ranking.primary == "error"
    # The built-ins come through the same hook, from benchmark.kinds.
    assert registry.plugins["benchmark.kinds"].registered == [
        f"kind {k}" for k in ("optimizer", "compressor", "security_split", "detector")
    ]


def _own_modules(kind: str) -> tuple[str, ...]:
    """A built-in kind's own modules: its definition, its plot and its protocol
    (``benchmark/protocols/<kind>.py``, ``_<suffix>`` helpers included)."""
    return (f"benchmark/kinds/{kind}.py", f"benchmark/kinds/{kind}_plot.py")


def _owns(rel: str, kind: str) -> bool:
    return rel in _own_modules(kind) or rel.startswith(f"benchmark/protocols/{kind}")


# Host modules that name a built-in kind's metric for a generic reason, (module, name):
# each entry must still be found (a stale one fails), so the list stays exact.
GENERIC_METRIC_NAMES: dict[tuple[str, str], str] = {
    **{
        ("benchmark/kinds/definition.py", "peak_memory"): "the shared phase figures' "
        "suffix (<phase>_peak_memory) any kind declares through phase_metrics",
        ("benchmark/measure/meters.py", "peak_memory"): "the phase meter's headline "
        "figure, named by the instrument that measures it",
        ("benchmark/report/leaderboard.py", "perplexity"): "a unit (an interval of "
        "perplexity is clipped at 1), not the optimizer's metric",
    },
    # A meter or metric library names the figures it computes; a kind declares them.
    **{
        ("benchmark/measure/tensor_memory.py", name): "the tensor-memory meter's figures"
        for name in (
            "step_peak_tensor_bytes",
            "step_params_bytes",
            "step_grads_bytes",
            "step_peak_optimizer_state_bytes",
            "step_buffers_bytes",
            "step_activations_bytes",
            "step_optimizer_state_bytes",
        )
    },
    **{
        ("benchmark/metrics/ood.py", name): "the OOD metric library's figures"
        for name in (
            "auroc",
            "aupr_in",
            "aupr_out",
            "aupr_in_trapezoid",
            "aupr_out_trapezoid",
            "fpr_at_95_tpr",
            "fpr_at_95_tpr_id",
        )
    },
}


def _builtin_metric_names() -> dict[str, set[str]]:
    """Each literal metric name (families left out) and step curve a built-in kind
    declares -> the kinds that declare it."""
    import importlib

    from benchmark.kinds.registered import BUILTIN_KINDS

    names: dict[str, set[str]] = {}
    for module in BUILTIN_KINDS:
        kind = importlib.import_module(module).KIND
        literal = [d.name for d in kind.metrics if not d.is_family]
        for name in (*literal, *kind.step_curves):
            names.setdefault(name, set()).add(kind.name)
    return names


def _named_metrics(rel: str, source: str, names: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(module, metric) for each string constant of ``source`` that is exactly a built-in
    kind's metric name, where ``rel`` is none of the declaring kinds' own modules."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            kinds = names.get(node.value)
            if kinds and not any(_owns(rel, k) for k in kinds):
                found.add((rel, node.value))
    return found


def test_the_host_names_no_kind() -> None:
    """Outside a kind's own modules (``_own_modules``, its protocol) no host module writes
    a built-in kind's name as a string, nor one of its declared metric names or step
    curves (literal names; families left out): the host iterates over registered kinds
    and their declarations, so a report, plot or check that knows a kind's figures is
    the kind's code, not the host's."""
    from benchmark.kinds.registered import BUILTIN_KINDS

    kinds = [m.rpartition(".")[2] for m in BUILTIN_KINDS]
    metrics = _builtin_metric_names()
    found = []
    named: set[tuple[str, str]] = set()
    for path in sorted((REPO / "benchmark").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text()
        for name in kinds:
            if _owns(rel, name):
                continue
            if re.search(rf"[\"']{name}[\"']", text):
                found.append(f"{rel}: {name}")
        named |= _named_metrics(rel, text, metrics)
    assert found == []
    assert sorted(named - GENERIC_METRIC_NAMES.keys()) == []
    assert sorted(GENERIC_METRIC_NAMES.keys() - named) == []  # no stale exception


def test_the_metric_check_flags_a_kinds_plot_in_the_host() -> None:
    """What the host's report module held before each kind's plot moved to the kind:
    the check above would have failed on it."""
    old_plot = (
        "def security_scatter(table):\n"
        "    x = row.cells.get('trusted_flops_share')\n"
        "    y = row.cells.get('attack_recovered_ratio')\n"
        "def optimizer_curves(table):\n"
        "    keys = [k for k in ('train_loss', 'eval_loss')]\n"
    )
    rel = "benchmark/report/plots.py"
    assert _named_metrics(rel, old_plot, _builtin_metric_names()) == {
        (rel, "trusted_flops_share"),
        (rel, "attack_recovered_ratio"),
        (rel, "train_loss"),
        (rel, "eval_loss"),
    }
    # The same code is the kind's own in its plot module.
    own = "benchmark/kinds/security_split_plot.py"
    assert (own, "trusted_flops_share") not in _named_metrics(
        own, old_plot, _builtin_metric_names()
    )


def test_reports_rank_a_registered_kind_without_a_registry(tmp_path: Path) -> None:
    """A leaderboard needs only the results directory: the kind table the registry filled
    serves reports too (and the built-ins are there without any registry)."""
    from benchmark.kinds import KIND_INFO

    Registry(extra_plugins=[PLUGIN])
    assert KIND_INFO["toy"].primary == "error"
    assert {"optimizer", "compressor", "security_split", "detector"} <= set(KIND_INFO)


def test_a_metric_check_that_raises_loses_no_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kind's check (``extra_metrics`` of a third party's kind, say) that raises once the
    protocol has returned: the run's figures are kept and the error is said, never a
    traceback that stops the suite (--inline) or a worker that dies without a record."""
    import benchmark.executors.runner as runner

    def broken(*args: object, **kwargs: object) -> None:
        raise AttributeError("'Target' object has no attribute 'figure_units'")

    monkeypatch.setattr(runner, "_set_aside_undeclared", broken)
    monkeypatch.setenv("METHODBENCH_STRICT_METRICS", "0")
    registry = Registry(extra_plugins=[PLUGIN])
    spec = RunSpec(
        suite="t",
        kind="toy",
        method="constant",
        hparams={"value": 3.0},
        workload="target",
        seed=0,
        device="cpu",
    )
    (record,) = InlineExecutor(tmp_path, registry).run([spec])
    assert record.status == "ok" and record.value("error") == 2.0
    assert "figure_units" in record.info["metric_check_error"]
    monkeypatch.setenv("METHODBENCH_STRICT_METRICS", "1")
    (strict,) = InlineExecutor(tmp_path / "s", registry).run([spec])
    assert strict.status == "failed" and "figure_units" in (strict.reason or "")
    assert strict.value("error") == 2.0
