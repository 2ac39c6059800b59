"""The registry declares methods by name and ``module:attribute``: listing and validating
import no implementation, a run imports only what it uses, and a reference that does not
load fails the run that needs it (with the reason), never the others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.executors.local import InlineExecutor
from benchmark.host import Registry
from benchmark.kinds import MethodSpec, WorkloadSpec, _leading_args, check_spec
from benchmark.records import Budget, RunSpec

REPO = str(Path(__file__).resolve().parent.parent)
HEAVY = ("torch", "transformers", "sklearn", "scipy", "pandas", "datasets")


def _imported_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport sys\n"
        f"print('MODULES:' + ','.join(m for m in {HEAVY!r} + tuple(sys.modules) "
        "if m in sys.modules and (m in "
        f"{HEAVY!r} or m.startswith(('plugins.optimizers.', 'plugins.detectors.', "
        "'plugins.compressors.', 'plugins.security.', 'plugins.workloads.', "
        "'benchmark.workloads.')))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("MODULES:")]
    return sorted({m for m in line.removeprefix("MODULES:").split(",") if m})


def test_discovery_imports_no_implementation() -> None:
    assert _imported_after("from benchmark.host import Registry; Registry()") == []


def test_validating_a_suite_imports_no_implementation() -> None:
    from benchmark.suite import _GPU_DRIVER_PATHS

    if any(Path(p).exists() for p in _GPU_DRIVER_PATHS):
        pytest.skip("a GPU driver is present: resolving device 'auto' asks torch")
    code = "from benchmark.cli import main\nassert main(['validate', 'suites/smoke.yaml']) == 0"
    assert _imported_after(code) == []


def test_every_builtin_factory_loads_and_accepts_its_defaults() -> None:
    reg = Registry()
    specs = [*reg.methods.values(), *reg.workloads.values(), *reg.attacks.values()]
    assert len(specs) > 40
    lazy = [s for s in specs if isinstance(s.factory, str)]
    assert lazy == specs, "every built-in is declared lazily"
    for spec in specs:
        factory = spec.load()  # raises ContractError when the signature refuses a default
        assert callable(factory)
        assert spec.module == factory.__module__, spec.name
    # A factory that accepts the defaults is not enough: a wrong leading argument count is
    # caught too (an optimizer factory takes the model first).
    assert _leading_args(reg.method("optimizer", "adamw")) == 1
    assert _leading_args(reg.method("detector", "msp")) == 0


def test_a_reference_is_checked_when_registered_and_when_loaded() -> None:
    reg = Registry(extra_plugins=["tests.fixtures.lazy_methods"])
    info = reg.plugins["tests.fixtures.lazy_methods"]
    assert "method optimizer/lazy-sgd" in info.registered
    assert any("lazy-garbage" in e and "neither callable nor" in e for e in info.errors)
    # Registered without importing anything; loading is where a bad reference shows.
    from benchmark.kinds import ContractError

    with pytest.raises(ContractError, match=r"could not be loaded.*no_such_module"):
        reg.method("optimizer", "lazy-missing-module").load()
    with pytest.raises(ContractError, match="does not accept"):
        reg.method("optimizer", "lazy-wrong-defaults").load()


def test_a_reference_that_does_not_load_fails_only_its_own_run(
    tmp_path: Path, example_dist: str
) -> None:
    reg = Registry(extra_plugins=["tests.fixtures.lazy_methods"])  # least-squares: the example

    def spec(method: str) -> RunSpec:
        return RunSpec(
            suite="t",
            kind="optimizer",
            method=method,
            hparams={"lr": 0.01},
            workload="least-squares",
            seed=0,
            device="cpu",
            budget=Budget(steps=5),
        )

    records = InlineExecutor(tmp_path, reg).run([spec("lazy-missing-module"), spec("lazy-sgd")])
    by_method = {r.spec.method: r for r in records}
    broken = by_method["lazy-missing-module"]
    assert broken.status == "failed" and "no_such_module" in (broken.reason or "")
    assert by_method["lazy-sgd"].status == "ok", by_method["lazy-sgd"].reason


def test_a_callable_factory_still_works() -> None:
    spec = WorkloadSpec(kind="optimizer", name="x", factory=dict, defaults={})
    assert spec.load() is dict and spec.module == "builtins"
    m = MethodSpec(kind="optimizer", name="y", factory="tests.fixtures.lazy_methods:build_sgd")
    assert m.module == "tests.fixtures.lazy_methods"


def test_validate_refuses_a_reference_that_points_at_nothing(tmp_path: Path) -> None:
    """Found without importing the module: a missing module or attribute is a located
    error of the suite, before any run fails on it."""
    from benchmark.kinds import reference_problem

    assert reference_problem("plugins.optimizers.galore:build_galore") is None
    assert "no module named" in (reference_problem("plugins.optimizers.nope:x") or "")
    assert "defines no 'build_nothing'" in (
        reference_problem("plugins.optimizers.galore:build_nothing") or ""
    )
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ndevice: cpu\nexperiments:\n  - kind: optimizer\n"
        "    workloads: [tiny-llama]\n    methods: [lazy-missing-module, lazy-sgd]\n"
    )
    from benchmark.suite import SuiteError, check_names, load_suite

    reg = Registry(extra_plugins=["tests.fixtures.lazy_methods"])
    with pytest.raises(SuiteError) as err:
        check_names(load_suite(suite), reg, suite)
    (problem,) = err.value.problems
    assert "s.yaml:6" in problem and "no_such_module" in problem


def test_defaults_are_checked_for_each_spec_that_shares_a_factory() -> None:
    from benchmark.kinds import ContractError

    reg = Registry(extra_plugins=["tests.fixtures.lazy_methods"])
    reg.method("optimizer", "lazy-sgd").load()  # the shared reference loads fine first
    with pytest.raises(ContractError, match="does not accept"):
        reg.method("optimizer", "lazy-wrong-defaults").load()
    # One whose signature can be read is refused when it registers, without importing it.
    spec = MethodSpec(
        kind="optimizer",
        name="lazy-typed-wrong-defaults",
        factory="tests.fixtures.lazy_methods:build_sgd",
        defaults={"learning_rate": 0.01},
    )
    with pytest.raises(ContractError, match=r"declares defaults \['learning_rate'\]"):
        check_spec(spec)
