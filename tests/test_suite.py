"""Suite files: located validation errors, grid expansion, content-hash ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.host import Registry
from benchmark.suite import (
    DeviceUnavailable,
    SuiteError,
    check_names,
    expand,
    load_suite,
    resolve_device,
)

GOOD = """\
name: demo
seeds: [0, 1]
budget: {steps: 5}
experiments:
  - kind: optimizer
    workloads: [tiny-llama]
    methods:
      - name: adamw
        hparams: {weight_decay: 0.0}
        grid: {lr: [0.001, 0.003]}
  - kind: detector
    workloads:
      - name: digits-cnn
    methods: [msp]
    seeds: [7]
    budget: {time_s: 30}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def test_expansion_crosses_grid_and_seeds(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, GOOD)
    suite = load_suite(path)
    check_names(suite, registry, path)
    specs = expand(suite, device="cpu")
    assert len(specs) == 2 * 2 + 1
    opt = [s for s in specs if s.kind == "optimizer"]
    assert {(s.hparams["lr"], s.seed) for s in opt} == {
        (0.001, 0),
        (0.001, 1),
        (0.003, 0),
        (0.003, 1),
    }
    assert all(s.hparams["weight_decay"] == 0.0 and s.budget.steps == 5 for s in opt)
    det = next(s for s in specs if s.kind == "detector")
    assert det.seed == 7 and det.budget.steps == 5 and det.budget.time_s == 30
    assert len({s.id for s in specs}) == len(specs)


