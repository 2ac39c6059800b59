"""A plugin kind's records read back in a new process: ``bench leaderboard``, ``compare``
and ``history`` load plugins (``--plugin``) before reading records, so the toy kind
(``tests/toy_kind_plugin.py``) is ranked, judged and tracked by its own ``KindDef``; without
its plugin each says loudly that the kind is unknown and ranks nothing.

The toy protocol reports ``guess`` before ``error``: a report that fell back to a record's
first metric would rank by the guess (and higher-is-better) and fail these tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.host import Registry
from tests.test_toy_kind import PLUGIN, REPO, SUITE

# |guess - 1| ascending; by the guess (the first metric) it would be 3.0, 0.9, -0.5.
RANKED = ["0.9", "-0.5", "3.0"]
UNKNOWN = re.compile(r"^warning: kind 'toy' is not registered.*--plugin MODULE$", re.MULTILINE)


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "benchmark.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy suite run once, in its own process, with its reports written."""
    where = tmp_path_factory.mktemp("toy")
    (where / "toy.yaml").write_text(SUITE.format(kind="toy"))
    done = _bench(
        "--plugin",
        PLUGIN,
        "run",
        str(where / "toy.yaml"),
        "--results",
        str(where / "res"),
        "--inline",
    )
    assert done.returncode == 0, done.stderr
    return where / "res"


def _section(markdown: str) -> str:
    """The toy table: its heading, note, header and rows (not the dated header lines)."""
    return markdown.split("## toy on target", 1)[1]


def _ranked_values(markdown: str) -> list[str]:
    rows = [line for line in markdown.splitlines() if re.match(r"^\| \d", line)]
    return [re.search(r"value=(-?[\d.]+)", r).group(1) for r in rows]  # type: ignore[union-attr]


