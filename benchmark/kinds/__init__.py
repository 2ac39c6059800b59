"""Kinds, and the specs that plugins register.

A kind is one ``KindDef`` in one module (``benchmark/kinds/<kind>.py`` for the built-in
four: its method contract, optional capabilities, workload contract, protocol, options,
ranking, plot and metrics), registered through ``methodbench_register_kinds``
(``registered.py`` keeps the process's table). A plugin registers *specs* (plain data plus
a factory) of a registered kind. The host checks each spec when it is registered
(``check_spec``) and the object a factory builds when a run uses it (``check_built``,
against the kind's ``built`` contract), so a broken plugin is reported with a reason
instead of failing somewhere deep inside a protocol.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from benchmark.kinds.definition import KindDef, KindInfo, MetricDecl, Option, Verdict
from benchmark.kinds.registered import (
    KIND_INFO,
    get_kind,
    methodbench_register_kinds,
    register_kind,
    registered_kinds,
)

if TYPE_CHECKING:  # the host lists and validates without importing torch
    import torch
    from torch import nn

# A kind's name: one of the registered kinds (``registered_kinds()``), checked when a spec
# is registered and when a suite is checked.
Kind = str

__all__ = [
    "KIND_INFO",
    "AttackSpec",
    "ContractError",
    "Kind",
    "KindDef",
    "KindInfo",
    "MethodSpec",
    "MetricDecl",
    "Option",
    "Verdict",
    "WorkloadSpec",
    "check_built",
    "check_kind",
    "check_spec",
    "get_kind",
    "methodbench_register_kinds",
    "register_kind",
    "registered_kinds",
]


class ContractError(ValueError):
    """A plugin's spec or built object does not satisfy its kind's contract."""


def suggest(name: str, options: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the options close to ``name``, else ""."""
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


@runtime_checkable
class Attack(Protocol):
    """Callable form of an attack: the attacker's best model from the untrusted state."""

    def __call__(self, untrusted_state: dict[str, torch.Tensor], ctx: Any) -> nn.Module: ...


# --------------------------------------------------------------------------- specs

# ``package.module:attribute`` (the attribute may be dotted: ``module:Class.build``).
FACTORY_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_LOADED: dict[str, Callable[..., Any]] = {}


def load_factory(ref: str) -> Callable[..., Any]:
    """Import the module a ``module:attribute`` reference names and return the attribute.

    Registries stay cheap because of this: a plugin declares its methods by name, and the
    module that implements one (with torch, transformers, scikit-learn behind it) is
    imported only when a run builds it, as lm-evaluation-harness's registry does.
    """
    if ref in _LOADED:
        return _LOADED[ref]
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (Exception, SystemExit) as exc:
        raise ContractError(
            f"factory {ref!r} could not be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(obj):
        raise ContractError(f"factory {ref!r} is not callable")
    _LOADED[ref] = obj
    return obj


def reference_problem(ref: str) -> str | None:
    """Why a ``module:attribute`` reference cannot load, found without importing it (its
    module is located and parsed, not run): for ``bench validate``, which must stay fast
    and still refuse a suite whose plugin points at nothing."""
    import ast
    import importlib.util

    module_name, _, attr = ref.partition(":")
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        return f"factory {ref!r}: module {module_name!r} cannot be found ({exc})"
    if found is None:
        return f"factory {ref!r}: no module named {module_name!r}"
    if not found.origin or not found.origin.endswith(".py"):
        return None  # compiled or namespace: only importing it can tell
    try:
        with open(found.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError) as exc:
        return f"factory {ref!r}: module {module_name!r} does not parse ({exc})"
    head = attr.split(".")[0]
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    if head not in names:
        return f"factory {ref!r}: module {module_name!r} defines no {head!r}"
    return None


_CHECKED: set[tuple[str, str]] = set()


class _DerivedDefaults(Mapping[str, Any]):
    """A spec's defaults, read from its factory's signature when first needed: discovery
    and ``bench plugins`` parse no module, and validating a suite parses only the modules
    of what it names. A factory whose signature cannot be read keeps the registration's
    declared defaults."""

    __slots__ = ("_spec", "_values")

    def __init__(self, spec: _Factory) -> None:
        self._spec = spec
        self._values: dict[str, Any] | None = None

    def _resolved(self) -> dict[str, Any]:
        if self._values is None:
            from benchmark.hparams import derived_defaults

            derived = derived_defaults(self._spec)
            self._values = dict(self._spec.declared) if derived is None else derived
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._resolved()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved())

    def __len__(self) -> int:
        return len(self._resolved())

    def __repr__(self) -> str:
        return repr(self._resolved())


