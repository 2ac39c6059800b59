"""Trained reference models, computed once per configuration and shared on disk.

Parallel runs (several processes, or several Ray workers on one node) ask for the same
reference model at once: a file lock makes one of them train it and the others wait and
load it; the write is atomic, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import torch
from filelock import FileLock

from benchmark.assets import cache_dir
from benchmark.fileio import atomic_write


def config_key(*parts: object) -> str:
    """A short stable hash of a configuration (JSON of its parts)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_state(
    name: str, train: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """The state dict cached as ``models/<name>.pt``, trained by ``train()`` if absent."""
    path = cache_dir() / "models" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
        state = train()
        atomic_write(path, lambda fh: torch.save(state, fh))
        return state
