"""The phase's host-memory meters: the kernel's reset high-water mark sees a freed spike,
nested phases keep the outer peak, the fallback sampler is used and named; and the
overhead benchmark's structure (no timing is asserted anywhere here)."""

from __future__ import annotations

import mmap
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.measure import memory
from benchmark.measure.meters import phase

MiB = 2**20
CPU = torch.device("cpu")


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    """The kernel probe is cached per process; tests that break it start and end clean."""
    memory.kernel_peak_unavailable.cache_clear()
    yield
    memory.kernel_peak_unavailable.cache_clear()


def spike(nbytes: int, hold_s: float = 0.0) -> None:
    """Make ``nbytes`` resident (every page touched), optionally hold them, then free them
    (numpy maps a block this large on its own and unmaps it on ``del``). Tens of ms."""
    block = np.empty(nbytes, dtype=np.uint8)
    for i in range(0, nbytes, mmap.PAGESIZE):
        block[i] = 1
    if hold_s:
        time.sleep(hold_s)
    del block


needs_kernel = pytest.mark.skipif(
    memory.kernel_peak_unavailable() is not None,
    reason=f"no resettable VmHWM here: {memory.kernel_peak_unavailable()}",
)


@needs_kernel
def test_kernel_meter_sees_a_spike_freed_inside_the_phase() -> None:
    # 150 MiB made resident and unmapped at once: the spike's top lasts microseconds, which
    # a sampler (the old one polled every 20 ms) sees only by luck; VmHWM is exact.
    with phase("p", CPU) as p:
        spike(150 * MiB)
    m = p.metrics()
    growth = m["p_host_rss_growth"]
    assert growth.value >= 0.9 * 150 * MiB
    assert growth.meter.startswith(memory.KERNEL_METER)
    assert m["p_host_rss_peak"].meter == memory.KERNEL_METER
    assert m["p_host_rss_peak"].value == p.rss.baseline_bytes + growth.value
    assert m["p_peak_memory"] == growth  # the CPU headline
    assert not memory._OPEN, "a closed phase leaves no open meter behind"


@needs_kernel
def test_kernel_meter_sees_a_spike_no_thread_could_sample() -> None:
    # The spike is made and freed while the interpreter lock is held throughout (pure
    # Python page touches, numpy's free; a 30 s switch interval keeps any other thread
    # from taking the lock): a sampler thread cannot run during it. The old 20 ms psutil
    # sampler read a growth of 0 MiB here, 5 times out of 5; VmHWM does not depend on
    # any thread being scheduled.
    with phase("p", CPU) as p:
        time.sleep(0.05)  # let a sampler (if any) start and take its first samples
        previous = sys.getswitchinterval()
        sys.setswitchinterval(30.0)
        try:
            spike(150 * MiB)
        finally:
            sys.setswitchinterval(previous)
        time.sleep(0.05)
    assert p.metrics()["p_host_rss_growth"].value >= 0.9 * 150 * MiB


@needs_kernel
def test_a_phase_does_not_see_a_spike_from_before_it() -> None:
    spike(150 * MiB)  # raises the process's VmHWM before the phase starts
    with phase("p", CPU) as p:
        pass
    assert p.metrics()["p_host_rss_growth"].value < 50 * MiB


@needs_kernel
def test_outer_phase_keeps_its_peak_across_a_nested_phase() -> None:
    with phase("outer", CPU) as outer:
        spike(200 * MiB)  # the outer phase's peak, freed before the inner phase resets
        with phase("inner", CPU) as inner:
            spike(60 * MiB)
        spike(20 * MiB)
    o, i = outer.metrics(), inner.metrics()
    assert o["outer_host_rss_growth"].value >= 0.9 * 200 * MiB
    assert 0.9 * 60 * MiB <= i["inner_host_rss_growth"].value < 150 * MiB
    assert not memory._OPEN


def test_fallback_sampler_is_used_and_named_when_clear_refs_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, fresh_probe: None
) -> None:
    monkeypatch.setattr(memory, "CLEAR_REFS", "/nonexistent/clear_refs")
    with phase("p", CPU) as p:
        spike(150 * MiB, hold_s=0.6)  # held across a few of the sampler's 0.25 s samples
    assert isinstance(p.rss.source, memory.RssSampler)
    m = p.metrics()
    meter = m["p_host_rss_peak"].meter
    assert meter.startswith("psutil.rss sampled every 0.25 s on a thread, this process only")
    assert "VmHWM not used" in meter and "/nonexistent/clear_refs" in meter
    assert m["p_host_rss_growth"].meter.startswith(meter)
    assert m["p_host_rss_growth"].value >= 0.9 * 150 * MiB
    assert not memory._OPEN


def test_fallback_when_the_reset_has_no_effect(
    monkeypatch: pytest.MonkeyPatch, fresh_probe: None
) -> None:
    monkeypatch.setattr(memory, "_reset", lambda: None)  # "succeeds", resets nothing
    if sys.platform.startswith("linux") and memory._status() is not None:
        assert memory.kernel_peak_unavailable() == (
            "writing 5 to /proc/self/clear_refs did not reset VmHWM"
        )
    with phase("p", CPU) as p:
        pass
    assert isinstance(p.rss.source, memory.RssSampler)
    assert "VmHWM not used" in p.metrics()["p_host_rss_peak"].meter


def test_fallback_off_linux(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.kernel_peak_unavailable() == "platform is darwin: no /proc/self/clear_refs"


def test_overhead_quick_writes_its_report(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import overhead
    finally:
        sys.path.pop(0)
    result = overhead.main(["--quick", "--out", str(tmp_path), "--only", "optimizer,compressor"])
    assert [r["hot_loop"] for r in result["rows"]] == [
        "optimizer",
        "compressor",
        "compressor in phase",
        "optimizer (control: bare vs bare)",
        "compressor (control: bare vs bare)",
    ]
    for row in result["rows"]:
        assert row["pairs"] == len(row["ratios"]) >= 3
        lo, hi = row["ratio_ci95"]
        assert lo <= hi and row["ratio_p10"] <= row["ratio_p90"]
        assert row["bare_step_s_median"] > 0 and isinstance(row["meets_target"], bool)
    assert result["environment"]["git_commit"] is None or len(result["environment"]["git_commit"])
    assert result["torch_threads"] >= 1 and result["phase_enter_exit"]["n"] == 5
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| optimizer |" in report and "median ratio" in report
    assert (tmp_path / "results.json").exists()
