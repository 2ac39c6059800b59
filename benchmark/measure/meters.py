"""One context manager per measured phase, bundling every memory and energy meter.

Protocols write ``with phase("train", device) as p: ...`` and then ``p.metrics()``; the
names are prefixed with the phase so a record can hold several phases. ``peak_memory``
is the phase's headline figure: the CUDA allocator peak on a GPU, elsewhere the host RSS
peak above the RSS at the phase's start (``host_rss_growth``; the absolute
``host_rss_peak`` is kept beside it, but its interpreter and torch baseline of hundreds
of MiB hides what the phase itself used). The metric names its meter. For an optimizer's
headline the protocol uses tensor-level accounting instead (``tensor_memory``), the same
definition on every device.

The meters must not slow down the steps a protocol times inside the phase: the host peak
is the kernel's reset high-water mark on Linux (read at the start and the end, nothing in
between; elsewhere a thread samples RSS every 0.25 s, ``memory.py``), CUDA peaks are the
allocator's counters, and NVML is sampled every 0.2 s (energy from its counter).
Entering and leaving a phase costs a few milliseconds (a listing of child processes at
each end); ``benchmarks/overhead.py`` measures what the phase costs the steps it times.
Phases may nest: an inner phase's reset of the high-water mark keeps the outer one's peak.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch

from benchmark.measure.memory import CudaPeak, HostRss
from benchmark.measure.nvml import NvmlSampler
from benchmark.records import Metric


class Phase:
    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.device = device
        self.rss = HostRss()
        self.cuda = CudaPeak(device)
        self.nvml = NvmlSampler(device)
        self._stack = ExitStack()

    def __enter__(self) -> Phase:
        self._stack.enter_context(self.rss)
        self._stack.enter_context(self.cuda)
        self._stack.enter_context(self.nvml)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def metrics(self) -> dict[str, Metric]:
        """Figures for this phase, keyed ``<phase>_<figure>``."""
        out: dict[str, Metric] = {
            "host_rss_peak": self.rss.metric(),
            "host_rss_growth": self.rss.growth_metric(),
            **self.cuda.metrics(),
            **self.nvml.metrics(),
        }
        headline = out["cuda_peak_allocated"] if self.cuda.available else out["host_rss_growth"]
        out["peak_memory"] = headline
        return {f"{self.name}_{k}": v for k, v in out.items()}


def phase(name: str, device: torch.device | str) -> Phase:
    return Phase(name, torch.device(device))
