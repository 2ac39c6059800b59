"""The history: one point per commit, machine and configuration; steps found where a metric
jumps and nowhere in plain noise; the page lists the commit of the step."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmark import store
from benchmark.cli import main
from benchmark.history import add, change_points, load, series, write_page
from benchmark.records import Metric, RunRecord, RunSpec

REGIME = {"device_name": "cpu-a", "torch_threads": 1, "concurrent_runs": 1, "pinned": True}


def record(commit: str, day: int, loss: float, method: str = "adamw") -> RunRecord:
    spec = RunSpec(suite="smoke", kind="optimizer", method=method, workload="w")
    return RunRecord(
        id=spec.id,
        spec=spec,
        status="ok",
        started_at=f"2026-11-{day:02d}T00:00:00",
        metrics={
            "eval_loss": Metric(
                value=loss, unit="nats", meter="t", ci_low=loss - 0.01, ci_high=loss + 0.01
            )
        },
        environment={"git_commit": commit, "git_dirty": False, "regime": REGIME},
    )


def test_a_jump_is_a_step_and_noise_is_not() -> None:
    rng = random.Random(0)
    noise = [1.0 + rng.gauss(0, 0.01) for _ in range(12)]
    assert change_points(noise) == []
    jump = noise[:7] + [v + 0.2 for v in noise[7:]]
    assert change_points(jump) == [7]
    # Half a sigma hides in the noise; twenty do not.
    assert change_points(noise[:6] + [v + 0.005 for v in noise[6:]]) == []


def _results(tmp: Path, commit: str, day: int, loss: float) -> Path:
    folder = tmp / commit
    store.write_record(folder, record(commit, day, loss))
    return folder


def test_history_keeps_one_point_per_commit_and_marks_the_commit_of_a_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(1)
    history = tmp_path / "history"
    losses = [4.0 + rng.gauss(0, 0.005) for _ in range(10)]
    losses[6:] = [v + 0.3 for v in losses[6:]]  # the commit c06 made things worse
    for i, loss in enumerate(losses):
        add(history, _results(tmp_path, f"c{i:02d}", i + 1, loss))
    add(history, _results(tmp_path / "again", "c03", 4, losses[3]))  # a re-run of c03
    points = load(history)
    assert len(points) == 10 and sorted(p.commit for p in points)[3] == "c03"
    (s,) = series(points)
    assert [s.points[i].commit for i in s.steps] == ["c06"]
    page = write_page(history).read_text()
    assert "steps at" in page and "c06" in page and "data:image/png" in page
    args = ["history", str(history), "--add", str(tmp_path / "c09")]
    assert main(args) == 0
    assert "step: smoke" in capsys.readouterr().out


def test_history_of_nothing_is_exit_2(tmp_path: Path) -> None:
    assert main(["history", str(tmp_path / "none")]) == 2


def test_a_jump_at_the_newest_commit_waits_for_a_second_commit() -> None:
    calm = [0.0, 0.1, -0.1, 0.0, 0.05]
    assert change_points([*calm, 10.0]) == []  # one point after: not yet (not misplaced)
    assert change_points([*calm, 10.0, 10.1]) == [5]
