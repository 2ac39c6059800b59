"""Which source code decides a run's outcome, as one fingerprint in the run's id.

Without it a resumed suite reuses records that older code produced (the optimizer
leaderboard once mixed nine commits), and nothing tells a reader. The fingerprint hashes
the source of the modules a run executes: the runner (seeding, workload construction),
the method's plugin module, the workload's, the attacks', the kind's protocol, and every
module of their own top-level package or of the host they import, transitively (found by
reading ``import`` statements; locating a module may import its parent packages). The
host's plumbing (discovery, suites, the store, reports, executors' process handling, the
kind table that reports read) is left out: changing how results are written or shown
does not change what a run measures, so it must not re-run every suite.

Not covered: data assets, and models or tokenizers a workload trained once and cached
(keyed by their configuration, not by the code that trained them): after changing how a
reference model is trained, clear its cache (``METHODBENCH_CACHE``).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmark.host import Registry
    from benchmark.records import RunSpec

FINGERPRINT_LENGTH = 12
# Host modules that move and show results but do not take part in a run's measurement.
PLUMBING = (
    "benchmark.kinds",
    "benchmark.measure.environment",
    "benchmark.cli",
    "benchmark.host",
    "benchmark.hookspecs",
    "benchmark.suite",
    "benchmark.store",
    "benchmark.records",
    "benchmark.fileio",
    "benchmark.provenance",
    "benchmark.report",
    "benchmark.executors",
)


HOST = "benchmark"
RUNNER = "benchmark.executors.runner"


def _is_plumbing(name: str) -> bool:
    # The host package's own __init__ holds the hook marker and the version string.
    return name == HOST or any(name == p or name.startswith(p + ".") for p in PLUMBING)


@cache
def _source_path(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imported(module: str, path: Path) -> set[str]:
    """Absolute names of the modules ``module``'s source imports (``from a import b`` also
    names ``a.b``, which is a module when b is a submodule)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def source_closure(root: str) -> tuple[str, ...]:
    """``root`` and the modules of its own top-level package and of the host that it
    imports, transitively. Read afresh on every call: a cached closure would miss an edit
    made since."""
    tops = {root.split(".")[0], HOST}
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen or (name != root and _is_plumbing(name)):
            continue
        path = _source_path(name)
        if path is None:
            continue
        seen.add(name)
        for dep in _imported(name, path):
            if dep.split(".")[0] in tops and dep not in seen:
                todo.append(dep)
    return tuple(sorted(seen))


# Digests taken when a process imported the code (the fork server, before it forks the
# runs): a run then records the source it executes, not what the disk holds by the time
# it starts.
_FROZEN: dict[str, str] = {}


def _module_digest(module: str) -> str:
    if module in _FROZEN:
        return _FROZEN[module]
    path = _source_path(module)
    data = path.read_bytes() if path is not None else b""
    return hashlib.sha256(data).hexdigest()


def freeze_digests(modules: Iterable[str]) -> None:
    """Remember the digests of ``modules`` as they are now (they were just imported)."""
    for module in modules:
        _FROZEN[module] = _module_digest(module)


def fingerprint_modules(roots: Iterable[str], declared: str = "") -> tuple[str, tuple[str, ...]]:
    """(hash, modules) over the source closure of every root module, and over what the
    plugins declared for the run (``declared``: the defaults its hyperparameters and
    options fall back on, which live in a registration, not in the code that runs)."""
    modules = sorted({m for root in roots for m in source_closure(root)})
    h = hashlib.sha256()
    for m in modules:
        h.update(f"{m}\0{_module_digest(m)}\n".encode())
    if declared:
        h.update(f"declared\0{declared}\n".encode())
    return h.hexdigest()[:FINGERPRINT_LENGTH], tuple(modules)


def run_roots(spec: RunSpec, registry: Registry) -> list[str]:
    """The modules whose code a run executes directly."""
    roots = [RUNNER, registry.kind(spec.kind).run_module]
    roots.append(registry.method(spec.kind, spec.method).module or "")
    roots.append(registry.workload(spec.kind, spec.workload).module or "")
    roots += [registry.attack(a).module or "" for a in spec.attacks]
    return [r for r in roots if r]


def declared_defaults(spec: RunSpec, registry: Registry) -> str:
    """The registered defaults of the run's method, workload and attacks, as canonical
    JSON: a run that leaves a hyperparameter at its default runs with whatever the
    registration says, so changing a default must change the run's id."""
    declared = {
        # The protocol's option defaults live with its kind (``KindDef.options``), in
        # ``benchmark.kinds``, which is plumbing: hashed here instead.
        "protocol": registry.kind(spec.kind).option_defaults,
        "method": dict(registry.method(spec.kind, spec.method).defaults),
        "workload": dict(registry.workload(spec.kind, spec.workload).defaults),
        "attacks": {a: dict(registry.attack(a).defaults) for a in spec.attacks},
    }
    return json.dumps(declared, sort_keys=True, default=repr)


def run_fingerprint(spec: RunSpec, registry: Registry) -> tuple[str, tuple[str, ...]]:
    """(fingerprint, modules) of one run: its code and its plugins' declared defaults."""
    return fingerprint_modules(run_roots(spec, registry), declared_defaults(spec, registry))


def code_fingerprint(spec: RunSpec, registry: Registry) -> str:
    return run_fingerprint(spec, registry)[0]


def with_code(specs: list[RunSpec], registry: Registry) -> list[RunSpec]:
    """The specs with their code fingerprint filled in (and so their final ids); runs with
    the same modules and defaults share one computation."""
    memo: dict[tuple[tuple[str, ...], str], str] = {}
    out = []
    for s in specs:
        key = (tuple(run_roots(s, registry)), declared_defaults(s, registry))
        if key not in memo:
            memo[key] = fingerprint_modules(*key)[0]
        out.append(s.model_copy(update={"code": memo[key]}))
    return out
