"""Plugin discovery and the registry of methods, workloads and attacks.

Order of discovery: the built-in kinds (``benchmark.kinds``, always), built-ins (every
package under ``plugins`` whose ``__init__`` implements a hook, the built-in workloads
included; their factories are ``module:attribute`` references,
imported when a run needs one), then the ``methodbench`` entry-point group, then modules named
with ``--plugin``. ``METHODBENCH_PLUGINS`` (comma-separated entry-point or distribution
names; empty means none) is an allow-list for entry-point plugins and
``METHODBENCH_DISABLE_PLUGINS`` a deny-list, as ``llm`` does with ``LLM_LOAD_PLUGINS``.

Each plugin's hook implementation is called on its own, and every spec it registers is
checked against its kind's contract, so a plugin that fails to import, raises while
registering, registers a duplicate name or breaks a contract is recorded with its error
and skipped; the others keep working.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
import pkgutil
import re
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from benchmark import PROJECT_NAME, __version__, hookspecs
from benchmark.kinds import (
    AttackSpec,
    ContractError,
    KindDef,
    MethodSpec,
    Spec,
    WorkloadSpec,
    check_kind,
    check_spec,
    register_kind,
)
from benchmark.kinds.registered import KindConflict

ENTRY_POINT_GROUP = "methodbench"
ALLOW_ENV = "METHODBENCH_PLUGINS"
DENY_ENV = "METHODBENCH_DISABLE_PLUGINS"
# ``benchmark.kinds`` registers the four built-in kinds through the kinds hook. It is
# always loaded: ``Registry(builtins=False)`` leaves out the built-in *plugins* (methods,
# workloads, attacks), never the kinds a third-party plugin's methods are of.
KINDS_PACKAGE = "benchmark.kinds"
BUILTIN_PACKAGES = ("plugins",)
# Kinds first: a method or workload must name a kind that is registered.
_REGISTER_HOOKS: dict[str, type] = {
    "methodbench_register_kinds": KindDef,
    "methodbench_register_methods": MethodSpec,
    "methodbench_register_workloads": WorkloadSpec,
    "methodbench_register_attacks": AttackSpec,
}


@dataclass
class PluginInfo:
    """One plugin as ``bench plugins`` shows it."""

    name: str
    source: str  # builtin | entry-point | command-line
    distribution: str | None = None
    version: str | None = None
    registered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


_OBSERVER_HOOKS = ("methodbench_run_finished", "methodbench_run_progress")
_HOOK_NAMES = frozenset({*_REGISTER_HOOKS, *_OBSERVER_HOOKS})


def _name_set(raw: str) -> set[str]:
    return {normalise_name(s.strip()) for s in raw.split(",") if s.strip()}


class UnknownName(LookupError):
    """A suite names a method, workload or attack that no plugin registered."""


def normalise_name(name: str) -> str:
    """A distribution or plugin name as pip compares them (PEP 503): ``rel_ep_dist``,
    ``REL-EP-DIST`` and ``rel.ep.dist`` are one name, so an allow- or deny-list entry
    cannot be dodged by spelling."""
    return re.sub(r"[-_.]+", "-", name).lower()


def suggest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


class Registry:
    """The host: discovers plugins and answers lookups by kind and name."""

    def __init__(
        self, extra_plugins: Sequence[str] = (), *, builtins: bool = True, entry_points: bool = True
    ) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.methods: dict[tuple[str, str], MethodSpec] = {}
        self.workloads: dict[tuple[str, str], WorkloadSpec] = {}
        self.attacks: dict[str, AttackSpec] = {}
        self.kinds: dict[str, KindDef] = {}
        self._owners: dict[tuple[str, str], str] = {}
        self.extra_plugins = tuple(extra_plugins)
        self._load_builtin(KINDS_PACKAGE)
        if builtins:
            self._load_builtins()
        if entry_points:
            self._load_entry_points()
        for module_path in self.extra_plugins:
            self._load_module(module_path, source="command-line")
        self._collect()

    # ------------------------------------------------------------------ discovery

    def _load_builtins(self) -> None:
        # Packages only: a built-in package declares its methods in its __init__ with
        # lazy ``module:attribute`` factories, so discovery imports no implementation.
        for package_name in BUILTIN_PACKAGES:
            package = importlib.import_module(package_name)
            names = [package_name] + [
                m.name
                for m in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")
                if m.ispkg
            ]
            for name in names:
                self._load_builtin(name)

    def _load_builtin(self, name: str) -> None:
        self._load_module(
            name,
            source="builtin",
            distribution=PROJECT_NAME,
            version=__version__,
            only_if_hooks=True,
        )

    def _load_entry_points(self) -> None:
        allow_raw = os.environ.get(ALLOW_ENV)
        allow = None if allow_raw is None else _name_set(allow_raw)
        deny = _name_set(os.environ.get(DENY_ENV, ""))
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist_name = ep.dist.metadata["Name"] if ep.dist is not None else None
            names = {normalise_name(n) for n in (ep.name, dist_name) if n}
            if (allow is not None and not (names & allow)) or (names & deny):
                continue
            # Two distributions may both name their entry point "plugin": each keeps its
            # own row (and its own errors) instead of the second overwriting the first.
            key = ep.name if ep.name not in self.plugins else f"{ep.name} ({dist_name})"
            info = PluginInfo(
                name=key,
                source="entry-point",
                distribution=dist_name,
                version=ep.dist.version if ep.dist is not None else None,
            )
            self.plugins[info.name] = info
            try:
                module = ep.load()
            except (Exception, SystemExit) as exc:  # a plugin calling sys.exit must not stop bench
                info.errors.append(f"import failed: {_describe(exc)}")
                continue
            self._register_module(module, info)

    def _load_module(
        self,
        module_path: str,
        *,
        source: str,
        distribution: str | None = None,
        version: str | None = None,
        only_if_hooks: bool = False,
    ) -> None:
        info = PluginInfo(
            name=module_path, source=source, distribution=distribution, version=version
        )
        try:
            module = importlib.import_module(module_path)
        except (Exception, SystemExit) as exc:
            info.errors.append(f"import failed: {_describe(exc)}")
            self.plugins[info.name] = info
            return
        if self.pm.is_registered(module):
            return  # named with --plugin but already loaded (a built-in, an entry point)
        if only_if_hooks and not any(
            hasattr(module, h) for h in (*_REGISTER_HOOKS, *_OBSERVER_HOOKS)
        ):
            return
        if distribution is None:
            info.distribution, info.version = _distribution_of(module)
        self.plugins[info.name] = info
        self._register_module(module, info)

    def _register_module(self, module: ModuleType | Any, info: PluginInfo) -> None:
        info.errors += self._hook_mistakes(module)
        try:
            self.pm.register(module, name=info.name)
        except Exception as exc:  # pluggy validates hook names and signatures
            info.errors.append(f"rejected by the plugin manager: {_describe(exc)}")
            return
        if not self.pm.get_hookcallers(module) and not info.errors:
            info.errors.append(
                "implements no methodbench hook: it registers nothing (hooks are "
                f"functions named {', '.join(sorted(_HOOK_NAMES))} marked @hookimpl)"
            )

    def _hook_mistakes(self, module: ModuleType | Any) -> list[str]:
        """A misspelt hook name or a hook without ``@hookimpl`` would otherwise leave the
        plugin listed as ok with nothing registered."""
        mistakes = []
        for attr in dir(module):
            if not attr.startswith(f"{PROJECT_NAME}_"):
                continue
            if not callable(getattr(module, attr, None)):
                continue
            if attr not in _HOOK_NAMES:
                mistakes.append(
                    f"{attr} is not a methodbench hook{suggest(attr, _HOOK_NAMES)}; "
                    f"hooks: {', '.join(sorted(_HOOK_NAMES))}"
                )
            elif self.pm.parse_hookimpl_opts(module, attr) is None:
                mistakes.append(
                    f"{attr} lacks the @hookimpl marker (from benchmark import hookimpl), "
                    "so it is never called"
                )
        return mistakes

    # ------------------------------------------------------------------ registration

    def _collect(self) -> None:
        for hook_name, expected in _REGISTER_HOOKS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                info = self.plugins[impl.plugin_name]
                try:
                    impl.function(
                        register=lambda spec, _i=info, _e=expected: self._add(spec, _i, _e)
                    )
                except (Exception, SystemExit) as exc:
                    info.errors.append(f"{hook_name} raised: {_describe(exc)}")

    def _add_kind(self, kind: KindDef, info: PluginInfo) -> None:
        check_kind(kind)
        if kind.name in self.kinds:
            owner = self._owners.get(("kind", kind.name), "another plugin")
            raise ContractError(f"duplicate kind {kind.name!r}: already registered by {owner}")
        try:
            register_kind(kind)  # the process's table, which reports read
        except KindConflict as exc:
            raise ContractError(str(exc)) from None
        self.kinds[kind.name] = kind
        self._owners[("kind", kind.name)] = info.name
        info.registered.append(f"kind {kind.name}")

    def _add(self, spec: Spec | KindDef, info: PluginInfo, expected: type) -> None:
        try:
            if not isinstance(spec, expected):
                raise ContractError(
                    f"this hook registers {expected.__name__}s, got {type(spec).__name__}"
                )
            if isinstance(spec, KindDef):
                self._add_kind(spec, info)
                return
            check_spec(spec, self.kinds)
            table: dict[Any, Any]
            key: Any
            if isinstance(spec, AttackSpec):
                table, key = self.attacks, spec.name
            elif isinstance(spec, MethodSpec):
                table, key = self.methods, spec.key
            else:
                table, key = self.workloads, spec.key
            if key in table:
                owner = self._owner(spec)
                raise ContractError(
                    f"duplicate {spec.kind} {spec.name!r}: already registered by {owner}"
                )
            table[key] = spec
            self._owners[(spec.kind, spec.name)] = info.name
            info.registered.append(_label(spec))
        except ContractError as exc:
            info.errors.append(f"skipped {getattr(spec, 'name', spec)!r}: {exc}")

    def _owner(self, spec: Spec) -> str:
        return self._owners.get((spec.kind, spec.name), "another plugin")

    def owner_of(self, kind: str, name: str) -> PluginInfo | None:
        plugin = self._owners.get((kind, name))
        return None if plugin is None else self.plugins.get(plugin)

    # ------------------------------------------------------------------ lookups

    def kind(self, name: str) -> KindDef:
        try:
            return self.kinds[name]
        except KeyError:
            raise UnknownName(
                f"unknown kind {name!r}{suggest(name, self.kinds)}; "
                f"known: {', '.join(sorted(self.kinds)) or 'none'}"
            ) from None

    def method(self, kind: str, name: str) -> MethodSpec:
        try:
            return self.methods[(kind, name)]
        except KeyError:
            names = [n for (k, n) in self.methods if k == kind]
            raise UnknownName(
                f"unknown {kind} method {name!r}{suggest(name, names)}; "
                f"known: {', '.join(sorted(names)) or 'none'}"
            ) from None

    def workload(self, kind: str, name: str) -> WorkloadSpec:
        try:
            return self.workloads[(kind, name)]
        except KeyError:
            names = [n for (k, n) in self.workloads if k == kind]
            raise UnknownName(
                f"unknown {kind} workload {name!r}{suggest(name, names)}; "
                f"known: {', '.join(sorted(names)) or 'none'}"
            ) from None

    def attack(self, name: str) -> AttackSpec:
        try:
            return self.attacks[name]
        except KeyError:
            raise UnknownName(
                f"unknown attack {name!r}{suggest(name, self.attacks)}; "
                f"known: {', '.join(sorted(self.attacks)) or 'none'}"
            ) from None

    def notify_run_finished(self, record: Any) -> list[str]:
        """Call every observer; an observer that raises is reported, never fatal."""
        errors = []
        for impl in self.pm.hook.methodbench_run_finished.get_hookimpls():
            try:
                impl.function(record=record)
            except (Exception, SystemExit) as exc:
                errors.append(f"observer {impl.plugin_name} raised: {_describe(exc)}")
        return errors


def unknown_hparams(
    spec: MethodSpec | AttackSpec | WorkloadSpec, given: Iterable[str]
) -> list[tuple[str, str]]:
    """(key, message) for each hyperparameter/option the spec's factory does not take
    (``benchmark.hparams``: its signature, or its declared defaults)."""
    from benchmark.hparams import unknown_problems

    return unknown_problems(spec, given)


def _kind_of(value: object) -> str | None:
    """The broad JSON type of a value, as a hyperparameter check sees it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return None


