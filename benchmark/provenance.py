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
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def _module_digest(module: str) -> str:
    path = _source_path(module)
    data = path.read_bytes() if path is not None else b""
    return hashlib.sha256(data).hexdigest()


def fingerprint_modules(roots: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """(hash, modules) over the source closure of every root module."""
    modules = sorted({m for root in roots for m in source_closure(root)})
    h = hashlib.sha256()
    for m in modules:
        h.update(f"{m}\0{_module_digest(m)}\n".encode())
    return h.hexdigest()[:FINGERPRINT_LENGTH], tuple(modules)


def _module_of(factory: Any) -> str | None:
    return getattr(factory, "__module__", None)


def run_roots(spec: RunSpec, registry: Registry) -> list[str]:
    """The modules whose code a run executes directly."""
    roots = [RUNNER, f"benchmark.protocols.{spec.kind}"]
    roots.append(_module_of(registry.method(spec.kind, spec.method).factory) or "")
    roots.append(_module_of(registry.workload(spec.kind, spec.workload).factory) or "")
    roots += [_module_of(registry.attack(a).factory) or "" for a in spec.attacks]
    return [r for r in roots if r]


def code_fingerprint(spec: RunSpec, registry: Registry) -> str:
    return fingerprint_modules(run_roots(spec, registry))[0]


def with_code(specs: list[RunSpec], registry: Registry) -> list[RunSpec]:
    """The specs with their code fingerprint filled in (and so their final ids); runs with
    the same modules share one computation."""
    memo: dict[tuple[str, ...], str] = {}
    out = []
    for s in specs:
        roots = tuple(run_roots(s, registry))
        if roots not in memo:
            memo[roots] = fingerprint_modules(roots)[0]
        out.append(s.model_copy(update={"code": memo[roots]}))
    return out
