"""Meters: statistics, warm-up exclusion, RSS peaks, NVML logic against a stand-in, FLOPs."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.measure.environment import capture_environment
from benchmark.measure.flops import count_flops
from benchmark.measure.memory import CudaPeak
from benchmark.measure.meters import phase
from benchmark.measure.nvml import NvmlSampler
from benchmark.measure.timing import Stats, Stopwatch, time_calls, time_interleaved


def test_stats_match_numpy_percentiles() -> None:
    xs = np.random.default_rng(0).exponential(size=101)
    s = Stats.of(xs.tolist())
    assert s.median == pytest.approx(np.median(xs))
    assert s.p10 == pytest.approx(np.percentile(xs, 10))
    assert s.p90 == pytest.approx(np.percentile(xs, 90))
    assert s.n == 101
    with pytest.raises(ValueError):
        Stats.of([])


def test_time_calls_excludes_warmup() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        time.sleep(0.2 if len(calls) <= 2 else 0.001)

    stats = time_calls(fn, warmup=2, repeats=5)
    assert stats.n == 5 and len(calls) == 7
    assert stats.p90 < 0.05, "the slow warm-up calls must not be measured"


def test_interleaved_timing_alternates_and_separates_the_functions() -> None:
    order: list[str] = []

    def slow() -> None:
        order.append("a")
        time.sleep(0.004)

    def fast() -> None:
        order.append("b")

    a, b = time_interleaved([slow, fast], warmup=1, repeats=4)
    assert order == ["a", "b"] * 5  # one warm-up round, then strictly alternating
    assert a.n == b.n == 4 and a.median > 0.003 > b.median


def test_stopwatch_cpu() -> None:
    with Stopwatch("cpu") as sw:
        time.sleep(0.02)
    assert 0.015 < sw.elapsed_s < 0.5


def test_rss_phase_sees_an_allocation() -> None:
    with phase("alloc", torch.device("cpu")) as p:
        start = p.rss.peak_bytes
        block = np.ones(200 * 2**20 // 8)
        time.sleep(0.1)
        del block
    metrics = p.metrics()
    assert metrics["alloc_host_rss_peak"].value - start > 150 * 2**20
    # The headline on a CPU is the growth above the phase's start, not the absolute RSS.
    growth = metrics["alloc_host_rss_growth"]
    assert growth.value == metrics["alloc_host_rss_peak"].value - p.rss.baseline_bytes
    assert growth.value > 150 * 2**20
    assert metrics["alloc_peak_memory"] == growth
    assert growth.meter == f"{p.rss.meter}, peak above the phase's start"
    assert metrics["alloc_host_rss_peak"].meter == p.rss.meter  # VmHWM or the sampler


def test_cuda_and_nvml_figures_are_null_with_reason_on_cpu() -> None:
    with phase("p", torch.device("cpu")) as p:
        pass
    metrics = p.metrics()
    for key in ("p_cuda_peak_allocated", "p_gpu_energy", "p_gpu_power_mean"):
        assert metrics[key].value is None and "cpu" in metrics[key].reason
    assert CudaPeak(torch.device("cpu")).metrics()["cuda_peak_reserved"].value is None


class FakeNvml:
    """A scripted stand-in for pynvml."""

    class NVMLError(Exception):
        pass

    def __init__(
        self, *, energy: bool = True, init_fails: bool = False, pid_listed: bool = True
    ) -> None:
        import os

        self.energy, self.init_fails, self.pid_listed = energy, init_fails, pid_listed
        self.mem = iter([1000, 5000, 3000] + [2000] * 10_000)
        self.power = iter([100_000, 300_000] + [200_000] * 10_000)
        self.counter = iter([10_000, 25_000])
        self.pid = os.getpid()
        self.shutdown = False

    def nvmlInit(self) -> None:
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        return f"gpu{i}"

    def nvmlDeviceGetMemoryInfo(self, h: str) -> SimpleNamespace:
        return SimpleNamespace(used=next(self.mem))

    def nvmlDeviceGetComputeRunningProcesses(self, h: str) -> list[SimpleNamespace]:
        pid = self.pid if self.pid_listed else -1
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=4096),
            SimpleNamespace(pid=1, usedGpuMemory=1),
        ]

    def nvmlDeviceGetPowerUsage(self, h: str) -> int:
        return next(self.power)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: str) -> int:
        if not self.energy:
            raise self.NVMLError("Not Supported")
        return next(self.counter)

    def nvmlShutdown(self) -> None:
        self.shutdown = True


def run_sampler(fake: FakeNvml) -> dict:
    sampler = NvmlSampler(torch.device("cuda", 0), interval_s=0.01, nvml=fake)
    with sampler:
        time.sleep(0.1)
    return sampler.metrics()


def test_nvml_all_supported() -> None:
    fake = FakeNvml()
    m = run_sampler(fake)
    assert m["gpu_device_memory_peak"].value == 5000
    assert m["gpu_process_memory_peak"].value == 4096
    assert m["gpu_energy"].value == pytest.approx(15.0)  # (25000 - 10000) mJ
    assert m["gpu_energy"].meter == "nvml.total_energy_consumption"
    assert m["gpu_power_peak"].value == 300.0
    assert 100.0 <= m["gpu_power_mean"].value <= 300.0 and m["gpu_power_mean"].n >= 3
    assert fake.shutdown


def test_nvml_energy_integrated_when_counter_unsupported() -> None:
    m = run_sampler(FakeNvml(energy=False))
    assert m["gpu_energy"].value is not None and m["gpu_energy"].value > 0
    assert "integrated" in m["gpu_energy"].meter and "Not Supported" in m["gpu_energy"].meter


def test_nvml_init_failure_nulls_everything_with_the_error() -> None:
    m = run_sampler(FakeNvml(init_fails=True))
    for metric in m.values():
        assert metric.value is None and "Driver Not Loaded" in metric.reason


def test_nvml_process_not_listed() -> None:
    m = run_sampler(FakeNvml(pid_listed=False))
    assert m["gpu_process_memory_peak"].value is None
    assert "not in NVML's compute-process list" in m["gpu_process_memory_peak"].reason
    assert m["gpu_device_memory_peak"].value == 5000


def test_real_pynvml_on_this_machine_never_reports_zero() -> None:
    m = run_sampler(None)  # type: ignore[arg-type]
    for metric in m.values():
        assert metric.value is None or metric.value > 0
        if metric.value is None:
            assert metric.reason


def test_flops_of_linear_layers() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(5, 8)
    assert count_flops(lambda: model(x)) == 2 * 5 * (8 * 16 + 16 * 4)


def test_environment_is_serialisable_and_complete() -> None:
    env = capture_environment("cpu")
    json.dumps(env)
    for key in ("python", "device_name", "torch", "packages", "git_commit", "cpu_count"):
        assert key in env
    assert env["packages"]["torch"]
