"""Trained reference models (and other costly results), computed once per configuration
and shared on disk.

Parallel runs (several processes, or several Ray workers on one node) ask for the same
reference model at once: a file lock makes one of them train it and the others wait and
load it; the write is atomic, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock

from benchmark.fileio import atomic_write

CACHE_ENV = "METHODBENCH_CACHE"


def cache_dir() -> Path:
    """Where fetched assets, trained tokenizers and trained reference models are kept
    (``$METHODBENCH_CACHE``, else ``$XDG_CACHE_HOME/methodbench``): the host's, because
    the cache below and every workload plugin share it."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "methodbench"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def source_fingerprint(*objects: object) -> str:
    """A hash of every source file in the folders of the modules that define ``objects``
    (functions, classes, instances or modules): a result cached under it is recomputed
    whenever the code that produced it changes."""
    digest = hashlib.sha256()
    folders: set[Path] = set()
    for obj in objects:
        module = obj if inspect.ismodule(obj) else inspect.getmodule(obj)
        if module is None and not inspect.isclass(obj):
            module = inspect.getmodule(type(obj))
        file = getattr(module, "__file__", None)
        if file:
            folders.add(Path(file).parent)
    for folder in sorted(folders):
        for source in sorted(folder.glob("*.py")):
            digest.update(source.name.encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def cached_json(name: str, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """``compute()``'s JSON result cached as ``results/<name>.json`` (with a lock, so
    parallel runs compute it once); the flag says whether it came from the cache."""
    path = cache_dir() / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            try:
                return json.loads(path.read_text()), True
            except (OSError, ValueError):  # unreadable or corrupt: computed again below
                pass
        value = compute()
        atomic_write(path, lambda fh: fh.write(json.dumps(value).encode()))
        return value, False
