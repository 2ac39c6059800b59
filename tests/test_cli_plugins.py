"""`bench plugins` for people and tools: one row per registered method, workload and attack
in 80 columns, `--json` with every registration and every plugin's errors, and
`bench plugins NAME` with the typed hyperparameters and the factory's docstring, read
without importing the implementation."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from benchmark import catalogue, cli
from benchmark.host import Registry
from benchmark.kinds import MethodSpec

REPO = str(Path(__file__).resolve().parent.parent)
BROKEN = "tests.fixtures.broken_import"


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench's console at 80 columns, as a terminal (or a pipe) of that width has it."""
    monkeypatch.setattr(cli, "console", Console(width=80, soft_wrap=True, color_system=None))


def bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_every_registration_is_a_row_and_every_line_fits_80_columns(
    narrow: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = bench(capsys, "plugins", "--plugin", BROKEN)
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    galore = [line.split() for line in lines if " galore " in f" {line} "]
    assert galore == [["optimizer", "galore", "plugins.optimizers", "arXiv:2403.03507"]]
    assert any(line.split()[:2] == ["attack", "finetune"] for line in lines)
    reg = Registry()
    rows = {tuple(line.split()[:2]) for line in lines}
    for kind, name in [*reg.methods, *(("attack", a) for a in reg.attacks)]:
        assert (kind, name) in rows, (kind, name)
    # Workloads: one row per name, its kinds joined (wrapped between kinds).
    listed = _workload_rows(out)
    for kind, name in reg.workloads:
        assert kind in listed[name]["kinds"], (kind, name)
    # A plugin that failed to load is still listed, with its error.
    text = " ".join(out.split())
    assert f"{BROKEN}: import failed: ModuleNotFoundError" in text
    assert "this_module_does_not_exist" in text


def _workload_rows(out: str) -> dict[str, dict[str, str]]:
    """The workloads section of `bench plugins`: {name: {kinds, plugin, description}},
    continuation lines (kinds wrapped, the description's lines) joined to their row."""
    section = out.split("workloads (", 1)[1].split("attacks (", 1)[0].splitlines()
    head = next(i for i, line in enumerate(section) if line.split()[:1] == ["name"])
    rows: dict[str, dict[str, str]] = {}
    name = ""
    for line in section[head + 2 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 6:  # the description, indented under its row
            rows[name]["description"] = f"{rows[name]['description']} {line.strip()}".strip()
        elif indent == 2:
            name, *rest = line.split()
            assert name not in rows, f"{name} listed twice"
            rows[name] = {"kinds": " ".join(rest[:-1]), "plugin": rest[-1], "description": ""}
        else:  # kinds wrapped onto a second line
            rows[name]["kinds"] += " " + line.strip()
    return rows


def test_a_workload_is_one_row_with_its_kinds_and_its_whole_description(
    narrow: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """At 80 columns a row per (kind, workload) cut every description to ~13 characters
    ("BatchNorm CNN…" for both digits-cnn and mnist-cnn). One row per name, its kinds
    joined, the description whole on its own lines, at least 40 characters to a line."""
    code, out, _ = bench(capsys, "plugins")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    rows = _workload_rows(out)
    reg = Registry()
    expected: dict[str, set[str]] = {}
    for kind, name in reg.workloads:
        expected.setdefault(name, set()).add(kind)
    assert set(rows) == set(expected)
    for name, kinds in expected.items():
        assert set(rows[name]["kinds"].replace(",", " ").split()) == kinds, name
        description = reg.workloads[(sorted(kinds)[0], name)].description
        assert rows[name]["description"] == " ".join(description.split()), name
    assert rows["mnist-cnn"]["description"] != rows["digits-cnn"]["description"]
    section = out.split("workloads (", 1)[1].split("attacks (", 1)[0]
    first = next(line for line in section.splitlines() if line.startswith("      "))
    assert len(first.strip()) >= 40, first
    # A name whose kinds differ in description keeps a row for each.
    listing = [e for e in catalogue.entries(reg) if e.category == "workload"]
    changed = [
        dataclasses.replace(e, description="other") if e.qualified == "detector/mnist-cnn" else e
        for e in listing
    ]
    groups = [w for w in catalogue.workloads(changed) if w.name == "mnist-cnn"]
    assert sorted(w.kinds for w in groups) == [("compressor", "security_split"), ("detector",)]


def test_json_lists_every_registration_and_every_plugin_with_its_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = bench(capsys, "plugins", "--json", "--plugin", BROKEN)
    assert code == 0
    data = json.loads(out)
    reg = Registry(extra_plugins=[BROKEN])
    expected = {("method", k, n) for k, n in reg.methods}
    expected |= {("workload", k, n) for k, n in reg.workloads}
    expected |= {("attack", "attack", n) for n in reg.attacks}
    got = [(e["category"], e["kind"], e["name"]) for e in data["registered"]]
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    (galore,) = [e for e in data["registered"] if e["name"] == "galore"]
    assert galore["plugin"] == "plugins.optimizers" and galore["paper"] == "arXiv:2403.03507"
    assert galore["defaults"]["rank"] == 128
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins[BROKEN]["errors"] and not plugins["plugins.optimizers"]["errors"]


def test_one_name_shows_its_hyperparameters_types_defaults_and_docstring(
    narrow: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = bench(capsys, "plugins", "galore")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    (rank,) = [line.split() for line in lines if line.split()[:1] == ["rank"]]
    assert rank[-1] == "128" and "int" in rank[1].lower()
    assert "optimizer method" in out and "arXiv:2403.03507" in out
    assert "plugins.optimizers.galore:build_galore" in out
    assert "GaLore" in out and "gradient low-rank projection" in out
    code, out, _ = bench(capsys, "plugins", "galore", "--json")
    detail = json.loads(out)
    (rank_json,) = [h for h in detail["hyperparameters"] if h["name"] == "rank"]
    assert rank_json["default"] == 128 and not rank_json["required"]
    assert detail["doc"].startswith("GaLore")


def test_a_type_alias_shows_its_choices(
    narrow: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLAME's ``selection: Selection`` names an alias: its Literal choices are written
    out, so a reader learns what to pass without opening the source."""
    code, out, _ = bench(capsys, "plugins", "detector/flame")
    assert code == 0 and "Literal['svm', 'mlp']" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    # Wide enough that no cell wraps: each type reads whole on its row.
    monkeypatch.setattr(cli, "console", Console(width=200, soft_wrap=True, color_system=None))
    code, out, _ = bench(capsys, "plugins", "detector/flame")
    text = " ".join(out.split())
    assert "Selection = Literal['flame', 'random', 'uncertainty']" in text
    assert "Classifier = Literal['svm', 'mlp']" in text
    assert "PositiveInt" in text  # a type named in the annotation namespace stays as written
    code, out, _ = bench(capsys, "plugins", "detector/flame", "--json")
    hps = {h["name"]: h for h in json.loads(out)["hyperparameters"]}
    assert hps["selection"]["type"] == "Selection"
    assert hps["selection"]["type_expanded"] == "Literal['flame', 'random', 'uncertainty']"
    assert hps["pca_dims"]["type_expanded"] is None


def test_an_unknown_name_gets_a_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = bench(capsys, "plugins", "galor")
    assert code == 2 and "did you mean 'galore'" in err and out == ""
    code, _, err = bench(capsys, "plugins", "detectr/msp")
    assert code == 2 and "unknown kind 'detectr'" in err and "'detector'" in err


def test_an_ambiguous_name_asks_for_its_kind(
    narrow: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = bench(capsys, "plugins", "mnist-cnn")
    assert code == 2
    assert "bench plugins detector/mnist-cnn" in err and "bench plugins compressor/mnist-cnn" in err
    for args in (["detector/mnist-cnn"], ["--kind", "detector", "mnist-cnn"]):
        code, out, _ = bench(capsys, "plugins", *args)
        assert code == 0 and "detector workload" in out and "options" in out


def test_showing_a_method_imports_no_implementation() -> None:
    """The docstring and the hyperparameters are read from the source: `bench plugins
    NAME` stays as fast as listing."""
    probe = textwrap.dedent(
        """
        import sys
        from benchmark.cli import main
        assert main(["plugins", "galore"]) == 0
        assert main(["plugins", "msp"]) == 0
        heavy = [m for m in ("torch", "plugins.optimizers.galore", "plugins.detectors.baselines")
                 if m in sys.modules]
        print("HEAVY:" + ",".join(heavy))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY:\n" in out or out.rstrip().endswith("HEAVY:")
    assert "GaLore" in out


def test_the_docstring_is_followed_through_a_reexport_without_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "doc_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "api.py").write_text("from .impl import build as make\nraise RuntimeError('run')\n")
    (pkg / "impl.py").write_text(
        'def build(rank: int = 4):\n    """Builds the thing,\n    in one paragraph.\n\n'
        '    Not this one."""\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = MethodSpec(kind="detector", name="x", factory="doc_pkg.api:make")
    assert catalogue.factory_doc(spec) == ("Builds the thing, in one paragraph.", "factory")
    assert "doc_pkg.api" not in sys.modules  # importing it would have raised
    # No docstring on the factory: the module's first paragraph, said to be the module's.
    (pkg / "bare.py").write_text('"""The module says it.\n\nMore."""\ndef build():\n    pass\n')
    bare = MethodSpec(kind="detector", name="y", factory="doc_pkg.bare:build")
    assert catalogue.factory_doc(bare) == ("The module says it.", "module doc_pkg.bare")
