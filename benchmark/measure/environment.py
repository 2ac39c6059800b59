"""What every record says about where it ran, so results from two machines are never
confused: versions, device, git commit. Cheap, and never raises."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from functools import lru_cache
from typing import Any

import psutil
import torch

PACKAGES = (
    "methodbench",
    "torch",
    "transformers",
    "datasets",
    "tokenizers",
    "numpy",
    "pandas",
    "pydantic",
    "pluggy",
    "lm_eval",
)


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return platform.processor() or platform.machine()
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def capture_environment(device: torch.device | str) -> dict[str, Any]:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(dev)
    else:
        device_name = cpu_model()
    status = _git("status", "--porcelain")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": psutil.virtual_memory().total,
        "device": str(dev),
        "device_name": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "packages": {name: _version(name) for name in PACKAGES},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "env": {k: v for k, v in os.environ.items() if k.startswith("METHODBENCH_")},
    }