def _copy(
    results: Path, to: Path, edit: dict[str, object] | None = None, **environment: object
) -> Path:
    """A copy of the records, the ``value=0.9`` run's metrics edited, environments set."""
    shutil.copytree(results / "runs", to / "runs")
    for path in (to / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        if edit and record["spec"]["hparams"].get("value") == 0.9:
            for metric, value in edit.items():
                record["metrics"][metric]["value"] = value
        record["environment"].update(environment)
        path.write_text(json.dumps(record))
    return to


def test_a_new_process_with_the_plugin_writes_the_leaderboard_the_run_wrote(
    results: Path, tmp_path: Path
) -> None:
    written = (results / "LEADERBOARD.md").read_text()
    assert _ranked_values(written) == RANKED
    done = _bench("--plugin", PLUGIN, "leaderboard", str(results), "--out", str(tmp_path / "cli"))
    assert done.returncode == 0, done.stderr
    assert not UNKNOWN.search(done.stderr)
    rebuilt = (tmp_path / "cli" / "LEADERBOARD.md").read_text()
    assert _section(rebuilt) == _section(written)  # ranking, columns, note and kind's note
    assert "ranked by error (lower is better" in rebuilt and "toy note" in rebuilt
    assert "| error (units) | guess (units) |" in rebuilt
    assert "ranked by error" in done.stdout  # the terminal summary too
    # The Python API loads plugins where it writes reports, as the command does.
    api = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from benchmark.report import write_reports; "
            f"write_reports(sys.argv[1], sys.argv[2], plugins=[{PLUGIN!r}])",
            str(results),
            str(tmp_path / "api"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert api.returncode == 0, api.stderr
    assert _section((tmp_path / "api" / "LEADERBOARD.md").read_text()) == _section(written)


def test_without_the_plugin_the_kind_is_named_and_nothing_is_ranked(
    results: Path, tmp_path: Path
) -> None:
    # A plugin that fails to load is a warning, not an error: the records still read.
    done = _bench(
        "--plugin", "tests.no_such_plugin", "leaderboard", str(results), "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert (
        "warning: plugin tests.no_such_plugin (command-line) skipped: import failed" in done.stderr
    )
    assert len(UNKNOWN.findall(done.stderr)) == 1, done.stderr
    board = (tmp_path / "LEADERBOARD.md").read_text()
    section = _section(board)
    assert _ranked_values(board) == []  # no rank numbers at all
    assert "ranked by" not in section and "ranked by" not in done.stdout
    assert "NOT RANKED: kind 'toy' is not registered" in section
    rows = [line for line in section.splitlines() if line.startswith("| - | constant")]
    assert len(rows) == 3  # every configuration listed, unranked, with its figures
    assert "| guess (units) | error (units) |" in section
    assert not any(
        c.startswith("val_")
        for c in (tmp_path / "leaderboard.csv").read_text().splitlines()[0].split(",")
    )
    # In place, the ranked reports the run wrote are kept: refused, with what to do.
    before = (results / "LEADERBOARD.md").read_text()
    in_place = _bench("leaderboard", str(results))
    assert in_place.returncode == 2 and "--plugin MODULE" in in_place.stderr
    assert "--out DIR" in in_place.stderr
    assert (results / "LEADERBOARD.md").read_text() == before


def test_compare_with_the_plugin_judges_the_kinds_headline(results: Path, tmp_path: Path) -> None:
    new = _copy(results, tmp_path / "new", edit={"error": 5.0})
    done = _bench("--plugin", PLUGIN, "compare", str(results), str(new))
    assert done.returncode == 1, done.stdout + done.stderr  # a regression
    regressed = [line for line in done.stdout.splitlines() if "regressed |" in line]
    assert len(regressed) == 1
    assert "toy/constant[value=0.9]" in regressed[0] and "| error |" in regressed[0]
    assert "3 configurations compared" in done.stdout
    # Without the plugin: refused with the kind named, never "no regression".
    blind = _bench("compare", str(results), str(new))
    assert blind.returncode == 2
    assert UNKNOWN.search(blind.stderr), blind.stderr
    assert "'toy' were not judged" in blind.stderr and "no regression" not in blind.stdout


def test_history_tracks_the_kinds_headline_only_with_its_plugin(
    results: Path, tmp_path: Path
) -> None:
    clean = _copy(results, tmp_path / "res", git_commit="a" * 40, git_dirty=False)
    done = _bench("--plugin", PLUGIN, "history", str(tmp_path / "h"), "--add", str(clean))
    assert done.returncode == 0, done.stderr
    assert "holds 3 points" in done.stdout
    lines = (tmp_path / "h" / "toy.jsonl").read_text().splitlines()
    assert {json.loads(x)["metric"] for x in lines} == {"error"}
    blind = _bench("history", str(tmp_path / "h2"), "--add", str(clean))
    assert UNKNOWN.search(blind.stderr), blind.stderr
    assert "no points added" in blind.stdout


def test_records_of_an_unknown_kind_are_listed_unranked_and_not_judged(
    results: Path, tmp_path: Path
) -> None:
    """In process, for a kind no plugin defines (the toy's records renamed): the table
    ranks nothing and keeps every figure, compare judges nothing, history adds nothing,
    and the report API warns with the kind's name."""
    from benchmark import history, store
    from benchmark.report import build_leaderboard, write_reports
    from benchmark.report.compare import NOT_JUDGED, compare

    renamed = _copy(results, tmp_path / "res")
    for path in (renamed / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        record["spec"]["kind"] = "nokind"
        path.write_text(json.dumps(record))
    records = store.load_records(renamed)
    (table,) = build_leaderboard(records)
    assert table.unranked is not None and "'nokind' is not registered" in table.unranked
    assert table.primary == "" and table.columns == ["guess", "error"]
    assert [r.rank for r in table.rows] == [None] * 3
    assert {r.rank_label for r in table.rows} == {"-"}
    assert table.ranking_note.startswith("NOT RANKED")
    result = compare(records, records)
    assert {r.verdict for r in result.rows} == {NOT_JUDGED}
    assert result.compared == 0 and result.unjudged_kinds == ["nokind"]
    assert not result.failed
    assert history.points_of(records) == []
    with pytest.warns(UserWarning, match=r"kind 'nokind' is not registered.*--plugin MODULE"):
        write_reports(renamed)


MYOPT = """\
from benchmark import hookimpl
from benchmark.kinds import MethodSpec


def build(model, *, lr: float = 0.1):
    raise NotImplementedError


@hookimpl
def methodbench_register_methods(register):
    register(MethodSpec(kind="optimizer", name="my-sgd", factory=build))
"""


def test_a_registry_without_builtin_plugins_still_knows_the_builtin_kinds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``builtins=False`` leaves out the built-in methods and workloads, never the kinds:
    a third-party optimizer registers against them."""
    (tmp_path / "myopt_plugin.py").write_text(MYOPT)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(["myopt_plugin"], builtins=False, entry_points=False)
    assert {"optimizer", "compressor", "security_split", "detector"} <= set(registry.kinds)
    assert registry.plugins["myopt_plugin"].ok, registry.plugins["myopt_plugin"].errors
    assert registry.method("optimizer", "my-sgd").name == "my-sgd"
    assert not any(name.startswith("plugins") for name in registry.plugins)
    assert ("optimizer", "adamw") not in registry.methods


def _optimizer_record(seed: int, unit: str, curve_unit: str) -> object:
    from benchmark.records import Curve, Metric, RunRecord, RunSpec

    spec = RunSpec(suite="s", kind="optimizer", method="sgd", workload="w", seed=seed)
    loss = Metric(value=0.5 + seed, unit=unit, meter="test")
    curves = {
        "train_loss": Curve(x=[1, 2, 3], y=[3.0, 2.0, 1.0], y_label="train loss", unit=curve_unit),
        "eval_loss": Curve(x=[1, 3], y=[2.5, 1.5], y_label="eval loss", unit=curve_unit),
    }
    return RunRecord(id=spec.id, spec=spec, status="ok", metrics={"eval_loss": loss}, curves=curves)


MSE = "MSE (squared data units)"


@pytest.mark.parametrize(
    ("unit", "curve_unit", "labels"),
    [
        (MSE, MSE, [f"eval loss ({MSE})", f"train loss ({MSE})"]),
        ("nats", "nats", ["eval loss (nats)", "train loss (nats)"]),
        # A curve without a unit: the unit of the metric of its name, else none assumed.
        ("nats", "", ["eval loss (nats)", "train loss"]),
    ],
)
def test_the_optimizer_plot_labels_its_axes_with_the_records_unit(
    unit: str, curve_unit: str, labels: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss axes carry the unit the records carry (an autoencoder's MSE is no nats);
    the plot is the kind's own module, reached through the kind's ``plot`` reference."""
    from benchmark.kinds import get_kind
    from benchmark.report import build_leaderboard
    from benchmark.report.plots import PLOTS

    kind = get_kind("optimizer")
    assert kind is not None and kind.plot == "benchmark.kinds.optimizer_plot:optimizer_curves"
    drawn: list[object] = []
    monkeypatch.setattr(
        "benchmark.kinds.optimizer_plot.png", lambda fig: drawn.append(fig) or b"png"
    )
    (table,) = build_leaderboard([_optimizer_record(s, unit, curve_unit) for s in (0, 1)])
    assert PLOTS["optimizer"](table) == b"png"
    (fig,) = drawn
    assert sorted(ax.get_ylabel() for ax in fig.axes) == labels  # type: ignore[attr-defined]


def test_every_builtin_plot_lives_with_its_kind() -> None:
    """Each built-in kind's ``plot`` names a module of its own (``<kind>_plot``), which
    its definition module does not import (discovery and ``bench validate`` stay free of
    matplotlib)."""
    import ast
    import importlib

    from benchmark.kinds.registered import BUILTIN_KINDS

    for module in BUILTIN_KINDS:
        kind = importlib.import_module(module).KIND
        assert kind.plot is not None and kind.plot.startswith(f"{module}_plot:"), kind.plot
        assert callable(kind.load_plot())
        source = (REPO / (module.replace(".", "/") + ".py")).read_text()
        imported = {
            n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in n.names
        }
        assert not any("plot" in (m or "") or "matplotlib" in (m or "") for m in imported)
