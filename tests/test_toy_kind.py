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


def test_an_undeclared_metric_fails_the_run_with_its_name(tmp_path: Path) -> None:
    registry = Registry(extra_plugins=[PLUGIN])
    spec = RunSpec(
        suite="t",
        kind="toy",
        method="constant",
        hparams={"leak": True},
        workload="target",
        seed=0,
        device="cpu",
    )
    (record,) = InlineExecutor(tmp_path, registry).run([spec])
    assert record.status == "failed"
    assert "ContractError" in (record.reason or "")
    assert "secret_figure" in (record.reason or "") and "error" not in record.metrics


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


def test_the_host_names_no_kind() -> None:
    """Outside a kind's own module (``benchmark/kinds/<kind>.py``) and its protocol
    (``benchmark/protocols/<kind>.py``, ``_<suffix>`` helpers included), no host module
    writes a built-in kind's name as a string: the host iterates over registered kinds."""
    from benchmark.kinds import registered_kinds

    names = [k for k in registered_kinds() if k != "toy"]
    found = []
    for path in sorted((REPO / "benchmark").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text()
        for name in names:
            if rel == f"benchmark/kinds/{name}.py" or rel.startswith(f"benchmark/protocols/{name}"):
                continue
            if re.search(rf"[\"']{name}[\"']", text):
                found.append(f"{rel}: {name}")
    assert found == []


def test_reports_rank_a_registered_kind_without_a_registry(tmp_path: Path) -> None:
    """A leaderboard needs only the results directory: the kind table the registry filled
    serves reports too (and the built-ins are there without any registry)."""
    from benchmark.kinds import KIND_INFO

    Registry(extra_plugins=[PLUGIN])
    assert KIND_INFO["toy"].primary == "error"
    assert {"optimizer", "compressor", "security_split", "detector"} <= set(KIND_INFO)
