"""A table of bad suite files and command lines: each must end in exit 2 with one line on
stderr and no traceback, before anything runs. The table is the fault campaign's list of
hostile and careless inputs; a new way to break ``bench`` gets a row here."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from benchmark import cli
from benchmark.suite_yaml import MAX_SUITE_BYTES

GOOD = """\
name: bad
experiments:
  - kind: optimizer
    workloads: [tiny-llama]
    methods:
      - name: adamw
        hparams: {lr: 0.001}
"""


def with_method(entry: str) -> str:
    return GOOD.replace("        hparams: {lr: 0.001}\n", "").replace(
        "      - name: adamw\n", f"      - {entry}\n"
    )


def with_top(line: str) -> str:
    return GOOD.replace("name: bad\n", f"name: bad\n{line}\n")


def with_exp(line: str) -> str:
    return GOOD + f"    {line}\n"


def bomb(levels: int) -> str:
    lines = ["name: bomb", 'a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\nexperiments: []\n"


# (id, suite text, a phrase the one error line must contain)
SUITES: list[tuple[str, str | bytes, str]] = [
    # the document itself
    ("empty-file", "", "a suite is a mapping"),
    ("scalar-document", "3\n", "a suite is a mapping"),
    ("list-document", "- a\n- b\n", "a suite is a mapping"),
    ("unclosed-bracket", "name: x\nexperiments: [\n", "malformed YAML"),
    ("tab-indentation", "name: x\nexperiments:\n\t- kind: optimizer\n", "malformed YAML"),
    ("bad-indentation", "name: x\n  experiments: []\n", "malformed YAML"),
    ("not-utf8", b"name: \xff\xfe\nexperiments: []\n", "not UTF-8"),
    ("utf16-bom", "name: x\n".encode("utf-16"), "not UTF-8"),
    ("duplicate-top-key", "name: x\nname: y\nexperiments: []\n", "appears twice"),
    ("duplicate-method-key", with_method("{name: adamw, name: muon}"), "appears twice"),
    (
        "duplicate-hparam",
        with_method("name: adamw\n        hparams: {lr: 0.1, lr: 0.2}"),
        "appears twice",
    ),
    ("alias-bomb", bomb(6), "expands to more than"),
    ("recursive-alias", "name: x\nexperiments: &a [*a]\n", "refers to itself"),
    ("deep-list-5000", "name: x\nexperiments: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("deep-list-40", "name: x\nexperiments: " + "[" * 40 + "]" * 40 + "\n", "nested"),
    (
        "deep-mapping-40",
        "name: x\nexperiments: []\nx: " + "{a: " * 40 + "1" + "}" * 40 + "\n",
        "nested",
    ),
    ("huge-file", "name: x\n#" + "x" * (MAX_SUITE_BYTES + 10) + "\n", "the limit"),
    ("unknown-tag", "name: !!python/object:os.system x\nexperiments: []\n", "malformed YAML"),
    # top level
    ("no-name", GOOD.replace("name: bad\n", ""), "name"),
    ("name-with-slash", GOOD.replace("name: bad", "name: ../evil"), "name"),
    ("name-empty", GOOD.replace("name: bad", "name: ''"), "name"),
    ("name-a-list", GOOD.replace("name: bad", "name: [a]"), "name"),
    ("no-experiments", "name: x\n", "experiments"),
    ("experiments-empty", "name: x\nexperiments: []\n", "experiments"),
    ("experiments-mapping", "name: x\nexperiments: {a: 1}\n", "experiments"),
    ("unknown-top-key", with_top("colour: blue"), "colour"),
    ("description-list", with_top("description: [a]"), "description"),
    ("device-tpu", with_top("device: tpu"), "device"),
    ("jobs-zero", with_top("jobs: 0"), "jobs"),
    ("jobs-string", with_top("jobs: many"), "jobs"),
    ("tuning-budget-zero", with_top("tuning_budget: 0"), "tuning_budget"),
    ("timeout-inf", with_top("timeout_s: .inf"), "timeout_s"),
    ("timeout-nan", with_top("timeout_s: .nan"), "timeout_s"),
    ("timeout-zero", with_top("timeout_s: 0"), "timeout_s"),
    ("timeout-negative", with_top("timeout_s: -5"), "timeout_s"),
    ("timeout-word", with_top("timeout_s: slow"), "timeout_s"),
    ("seeds-repeated", with_top("seeds: [0, 0]"), "more than once"),
    ("seeds-bool", with_top("seeds: [true]"), "seeds"),
    ("seeds-fraction", with_top("seeds: [1.5]"), "seeds"),
    ("seeds-negative", with_top("seeds: [-1]"), "seeds"),
    ("seeds-huge", with_top("seeds: [1e26]"), "seeds"),
    ("seeds-too-big-int", with_top("seeds: [18446744073709551616]"), "seeds"),
    ("seeds-empty", with_top("seeds: []"), "seeds"),
    ("seeds-scalar", with_top("seeds: 3"), "seeds"),
    ("seeds-word", with_top("seeds: [a]"), "seeds"),
    ("budget-steps-zero", with_top("budget: {steps: 0}"), "steps"),
    ("budget-steps-word", with_top("budget: {steps: many}"), "steps"),
    ("budget-steps-fraction", with_top("budget: {steps: 2.5}"), "steps"),
    ("budget-time-nan", with_top("budget: {time_s: .nan}"), "time_s"),
    ("budget-time-negative", with_top("budget: {time_s: -1}"), "time_s"),
    ("budget-unknown-key", with_top("budget: {epochs: 3}"), "epochs"),
    ("budget-a-list", with_top("budget: [1]"), "budget"),
    # experiments
    ("kind-unknown", GOOD.replace("kind: optimizer", "kind: trainer"), "kind"),
    ("kind-missing", GOOD.replace("  - kind: optimizer\n    workloads", "  - workloads"), "kind"),
    ("workloads-empty", GOOD.replace("[tiny-llama]", "[]"), "workloads"),
    ("workloads-missing", GOOD.replace("    workloads: [tiny-llama]\n", ""), "workloads"),
    ("workload-unknown", GOOD.replace("tiny-llama", "tiny-lama"), "did you mean"),
    ("workload-number", GOOD.replace("[tiny-llama]", "[3]"), "workloads"),
    (
        "workload-option-unknown",
        GOOD.replace("[tiny-llama]", "[{name: tiny-llama, options: {colour: 1}}]"),
        "colour",
    ),
    (
        "workload-options-list",
        GOOD.replace("[tiny-llama]", "[{name: tiny-llama, options: [1]}]"),
        "options",
    ),
    (
        "workload-option-nan",
        GOOD.replace("[tiny-llama]", "[{name: tiny-llama, options: {seq_len: .nan}}]"),
        "finite",
    ),
    (
        "workload-entry-extra-key",
        GOOD.replace("[tiny-llama]", "[{name: tiny-llama, size: 3}]"),
        "size",
    ),
    ("methods-empty", GOOD.split("    methods:")[0] + "    methods: []\n", "methods"),
    ("methods-missing", GOOD.split("    methods:")[0], "methods"),
    ("exp-unknown-key", with_exp("colour: blue"), "colour"),
    ("exp-timeout-inf", with_exp("timeout_s: .inf"), "timeout_s"),
    ("exp-seeds-repeated", with_exp("seeds: [3, 3]"), "more than once"),
    ("exp-budget-negative", with_exp("budget: {time_s: -3}"), "time_s"),
    ("attacks-on-optimizer", with_exp("attacks: [finetune]"), "security_split"),
    ("protocol-unknown-option", with_exp("protocol: {colour: 1}"), "colour"),
    ("protocol-nan", with_exp("protocol: {eval_every: .nan}"), "finite"),
    ("protocol-a-list", with_exp("protocol: [1]"), "protocol"),
    # methods
    ("method-unknown", with_method("name: adamv"), "did you mean 'adamw'"),
    ("method-number", with_method("name: 3"), "name"),
    (
        "method-entry-scalar",
        GOOD.replace("      - name: adamw\n        hparams: {lr: 0.001}\n", "      - 3\n"),
        "methods",
    ),
    ("method-no-name", with_method("hparams: {lr: 0.1}"), "name"),
    ("method-extra-key", with_method("name: adamw\n        colour: blue"), "colour"),
    (
        "hparam-unknown",
        with_method("name: adamw\n        hparams: {lrr: 0.1}"),
        "did you mean 'lr'",
    ),
    ("hparam-word", with_method("name: adamw\n        hparams: {lr: fast}"), "valid number"),
    ("hparam-list", with_method("name: adamw\n        hparams: {lr: [1, 2]}"), "valid number"),
    ("hparam-mapping", with_method("name: adamw\n        hparams: {lr: {a: 1}}"), "valid number"),
    ("hparam-bool", with_method("name: adamw\n        hparams: {lr: true}"), "valid number"),
    ("hparam-nan", with_method("name: adamw\n        hparams: {lr: .nan}"), "finite"),
    ("hparam-inf", with_method("name: adamw\n        hparams: {lr: .inf}"), "finite"),
    (
        "hparam-minus-inf",
        with_method("name: adamw\n        hparams: {weight_decay: -.inf}"),
        "finite",
    ),
    ("hparams-a-list", with_method("name: adamw\n        hparams: [1]"), "hparams"),
    ("grid-a-list", with_method("name: adamw\n        grid: [1]"), "grid"),
    ("grid-axis-scalar", with_method("name: adamw\n        grid: {lr: 0.1}"), "grid"),
    ("grid-axis-empty", with_method("name: adamw\n        grid: {lr: []}"), "no values"),
    ("grid-axis-unknown", with_method("name: adamw\n        grid: {lrr: [0.1]}"), "did you mean"),
    (
        "grid-value-word",
        with_method("name: adamw\n        grid: {lr: [0.1, fast]}"),
        "valid number",
    ),
    ("grid-value-nan", with_method("name: adamw\n        grid: {lr: [0.1, .nan]}"), "finite"),
    (
        "variants-value-word",
        with_method("name: adamw\n        variants: {lr: [slow]}"),
        "valid number",
    ),
    ("variants-axis-empty", with_method("name: adamw\n        variants: {lr: []}"), "no values"),
    (
        "hparam-and-grid",
        with_method("name: adamw\n        hparams: {lr: 0.1}\n        grid: {lr: [0.2]}"),
        "both in hparams and in grid",
    ),
    (
        "grid-and-variants",
        with_method("name: adamw\n        grid: {lr: [0.1]}\n        variants: {lr: [0.2]}"),
        "both in grid and in variants",
    ),
    (
        "tuning-budget-unequal",
        with_top("tuning_budget: 2").replace(
            "        hparams: {lr: 0.001}", "        grid: {lr: [0.1, 0.2, 0.3]}"
        ),
        "tuning_budget",
    ),
    (
        "grid-explosion",
        with_method(
            "name: adamw\n        grid: {lr: [1,2,3,4,5,6,7,8,9,10], eps: [1,2,3,4,5,6,7,8,9,10],"
            " beta1: [0,.1,.2,.3,.4,.5,.6,.7,.8,.9], beta2: [0,.1,.2,.3,.4,.5,.6,.7,.8,.9],"
            " weight_decay: [1,2,3,4,5,6,7,8,9,10]}"
        ),
        "expands to 100,000 runs",
    ),
    ("hparam-date", with_method("name: adamw\n        hparams: {lr: 2024-01-01}"), "JSON"),
    (
        "hparam-datetime",
        with_method("name: adamw\n        hparams: {lr: 2024-01-01 12:00:00}"),
        "JSON",
    ),
    ("hparam-set", with_method("name: adamw\n        hparams: {lr: !!set {a}}"), "JSON"),
    ("hparam-binary", with_method("name: adamw\n        hparams: {lr: !!binary /w==}"), "JSON"),
    (
        "hparam-31-digits",
        with_method("name: adamw\n        hparams: {lr: " + "1" * 31 + "}"),
        "30 digits",
    ),
    (
        "hparam-5000-digits",
        with_method("name: adamw\n        hparams: {lr: " + "1" * 5000 + "}"),
        "cannot be read",
    ),
    ("hparam-int-key", with_method("name: adamw\n        hparams: {1: 2}"), "hparams"),
    ("seeds-bad-int-tag", with_top("seeds: [!!int abc]"), "cannot be read"),
    (
        "bad-float-tag",
        with_method("name: adamw\n        hparams: {lr: !!float abc}"),
        "cannot be read",
    ),
    (
        "bad-bool-tag",
        with_method("name: adamw\n        hparams: {lr: !!bool maybe}"),
        "cannot be read",
    ),
    (
        "bad-timestamp-tag",
        with_method("name: adamw\n        hparams: {lr: !!timestamp foo}"),
        "cannot be read",
    ),
    (
        "protocol-option-word",
        with_exp("protocol: {divergence_factor: fast}"),
        "Interval(gt=1)] | None",
    ),
    ("protocol-option-bound", with_exp("protocol: {eval_every: 0}"), "greater than 0"),
    (
        "entry-too-large",
        with_method("name: adamw\n        grid: {lr: [" + ", ".join(["0.001"] * 12000) + "]}"),
        "bytes as JSON",
    ),
    (
        "attack-unknown",
        "name: x\nexperiments:\n  - kind: security_split\n    workloads: [mnist-cnn]\n"
        "    methods: [slip]\n    attacks: [finetun]\n",
        "did you mean",
    ),
]


@functools.cache
def _shared_registry():  # type: ignore[no-untyped-def]
    from benchmark.host import Registry

    return Registry()


@pytest.fixture
def fast_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """One registry for the whole table: these rows test suite handling, not discovery."""
    monkeypatch.setattr(cli, "_registry", lambda args, strict=True: _shared_registry())


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("text", "phrase"), [(t, p) for _, t, p in SUITES], ids=[i for i, _, _ in SUITES]
)
def test_bad_suite_file(
    text: str | bytes,
    phrase: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fast_registry: None,
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    for command in ("validate", "run"):
        argv = [command, str(path)] + (
            ["--results", str(tmp_path / "r")] if command == "run" else []
        )
        line = _one_line_exit_2(capsys, argv)
        assert phrase in line, line
        assert not (tmp_path / "r" / "runs").exists() or not any(
            (tmp_path / "r" / "runs").iterdir()
        )


def _results_with_record(root: Path, metric: str = "eval_loss", method: str = "adamw") -> Path:
    """A results directory holding one real record (for the leaderboard/compare rows)."""
    from benchmark import store
    from benchmark.records import Metric, RunRecord, RunSpec

    spec = RunSpec(suite="s", kind="optimizer", method=method, workload="tiny-llama")
    record = RunRecord(
        id=spec.id,
        spec=spec,
        status="ok",
        metrics={metric: Metric(value=1.0, unit="nats", meter="test")},
    )
    store.write_record(root, record)
    return root


# (id, argv with {tmp} and {good} and {results} placeholders, a phrase of the error line)
COMMANDS: list[tuple[str, list[str], str]] = [
    ("no-command", [], "required"),
    ("unknown-command", ["frobnicate"], "invalid choice"),
    ("run-no-suite", ["run"], "required"),
    ("validate-no-suite", ["validate"], "required"),
    ("run-missing-suite", ["run", "{tmp}/nope.yaml"], "no such suite file"),
    ("run-directory-as-suite", ["run", "{tmp}"], "not a regular file"),
    ("run-jobs-zero", ["run", "{good}", "--jobs", "0"], "at least 1"),
    ("run-jobs-word", ["run", "{good}", "--jobs", "many"], "not a whole number"),
    ("run-jobs-negative", ["run", "{good}", "--jobs", "-2"], "negative"),
    ("run-device-tpu", ["run", "{good}", "--device", "tpu"], "invalid choice"),
    ("run-executor-unknown", ["run", "{good}", "--executor", "slurm"], "invalid choice"),
    (
        "run-inline-and-ray",
        ["run", "{good}", "--inline", "--executor", "ray", "--results", "{tmp}/r"],
        "cannot be combined",
    ),
    ("run-max-runs-negative", ["run", "{good}", "--max-runs", "-1"], "negative"),
    ("run-max-runs-word", ["run", "{good}", "--max-runs", "lots"], "not a whole number"),
    (
        "run-max-runs-too-small",
        ["run", "{good}", "--max-runs", "1", "--results", "{tmp}/r", "--jobs", "1"],
        "",
    ),
    ("validate-max-runs-exceeded", ["validate", "{three}", "--max-runs", "2"], "--max-runs"),
    ("run-results-is-a-file", ["run", "{good}", "--results", "{file}"], "not writable"),
    ("run-results-runs-is-a-file", ["run", "{good}", "--results", "{runs_file}"], "not writable"),
    ("run-unknown-option", ["run", "{good}", "--colour"], "unrecognized arguments"),
    (
        "run-plugin-missing",
        ["run", "{good}", "--plugin", "no_such_module_xyz"],
        "--plugin no_such_module_xyz",
    ),
    (
        "validate-plugin-missing",
        ["validate", "{good}", "--plugin", "no_such_module_xyz"],
        "--plugin no_such_module_xyz",
    ),
    ("leaderboard-no-dir", ["leaderboard", "{tmp}/nothing"], "no such results directory"),
    ("leaderboard-empty-dir", ["leaderboard", "{tmp}"], "no run records"),
    (
        "leaderboard-out-is-a-file",
        ["leaderboard", "{results}", "--out", "{file}"],
        "not a directory",
    ),
    ("leaderboard-md-is-a-dir", ["leaderboard", "{results_md_dir}"], "LEADERBOARD.md"),
    ("compare-missing-old", ["compare", "{tmp}/a", "{results}"], "no such results directory"),
    ("compare-missing-new", ["compare", "{results}", "{tmp}/b"], "no such results directory"),
    ("compare-empty-new", ["compare", "{results}", "{tmp}"], "NEW"),
    ("compare-empty-old", ["compare", "{tmp}", "{results}"], "OLD"),
    (
        "compare-bad-rule",
        ["compare", "{results}", "{results}", "--fail-on", "eval_loss:10"],
        "bad --fail-on rule",
    ),
    (
        "compare-rule-unknown-metric",
        ["compare", "{results}", "{results}", "--fail-on", "evl_loss:+5%"],
        "no record in NEW",
    ),
    (
        "compare-rule-metric-only-in-old",
        ["compare", "{results}", "{renamed}", "--fail-on", "eval_loss:+5%"],
        "no record in NEW",
    ),
    ("compare-nothing-in-common", ["compare", "{results}", "{disjoint}"], "share no configuration"),
    ("compare-corrupt-new", ["compare", "{results}", "{corrupt}"], "cannot be read"),
    ("leaderboard-all-corrupt", ["leaderboard", "{only_corrupt}"], "none of its"),
    ("validate-fifo", ["validate", "{fifo}"], "not a regular file"),
    ("validate-newline-path", ["validate", "{tmp}/a\nb.yaml"], "no such suite file"),
]


@pytest.mark.parametrize(
    ("argv", "phrase"), [(a, p) for _, a, p in COMMANDS], ids=[i for i, _, _ in COMMANDS]
)
def test_bad_command_line(
    argv: list[str],
    phrase: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fast_registry: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    three = tmp_path / "three.yaml"
    three.write_text(GOOD.replace("hparams: {lr: 0.001}", "grid: {lr: [0.1, 0.2, 0.3]}"))
    file = tmp_path / "a-file"
    file.write_text("")
    runs_file = tmp_path / "runs-file"
    runs_file.mkdir()
    (runs_file / "runs").write_text("")
    results = _results_with_record(tmp_path / "results")
    md_dir = _results_with_record(tmp_path / "results-md")
    (md_dir / "LEADERBOARD.md").mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    renamed = _results_with_record(tmp_path / "renamed", metric="quality")
    disjoint = _results_with_record(tmp_path / "disjoint", method="sgd")
    corrupt = _results_with_record(tmp_path / "corrupt")
    (corrupt / "runs" / "broken.json").write_text('{"id": "x", "spec"')
    only_corrupt = tmp_path / "only-corrupt"
    (only_corrupt / "runs").mkdir(parents=True)
    (only_corrupt / "runs" / "broken.json").write_text("{")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    if "--plugin" in argv:  # these rows test discovery itself
        monkeypatch.undo()
    values = {
        "tmp": str(empty),
        "good": str(good),
        "three": str(three),
        "file": str(file),
        "runs_file": str(runs_file),
        "results": str(results),
        "results_md_dir": str(md_dir),
        "renamed": str(renamed),
        "disjoint": str(disjoint),
        "corrupt": str(corrupt),
        "only_corrupt": str(only_corrupt),
        "fifo": str(fifo),
    }
    filled = [a.format(**values) for a in argv]
    if argv[:1] == ["run"] and "--max-runs" in argv and argv[argv.index("--max-runs") + 1] == "1":
        filled[1] = str(three)
        phrase = "expands to 3 runs"
    line = _one_line_exit_2(capsys, filled)
    assert phrase in line, line


def test_the_table_is_the_size_the_campaign_promised() -> None:
    assert len(SUITES) + len(COMMANDS) >= 100


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    """`<<: *defaults` with an overriding key is YAML, not a duplicate key."""
    from benchmark.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text(
        "name: merge\nexperiments:\n  - kind: optimizer\n    workloads: [tiny-llama]\n"
        "    methods:\n      - name: adamw\n        hparams: &c {lr: 0.01, eps: 1.0e-8}\n"
        "      - name: adamw\n        hparams: {<<: *c, lr: 0.003}\n"
    )
    second = load_suite(path).experiments[0].methods[1].hparams
    assert second == {"lr": 0.003, "eps": 1e-8}


def test_exponent_numbers_without_a_dot_are_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmark.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("lr: 0.001", "lr: 1e-3"))
    suite = load_suite(path)
    assert suite.experiments[0].methods[0].hparams["lr"] == pytest.approx(1e-3)
