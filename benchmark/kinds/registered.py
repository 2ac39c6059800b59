"""The process's table of kinds: the built-in four and whatever plugins registered.

A ``host.Registry`` registers every kind its plugins offer here (the built-ins through the
same hook, ``methodbench_register_kinds``, as any third party). Reports, comparisons and
histories read the table. The built-ins are always in it; a plugin's kind is there only
once a registry has loaded that plugin, so ``bench leaderboard``, ``compare`` and
``history`` (and ``report.write_reports``) discover plugins before reading records, and
name any kind still unknown (``unregistered``, ``unregistered_note``) instead of ranking
its records by a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping

from benchmark import hookimpl
from benchmark.kinds.definition import KindDef, KindInfo

# The modules that each define one built-in kind as ``KIND``.
BUILTIN_KINDS = (
    "benchmark.kinds.optimizer",
    "benchmark.kinds.compressor",
    "benchmark.kinds.security_split",
    "benchmark.kinds.detector",
)

_TABLE: dict[str, KindDef] = {}
_RANKING_OVERRIDES: dict[str, KindInfo] = {}
_BUILTINS_LOADED = False


class KindConflict(ValueError):
    """A second, different definition under a registered kind's name."""


@hookimpl
def methodbench_register_kinds(register: Callable[[KindDef], None]) -> None:
    """The built-in kinds, registered the way a plugin registers one."""
    import importlib

    for module in BUILTIN_KINDS:
        register(importlib.import_module(module).KIND)


def register_kind(kind: KindDef) -> None:
    """Add ``kind`` to the table (again registering the same object is a no-op)."""
    if not isinstance(kind, KindDef):
        raise TypeError(f"register() takes a KindDef, got {type(kind).__name__}")
    _ensure_builtins()
    held = _TABLE.get(kind.name)
    if held is not None and held is not kind:
        raise KindConflict(f"kind {kind.name!r} is already defined by another module")
    _TABLE[kind.name] = kind


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        methodbench_register_kinds(lambda k: _TABLE.setdefault(k.name, k))


def registered_kinds() -> dict[str, KindDef]:
    """Every kind known in this process, by name (built-ins first)."""
    _ensure_builtins()
    return dict(_TABLE)


def get_kind(name: str) -> KindDef | None:
    _ensure_builtins()
    return _TABLE.get(name)


class _Rankings(MutableMapping[str, KindInfo]):
    """``KIND_INFO``: each registered kind's ranking, read live from the table. Setting an
    entry replaces that kind's ranking (tests do, through ``monkeypatch.setitem``)."""

    def __getitem__(self, name: str) -> KindInfo:
        kind = get_kind(name)
        if kind is None:
            raise KeyError(name)
        return _RANKING_OVERRIDES.get(name, kind.ranking)

    def __setitem__(self, name: str, info: KindInfo) -> None:
        if get_kind(name) is None:
            raise KeyError(f"no kind {name!r} to rank")
        _RANKING_OVERRIDES[name] = info

    def __delitem__(self, name: str) -> None:
        raise TypeError("a kind's ranking can be replaced, not removed")

    def __iter__(self) -> Iterator[str]:
        return iter(registered_kinds())

    def __len__(self) -> int:
        return len(registered_kinds())


KIND_INFO: MutableMapping[str, KindInfo] = _Rankings()


def unregistered(kinds: Iterable[str]) -> list[str]:
    """The names among ``kinds`` (those of a results directory's records) that no kind in
    this process defines, sorted: their records cannot be ranked, judged or tracked."""
    return sorted({k for k in kinds if get_kind(k) is None})


def unregistered_note(kind: str) -> str:
    """The one line every report says about records of a kind it does not know."""
    return (
        f"kind {kind!r} is not registered in this process, so its ranking, columns and "
        "headline metric are unknown: its records are not ranked, judged or tracked; load "
        "its plugin with --plugin MODULE"
    )