def mistyped_hparams(
    spec: Any, given: dict[str, Any], *, axes: bool = False, what: str | None = None
) -> list[tuple[str, str]]:
    """(key, message) for each value whose type differs from its default's: ``lr: fast``
    or ``lr: [1, 2]`` is refused before anything runs instead of failing every run later.
    ``axes``: the values are lists of candidates (a grid or variants axis). A default of
    None accepts anything; numbers accept ints and floats alike; a string default also
    accepts a list of strings (a name or several names, as FineGates' ``layers``).
    A spec whose factory's signature is readable is checked against its annotations
    instead (``benchmark.hparams``: bounds and ``Literal`` choices too)."""
    if what is None and hasattr(spec, "factory"):
        from benchmark.hparams import type_problems

        typed = type_problems(spec, given, axes=axes)
        if typed is not None:
            return typed
    what = what or ("option" if isinstance(spec, WorkloadSpec) else "hyperparameter")
    problems = []
    for key, value in given.items():
        if key not in spec.defaults:
            continue
        expected = _kind_of(spec.defaults[key])
        if expected is None:
            continue
        for candidate in value if axes and isinstance(value, list) else [value]:
            got = _kind_of(candidate)
            names = (
                expected == "a string"
                and isinstance(candidate, list)
                and all(isinstance(c, str) for c in candidate)
            )
            if got is not None and got != expected and not names:
                problems.append(
                    (
                        key,
                        f"{spec.name}'s {what} {key!r} is {expected} (default "
                        f"{spec.defaults[key]!r}); got {candidate!r}, {got}",
                    )
                )
                break
    return problems


def _label(spec: Spec) -> str:
    if isinstance(spec, AttackSpec):
        return f"attack {spec.name}"
    category = "method" if isinstance(spec, MethodSpec) else "workload"
    return f"{category} {spec.kind}/{spec.name}"


def _distribution_of(module: ModuleType) -> tuple[str | None, str | None]:
    top = module.__name__.split(".")[0]
    dists = md.packages_distributions().get(top) or []
    if not dists:
        return None, None
    try:
        return dists[0], md.version(dists[0])
    except md.PackageNotFoundError:
        return dists[0], None


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
