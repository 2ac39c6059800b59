"""NVML sampled on a thread: device and per-process VRAM, power, and the energy counter.

The thread samples every 0.2 s (``INTERVAL_S``), once more at the phase's start and end:
often enough for a mean power and for VRAM that a training loop holds, rarely enough that
it takes nothing measurable from the steps the phase times (``benchmarks/overhead.py``).
A VRAM peak shorter than the interval can fall between samples (the CUDA allocator's
peaks in ``memory.py`` are exact; NVML's also count other processes and the CUDA
context). Energy is the difference of NVML's total-energy counter between the phase's
start and end, exact at the counter's resolution; only a board without that counter gets
the power samples integrated (trapezoid), and the meter says so.

Everything NVML cannot give is a null figure with the reason (no GPU, NVML missing, a
call not supported on this board, this process not listed), never a zero. The pynvml
module can be injected so the logic is tested without a GPU.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from types import ModuleType
from typing import Any

import torch

from benchmark.records import Metric

INTERVAL_S = 0.2

UNITS = {
    "gpu_device_memory_peak": "bytes",
    "gpu_process_memory_peak": "bytes",
    "gpu_power_mean": "W",
    "gpu_power_peak": "W",
    "gpu_energy": "J",
}


def _physical_index(index: int) -> tuple[str, int | str]:
    """Map a torch device index through CUDA_VISIBLE_DEVICES to what NVML enumerates."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return "index", index
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if index >= len(entries):
        return "index", index
    entry = entries[index]
    return ("index", int(entry)) if entry.isdigit() else ("uuid", entry)


