"""Peak memory per phase: CUDA allocator peaks (reset at the start of the phase) and the
host process's resident-set peak, both as it is and as growth above the phase's start
(the absolute figure carries the interpreter's and torch's baseline, hundreds of MiB on a
CPU, which says nothing about the phase).

The host peak is the kernel's own high-water mark where it can be reset (Linux): at the
phase's start ``5`` is written to ``/proc/self/clear_refs``, which sets ``VmHWM`` to the
current RSS, and at the end ``VmHWM`` is read from ``/proc/self/status``. That is exact
(every page the kernel ever counted, however short the spike) and costs two small file
accesses per phase, nothing during it: no thread polls while the phase's steps are timed.
(Value 5 resets the high-water mark only; values 1-4 would clear the pages'
referenced/soft-dirty bits, 5 returns before touching any page.)

Where that is unavailable (not Linux, ``clear_refs`` not writable, or the reset had no
effect: probed once per process with a 16 MiB spike, and checked again at each phase's
start) a thread samples this process's RSS every 0.25 s instead, and the peak is raised to
``ru_maxrss`` when the process's lifetime peak rose inside the phase; the figure's
``meter`` names which reading it is ("VmHWM ..." or "psutil.rss sampled ...").

Caveats of the kernel reading:

- ``VmHWM`` is the process's, so it covers every thread of it (a loader thread's buffers
  count, as they did for the sampler).
- Resetting it also lowers what ``ru_maxrss``/``VmHWM`` say about the process's lifetime
  afterwards (nothing in this project reads them; a parent reading a worker's
  ``ru_maxrss`` at exit would see the peak since the last phase's start).
- Nested (or overlapping) phases: an inner phase's reset would erase the outer one's peak,
  so every open kernel meter is registered in a module-level list, and before any reset
  the running ``VmHWM`` is folded into every open meter's peak. The outer phase's peak is
  therefore the maximum over its whole span.

Child processes: the kernel figure is this process's alone. Runs rarely spawn children
(the executor runs each run in its own process; the figures are read inside it), so the
children are not polled; at the phase's end the children alive then are listed once
(``psutil``) and their own ``VmHWM`` (their lifetime peaks; RSS where ``VmHWM`` cannot be
read) is added to the peak, and their RSS at the phase's start to its baseline, and the
meter then says so. Children that started and ended inside the phase are not seen.
"""

from __future__ import annotations

import functools
import mmap
import re
import sys
import threading

import psutil
import torch

from benchmark.records import Metric

STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"
KERNEL_METER = "VmHWM (/proc/self/status, reset via clear_refs)"
SAMPLER_INTERVAL_S = 0.25
_PROBE_BYTES = 16 * 2**20
_SLACK = 4 * 2**20  # RSS may move this much between a reset and the next read
_KIB = re.compile(rb"^(VmRSS|VmHWM):\s+(\d+) kB", re.MULTILINE)


def _status(path: str = STATUS) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in bytes from one read of a ``/proc/<pid>/status``; None if absent."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        return None
    found = {k.decode(): int(v) * 1024 for k, v in _KIB.findall(text)}
    if "VmRSS" not in found or "VmHWM" not in found:
        return None
    return found["VmRSS"], found["VmHWM"]


