"""Records say exactly what produced them: code fingerprint in the id, a git tree state
that ignores the suite's own output, seeded generators, the timing regime."""

from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.executors.local import core_slots
from benchmark.measure.environment import capture_environment, git_dirty, regime_key
from benchmark.protocols.base import method_seed, seed_everything
from benchmark.provenance import fingerprint_modules, run_roots, source_closure
from benchmark.records import RunSpec
from tests.helpers import context, registry


def _package(root: Path, name: str, helper_body: str) -> None:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "method.py").write_text(f"from {name} import helper\n\ndef build():\n    return 1\n")
    (pkg / "helper.py").write_text(helper_body)
    (pkg / "unrelated.py").write_text("X = 1\n")


def test_changing_an_imported_module_changes_the_fingerprint_and_the_run_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, "fp_plugin", "SCALE = 1\n")
    importlib.invalidate_caches()
    first, modules = fingerprint_modules(["fp_plugin.method"])
    # ``from fp_plugin import helper`` runs the package's __init__ too.
    assert modules == ("fp_plugin", "fp_plugin.helper", "fp_plugin.method")
    # A module the method does not import changes nothing.
    (tmp_path / "fp_plugin" / "unrelated.py").write_text("X = 2\n")
    assert fingerprint_modules(["fp_plugin.method"])[0] == first
    # A module it imports (transitively) does.
    (tmp_path / "fp_plugin" / "helper.py").write_text("SCALE = 2\n")
    second = fingerprint_modules(["fp_plugin.method"])[0]
    assert second != first
    spec = RunSpec(suite="s", kind="optimizer", method="m", workload="w")
    assert spec.model_copy(update={"code": first}).id != spec.model_copy(update={"code": second}).id
    sys.modules.pop("fp_plugin", None)


def test_builtin_closure_follows_plugin_imports_but_not_host_plumbing() -> None:
    galore = source_closure("plugins.optimizers.galore")
    assert "plugins.optimizers.lowrank" in galore  # the shared low-rank code it imports
    protocol = source_closure("benchmark.protocols.optimizer")
    assert "benchmark.measure.timing" in protocol
    assert not any(m.startswith(("benchmark.report", "benchmark.cli")) for m in protocol)
    assert "benchmark.kinds" not in protocol  # the kind table reports read
    # A plugin's imports of host modules are followed (SLIP records transcripts).
    assert "benchmark.measure.crossings" in source_closure("plugins.security.slip")
    # The runner (seeding, workload construction) is part of every run's code.
    spec = RunSpec(suite="s", kind="optimizer", method="adamw", workload="tiny-llama")
    roots = run_roots(spec, registry())
    assert roots[0] == "benchmark.executors.runner"
    assert "benchmark.protocols.base" in source_closure(roots[0])


def test_suite_label_and_grid_names_do_not_change_the_id() -> None:
    spec = RunSpec(suite="a", kind="optimizer", method="m", workload="w", hparams={"lr": 1})
    assert spec.model_copy(update={"suite": "b", "tuned": ("lr",)}).id == spec.id


def test_git_dirty_ignores_untracked_data_and_results_but_not_new_source() -> None:
    assert git_dirty("") is False
    assert git_dirty("?? notes.txt\n?? tests/test_new.py\n?? results/x/runs/a.json\n") is False
    assert git_dirty("?? plugins/optimizers/new_method.py\n") is True
    assert git_dirty("R  plugins/a.py -> results/a.py\n") is True  # moved code is a change
    assert git_dirty(" M results/smoke/runs/abc.json\n?? results/x/runs/y.json\n") is False
    assert git_dirty(" M benchmark/cli.py\n") is True
    assert git_dirty("R  old.py -> plugins/new.py\n") is True
    assert git_dirty(None) is None


def test_seed_everything_sets_numpy_random_and_torch() -> None:
    def draw() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(7)
    a = draw()
    draw()  # move every generator on
    seed_everything(7)
    assert draw() == a
    seed_everything(8)
    b = draw()
    assert all(x != y for x, y in zip(a, b, strict=True))


def test_randomised_methods_receive_the_run_seed_offset_by_their_own() -> None:
    ctx = context("optimizer", "flora", "tiny-llama", options={"seq_len": 16})
    assert ctx.hparams["seed"] == 0
    other = ctx.spec.model_copy(update={"seed": 3})
    ctx.spec = other
    assert ctx.hparams["seed"] == 3
    ctx.spec = other.model_copy(update={"hparams": {"seed": 10}})
    assert ctx.hparams["seed"] == 13
    assert method_seed(2, None) == 2
    # A method without a seed hyperparameter gets none.
    assert "seed" not in context("optimizer", "adamw", "tiny-llama").hparams


def test_regime_is_recorded_and_keys_comparisons(monkeypatch: pytest.MonkeyPatch) -> None:
    alone = capture_environment("cpu")
    assert alone["regime"]["concurrent_runs"] == 1
    assert alone["regime"]["torch_threads"] == torch.get_num_threads()
    monkeypatch.setenv("METHODBENCH_CONCURRENT_RUNS", "2")
    monkeypatch.setenv("METHODBENCH_PINNED", "1")
    shared = capture_environment("cpu")
    assert shared["regime"]["concurrent_runs"] == 2 and shared["regime"]["pinned"]
    assert regime_key(alone) != regime_key(shared)
    assert regime_key({}) is None


def test_core_slots_are_disjoint_and_cover_equal_shares() -> None:
    assert core_slots(2, [0, 1]) == [[0], [1]]
    assert core_slots(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3]]
    assert core_slots(8, [0, 1]) == [[0], [1]]  # never more jobs than cores
    slots = core_slots(3, range(12))
    assert sum(len(s) for s in slots) == 12 and len({c for s in slots for c in s}) == 12


def test_changing_a_registered_default_changes_the_run_id() -> None:
    """Defaults live in a package's registration, not in the module that runs: a run that
    leaves ``rank`` at its default must get a new id when the default changes, or resume
    would keep records made with the old value."""
    import dataclasses

    from benchmark.host import Registry
    from benchmark.provenance import with_code
    from benchmark.records import Budget

    reg = Registry()
    spec = RunSpec(
        suite="t",
        kind="optimizer",
        method="galore",
        hparams={"lr": 0.01},
        workload="tiny-llama",
        seed=0,
        device="cpu",
        budget=Budget(steps=5),
    )
    (before,) = with_code([spec], reg)
    galore = reg.methods[("optimizer", "galore")]
    reg.methods[("optimizer", "galore")] = dataclasses.replace(
        galore, defaults={**galore.defaults, "rank": 64}
    )
    (after,) = with_code([spec], reg)
    assert before.code != after.code and before.id != after.id
    # The same defaults give the same id (nothing else moved).
    reg.methods[("optimizer", "galore")] = galore
    assert with_code([spec], reg)[0].id == before.id