class _Factory:
    """What every spec does with its factory: a callable, or a lazy ``module:attribute``."""

    factory: Callable[..., Any] | str
    defaults: Mapping[str, Any]
    name: str
    # Whether ``defaults`` is read from the factory's signature (``benchmark.hparams``).
    derive_hparams = True

    def __post_init__(self) -> None:
        """``defaults`` becomes the factory's signature defaults with the registration's
        own ``defaults`` (a variant's overrides) applied; the registration's are kept as
        ``declared``. A factory whose signature cannot be read keeps the declared ones."""
        if not isinstance(self.defaults, Mapping):
            return  # check_spec refuses it with the reason
        object.__setattr__(self, "declared", dict(self.defaults))
        if self.derive_hparams:
            object.__setattr__(self, "defaults", _DerivedDefaults(self))

    def load(self) -> Callable[..., Any]:
        """The factory itself, importing its module on first use (a lazy reference is
        then checked against its declared defaults, as a callable is at registration)."""
        if not isinstance(self.factory, str):
            return self.factory
        factory = load_factory(self.factory)
        # Once per reference and declared defaults (two specs may share a factory).
        key = (self.factory, repr(sorted(dict(self.defaults).items())))
        if key not in _CHECKED:
            _check_binds(factory, _leading_args(self), self.defaults)
            _check_declared_types(self)
            _CHECKED.add(key)
        return factory

    def reference_problem(self) -> str | None:
        """Why this spec's lazy factory cannot load, without importing it (None: fine, or
        a callable)."""
        return reference_problem(self.factory) if isinstance(self.factory, str) else None

    @property
    def module(self) -> str | None:
        """The module that implements the factory, without importing it."""
        if isinstance(self.factory, str):
            return self.factory.partition(":")[0]
        return getattr(self.factory, "__module__", None)


@dataclass(frozen=True)
class MethodSpec(_Factory):
    """One method a plugin offers.

    ``defaults`` lists every hyperparameter the factory accepts with its default, read
    from the factory's signature (``benchmark.hparams``); what a registration passes as
    ``defaults`` overrides it (a variant sharing a factory). A suite that names any other
    hyperparameter is rejected with a "did you mean".
    """

    kind: Kind
    name: str
    factory: Callable[..., Any] | str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    paper: str | None = None
    description: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)


@dataclass(frozen=True)
class WorkloadSpec(_Factory):
    """A model, its data and its quality metric for one kind; ``factory(**options)``.

    Its options, their types and defaults are the factory's signature, as a method's
    hyperparameters are; ``defaults`` overrides some for a variant sharing a factory."""

    kind: Kind
    name: str
    factory: Callable[..., Any] | str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)


@dataclass(frozen=True)
class AttackSpec(_Factory):
    """An attack on security splits; ``factory(**hparams)`` gives an ``Attack`` callable."""

    name: str
    factory: Callable[..., Any] | str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    paper: str | None = None
    description: str = ""

    kind: str = "attack"

    @property
    def key(self) -> tuple[str, str]:
        return ("attack", self.name)


Spec = MethodSpec | WorkloadSpec | AttackSpec


def _check_binds(factory: Callable[..., Any], leading: int, defaults: Mapping[str, Any]) -> None:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    try:
        sig.bind(*([None] * leading), **dict(defaults))
    except TypeError as exc:
        raise ContractError(
            f"factory {getattr(factory, '__qualname__', factory)!r} does not accept "
            f"{'a model and ' if leading else ''}its declared defaults {sorted(defaults)}: {exc}"
        ) from exc


def _check_declared_types(spec: Any) -> None:
    from benchmark.hparams import type_problems

    for key, message in type_problems(spec, getattr(spec, "declared", {})) or []:
        raise ContractError(f"{spec.name}: declared default {key!r}: {message}")


def check_spec(spec: object, kinds: Mapping[str, KindDef] | None = None) -> None:
    """Reject a registration that breaks its kind's contract, with the reason. ``kinds``:
    the kinds the registering host knows (default: every kind registered in the process)."""
    if not isinstance(spec, MethodSpec | WorkloadSpec | AttackSpec):
        raise ContractError(
            f"register() takes a MethodSpec, WorkloadSpec or AttackSpec, got {type(spec).__name__}"
        )
    if not isinstance(spec.name, str) or not _NAME.match(spec.name):
        raise ContractError(
            f"name {spec.name!r} must be lower-case letters, digits, '_', '-' or '.'"
        )
    known = registered_kinds() if kinds is None else kinds
    if not isinstance(spec, AttackSpec) and spec.kind not in known:
        raise ContractError(
            f"{spec.name}: kind {spec.kind!r} is not one of {sorted(known)}"
            f"{suggest(str(spec.kind), known)}"
        )
    if isinstance(spec.factory, str):
        if not FACTORY_REF.match(spec.factory):
            raise ContractError(
                f"{spec.name}: factory {spec.factory!r} is neither callable nor a "
                "'package.module:attribute' reference"
            )
    elif not callable(spec.factory):
        raise ContractError(f"{spec.name}: factory is not callable")
    if not isinstance(spec.defaults, Mapping):
        raise ContractError(f"{spec.name}: defaults must be a mapping of hyperparameters")
    if not isinstance(spec.factory, str):  # a lazy one is checked when it is loaded
        _check_binds(spec.factory, _leading_args(spec), spec.defaults)
    _check_declared(spec)


