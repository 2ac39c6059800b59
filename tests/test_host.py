"""Plugin discovery and isolation: a broken plugin is reported and skipped, never fatal."""

from __future__ import annotations

import pytest

from benchmark.host import Registry, UnknownName, unknown_hparams
from benchmark.kinds import ContractError, MethodSpec, check_spec


def test_builtins_register_every_kind() -> None:
    reg = Registry()
    kinds = {kind for kind, _ in reg.methods}
    assert kinds == {"optimizer", "compressor", "security_split", "detector"}
    assert ("optimizer", "adamw") in reg.methods
    assert reg.attacks, "the built-in attacks are registered"
    builtin = [p for p in reg.plugins.values() if p.source == "builtin"]
    assert builtin and all(p.ok for p in builtin), [p.errors for p in builtin if not p.ok]
    assert all(p.distribution == "methodbench" for p in builtin)


def test_broken_import_is_reported_and_host_keeps_working() -> None:
    reg = Registry(extra_plugins=["tests.fixtures.broken_import"])
    info = reg.plugins["tests.fixtures.broken_import"]
    assert not info.ok
    assert "import failed" in info.errors[0] and "this_module_does_not_exist" in info.errors[0]
    assert ("optimizer", "adamw") in reg.methods


def test_bad_specs_are_skipped_one_by_one() -> None:
    reg = Registry(extra_plugins=["tests.fixtures.bad_specs"])
    info = reg.plugins["tests.fixtures.bad_specs"]
    assert info.registered == ["method optimizer/good-sgd"]
    joined = "\n".join(info.errors)
    assert "duplicate optimizer 'good-sgd'" in joined
    assert "does not accept" in joined and "learning_rate" in joined
    assert "kind 'quantum'" in joined
    assert "got str" in joined
    assert "methodbench_register_workloads raised" in joined
    assert reg.method("optimizer", "good-sgd").defaults == {"lr": 0.1}


def test_duplicate_of_a_builtin_name_is_rejected() -> None:
    reg = Registry(extra_plugins=["tests.fixtures.dup_builtin"])
    errors = reg.plugins["tests.fixtures.dup_builtin"].errors
    assert any("duplicate optimizer 'adamw'" in e and "plugins.optimizers" in e for e in errors)
    assert reg.owner_of("optimizer", "adamw").source == "builtin"


def test_unknown_names_suggest_close_matches() -> None:
    reg = Registry()
    with pytest.raises(UnknownName, match="did you mean 'adamw'"):
        reg.method("optimizer", "adamv")
    with pytest.raises(UnknownName, match="unknown detector workload"):
        reg.workload("detector", "nope")
    spec = reg.method("optimizer", "adamw")
    ((key, message),) = unknown_hparams(spec, ["lrr"])
    assert key == "lrr" and "did you mean 'lr'" in message


def test_check_spec_rejects_bad_names_and_factories() -> None:
    with pytest.raises(ContractError, match="lower-case"):
        check_spec(MethodSpec(kind="optimizer", name="Bad Name", factory=print))
    with pytest.raises(ContractError, match="not callable"):
        check_spec(MethodSpec(kind="detector", name="x", factory=3))  # type: ignore[arg-type]


def test_allow_and_deny_lists_filter_entry_points(
    monkeypatch: pytest.MonkeyPatch, example_dist: str
) -> None:
    monkeypatch.setenv("METHODBENCH_PLUGINS", "")
    assert "example" not in Registry().plugins
    monkeypatch.setenv("METHODBENCH_PLUGINS", "methodbench-example")
    assert "example" in Registry().plugins
    monkeypatch.delenv("METHODBENCH_PLUGINS")
    monkeypatch.setenv("METHODBENCH_DISABLE_PLUGINS", "example")
    assert "example" not in Registry().plugins
