"""What every record says about where it ran, so results from two machines are never
confused: versions, device, git commit. Cheap, and never raises."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import subprocess
from functools import cache, lru_cache
from pathlib import Path
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


@cache
def _version(name: str) -> str | None:
    """Installed versions do not change under a running process (and the fork server
    reads them once for all its runs)."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


# Git is asked about the checkout the code was imported from, not the directory the
# command ran in: run from /tmp or from inside another repository, the record would
# otherwise name no commit, or someone else's. A non-editable install has no checkout,
# and its records say so (commit null).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str, strip: bool = True) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=2, cwd=SOURCE_ROOT
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() if strip else out.stdout


CONCURRENT_RUNS_VAR = "METHODBENCH_CONCURRENT_RUNS"
PINNED_VAR = "METHODBENCH_PINNED"
# How the run's process was started (forkserver, subprocess; unset: in the caller's own
# process): a forked run and a fresh interpreter differ in what is already in memory.
LAUNCHER_VAR = "METHODBENCH_LAUNCHER"
REGIME_FIELDS = ("device_name", "torch_threads", "concurrent_runs", "pinned", "launcher")


def regime(environment: dict[str, Any]) -> dict[str, Any] | None:
    """The timing regime a record was taken under, or None for a record that predates it."""
    value = environment.get("regime")
    return value if isinstance(value, dict) else None


def regime_key(environment: dict[str, Any]) -> tuple[Any, ...] | None:
    """What must be equal for two timings to be compared: the device (CPU model or GPU
    name), the run's torch threads, how many runs shared the machine, whether each was
    pinned to its own cores, and how its process was started. None when the record does
    not say (then it compares with nothing)."""
    r = regime(environment)
    if r is None:
        return None
    # Hashable whatever a (hand-edited, foreign) record holds there.
    return tuple(_hashable(r.get(k)) for k in REGIME_FIELDS)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def describe_regime(environment: dict[str, Any]) -> str:
    """The regime in words, from the fields of ``regime_key`` only, so runs that compare
    read alike: never the cores a pinned run had (runs pinned to different cores share a
    regime); reports add how many cores each had."""
    r = regime(environment)
    if r is None:
        return "unrecorded regime"
    pinned = ", pinned" if r.get("pinned") else ""
    jobs = r.get("concurrent_runs")
    concurrency = (
        "an unknown number of concurrent runs" if jobs is None else f"{jobs} concurrent run(s)"
    )
    threads = f"{r.get('torch_threads')} torch thread(s)"
    launcher = f", {r['launcher']}" if r.get("launcher") else ""
    return f"{r.get('device_name')}, {threads}, {concurrency}{pinned}{launcher}"


def _affinity() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def capture_regime(device_name: str) -> dict[str, Any]:
    """The conditions a timing depends on. The executor that launched the run says how
    many runs shared the machine and whether this one was pinned; a run started any other
    way (inline, a test) ran alone and unpinned."""
    raw = os.environ.get(CONCURRENT_RUNS_VAR, "1")
    # The executor's job slots (how many runs may overlap; a suite's last runs may in fact
    # run alone), or None where the executor cannot know (Ray packs tasks on a node).
    concurrent: int | None = int(raw) if raw.isdigit() and int(raw) > 0 else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),
        "concurrent_runs": concurrent,
        "pinned": os.environ.get(PINNED_VAR) == "1",
        "launcher": os.environ.get(LAUNCHER_VAR) or None,
        "cpu_affinity": _affinity(),
        # Not part of the comparison key (it moves): machine load when the run started,
        # so a reader can see a run that shared the machine with something else.
        "load_average_1m": load,
    }


def git_dirty(status: str | None) -> bool | None:
    """Whether the code differs from the commit: a tracked file changed, or an untracked
    Python file sits outside the results and tests (a new plugin module not yet added
    would otherwise run under "one clean commit"). Untracked data and the results
    directory do not count: a suite writes its own records there while it runs, and every
    record would otherwise call its own tree dirty."""
    if status is None:
        return None
    for line in status.splitlines():
        if len(line) < 4:
            continue
        paths = [p.strip('"') for p in line[3:].split(" -> ")]
        if line.startswith("??"):
            if any(p.endswith(".py") and not p.startswith(("results/", "tests/")) for p in paths):
                return True
            continue
        if all(p.startswith("results/") for p in paths):
            continue
        return True
    return False


def capture_environment(device: torch.device | str) -> dict[str, Any]:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(dev)
    else:
        device_name = cpu_model()
    status = _git("status", "--porcelain", "--untracked-files=all", strip=False)
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
        "git_dirty": git_dirty(status),
        "regime": capture_regime(device_name),
        "env": {k: v for k, v in os.environ.items() if k.startswith("METHODBENCH_")},
    }
