"""Honest timers: device work is synchronised before a clock is read, warm-up is excluded,
and repeated measurements are reported as median with p10/p90 and the sample count."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmark.records import Metric


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued device work so a host clock reading covers it."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(dev)


def clock_label(device: torch.device | str | None, *, cuda_events: bool = False) -> str:
    """The name of the clock a figure was actually read from, one definition for every
    protocol: CUDA events (``Stopwatch`` and ``time_interleaved`` on a GPU, pass
    ``cuda_events=True``) or the host's ``perf_counter``, read after a device synchronise
    when the device is a GPU."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    on_gpu = dev.type == "cuda" and torch.cuda.is_available()
    if on_gpu and cuda_events:
        return "cuda-event"
    return "perf_counter (cuda synchronised)" if on_gpu else "perf_counter"


class Stopwatch:
    """Times a region. On CUDA it records events on the current stream; elsewhere it reads
    ``time.perf_counter`` (CPU work is synchronous)."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.elapsed_s: float = float("nan")

    def __enter__(self) -> Stopwatch:
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cuda:
            self._end.record()
            self._end.synchronize()
            self.elapsed_s = self._start.elapsed_time(self._end) / 1e3
        else:
            self.elapsed_s = time.perf_counter() - self._t0


@dataclass(frozen=True)
class Stats:
    """Summary of repeated samples."""

    median: float
    p10: float
    p90: float
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if not samples:
            raise ValueError("no samples to summarise")
        xs = sorted(float(s) for s in samples)
        return cls(
            median=statistics.median(xs),
            p10=_quantile(xs, 0.10),
            p90=_quantile(xs, 0.90),
            mean=statistics.fmean(xs),
            std=statistics.pstdev(xs) if len(xs) > 1 else 0.0,
            n=len(xs),
        )

    def metric(
        self, unit: str, meter: str, *, scale: float = 1.0, higher_is_better: bool | None = False
    ) -> Metric:
        return Metric(
            value=self.median * scale,
            unit=unit,
            meter=meter,
            n=self.n,
            p10=self.p10 * scale,
            p90=self.p90 * scale,
            std=self.std * scale,
            higher_is_better=higher_is_better,
        )


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_xs) == 1:
        return sorted_xs[0]
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def time_calls(
    fn: Callable[[], Any],
    *,
    device: torch.device | str | None = None,
    warmup: int = 2,
    repeats: int = 10,
    min_total_s: float = 0.0,
) -> Stats:
    """Median-of-repeats latency of ``fn``; the first ``warmup`` calls are not measured.

    ``min_total_s`` keeps sampling past ``repeats`` until that much time was measured, so
    very fast calls still get a stable median.
    """
    (stats,) = time_interleaved(
        [fn], device=device, warmup=warmup, repeats=repeats, min_total_s=min_total_s
    )
    return stats


def time_interleaved(
    fns: Sequence[Callable[[], Any]],
    *,
    device: torch.device | str | None = None,
    warmup: int = 2,
    repeats: int = 10,
    min_total_s: float = 0.0,
) -> list[Stats]:
    """``time_calls`` for several functions at once, one call of each in turn.

    A before/after comparison timed in two blocks minutes apart sees two different
    machines when a neighbour's load comes and goes; alternating the calls gives both the
    same conditions, so their ratio is about the functions, not about the moment."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    synchronize(device)
    samples: list[list[float]] = [[] for _ in fns]
    total = 0.0
    while len(samples[0]) < repeats or total < min_total_s * len(fns):
        for fn, out in zip(fns, samples, strict=True):
            with Stopwatch(device) as sw:
                fn()
            out.append(sw.elapsed_s)
            total += sw.elapsed_s
        if len(samples[0]) >= 10 * max(repeats, 1) and total >= min_total_s * len(fns) / 2:
            break
    return [Stats.of(s) for s in samples]
