"""Noise-aware regression verdicts: a shift beyond noise fails, the same shift inside noise
is inconclusive, a missing configuration or a run that stopped working fails, a timing
across timing regimes is never judged. Expected verdicts are worked out by hand from the
synthetic numbers, not from the module's formulas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark import store
from benchmark.cli import main
from benchmark.records import Metric, RunRecord, RunSpec
from benchmark.report.compare import compare, parse_rule

REGIME_A = {"device_name": "cpu-a", "torch_threads": 1, "concurrent_runs": 1, "pinned": True}
REGIME_B = {**REGIME_A, "concurrent_runs": 2}


def run(
    method: str,
    seed: int,
    *,
    status: str = "ok",
    regime: dict | None = None,
    ci: float | None = None,
    **values: float,
) -> RunRecord:
    spec = RunSpec(suite="s", kind="optimizer", method=method, workload="w", seed=seed)
    metrics = {}
    for name, v in values.items():
        unit = "s" if name == "step_time" else "nats"
        low, high = (v - ci, v + ci) if ci is not None else (None, None)
        metrics[name] = Metric(
            value=v, unit=unit, meter="test", ci_low=low, ci_high=high, higher_is_better=False
        )
    return RunRecord(
        id=spec.id,
        spec=spec,
        status=status,
        reason=None if status == "ok" else "boom",
        metrics=metrics if status == "ok" else {},
        environment={"regime": regime or REGIME_A},
    )


def seeds(method: str, values: list[float], **kw: object) -> list[RunRecord]:
    return [run(method, s, eval_loss=v, **kw) for s, v in enumerate(values)]  # type: ignore[arg-type]


def verdicts(result) -> dict[tuple[str, str | None], str]:  # type: ignore[no-untyped-def]
    return {(r.config.split("[")[0], r.metric): r.verdict for r in result.rows}


RULE = parse_rule("eval_loss:+2%")


def test_a_shift_beyond_noise_regresses_and_the_same_shift_inside_noise_is_inconclusive() -> None:
    # Tight seeds (sd 0.01): a mean 1.00 -> 1.10 (+10%, t ~ 12) is a regression.
    quiet_old = seeds("quiet", [0.99, 1.00, 1.01])
    quiet_new = seeds("quiet", [1.09, 1.10, 1.11])
    # Noisy seeds (sd 0.3): the same +0.10 cannot be told from noise (t ~ 0.4).
    noisy_old = seeds("noisy", [0.70, 1.00, 1.30])
    noisy_new = seeds("noisy", [0.80, 1.10, 1.40])
    result = compare(quiet_old + noisy_old, quiet_new + noisy_new, [RULE])
    got = verdicts(result)
    assert got[("optimizer/quiet", "eval_loss")] == "regressed"
    assert got[("optimizer/noisy", "eval_loss")] == "inconclusive"
    assert result.failed
    assert not compare(noisy_old, noisy_new, [RULE]).failed  # inconclusive never fails


def test_a_shift_smaller_than_the_minimum_effect_is_unchanged_and_a_gain_improved() -> None:
    old = seeds("m", [0.999, 1.000, 1.001])
    within = seeds("m", [1.004, 1.005, 1.006])  # +0.5%: real, but under the rule's 2%
    better = seeds("m", [0.899, 0.900, 0.901])
    assert verdicts(compare(old, within, [RULE]))[("optimizer/m", "eval_loss")] == "unchanged"
    assert verdicts(compare(old, better, [RULE]))[("optimizer/m", "eval_loss")] == "improved"


def test_single_runs_use_their_test_set_intervals_and_exact_values_compare_exactly() -> None:
    old = [run("m", 0, eval_loss=1.00, ci=0.02)]
    far = [run("m", 0, eval_loss=1.10, ci=0.02)]  # interval of d: 0.10 +- 0.028
    near = [run("m", 0, eval_loss=1.03, ci=0.02)]  # 0.03 +- 0.028 > 0 but upper end 0.058 > 2%
    assert verdicts(compare(old, far, [RULE]))[("optimizer/m", "eval_loss")] == "regressed"
    assert verdicts(compare(old, near, [RULE]))[("optimizer/m", "eval_loss")] == "regressed"
    wobble = [run("m", 0, eval_loss=1.01, ci=0.05)]
    assert verdicts(compare(old, wobble, [RULE]))[("optimizer/m", "eval_loss")] == "inconclusive"
    exact_old, exact_new = [run("m", 0, eval_loss=1.0)], [run("m", 0, eval_loss=1.05)]
    row = compare(exact_old, exact_new, [RULE]).rows[0]
    assert row.verdict == "regressed" and "exact" in row.method


def test_missing_configurations_and_broken_runs_fail() -> None:
    old = seeds("a", [1.0, 1.0, 1.0]) + seeds("b", [1.0, 1.0, 1.0])
    new = seeds("a", [1.0, 1.0, 1.0])
    result = compare(old, new, [RULE])
    assert verdicts(result)[("optimizer/b", None)] == "missing" and result.failed
    assert not compare(old, new, [RULE], allow_missing=True).failed
    broken = [run("a", 0, status="failed"), *new[1:]]
    result = compare(old[:3], broken, [RULE])
    assert verdicts(result)[("optimizer/a", None)] == "status changed" and result.failed
    extra = compare(old[:3], new + seeds("c", [1.0]), [RULE])
    assert verdicts(extra)[("optimizer/c", None)] == "new" and not extra.failed


def test_a_timing_is_judged_only_within_one_regime() -> None:
    old = [run("m", s, regime=REGIME_A, step_time=0.10) for s in range(3)]
    slower_same = [run("m", s, regime=REGIME_A, step_time=0.20) for s in range(3)]
    slower_other = [run("m", s, regime=REGIME_B, step_time=0.20) for s in range(3)]
    rule = parse_rule("step_time:+10%")
    assert verdicts(compare(old, slower_same, [rule]))[("optimizer/m", "step_time")] == (
        "regressed"
    )
    row = compare(old, slower_other, [rule]).rows[0]
    assert row.verdict == "incomparable" and "regime" in row.note


def test_a_judged_figure_lost_in_new_fails() -> None:
    old = seeds("m", [1.0, 1.0, 1.0])
    new = [run("m", s, other=1.0) for s in range(3)]
    result = compare(old, new, [RULE])
    assert verdicts(result)[("optimizer/m", "eval_loss")] == "lost" and result.failed


def test_without_rules_the_headline_metric_is_judged() -> None:
    old = seeds("m", [0.99, 1.00, 1.01])
    worse = seeds("m", [1.09, 1.10, 1.11])
    assert verdicts(compare(old, worse))[("optimizer/m", "eval_loss")] == "regressed"


def _write(folder: Path, records: list[RunRecord]) -> Path:
    for r in records:
        store.write_record(folder, r)
    return folder


def test_the_command_exits_1_on_a_failing_verdict_and_writes_markdown_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _write(tmp_path / "old", seeds("m", [0.99, 1.00, 1.01]))
    worse = _write(tmp_path / "worse", seeds("m", [1.09, 1.10, 1.11]))
    noisy = _write(tmp_path / "noisy", seeds("m", [0.6, 1.1, 1.4]))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    md = tmp_path / "verdicts.md"
    args = ["compare", str(old), str(worse), "--fail-on", "eval_loss:+2%"]
    assert main([*args, "--markdown", str(md)]) == 1
    assert "| regressed |" in md.read_text() and "| regressed |" in summary.read_text()
    capsys.readouterr()
    assert main(["compare", str(old), str(noisy), "--fail-on", "eval_loss:+2%", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert not payload["failed"] and payload["rows"][0]["verdict"] == "inconclusive"


def test_identical_figures_are_unchanged_and_seed_noise_counts_with_one_new_seed() -> None:
    """The same records on both sides read `unchanged`; a single NEW seed is judged with
    OLD's seed spread (4.7/5.0/5.3, sd 0.3), so 5.2 is inside the noise even though each
    run's own test-set interval is tiny (+-0.01)."""
    old = [run("m", s, eval_loss=v, ci=0.01) for s, v in enumerate([4.7, 5.0, 5.3])]
    assert verdicts(compare(old, old, []))[("optimizer/m", "eval_loss")] == "unchanged"
    one = [run("m", 0, eval_loss=5.2, ci=0.01)]
    got = compare(old, one, [parse_rule("eval_loss:+1%")], allow_missing=True)
    assert verdicts(got)[("optimizer/m", "eval_loss")] == "inconclusive"


def test_lost_seeds_are_missing_and_a_failed_baseline_is_shown_not_judged() -> None:
    old = seeds("m", [1.0, 1.01, 0.99])
    result = compare(old, old[:1], [RULE])
    missing = [r for r in result.rows if r.verdict == "missing"]
    assert missing and "[1, 2]" in missing[0].note and result.failed
    broken_old = [run("m", 0, status="failed")]
    result = compare(broken_old, seeds("m", [1.0]), [RULE])
    assert [r.verdict for r in result.rows] == ["baseline failed"] and not result.failed


def test_a_different_budget_is_another_configuration() -> None:
    from benchmark.records import Budget

    def with_steps(records: list[RunRecord], steps: int) -> list[RunRecord]:
        out = []
        for r in records:
            spec = r.spec.model_copy(update={"budget": Budget(steps=steps)})
            out.append(r.model_copy(update={"spec": spec}))
        return out

    short = with_steps(seeds("m", [1.0, 1.0, 1.0]), 60)
    long = with_steps(seeds("m", [0.5, 0.5, 0.5]), 600)
    assert {r.verdict for r in compare(short, long, [RULE]).rows} == {"missing", "new"}
