"""benchmarks/optimizer_step.py on a tiny shape: the structure of its output, not timings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "optimizer_step.py"


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("optimizer_step_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(bench):  # type: ignore[no-untyped-def]
    tiny = bench.Shape("tiny", hidden=32, intermediate=48, layers_full=4, rank=8)
    return bench.run(
        [tiny], layers=1, external=False, warmup=1, max_repeats=3, min_repeats=2, budget_s=0.0
    )


def test_a_row_for_every_registered_optimizer(bench, result) -> None:  # type: ignore[no-untyped-def]
    names = {r["implementation"] for r in result["rows"]}
    assert set(bench.registered_optimizers()) | {bench.REFERENCE} <= names
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["step"]["n"] >= 2 and row["step"]["median_s"] > 0
        lowrank = row["implementation"] in bench.GAP_KEY
        assert (row["refresh_step"] is not None) == lowrank
        assert (row["refresh_amortised_s"] is not None) == lowrank
        assert row["step_vs_adamw"] > 0 and row["state_bytes"] > 0


def test_adamw_state_is_two_moments_per_parameter(result) -> None:  # type: ignore[no-untyped-def]
    rows = {r["implementation"]: r for r in result["rows"]}
    params = rows["adamw"]["param_bytes"] // 4
    assert params == 1 * (4 * 32 * 32 + 3 * 32 * 48 + 2 * 32)
    # Two fp32 moments per element, and torch's 4-byte step count per parameter tensor.
    steps = 4 * rows["adamw"]["param_tensors"]
    assert rows["adamw"]["state_bytes"] == 2 * params * 4 + steps
    assert rows["torch AdamW (foreach)"]["state_bytes"] == rows["adamw"]["state_bytes"]


def test_markdown_has_a_line_per_row(bench, result) -> None:  # type: ignore[no-untyped-def]
    from benchmark.measure.environment import capture_environment

    text = bench.markdown(result, capture_environment("cpu"))
    for row in result["rows"]:
        assert f"| {row['implementation']} |" in text
