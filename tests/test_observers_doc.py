"""The TensorBoard observer in docs/WRITING_A_PLUGIN.md runs as printed: its code is taken
from the page, loaded as a plugin over a fake ``torch.utils.tensorboard`` and driven
through a real run, so the page cannot drift from the hooks."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest

from benchmark.executors.local import InlineExecutor
from benchmark.host import Registry
from benchmark.records import Budget, RunSpec

DOC = Path(__file__).resolve().parent.parent / "docs" / "WRITING_A_PLUGIN.md"
MARKER = "# methodbench_tensorboard/__init__.py"


def snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    [code] = [b for b in blocks if b.startswith(MARKER)]
    return code


class FakeWriter:
    """Records what a ``SummaryWriter`` is asked to do; ``events``: every writer's opening
    and closing, in order."""

    opened: ClassVar[list[FakeWriter]] = []
    events: ClassVar[list[tuple[str, int]]] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.calls: list[tuple[Any, ...]] = []
        FakeWriter.opened.append(self)
        FakeWriter.events.append(("open", len(FakeWriter.opened) - 1))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.calls.append(("scalar", tag, value, step))

    def add_text(self, tag: str, text: str) -> None:
        self.calls.append(("text", tag, text))

    def flush(self) -> None:
        self.calls.append(("flush",))

    def close(self) -> None:
        self.calls.append(("close",))
        FakeWriter.events.append(("close", FakeWriter.opened.index(self)))

    def __enter__(self) -> FakeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_observer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    """The page's observer as a plugin module, writing under ``tmp_path / "tb"``."""
    code = snippet()
    assert len([line for line in code.splitlines() if line.strip()]) <= 30  # as the page says
    monkeypatch.setenv("METHODBENCH_TENSORBOARD_DIR", str(tmp_path / "tb"))
    plugin = types.ModuleType("methodbench_tensorboard")
    exec(compile(code, str(DOC), "exec"), plugin.__dict__)
    monkeypatch.setitem(sys.modules, plugin.__name__, plugin)
    return plugin


def fake_tensorboard(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    FakeWriter.opened, FakeWriter.events = [], []


def spec(seed: int = 0) -> RunSpec:
    return RunSpec(
        suite="tb",
        kind="optimizer",
        method="adamw",
        workload="ae-synthetic",
        device="cpu",
        seed=seed,
        budget=Budget(steps=4),
        protocol={"eval_every": 2},
    )


def test_the_documented_tensorboard_observer_logs_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tensorboard(monkeypatch)
    plugin = load_observer(monkeypatch, tmp_path)
    registry = Registry(extra_plugins=[plugin.__name__])
    assert registry.plugins[plugin.__name__].ok, registry.plugins[plugin.__name__].errors
    # Two runs in one process (--inline): each live writer is closed once, when its run
    # finishes, before the next run opens its own.
    records = InlineExecutor(tmp_path / "results", registry).run([spec(0), spec(1)])
    assert [r.status for r in records] == ["ok", "ok"], [r.reason for r in records]
    live, final, live1, final1 = FakeWriter.opened
    assert FakeWriter.events == [
        ("open", 0), ("close", 0), ("open", 1), ("close", 1),
        ("open", 2), ("close", 2), ("open", 3), ("close", 3),
    ]  # fmt: skip
    assert plugin._live == {}  # nothing left open in the process

    record = records[0]
    expected_dir = str(tmp_path / "tb" / "tb" / f"adamw-seed0-{record.id}")
    assert live.log_dir == final.log_dir == expected_dir
    assert live1.log_dir == final1.log_dir != expected_dir
    eval_points = [(c[3], c[2]) for c in live.calls if c[:2] == ("scalar", "progress/eval_loss")]
    curve = record.curves["eval_loss"]
    assert eval_points == list(zip(curve.x, curve.y, strict=True))
    train_steps = [c[3] for c in live.calls if c[:2] == ("scalar", "progress/train_loss")]
    assert train_steps == [2, 4]
    assert live.calls.count(("flush",)) == len(eval_points)  # flushed at every call
    assert live.calls.count(("close",)) == 1 and live.calls[-1] == ("close",)

    scalars = {c[1]: c[2] for c in final.calls if c[0] == "scalar"}
    assert scalars == {
        f"final/{name}": m.value for name, m in record.metrics.items() if m.value is not None
    }
    assert ("text", "status", "ok: ok") in final.calls and final.calls[-1] == ("close",)


def test_a_process_that_runs_many_runs_keeps_one_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose records are stored elsewhere never sees run_finished: the next
    run's first step closes the last run's writer."""
    fake_tensorboard(monkeypatch)
    plugin = load_observer(monkeypatch, tmp_path)
    for seed in range(3):
        for step in (0, 2):
            plugin.methodbench_run_progress(spec=spec(seed), step=step, metrics={"x": 1.0})
    assert [w.calls.count(("close",)) for w in FakeWriter.opened] == [1, 1, 0]
    assert list(plugin._live) == [spec(2).id]


def test_the_documented_observer_writes_real_tensorboard_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plugin = load_observer(monkeypatch, tmp_path)
    registry = Registry(extra_plugins=[plugin.__name__])
    [record] = InlineExecutor(tmp_path / "results", registry).run([spec(0)])
    assert record.status == "ok", record.reason
    assert plugin._live == {}
    events = EventAccumulator(str(tmp_path / "tb" / "tb" / f"adamw-seed0-{record.id}"))
    events.Reload()
    curve = record.curves["eval_loss"]
    points = events.Scalars("progress/eval_loss")
    assert [e.step for e in points] == curve.x
    assert [e.value for e in points] == pytest.approx(curve.y, rel=1e-6)  # float32 on disk
    final = {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"]}
    assert final["final/eval_loss"] == pytest.approx(record.metrics["eval_loss"].value)
