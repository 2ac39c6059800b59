"""The `bench` command: bad input is one clear message with exit code 2, never a traceback."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from benchmark.cli import main

SUITE = """\
name: cli
experiments:
  - kind: optimizer
    workloads: [least-squares]
    methods:
      - name: signsgd
        grid: {{lr: [{lr}]}}
    budget: {{steps: 15}}
"""


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out + err


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(SUITE.format(lr=0.01))
    return path


def test_plugins_lists_distribution_version_and_registrations(
    capsys: pytest.CaptureFixture[str], example_dist: str
) -> None:
    assert main(["plugins", "--plugin", "tests.fixtures.broken_import", "--json"]) == 0
    listing = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    example = listing["example"]
    assert example["source"] == "entry-point"
    assert (example["distribution"], example["version"]) == ("methodbench-example", "0.1.0")
    assert example["registered"] == ["method optimizer/signsgd", "workload optimizer/least-squares"]
    assert listing["tests.fixtures.broken_import"]["errors"]
    code, text = run_cli(capsys, "plugins")
    assert code == 0 and "methodbench" in text


def test_third_party_method_runs_in_a_suite(
    capsys: pytest.CaptureFixture[str], example_dist: str, suite_file: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    code, text = run_cli(capsys, "run", str(suite_file), "--results", str(results))
    assert code == 0, text
    (record,) = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    assert record["status"] == "ok", record["reason"]
    assert record["spec"]["method"] == "signsgd"
    assert record["metrics"]["eval_loss"]["value"] < 10
    assert (results / "LEADERBOARD.md").read_text().count("signsgd") >= 1
    assert (results / "report.html").exists() and (results / "leaderboard.csv").exists()


def test_validate(capsys: pytest.CaptureFixture[str], example_dist: str, suite_file: Path) -> None:
    code, text = run_cli(capsys, "validate", str(suite_file))
    assert code == 0 and "is valid: 1 runs" in text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such suite file"),
        ("name: x\nexperiments: [\n", "malformed YAML"),
        (SUITE.format(lr=0.01).replace("signsgd", "signsdg"), "did you mean 'signsgd'"),
    ],
)
def test_bad_suites_exit_2(
    capsys: pytest.CaptureFixture[str],
    example_dist: str,
    tmp_path: Path,
    content: str | None,
    expected: str,
) -> None:
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    for command in ("validate", "run"):
        code, text = run_cli(capsys, command, str(path))
        assert code == 2, text
        assert expected in text


def test_wrong_type_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nseeds: [a]\nexperiments: []\n")
    code, text = run_cli(capsys, "validate", str(path))
    assert code == 2 and "bad.yaml:2" in text and "seeds[0]" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_exit_2(
    capsys: pytest.CaptureFixture[str], example_dist: str, suite_file: Path, tmp_path: Path
) -> None:
    code, text = run_cli(
        capsys, "run", str(suite_file), "--device", "cuda", "--results", str(tmp_path / "r")
    )
    assert code == 2 and "no CUDA GPU" in text


def test_unwritable_results_exit_2(
    capsys: pytest.CaptureFixture[str], example_dist: str, suite_file: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, text = run_cli(capsys, "run", str(suite_file), "--results", str(blocker / "r"))
    assert code == 2 and str(blocker) in text
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        code, text = run_cli(capsys, "run", str(suite_file), "--results", str(ro / "r"))
        assert code == 2


def test_compare_exit_codes(
    capsys: pytest.CaptureFixture[str], example_dist: str, tmp_path: Path
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    good = tmp_path / "good.yaml"
    good.write_text(SUITE.format(lr=0.05))
    assert main(["run", str(good), "--results", str(old), "--inline", "--no-report"]) == 0
    assert main(["run", str(good), "--results", str(new), "--inline", "--no-report"]) == 0
    capsys.readouterr()
    code, _ = run_cli(capsys, "compare", str(old), str(new), "--fail-on", "eval_loss:+10%")
    assert code == 0
    # Same content hash needs the same spec: rewrite the new records' loss to regress.
    for path in (new / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        record["metrics"]["eval_loss"]["value"] *= 1.5
        path.write_text(json.dumps(record))
    code, text = run_cli(capsys, "compare", str(old), str(new), "--fail-on", "eval_loss:+10%")
    assert code == 1 and "eval_loss" in text
    code, text = run_cli(capsys, "compare", str(old), str(new), "--fail-on", "eval_loss+10")
    assert code == 2
    code, text = run_cli(capsys, "compare", str(old), str(tmp_path / "nope"))
    assert code == 2 and "no such results directory" in text


def test_labels_reasons_and_messages_print_literally_not_as_markup() -> None:
    from rich.console import Console

    from benchmark.cli import _ProgressEvents
    from benchmark.records import RunRecord, RunSpec

    spec = RunSpec(
        suite="s", kind="optimizer", method="m", workload="w", hparams={"path": "[/opt/x]", "lr": 1}
    )
    events = _ProgressEvents(1)
    events.bar.live.console = Console(record=True, width=300, force_terminal=False)
    with events:
        events.started(spec)
        events.progress(spec, "loading [/opt/foo/lib] [bold]x")
        events.finished(
            RunRecord(id=spec.id, spec=spec, status="failed", reason="ImportError: [/opt/foo/lib]")
        )
    text = events.bar.console.export_text()
    assert "[lr=1,path=[/opt/x]]" in text and "ImportError: [/opt/foo/lib]" in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--plugin", "a.b", "plugins"], ["a.b"]),
        (["plugins", "--plugin", "a.b"], ["a.b"]),
        (["--plugin", "a", "plugins", "--plugin", "b", "--plugin", "a"], ["a", "b"]),
        (["plugins"], []),
    ],
)
def test_plugin_option_counts_before_and_after_the_subcommand(
    argv: list[str], expected: list[str]
) -> None:
    from benchmark.cli import _plugins, build_parser

    assert _plugins(build_parser().parse_args(argv)) == expected
