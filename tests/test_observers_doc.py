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
    """Records what a ``SummaryWriter`` is asked to do."""

    opened: ClassVar[list[FakeWriter]] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.calls: list[tuple[Any, ...]] = []
        FakeWriter.opened.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.calls.append(("scalar", tag, value, step))

    def add_text(self, tag: str, text: str) -> None:
        self.calls.append(("text", tag, text))

    def flush(self) -> None:
        self.calls.append(("flush",))

    def close(self) -> None:
        self.calls.append(("close",))

    def __enter__(self) -> FakeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_the_documented_tensorboard_observer_logs_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = snippet()
    assert len([line for line in code.splitlines() if line.strip()]) <= 30  # as the page says
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setenv("METHODBENCH_TENSORBOARD_DIR", str(tmp_path / "tb"))
    FakeWriter.opened = []
    plugin = types.ModuleType("methodbench_tensorboard")
    exec(compile(code, str(DOC), "exec"), plugin.__dict__)
    monkeypatch.setitem(sys.modules, plugin.__name__, plugin)

    registry = Registry(extra_plugins=[plugin.__name__])
    assert registry.plugins[plugin.__name__].ok, registry.plugins[plugin.__name__].errors
    spec = RunSpec(
        suite="tb",
        kind="optimizer",
        method="adamw",
        workload="ae-synthetic",
        device="cpu",
        budget=Budget(steps=4),
        protocol={"eval_every": 2},
    )
    [record] = InlineExecutor(tmp_path / "results", registry).run([spec])
    assert record.status == "ok", record.reason

    live, final = FakeWriter.opened
    expected_dir = str(tmp_path / "tb" / "tb" / f"adamw-seed0-{record.id}")
    assert live.log_dir == final.log_dir == expected_dir
    eval_points = [(c[3], c[2]) for c in live.calls if c[:2] == ("scalar", "progress/eval_loss")]
    curve = record.curves["eval_loss"]
    assert eval_points == list(zip(curve.x, curve.y, strict=True))
    train_steps = [c[3] for c in live.calls if c[:2] == ("scalar", "progress/train_loss")]
    assert train_steps == [2, 4]
    assert live.calls.count(("flush",)) == len(eval_points)  # flushed at every call

    scalars = {c[1]: c[2] for c in final.calls if c[0] == "scalar"}
    assert scalars == {
        f"final/{name}": m.value for name, m in record.metrics.items() if m.value is not None
    }
    assert ("text", "status", "ok: ok") in final.calls and final.calls[-1] == ("close",)
