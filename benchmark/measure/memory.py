"""Peak memory per phase: CUDA allocator peaks (reset at the start of the phase) and the
host process's resident-set peak, sampled on a thread with psutil, both as it is and as
growth above the phase's start (the absolute figure carries the interpreter's and torch's
baseline, hundreds of MiB on a CPU, which says nothing about the phase)."""

from __future__ import annotations

import threading

import psutil
import torch

from benchmark.records import Metric


class RssSampler:
    """Samples this process's RSS (plus its children's) on a thread; keeps the peak.

    A sampler, not ``ru_maxrss``, because a phase wants the peak inside the phase, not the
    process's lifetime peak.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.baseline_bytes = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread: threading.Thread | None = None

    def _rss(self) -> int:
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, self._rss())

    def __enter__(self) -> RssSampler:
        self.baseline_bytes = self.peak_bytes = self._rss()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss())

    def metric(self) -> Metric:
        return Metric(
            value=float(self.peak_bytes), unit="bytes", meter="psutil.rss", higher_is_better=False
        )

    def growth_metric(self) -> Metric:
        """The sampled peak above the RSS at ``__enter__``."""
        return Metric(
            value=float(self.peak_bytes - self.baseline_bytes),  # the peak starts there
            unit="bytes",
            meter="psutil.rss peak above the phase's start",
            higher_is_better=False,
        )


class CudaPeak:
    """``torch.cuda.max_memory_allocated``/``reserved`` for one phase (peak reset on enter)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.available = device.type == "cuda" and torch.cuda.is_available()
        self.allocated: int | None = None
        self.reserved: int | None = None

    def __enter__(self) -> CudaPeak:
        if self.available:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.available:
            torch.cuda.synchronize(self.device)
            self.allocated = torch.cuda.max_memory_allocated(self.device)
            self.reserved = torch.cuda.max_memory_reserved(self.device)

    def metrics(self) -> dict[str, Metric]:
        if not self.available:
            reason = f"device is {self.device.type}: no CUDA allocator to read"
            return {
                "cuda_peak_allocated": Metric.null("bytes", "torch.cuda", reason),
                "cuda_peak_reserved": Metric.null("bytes", "torch.cuda", reason),
            }
        return {
            "cuda_peak_allocated": Metric(
                value=float(self.allocated or 0),
                unit="bytes",
                meter="torch.cuda.max_memory_allocated",
                higher_is_better=False,
            ),
            "cuda_peak_reserved": Metric(
                value=float(self.reserved or 0),
                unit="bytes",
                meter="torch.cuda.max_memory_reserved",
                higher_is_better=False,
            ),
        }
