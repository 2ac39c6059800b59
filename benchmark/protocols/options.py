"""Each kind's protocol options with their defaults, in a module that imports nothing.

A suite's ``protocol:`` block is checked against these before anything runs; keeping them
apart from the protocols (torch, scipy, the meters) keeps ``bench validate`` fast.
"""

from __future__ import annotations

from typing import Any

PROTOCOL_OPTIONS: dict[str, dict[str, Any]] = {
    "optimizer": {
        # A loss above this multiple of the first step's loss is a divergence; None
        # disables the check (a non-finite loss always is one). Ignored when the first
        # loss is <= 0.
        "divergence_factor": 10.0,
        # Steps between validation evaluations; None: 2% of the step budget (at least 1).
        "eval_every": None,
    },
    "security_split": {
        "trusted_slowdown": 10.0,
        "link_latency_s": 1e-4,
        "link_bandwidth_Bps": 1e9,
        # Overrides every attack's fine-tuning steps (None: each attack's own); for
        # workloads whose steps are too dear on a CPU. The record's protocol says it was
        # used.
        "attack_steps": None,
    },
}
