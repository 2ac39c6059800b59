"""Hyperparameters are written once, in the factory's signature, and read without importing
it: ``bench validate`` refuses a wrong type, a bound or an unknown choice at the suite's
line, and the defaults that runs and fingerprints use are the signature's."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from benchmark.host import Registry
from benchmark.hparams import (
    REQUIRED,
    HParam,
    hparam_problems,
    hparams_of,
    signature_problem,
    type_problems,
)
from benchmark.kinds import AttackSpec, ContractError, MethodSpec, WorkloadSpec, check_spec
from benchmark.suite import SuiteError, check_names, load_suite

ROOT = Path(__file__).resolve().parents[1]

# Built-in methods and attacks whose hyperparameters still come from declared defaults.
FALLBACK: frozenset[tuple[str, str]] = frozenset()


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def _specs(registry: Registry) -> list[MethodSpec | AttackSpec | WorkloadSpec]:
    return [*registry.methods.values(), *registry.attacks.values(), *registry.workloads.values()]


# --------------------------------------------------------------------------- bench validate


def _problems(tmp_path: Path, experiment: str, entries: str) -> list[str]:
    """What ``bench validate`` says of a one-experiment suite whose last key's entries
    are ``entries`` (the suite's line 7 is their first)."""
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: typed\nexperiments:\n"
        + experiment
        + textwrap.indent(textwrap.dedent(entries), "      ")
    )
    try:
        check_names(load_suite(path), Registry(), path)
    except SuiteError as exc:
        return exc.problems
    return []


def _validate(tmp_path: Path, methods: str) -> list[str]:
    head = "  - kind: optimizer\n    workloads: [tiny-llama]\n    methods:\n"
    return _problems(tmp_path, head, methods)


@pytest.mark.parametrize(
    ("methods", "line", "expected"),
    [
        (
            "- name: galore\n  hparams: {lr: fast}\n",
            7,
            ["'lr' is NonNegativeFloat", "valid number"],
        ),
        (
            "- name: adamw\n  hparams: {lr: -0.001}\n",
            7,
            ["'lr' is NonNegativeFloat", "greater than or equal to 0"],
        ),
        ("- name: adamw\n  hparams: {eps: 0}\n", 7, ["'eps' is PositiveFloat", "greater than 0"]),
        ("- name: galore\n  hparams: {rank: -4}\n", 7, ["'rank' is PositiveInt", "greater than 0"]),
        (
            "- name: sumo\n  hparams: {orthogonalizer: qr}\n",
            7,
            ["Literal['svd', 'newton-schulz']", "'svd' or 'newton-schulz'", "got 'qr'"],
        ),
        (
            "- name: galore\n  hparams: {rnk: 3}\n",
            7,
            ["no hyperparameter 'rnk'", "did you mean 'rank'", "accepts: beta1"],
        ),
        # A bool is no int, in a sweep's values too (the second value is the bad one).
        ("- name: muon\n  grid:\n    ns_steps: [5, true]\n", 8, ["'ns_steps'", "got True"]),
        (
            "- name: adamw\n  variants: {weight_decay: [0.0, -0.1]}\n",
            7,
            ["'weight_decay' is NonNegativeFloat", "greater than or equal to 0"],
        ),
    ],
)
def test_validate_refuses_a_bad_hyperparameter_at_its_line(
    tmp_path: Path, methods: str, line: int, expected: list[str]
) -> None:
    problems = _validate(tmp_path, methods)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{tmp_path / 'suite.yaml'}:{line}: "), problems[0]
    for fragment in expected:
        assert fragment in problems[0], (fragment, problems[0])


def test_validate_accepts_values_of_the_declared_types(tmp_path: Path) -> None:
    problems = _validate(
        tmp_path,
        """\
        - name: galore
          hparams: {lr: 1, rank: 4, scale: 0.5}  # an int is a float
          grid: {update_gap: [10, 50]}
        - name: adafactor
          hparams: {beta1: null}
        - name: sumo
          variants: {orthogonalizer: [svd, newton-schulz]}
        - name: adamw
          hparams: {lr: 0}  # a frozen baseline: torch.optim takes lr=0
        - name: muon
          grid: {lr: [0, 0.02], adam_lr: [0.0]}
        """,
    )
    assert problems == []


def test_every_shipped_suite_still_validates(registry: Registry) -> None:
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        check_names(load_suite(path), registry, path)


# --------------------------------------------------------------------------- the built-ins


def test_every_builtin_reads_its_hyperparameters_from_its_signature(registry: Registry) -> None:
    derived = {spec.key: signature_problem(spec) for spec in _specs(registry)}
    unreadable = {key: why for key, why in derived.items() if why is not None}
    assert set(unreadable) == FALLBACK, unreadable