def test_ids_are_content_hashes(tmp_path: Path) -> None:
    a = expand(load_suite(write(tmp_path, GOOD)), device="cpu")
    b = expand(
        load_suite(write(tmp_path, GOOD.replace("name: demo", "name: renamed"))), device="cpu"
    )
    assert [s.id for s in a] == [s.id for s in b], "the suite's name is not part of a run"
    c = expand(load_suite(write(tmp_path, GOOD.replace("0.003", "0.004"))), device="cpu")
    assert {s.id for s in a} != {s.id for s in c}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: x\nexperiments:\n  - kind: optimizr\n    workloads: [a]\n    methods: [b]\n",
            ["suite.yaml:3:", "experiments[0].kind", "optimizer"],
        ),
        ("name: x\nseeds: one\nexperiments: []\n", ["suite.yaml:2:", "seeds", "valid list"]),
        (
            "name: x\nexperiments:\n  - kind: detector\n    workloads: [a]\n    methods: [b]\n"
            "    budget: {steps: -1}\n",
            ["suite.yaml:6:", "budget.steps", "greater than"],
        ),
        (
            "name: x\nbogus: 1\nexperiments:\n  - kind: detector\n    workloads: [a]\n"
            "    methods: [b]\n",
            ["suite.yaml:2:", "bogus", "Extra inputs"],
        ),
        ("name: x\nexperiments: [\n", ["malformed YAML"]),
        ("- just a list\n", ["a suite is a mapping"]),
    ],
)
def test_shape_errors_name_file_line_and_key(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    with pytest.raises(SuiteError) as err:
        load_suite(write(tmp_path, text))
    message = str(err.value)
    for piece in expected:
        assert piece in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite(tmp_path / "absent.yaml")


def test_unknown_names_are_all_reported_with_suggestions(
    tmp_path: Path, registry: Registry
) -> None:
    text = """\
name: x
experiments:
  - kind: optimizer
    workloads:
      - name: tiny-lama
    methods:
      - name: adamw
        grid: {lrr: [1]}
      - name: adamx
  - kind: detector
    workloads:
      - name: digits-cnn
        options: {epoch: 1}
    methods: [msp]
    attacks: [finetune]
  - kind: security_split
    workloads: [digits-cnn]
    methods: [layer-split]
    protocol: {trusted_slowdwn: 3}
"""
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as err:
        check_names(load_suite(path), registry, path)
    problems = err.value.problems
    assert len(problems) == 6, problems
    joined = "\n".join(problems)
    assert "suite.yaml:5: experiments[0].workloads[0].name" in joined
    assert "did you mean 'tiny-llama'" in joined
    assert "suite.yaml:8: experiments[0].methods[0].grid.lrr" in joined and "'lr'" in joined
    assert "suite.yaml:9:" in joined and "did you mean 'adamw'" in joined
    assert "experiments[1].workloads[0].options.epoch" in joined and "'epochs'" in joined
    assert "attacks apply to security_split experiments only" in joined
    assert "protocol.trusted_slowdwn" in joined and "did you mean 'trusted_slowdown'" in joined


PROTOCOLS = """\
name: x
experiments:
  - kind: optimizer
    workloads: [tiny-llama]
    methods: [adamw]
    protocol: {{eval_every: {eval_every}, divergence_factor: {divergence_factor}}}
  - kind: security_split
    workloads: [digits-cnn]
    methods: [layer-split]
    protocol:
      attack_steps: {attack_steps}
      link_latency_s: {link_latency_s}
"""


def test_protocol_options_are_typed_and_refused_at_their_line(
    tmp_path: Path, registry: Registry
) -> None:
    """Each protocol option declares its type (``KindDef.options``): ``bench validate``
    refuses a value the protocol would refuse at run time, with the suite's file and line."""
    bad = {"eval_every": "fast", "divergence_factor": 0.5, "attack_steps": "lots"}
    path = write(tmp_path, PROTOCOLS.format(**bad, link_latency_s=-1))
    with pytest.raises(SuiteError) as err:
        check_names(load_suite(path), registry, path)
    problems = sorted(err.value.problems)
    assert len(problems) == 4, problems
    at = {p.split(": ", 2)[1]: p for p in problems}
    assert at["experiments[0].protocol.eval_every"].startswith(f"{path}:6: ")
    assert "'eval_every' is PositiveInt | None" in at["experiments[0].protocol.eval_every"]
    assert "got 'fast'" in at["experiments[0].protocol.eval_every"]
    factor = at["experiments[0].protocol.divergence_factor"]
    assert factor.startswith(f"{path}:6: ") and "greater than 1" in factor
    steps = at["experiments[1].protocol.attack_steps"]
    assert steps.startswith(f"{path}:11: ") and "NonNegativeInt | None" in steps
    latency = at["experiments[1].protocol.link_latency_s"]
    assert latency.startswith(f"{path}:12: ") and "greater than or equal to 0" in latency


@pytest.mark.parametrize(
    "values",
    [
        {"eval_every": 5, "divergence_factor": 1.5, "attack_steps": 0, "link_latency_s": 0},
        {"eval_every": "null", "divergence_factor": "null", "attack_steps": "null"},
        {"eval_every": 1, "divergence_factor": 3, "attack_steps": 20, "link_latency_s": 1e-3},
    ],
)
def test_protocol_options_of_their_types_pass(
    tmp_path: Path, registry: Registry, values: dict[str, object]
) -> None:
    path = write(tmp_path, PROTOCOLS.format(**{"link_latency_s": 0.0001, **values}))
    check_names(load_suite(path), registry, path)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("divergence_factor", 0.5),
        ("divergence_factor", 1),
        ("divergence_factor", 1.01),
        ("divergence_factor", None),
        ("divergence_factor", "fast"),
        ("eval_every", 0),
        ("eval_every", 3),
        ("eval_every", 2.5),
        ("eval_every", True),
        ("eval_every", None),
    ],
)
def test_validate_refuses_exactly_what_the_optimizer_protocol_refuses(
    option: str, value: object
) -> None:
    from benchmark.kinds import get_kind
    from benchmark.protocols.optimizer import _divergence_factor, _eval_every
    from benchmark.suite import protocol_option_problems

    kind = get_kind("optimizer")
    assert kind is not None
    refused_at_validate = bool(protocol_option_problems(kind, {option: value}))
    try:
        if option == "eval_every":
            _eval_every({option: value}, 100)
        else:
            _divergence_factor({option: value})
        refused_at_run = False
    except ValueError:
        refused_at_run = True
    assert refused_at_validate == refused_at_run


def test_every_kinds_option_defaults_pass_their_own_types() -> None:
    from benchmark.kinds import Option, registered_kinds
    from benchmark.suite import protocol_option_problems

    kinds = registered_kinds()
    assert sum(len(k.options) for k in kinds.values()) >= 6
    for kind in kinds.values():
        assert all(isinstance(o, Option) and o.doc for o in kind.options.values()), kind.name
        assert protocol_option_problems(kind, kind.option_defaults) == [], kind.name


def test_device_resolution() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailable, match="no CUDA GPU"):
            resolve_device("cuda")