class NvmlSampler:
    """Context manager sampling one GPU every ``interval_s`` while the phase runs."""

    def __init__(
        self,
        device: torch.device | str,
        interval_s: float = INTERVAL_S,
        nvml: ModuleType | Any | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self._nvml = nvml
        self.unavailable: str | None = None
        self.unsupported: dict[str, str] = {}
        self.device_mem: list[int] = []
        self.process_mem: list[int] = []
        self.power_mw: list[tuple[float, float]] = []  # (time, mW)
        self.energy_mj: tuple[int, int] | None = None
        self._energy_start: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self._t0 = 0.0
        self._t1 = 0.0
        self.process_seen = False

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> NvmlSampler:
        if self.device.type != "cuda":
            self.unavailable = f"device is {self.device.type}: NVML measures NVIDIA GPUs"
            return self
        try:
            nv = self._nvml if self._nvml is not None else __import__("pynvml")
            self._nvml = nv
        except ImportError as exc:
            self.unavailable = f"pynvml is not installed (nvidia-ml-py): {exc}"
            return self
        try:
            nv.nvmlInit()
            how, key = _physical_index(self.device.index or 0)
            self._handle = (
                nv.nvmlDeviceGetHandleByUUID(key)
                if how == "uuid"
                else nv.nvmlDeviceGetHandleByIndex(key)
            )
        except Exception as exc:  # pynvml.NVMLError and friends
            self.unavailable = f"NVML unavailable: {type(exc).__name__}: {exc}"
            return self
        self._energy_start = self._call("gpu_energy", nv.nvmlDeviceGetTotalEnergyConsumption)
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self._t1 = time.perf_counter()
        end = self._call("gpu_energy", self._nvml.nvmlDeviceGetTotalEnergyConsumption)
        if self._energy_start is not None and end is not None:
            self.energy_mj = (self._energy_start, end)
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()

    # -------------------------------------------------------------- sampling

    def _call(self, figure: str, fn: Any, *args: Any) -> Any:
        """One NVML call; a failure nulls that figure only, with NVML's words."""
        try:
            return fn(self._handle, *args)
        except Exception as exc:
            self.unsupported.setdefault(figure, f"{type(exc).__name__}: {exc}")
            return None

    def _sample(self) -> None:
        nv = self._nvml
        mem = self._call("gpu_device_memory_peak", nv.nvmlDeviceGetMemoryInfo)
        if mem is not None:
            self.device_mem.append(int(mem.used))
        procs = self._call("gpu_process_memory_peak", nv.nvmlDeviceGetComputeRunningProcesses)
        if procs is not None:
            mine = [p for p in procs if p.pid == os.getpid()]
            if mine:
                self.process_seen = True
                used = mine[0].usedGpuMemory
                if used is not None:
                    self.process_mem.append(int(used))
        power = self._call("gpu_power_mean", nv.nvmlDeviceGetPowerUsage)
        if power is not None:
            self.power_mw.append((time.perf_counter(), float(power)))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample()
            except Exception as exc:  # the sampler must never take the run down
                self.unsupported.setdefault("sampler", f"sampler thread stopped: {exc}")
                return

    # -------------------------------------------------------------- figures

    @property
    def _every(self) -> str:
        return f", sampled every {self.interval_s:g} s"

    def metrics(self) -> dict[str, Metric]:
        if self.unavailable is not None:
            return {k: Metric.null(u, "nvml", self.unavailable) for k, u in UNITS.items()}
        out: dict[str, Metric] = {}
        out["gpu_device_memory_peak"] = self._peak(
            "gpu_device_memory_peak", self.device_mem, f"nvml.memory_info.used{self._every}"
        )
        if not self.process_mem:
            reason = self.unsupported.get("gpu_process_memory_peak") or (
                "this process was not in NVML's compute-process list (containers often hide it)"
                if not self.process_seen
                else "NVML did not report this process's memory"
            )
            out["gpu_process_memory_peak"] = Metric.null("bytes", "nvml", reason)
        else:
            out["gpu_process_memory_peak"] = self._peak(
                "gpu_process_memory_peak", self.process_mem, f"nvml.compute_processes{self._every}"
            )
        watts = [mw / 1e3 for _, mw in self.power_mw]
        if watts:
            xs = sorted(watts)
            q = statistics.quantiles(xs, n=10) if len(xs) > 1 else [xs[0]] * 9
            out["gpu_power_mean"] = Metric(
                value=statistics.fmean(xs),
                unit="W",
                meter=f"nvml.power_usage{self._every}",
                n=len(xs),
                p10=q[0],
                p90=q[-1],
                higher_is_better=False,
            )
            out["gpu_power_peak"] = Metric(
                value=xs[-1],
                unit="W",
                meter=f"nvml.power_usage{self._every}",
                n=len(xs),
                higher_is_better=False,
            )
        else:
            reason = self.unsupported.get("gpu_power_mean", "no power samples")
            out["gpu_power_mean"] = Metric.null("W", "nvml", reason)
            out["gpu_power_peak"] = Metric.null("W", "nvml", reason)
        out["gpu_energy"] = self._energy()
        return out

    def _peak(self, figure: str, samples: list[int], meter: str) -> Metric:
        if not samples:
            return Metric.null(UNITS[figure], "nvml", self.unsupported.get(figure, "no samples"))
        return Metric(
            value=float(max(samples)),
            unit="bytes",
            meter=meter,
            n=len(samples),
            higher_is_better=False,
        )

    def _energy(self) -> Metric:
        if self.energy_mj is not None:
            start, end = self.energy_mj
            return Metric(
                value=(end - start) / 1e3,
                unit="J",
                meter="nvml.total_energy_consumption",
                higher_is_better=False,
            )
        if len(self.power_mw) >= 2:
            joules = sum(
                (t1 - t0) * (p0 + p1) / 2e3
                for (t0, p0), (t1, p1) in zip(self.power_mw, self.power_mw[1:], strict=False)
            )
            return Metric(
                value=joules,
                unit="J",
                meter=f"nvml.power_usage{self._every}, integrated (energy counter unsupported: "
                f"{self.unsupported.get('gpu_energy', 'no counter')})",
                n=len(self.power_mw),
                higher_is_better=False,
            )
        reason = self.unsupported.get("gpu_energy", "no energy counter and too few power samples")
        return Metric.null("J", "nvml", reason)