def _check_declared(spec: MethodSpec | WorkloadSpec | AttackSpec) -> None:
    """A registration's overrides must name parameters its factory's signature has (read
    without importing the factory; their types are checked when the factory loads, so
    that listing plugins needs no pydantic)."""
    from benchmark.hparams import signature_problem

    if not getattr(spec, "declared", None):
        return  # no overrides: nothing to check, and no module parsed at discovery
    problem = signature_problem(spec)
    if problem is not None and problem.startswith("declares defaults"):
        raise ContractError(f"{spec.name}: {problem}")


def check_kind(kind: object) -> None:
    """Reject a kind definition that the host could not use, with the reason: a bad name,
    a reference that is not ``module:attribute``, a ranking column or step curve that is
    not one of its declared metrics (a leaderboard would show a column nothing defines),
    a protocol option without an ``Option`` whose type the hyperparameters' reader reads
    (``bench validate`` checks suites' values against it; pydantic is not imported here)."""
    if not isinstance(kind, KindDef):
        raise ContractError(f"register() takes a KindDef, got {type(kind).__name__}")
    if not isinstance(kind.name, str) or not _NAME.match(kind.name):
        raise ContractError(f"kind name {kind.name!r} must be lower-case letters, digits, '_'")
    refs = {"built": kind.built, "run": kind.run, "plot": kind.plot}
    for what, ref in refs.items():
        if ref is not None and not (isinstance(ref, str) and FACTORY_REF.match(ref)):
            raise ContractError(
                f"kind {kind.name}: {what} {ref!r} is not a 'package.module:attribute' reference"
            )
    names = [d.name for d in kind.metrics]
    if len(set(names)) != len(names):
        raise ContractError(f"kind {kind.name}: a metric is declared twice")
    undeclared = kind.undeclared(kind.ranking.metric_names())
    if undeclared:
        raise ContractError(
            f"kind {kind.name}: its ranking reads undeclared metrics {undeclared}; declare "
            "them in its metrics"
        )
    undeclared = kind.undeclared(kind.step_curves)
    if undeclared:
        raise ContractError(
            f"kind {kind.name}: step curves {undeclared} are not declared metrics; declare "
            "them in its metrics"
        )
    _check_options(kind)


def _check_options(kind: KindDef) -> None:
    from benchmark.hparams import Unreadable, annotation_param

    for name, option in kind.options.items():
        if not isinstance(option, Option):
            raise ContractError(
                f"kind {kind.name}: protocol option {name!r} must be an Option(type, default, "
                f"doc), not {type(option).__name__}"
            )
        try:
            annotation_param(name, option.type, option.default)
        except Unreadable as exc:
            raise ContractError(
                f"kind {kind.name}: protocol option {name!r} ({option.type}): {exc}"
            ) from None
        # Whether the default passes its type is checked when a suite uses the kind
        # (suite.protocol_option_problems): pydantic stays out of discovery.


def _leading_args(spec: object) -> int:
    """Positional arguments a factory takes before its hyperparameters (an optimizer's
    model): the kind's ``leading_args``."""
    kind = get_kind(spec.kind) if isinstance(spec, MethodSpec) else None
    return len(kind.leading_args) if kind is not None else 0


def check_built(spec: MethodSpec | AttackSpec, obj: object) -> None:
    """Check what a factory returned before a protocol relies on it: an instance of its
    kind's ``built`` class or Protocol."""
    if isinstance(spec, AttackSpec):
        if not callable(obj):
            raise ContractError(f"attack {spec.name}: factory must return a callable")
        return
    kind = get_kind(spec.kind)
    if kind is None:
        raise ContractError(f"{spec.name}: kind {spec.kind!r} is not registered")
    contract = kind.load_built()
    if isinstance(obj, contract):
        return
    if getattr(contract, "_is_protocol", False):
        raise ContractError(
            f"{spec.kind} {spec.name}: factory returned {type(obj).__name__}, which lacks "
            f"the {contract.__name__} interface"
        )
    raise ContractError(
        f"{spec.kind} {spec.name}: factory returned {type(obj).__name__}, expected a "
        f"{kind.built.replace(':', '.')}"
    )
