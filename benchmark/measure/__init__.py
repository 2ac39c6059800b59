"""Meters, each honest about what it cannot measure.

timing: synchronised stopwatches and median/p10/p90 statistics with warm-up excluded.
memory: CUDA allocator peaks per phase and a host RSS sampler (peak and growth).
tensor_memory: live tensor bytes by category (params, grads, state, activations) over a
train step, the same definition on every device.
nvml: device/process VRAM, power and energy sampled on a thread.
meters: one ``phase`` context bundling the memory and energy meters.
flops: torch's FLOP counter.
hybrid: a security split's hybrid forward measured per side (time, FLOPs, crossings).
environment: what every record says about where it ran, and its timing regime.
"""

from benchmark.measure.environment import capture_environment
from benchmark.measure.flops import count_flops
from benchmark.measure.meters import phase
from benchmark.measure.timing import Stats, Stopwatch, synchronize, time_calls

__all__ = [
    "Stats",
    "Stopwatch",
    "capture_environment",
    "count_flops",
    "phase",
    "synchronize",
    "time_calls",
]