def test_builtin_defaults_pass_their_own_types(registry: Registry) -> None:
    for spec in _specs(registry):
        hps = hparams_of(spec)
        assert [h.name for h in hps] == list(spec.defaults), spec.key
        assert all(h.default is not REQUIRED for h in hps), spec.key
        assert type_problems(spec, dict(spec.defaults)) == [], spec.key


def test_a_variant_overrides_the_signature_it_shares(registry: Registry) -> None:
    random_mask = registry.method("security_split", "random-mask")
    magnitude = registry.method("security_split", "magnitude-mask")
    assert random_mask.factory == magnitude.factory
    assert random_mask.defaults["trusted_fraction"] == 0.1
    assert magnitude.defaults["trusted_fraction"] == 0.01
    shown = {h.name: h for h in hparams_of(magnitude)}
    assert shown["criterion"] == HParam(
        "criterion", "Literal['random', 'magnitude']", "magnitude", None
    )


def test_hparams_of_every_builtin_imports_no_implementation() -> None:
    code = textwrap.dedent(
        """
        import sys
        from benchmark.hparams import hparam_problems, hparams_of
        from benchmark.host import Registry
        reg = Registry()
        specs = [*reg.methods.values(), *reg.attacks.values(), *reg.workloads.values()]
        for spec in specs:
            hparams_of(spec)
            assert hparam_problems(spec, dict(spec.defaults)) == [], spec.name
        heavy = {"torch", "transformers", "sklearn", "scipy", "pandas"}
        impl = {spec.module for spec in specs}
        print(sorted(m for m in sys.modules if m in impl or m.split(".")[0] in heavy))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_value_checks_follow_the_annotation(registry: Registry) -> None:
    galore = registry.method("optimizer", "galore")
    assert hparam_problems(galore, {"lr": 1, "rank": 4}) == []  # an int for a float
    assert [k for k, _ in hparam_problems(galore, {"rank": True})] == ["rank"]  # a bool
    assert [k for k, _ in hparam_problems(galore, {"rank": 4.0})] == ["rank"]  # a float
    assert [k for k, _ in hparam_problems(galore, {"beta1": 1.0})] == ["beta1"]  # [0, 1)
    finegates = registry.method("compressor", "finegates")
    assert hparam_problems(finegates, {"layers": ["attention", "mlp"]}) == []
    assert [k for k, _ in hparam_problems(finegates, {"layers": [1]})] == ["layers"]
    knn = registry.method("detector", "knn")
    assert hparam_problems(knn, {"scale_k_to": None}) == []


def test_every_optimizer_takes_a_zero_learning_rate(registry: Registry) -> None:
    """torch.optim takes lr=0 (a frozen baseline); a factory that types ``lr`` must too,
    and must still refuse a negative one and a zero ``eps``."""
    optimizers = [s for s in registry.methods.values() if s.kind == "optimizer"]
    typed = [s for s in optimizers if "lr" in s.defaults]
    assert len(typed) >= 8
    for spec in typed:
        assert hparam_problems(spec, {"lr": 0}) == [], spec.name
        assert [k for k, _ in hparam_problems(spec, {"lr": -1e-3})] == ["lr"], spec.name
        if "eps" in spec.defaults:
            assert [k for k, _ in hparam_problems(spec, {"eps": 0.0})] == ["eps"], spec.name


def test_slip_refuses_at_validate_the_rank_its_constructor_refuses(registry: Registry) -> None:
    """``SLIP(rank=None)`` without ``energy`` raises at run time ("give rank >= 0 or
    energy"): the signature types rank without None, so validate refuses it first; energy
    still overrides a rank."""
    from plugins.security.slip import SLIP

    slip = registry.method("security_split", "slip")
    assert slip.defaults["rank"] == 8 and slip.defaults["energy"] is None
    with pytest.raises(ValueError, match="give rank >= 0 or energy"):
        SLIP(rank=None)
    assert [k for k, _ in hparam_problems(slip, {"rank": None})] == ["rank"]
    assert hparam_problems(slip, {"rank": 0}) == []
    assert hparam_problems(slip, {"energy": 0.9}) == []
    assert SLIP(energy=0.9).rank is None  # energy decides the rank per layer


def test_the_activation_choices_match_the_table() -> None:
    from typing import get_args

    from plugins.autoencoders.core import ACTIVATIONS, Activation

    assert set(get_args(Activation)) == set(ACTIVATIONS)


# --------------------------------------------------------------------------- a reference


REFERENCE = '''
from typing import Annotated, Literal

from annotated_types import Interval
from pydantic import PositiveInt

Mode = Literal["fast", "exact"]


class Widget:
    """A factory with known annotations.

    width: how wide, in cells
    """

    def __init__(
        self,
        width: PositiveInt = 4,
        mode: Mode = "fast",
        share: Annotated[float, Interval(gt=0, le=1)] = 0.5,  # the fraction kept
        tags: "list[str] | None" = None,
        offset: int = -3,
        *,
        scale: float,
    ) -> None:
        pass


def build(model, *, lr: float = 1e-3, steps: int = 10):
    pass


def loose(model, lr=0.1, **rest):
    pass


class Sized:
    def __init__(self, *, sizes: list[int] | None = None, width: PositiveInt = 1) -> None:
        pass


raise RuntimeError("this module must be parsed, never imported")
'''


@pytest.fixture
def reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = f"hp_reference_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "factories.py").write_text(REFERENCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{package}.factories"


def test_a_reference_factory_gives_the_expected_hparams(reference: str) -> None:
    spec = MethodSpec(kind="compressor", name="widget", factory=f"{reference}:Widget")
    assert hparams_of(spec) == [
        HParam("width", "PositiveInt", 4, "how wide, in cells"),
        HParam("mode", "Mode", "fast"),
        HParam("share", "Annotated[float, Interval(gt=0, le=1)]", 0.5, "the fraction kept"),
        HParam("tags", "list[str] | None", None),
        HParam("offset", "int", -3),
        HParam("scale", "float", REQUIRED),
    ]
    assert spec.defaults == {"width": 4, "mode": "fast", "share": 0.5, "tags": None, "offset": -3}
    problems = dict(hparam_problems(spec, {"mode": "slow", "share": 0, "widht": 2}))
    assert set(problems) == {"mode", "share", "widht"}
    assert "'fast' or 'exact'" in problems["mode"]
    assert "did you mean 'width'" in problems["widht"]
    assert hparam_problems(spec, {"tags": ["a"], "scale": 2, "share": 1}) == []
    assert reference not in sys.modules


def test_an_optimizer_factory_skips_the_model(reference: str) -> None:
    spec = MethodSpec(
        kind="optimizer", name="ref-opt", factory=f"{reference}:build", defaults={"steps": 20}
    )
    assert hparams_of(spec) == [HParam("lr", "float", 1e-3), HParam("steps", "int", 20)]
    assert spec.defaults == {"lr": 1e-3, "steps": 20}
    assert spec.declared == {"steps": 20}


def test_an_unreadable_factory_falls_back_to_its_declared_defaults(reference: str) -> None:
    spec = MethodSpec(
        kind="optimizer", name="ref-loose", factory=f"{reference}:loose", defaults={"lr": 0.1}
    )
    assert "**rest" in (signature_problem(spec) or "")
    assert spec.defaults == {"lr": 0.1}
    assert hparams_of(spec) == [HParam("lr", "float", 0.1)]
    # The old check: the type of the default's value, nothing more.
    assert [k for k, _ in hparam_problems(spec, {"lr": "fast", "momentum": 0.9})] == [
        "momentum",
        "lr",
    ]
    assert hparam_problems(spec, {"lr": -5}) == []


def test_a_registration_cannot_override_what_the_factory_lacks(reference: str) -> None:
    spec = MethodSpec(
        kind="compressor", name="widget", factory=f"{reference}:Widget", defaults={"depth": 2}
    )
    with pytest.raises(ContractError, match="depth"):
        check_spec(spec)


# --------------------------------------------------------------------------- workload options


def _validate_workloads(tmp_path: Path, workloads: str) -> list[str]:
    return _problems(
        tmp_path, "  - kind: detector\n    methods: [msp]\n    workloads:\n", workloads
    )


@pytest.mark.parametrize(
    ("workloads", "line", "expected"),
    [
        (
            "- name: mnist-cnn\n  options: {width: wide}\n",
            7,
            ["mnist-cnn's option 'width' is PositiveInt", "got 'wide'"],
        ),
        (
            "- name: digits-cnn\n  options:\n    ood: mnist-blurred\n",
            8,
            ["option 'ood' is OODSet", "'mnist-rotated'", "got 'mnist-blurred'"],
        ),
        ("- name: audit-sim\n  options: {learning_rate: 1.5}\n", 7, ["'learning_rate'", "1.5"]),
        ("- name: fewshot-pair\n  options: {target: 10}\n", 7, ["'target' is Digit", "got 10"]),
        # A sweep is checked value by value against the option's type.
        ("- name: audit-sim\n  options: {n_samples: [25, 0]}\n", 7, ["'n_samples'", "got 0"]),
        (
            "- name: ae-anomaly-synthetic\n  options: {sample_noise: [0.1, 2]}\n",
            7,
            ["'sample_noise' is Fraction", "got 2"],
        ),
        # Numbers where names are wanted: each is refused as a value of the option.
        (
            "- name: minilm-textcls\n  options: {categories: [1, 2]}\n",
            7,
            ["'categories' is list[str] | None", "got 1"],
        ),
    ],
)
def test_validate_refuses_a_bad_workload_option_at_its_line(
    tmp_path: Path, workloads: str, line: int, expected: list[str]
) -> None:
    problems = _validate_workloads(tmp_path, workloads)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{tmp_path / 'suite.yaml'}:{line}: "), problems[0]
    for fragment in expected:
        assert fragment in problems[0], (fragment, problems[0])


def test_validate_accepts_workload_options_of_their_types(tmp_path: Path) -> None:
    problems = _validate_workloads(
        tmp_path,
        """\
        - name: mnist-cnn
          options: {ood: mnist-noise, lr: 1, width: [8, 16]}  # an int is a float; a sweep
        - name: minilm-textcls
          options: {dataset: fortune, categories: [art, science]}  # a list of names
        - name: audit-sim
          options: {n_samples: [25, 100], fair_deflection: -0.02, seed: null}
        - name: ae-anomaly-synthetic
          options: {sample_noise: [0.0, 0.5, 1]}
        """,
    )
    assert problems == []


def test_a_workload_takes_each_option_from_its_signature_once(registry: Registry) -> None:
    """Every built-in workload's options are its factory's signature (no fallback), and a
    registration overrides only what differs from it (a variant, never a copy)."""
    for spec in registry.workloads.values():
        assert signature_problem(spec) is None, spec.key
        signature = WorkloadSpec(kind=spec.kind, name="bare", factory=spec.factory).defaults
        assert dict(spec.defaults) == {**signature, **spec.declared}, spec.key
        copied = {k for k, v in spec.declared.items() if signature.get(k) == v}
        assert not copied, (spec.key, copied)
    digits = registry.workload("detector", "digits-cnn")
    assert digits.factory == registry.workload("detector", "mnist-cnn").factory
    assert (digits.defaults["dataset"], digits.defaults["width"]) == ("digits", 8)


def test_a_sweep_of_an_option_that_takes_a_list_is_refused(reference: str, tmp_path: Path) -> None:
    """A list of numbers in a workload's options is a sweep; where the option's type takes
    that very list, the suite is ambiguous and refused rather than swept."""
    package = reference.rpartition(".")[0]
    plugin = tmp_path / package / "grid_plugin.py"  # beside the reference factories
    plugin.write_text(
        textwrap.dedent(
            f"""
            from benchmark import hookimpl
            from benchmark.kinds import WorkloadSpec

            @hookimpl
            def methodbench_register_workloads(register):
                register(WorkloadSpec(kind="detector", name="sized", factory="{reference}:Sized"))
            """
        )
    )
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: typed\nexperiments:\n  - kind: detector\n    methods: [msp]\n"
        "    workloads:\n      - {name: sized, options: {sizes: [1, 2], width: [1, 2]}}\n"
    )
    registry = Registry(extra_plugins=[f"{package}.grid_plugin"])
    with pytest.raises(SuiteError) as caught:
        check_names(load_suite(path), registry, path)
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:6: ") and "'sizes' takes a list" in problem, problem


def test_discovery_parses_no_module_and_a_spec_parses_its_own_when_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defaults are derived when first read: discovery parses only the modules of variants
    (measured: Registry() 0.15-0.2 s with every module parsed, 0.05 s lazy), and
    validating a suite parses the modules of what it names."""
    import benchmark.hparams as hp
    from benchmark.host import Registry

    parsed: list[str] = []
    real = hp._ast_params

    def counting(factory: str, leading: int):  # type: ignore[no-untyped-def]
        parsed.append(factory)
        return real(factory, leading)

    monkeypatch.setattr(hp, "_ast_params", counting)
    monkeypatch.setattr(hp, "_READ", {})
    registry = Registry()
    # Only the registrations that override a shared factory's defaults (a variant) are
    # checked at registration, against their factory's signature.
    specs = [*registry.methods.values(), *registry.workloads.values(), *registry.attacks.values()]
    overriding = {s.factory for s in specs if s.declared}
    assert set(parsed) == overriding and len(overriding) < 12
    galore = registry.method("optimizer", "galore")
    assert galore.factory not in parsed
    assert galore.defaults["rank"] == 128
    assert parsed[-1] == galore.factory
