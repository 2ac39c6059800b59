"""Hybrid inference measured per side: which side runs what, for how long, with how many
FLOPs, and what crosses between them.

A security split's cost is the trusted side's share of the work, so every meter here
charges time and FLOPs to the innermost running module's side (``SideMeter``) and counts
crossings by the same rules an attacker's transcript follows (``crossings``). The meters
live here, apart from the protocol, so any code that evaluates a split (tests, scripts,
other protocols) measures it the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.kinds.security_split import Offline, SplitModel
from benchmark.measure.attribution import SideMeter
from benchmark.measure.crossings import CrossingRecorder
from benchmark.measure.timing import synchronize


class HybridModule(nn.Module):
    """Lets workload code that expects an nn.Module evaluate the hybrid forward."""

    def __init__(self, split: SplitModel) -> None:
        super().__init__()
        self._split = [split]  # not a submodule: its parts are registered below
        self.trusted = split.trusted
        self.untrusted = split.untrusted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._split[0].forward(x)


@dataclass
class Trace:
    trusted_s: float = 0.0
    total_s: float = 0.0
    crossings: int = 0
    crossing_bytes: int = 0
    offline_s: float = 0.0
    untrusted_s: float = 0.0


def sides_of(split: SplitModel) -> dict[str, nn.Module]:
    """The split's parts as measured sides; ``offline`` only when the split has one."""
    sides = {"trusted": split.trusted, "untrusted": split.untrusted}
    offline = split.offline if isinstance(split, Offline) else None
    if isinstance(offline, nn.Module):
        sides["offline"] = offline
    return sides


def trace_hybrid(split: SplitModel, x: torch.Tensor, device: torch.device) -> Trace:
    """Time spent on each side, and the crossings between sides, for one forward.

    Crossings follow ``benchmark.measure.crossings`` (the rules an attacker's transcript
    follows too; here without copying tensors). Time is charged to the innermost running
    module's side; time outside every side's modules counts as untrusted (the host
    application).
    """
    sides = sides_of(split)

    def clock() -> float:
        synchronize(device)
        return time.perf_counter()

    meter = SideMeter(sides, clock)
    with (
        torch.inference_mode(),
        CrossingRecorder(sides, keep_tensors=False) as recorder,
        meter.installed(),
    ):
        recorder.finish(split.forward(x))
    t = meter.totals
    return Trace(
        trusted_s=t["trusted"],
        total_s=t["total"],
        crossings=recorder.crossings,
        crossing_bytes=recorder.sent_bytes + recorder.received_bytes,
        offline_s=t.get("offline", 0.0),
        untrusted_s=t["untrusted"] + t["unattributed"],
    )


def count_flops_by_side(split: SplitModel, fn: Any) -> dict[str, int]:
    """FLOPs of ``fn()`` per side (innermost running module), plus ``"total"``."""
    with FlopCounterMode(display=False) as counter:
        meter = SideMeter(sides_of(split), lambda: float(counter.get_total_flops()))
        with meter.installed():
            fn()
    return {k: int(v) for k, v in meter.totals.items()}


def median_trace(
    split: SplitModel, x: torch.Tensor, device: torch.device, repeats: int = 15
) -> Trace:
    for _ in range(3):
        trace_hybrid(split, x, device)
    traces = sorted(
        (trace_hybrid(split, x, device) for _ in range(repeats)), key=lambda t: t.total_s
    )
    return traces[len(traces) // 2]