def _reset() -> str | None:
    """Reset this process's ``VmHWM`` to its RSS; the error's words if it could not."""
    try:
        with open(CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError as exc:
        return f"{CLEAR_REFS} not writable: {type(exc).__name__}: {exc}"
    return None


@functools.cache
def kernel_peak_unavailable() -> str | None:
    """Why the kernel's reset high-water mark cannot be used here; None when it can.

    Probed once per process: a 16 MiB spike must raise ``VmHWM`` and a reset must bring it
    back down to the RSS."""
    if not sys.platform.startswith("linux"):
        return f"platform is {sys.platform}: no /proc/self/clear_refs"
    if _status() is None:
        return f"{STATUS} has no VmRSS/VmHWM"
    if (err := _reset()) is not None:
        return err
    page = mmap.PAGESIZE
    buf = mmap.mmap(-1, _PROBE_BYTES)
    for i in range(0, _PROBE_BYTES, page):
        buf[i] = 1  # touch every page, so it is resident
    buf.close()
    before = _status()
    if before is None or before[1] - before[0] < _PROBE_BYTES // 2:
        return f"VmHWM did not record a {_PROBE_BYTES // 2**20} MiB spike"
    if (err := _reset()) is not None:
        return err
    after = _status()
    if after is None or after[1] >= before[1] or after[1] - after[0] > _SLACK:
        return "writing 5 to /proc/self/clear_refs did not reset VmHWM"
    return None


def _children_figures(proc: psutil.Process, *, peak: bool) -> tuple[int, int]:
    """(bytes, count) of the child processes alive now: their ``VmHWM`` (``peak``, where
    readable; their RSS otherwise) or their RSS. One listing, no polling."""
    total = count = 0
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        return 0, 0
    for child in children:
        figures = _status(f"/proc/{child.pid}/status") if peak else None
        if figures is not None:
            total += figures[1]
            count += 1
            continue
        try:
            total += child.memory_info().rss
            count += 1
        except psutil.Error:
            continue
    return total, count


def _ru_maxrss() -> int | None:
    """The process's lifetime peak RSS in bytes (KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value) if sys.platform == "darwin" else int(value) * 1024


class RssSampler:
    """The fallback: this process's RSS (no children) sampled on a thread every
    ``interval_s``, raised at the end to ``ru_maxrss`` when the process's lifetime peak
    rose inside the phase (then that is the phase's exact peak). A spike shorter than the
    interval that stays under an earlier lifetime peak can be missed."""

    def __init__(self, interval_s: float = SAMPLER_INTERVAL_S, reason: str = "") -> None:
        self.interval_s = interval_s
        self.reason = reason  # why the kernel high-water mark was not used
        self.peak_bytes = 0
        self.baseline_bytes = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread: threading.Thread | None = None
        self._maxrss_start: int | None = None
        self.used_maxrss = False

    @property
    def meter(self) -> str:
        how = f"psutil.rss sampled every {self.interval_s:g} s on a thread, this process only"
        if self.used_maxrss:
            how += ", peak from ru_maxrss (it rose inside the phase)"
        return f"{how}; VmHWM not used: {self.reason}" if self.reason else how

    def _rss(self) -> int:
        return self._proc.memory_info().rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.peak_bytes = max(self.peak_bytes, self._rss())
            except psutil.Error:  # the sampler must never take the run down
                return

    def __enter__(self) -> RssSampler:
        self._maxrss_start = _ru_maxrss()
        self.baseline_bytes = self.peak_bytes = self._rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss())
        end = _ru_maxrss()
        if self._maxrss_start is not None and end is not None and end > self._maxrss_start:
            self.used_maxrss = end > self.peak_bytes
            self.peak_bytes = max(self.peak_bytes, end)


_OPEN: list[KernelPeak] = []  # kernel meters whose phase is running, outermost first
_LOCK = threading.Lock()


class KernelPeak:
    """This process's peak RSS inside the phase from the kernel's ``VmHWM``, reset at the
    start (see the module's docstring). ``ok`` is False when the reset had no effect at
    this phase's start; the caller then uses the sampler."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self.baseline_bytes = 0
        self.ok = True
        self.reason = ""

    def __enter__(self) -> KernelPeak:
        with _LOCK:
            before = _status()
            if before is None:
                self.ok, self.reason = False, f"{STATUS} could not be read"
                return self
            for outer in _OPEN:  # the reset below must not lose an open phase's peak
                outer.peak_bytes = max(outer.peak_bytes, before[1])
            err = _reset()
            after = _status()
            if err is not None or after is None:
                self.ok, self.reason = False, err or f"{STATUS} could not be read"
                return self
            if before[1] - before[0] > _SLACK and after[1] >= before[1]:
                self.ok, self.reason = False, "clear_refs did not reset VmHWM at this phase"
                return self
            self.baseline_bytes, self.peak_bytes = after
            _OPEN.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _LOCK:
            end = _status()
            if end is not None:
                self.peak_bytes = max(self.peak_bytes, end[1])
            if self in _OPEN:
                _OPEN.remove(self)


class HostRss:
    """The phase's host RSS peak: the kernel's high-water mark where it works, else the
    sampler; plus the children alive at the end (module docstring)."""

    def __init__(self, *, sampler_interval_s: float = SAMPLER_INTERVAL_S) -> None:
        self.sampler_interval_s = sampler_interval_s
        self.peak_bytes = 0
        self.baseline_bytes = 0
        self.children = 0  # child processes counted at the phase's end
        self._meter: KernelPeak | RssSampler | None = None
        self._proc = psutil.Process()
        self._children_start = 0

    @property
    def source(self) -> KernelPeak | RssSampler | None:
        """The meter in use (after ``__enter__``)."""
        return self._meter

    @property
    def meter(self) -> str:
        base = KERNEL_METER if isinstance(self._meter, KernelPeak) else None
        if base is None:
            base = (
                self._meter.meter
                if isinstance(self._meter, RssSampler)
                else RssSampler(self.sampler_interval_s).meter
            )
        if self.children:
            base += (
                f" + {self.children} child process(es) alive at the phase's end: their VmHWM"
                " (lifetime peaks; RSS where unreadable), their RSS at the start in the baseline"
            )
        return base

    def __enter__(self) -> HostRss:
        self._children_start, _ = _children_figures(self._proc, peak=False)
        reason = kernel_peak_unavailable()
        meter: KernelPeak | RssSampler
        if reason is None:
            kernel = KernelPeak().__enter__()
            if kernel.ok:
                meter = kernel
            else:
                meter = RssSampler(self.sampler_interval_s, kernel.reason).__enter__()
        else:
            meter = RssSampler(self.sampler_interval_s, reason).__enter__()
        self._meter = meter
        self.baseline_bytes = meter.baseline_bytes + self._children_start
        self.peak_bytes = meter.peak_bytes + self._children_start
        return self

    def __exit__(self, *exc: object) -> None:
        if self._meter is None:
            return
        self._meter.__exit__(*exc)
        children, self.children = _children_figures(self._proc, peak=True)
        self.peak_bytes = max(self._meter.peak_bytes + children, self.baseline_bytes)

    def metric(self) -> Metric:
        return Metric(
            value=float(self.peak_bytes), unit="bytes", meter=self.meter, higher_is_better=False
        )

    def growth_metric(self) -> Metric:
        """The peak above the RSS at ``__enter__``."""
        return Metric(
            value=float(self.peak_bytes - self.baseline_bytes),
            unit="bytes",
            meter=f"{self.meter}, peak above the phase's start",
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