def test_shipped_suites_are_valid(registry: Registry) -> None:
    suites = sorted(Path(__file__).parent.parent.joinpath("suites").glob("*.yaml"))
    assert suites
    for path in suites:
        check_names(load_suite(path), registry, path)
        assert expand(load_suite(path), device="cpu")


TUNED = """\
name: tuned
tuning_budget: 3
experiments:
  - kind: optimizer
    workloads: [tiny-llama]
    methods:
      - name: adamw
        grid: {lr: [0.001, 0.003, 0.01]}
      - name: galore
        grid: {lr: [0.001, 0.003]}
"""


def test_tuning_budget_rejects_a_method_tuned_on_more_or_fewer_points(
    tmp_path: Path, registry: Registry
) -> None:
    path = write(tmp_path, TUNED)
    with pytest.raises(SuiteError) as err:
        check_names(load_suite(path), registry, path)
    (problem,) = err.value.problems
    assert "galore tries 2 grid point(s)" in problem and "suite.yaml:10" in problem
    fixed = write(tmp_path, TUNED.replace("[0.001, 0.003]}", "[0.001, 0.003, 0.01]}"))
    check_names(load_suite(fixed), registry, fixed)


def test_grid_axes_are_tuned_and_variants_are_not(tmp_path: Path, registry: Registry) -> None:
    path = write(
        tmp_path,
        "name: v\nexperiments:\n  - kind: optimizer\n    workloads: [tiny-llama]\n"
        "    methods:\n      - name: galore\n        grid: {lr: [0.001, 0.003]}\n"
        "        variants: {rank: [4, 8]}\n",
    )
    suite = load_suite(path)
    check_names(suite, registry, path)
    specs = expand(suite, device="cpu")
    assert len(specs) == 4 and all(s.tuned == ("lr",) for s in specs)
    assert {(s.hparams["lr"], s.hparams["rank"]) for s in specs} == {
        (a, b) for a in (0.001, 0.003) for b in (4, 8)
    }
    clash = write(tmp_path, path.read_text().replace("rank: [4, 8]", "lr: [4, 8]"))
    with pytest.raises(SuiteError, match="set both in grid and in variants"):
        check_names(load_suite(clash), registry, clash)


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ("seeds: [0, 0]", "listed more than once"),
        ("seeds: [true]", "valid integer"),
        ("seeds: [1.5]", "valid integer"),
        ("seeds: [-1]", "greater than or equal to 0"),
        ("timeout_s: .inf", "finite number"),
        ("budget: {time_s: .nan}", "finite number"),
    ],
)
def test_bad_seeds_timeouts_and_budgets_are_located_errors(
    tmp_path: Path, fragment: str, message: str
) -> None:
    text = f"name: bad\n{fragment}\n" + GOOD.split("\n", 1)[1].replace("seeds: [0, 1]\n", "")
    text = text.replace("budget: {steps: 5}\n", "") if fragment.startswith("budget") else text
    with pytest.raises(SuiteError) as err:
        load_suite(write(tmp_path, text))
    assert message in str(err.value) and "suite.yaml:2" in str(err.value)


SWEEP = """\
name: sweep
experiments:
  - kind: detector
    workloads:
      - {name: audit-sim, options: {n_samples: [25, 100]}}
    methods: [audit-test]
"""


def test_a_list_of_numbers_in_workload_options_is_one_run_per_value(
    tmp_path: Path, registry: Registry
) -> None:
    """``n_samples: [25, 100]`` is the same two runs as two workload entries (same ids);
    a value of the wrong type inside the sweep is refused at its line."""
    path = write(tmp_path, SWEEP)
    suite = load_suite(path)
    check_names(suite, registry, path)
    swept = expand(suite, device="cpu")
    entries = SWEEP.replace(
        "      - {name: audit-sim, options: {n_samples: [25, 100]}}",
        "      - {name: audit-sim, options: {n_samples: 25}}\n"
        "      - {name: audit-sim, options: {n_samples: 100}}",
    )
    separate = expand(load_suite(write(tmp_path, entries)), device="cpu")
    assert [s.workload_options for s in swept] == [{"n_samples": 25}, {"n_samples": 100}]
    assert [s.id for s in swept] == [s.id for s in separate]
    bad = write(tmp_path, SWEEP.replace("[25, 100]", "[25, true]"))
    with pytest.raises(SuiteError, match=r"suite.yaml:5: .*n_samples.*got True"):
        check_names(load_suite(bad), registry, bad)
