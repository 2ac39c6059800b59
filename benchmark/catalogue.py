"""What the registry holds, for people and tools: the rows and the detail ``bench plugins``
prints, and what ``bench plugins --json`` emits.

Nothing here imports an implementation: a factory's docstring is read from its module's
source (located and parsed with ``ast``, as ``kinds.reference_problem`` does), and its
hyperparameters come from ``benchmark.hparams.hparams_of``, which reads the signature
the same way. So listing every method and showing one stays as fast as discovery, which
imports no torch (``tests/test_lazy_registry.py``).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
from dataclasses import dataclass, field
from typing import Any

from benchmark.host import PluginInfo, Registry, UnknownName, suggest
from benchmark.kinds import AttackSpec, MethodSpec, Spec

CATEGORIES = ("method", "workload", "attack")
#: How many ``from x import y`` re-exports are followed to find a factory's definition.
_MAX_REEXPORTS = 3


@dataclass(frozen=True)
class Entry:
    """One registered method, workload or attack."""

    category: str  # method | workload | attack
    kind: str  # the kind it serves; "attack" for an attack
    name: str
    plugin: str  # the plugin that registered it
    paper: str | None
    description: str
    factory: str  # "module:attribute", or the callable's module and qualified name
    spec: Spec = field(repr=False, compare=False)

    @property
    def what(self) -> str:
        """ "optimizer method", "detector workload", "attack"."""
        return "attack" if self.category == "attack" else f"{self.kind} {self.category}"

    @property
    def qualified(self) -> str:
        """The name with its kind, unambiguous unless a kind has a method and a workload of
        one name: ``detector/msp``, ``attack/fine-tune``."""
        return f"{self.kind}/{self.name}"


def _category(spec: Spec) -> str:
    if isinstance(spec, AttackSpec):
        return "attack"
    return "method" if isinstance(spec, MethodSpec) else "workload"


def _factory_text(spec: Spec) -> str:
    if isinstance(spec.factory, str):
        return spec.factory
    f = spec.factory
    return f"{getattr(f, '__module__', '?')}:{getattr(f, '__qualname__', repr(f))}"


def entries(registry: Registry) -> list[Entry]:
    """Every registration: methods, then workloads, then attacks; by kind, then name."""
    specs: list[Spec] = [
        *registry.methods.values(),
        *registry.workloads.values(),
        *registry.attacks.values(),
    ]
    out = []
    for spec in specs:
        owner = registry.owner_of(spec.kind, spec.name)
        out.append(
            Entry(
                category=_category(spec),
                kind=spec.kind,
                name=spec.name,
                plugin=owner.name if owner is not None else "?",
                paper=getattr(spec, "paper", None),
                description=spec.description,
                factory=_factory_text(spec),
                spec=spec,
            )
        )
    return sorted(out, key=lambda e: (CATEGORIES.index(e.category), e.kind, e.name))


@dataclass(frozen=True)
class Workload:
    """One workload name as ``bench plugins`` lists it: the kinds it is registered for
    joined (``mnist-cnn`` serves three kinds with one description; a row per kind
    repeated it three times and left the description no room)."""

    name: str
    kinds: tuple[str, ...]
    plugin: str
    description: str


def workloads(listing: list[Entry]) -> list[Workload]:
    """The workload entries of ``listing``, one per (name, plugin, description), by name:
    a name whose kinds differ in plugin or description keeps a row for each."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for e in listing:
        if e.category == "workload":
            groups.setdefault((e.name, e.plugin, e.description), []).append(e.kind)
    return [
        Workload(name, tuple(sorted(kinds)), plugin, description)
        for (name, plugin, description), kinds in sorted(groups.items())
    ]


def find(registry: Registry, query: str, kind: str | None = None) -> Entry:
    """The one registration ``query`` names: ``NAME``, or ``QUALIFIER/NAME`` where the
    qualifier (like ``kind``) is a kind (``detector``, ``attack``) or a category
    (``method``, ``workload``). An unknown name gets a "did you mean"; an ambiguous one
    (``mnist-cnn`` is a workload of three kinds) is refused with the spellings that
    would pick each."""
    known = entries(registry)
    qualifier, _, name = query.rpartition("/")
    filters = [f for f in (kind, qualifier) if f]
    valid = sorted({e.kind for e in known} | set(CATEGORIES))
    for f in filters:
        if f not in valid:
            raise UnknownName(f"unknown kind {f!r}{suggest(f, valid)}; kinds: {', '.join(valid)}")
    matches = [
        e for e in known if e.name == name and all(f in (e.kind, e.category) for f in filters)
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        names = sorted({e.name for e in known})
        where = f" of kind {' and '.join(filters)}" if filters else ""
        raise UnknownName(
            f"nothing registered{where} is named {name!r}{suggest(name, names)}; "
            "`bench plugins` lists every name"
        )
    kinds = [e.kind for e in matches]
    ways = [
        f"bench plugins {e.qualified}"
        if kinds.count(e.kind) == 1
        else f"bench plugins --kind {e.category} {e.qualified}"
        for e in matches
    ]
    raise UnknownName(
        f"{name!r} names {len(matches)} registrations "
        f"({', '.join(e.what for e in matches)}); say which: {'; '.join(ways)}"
    )


# --------------------------------------------------------------------------- docstrings


def first_paragraph(doc: str | None) -> str | None:
    """A docstring's first paragraph on one line."""
    if not doc or not doc.strip():
        return None
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def _parse(module: str) -> ast.Module | None:
    """The module's syntax tree, read from its source without running it (None: not a
    ``.py`` file, or it cannot be found or parsed)."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin or not found.origin.endswith(".py"):
        return None
    try:
        with open(found.origin, encoding="utf-8") as f:
            return ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    base = package[: len(package) - node.level]
    return ".".join([*base, *([node.module] if node.module else [])])


def _definition(module: str, path: list[str], hops: int = 0) -> tuple[ast.AST | None, str]:
    """(the class or function ``path`` names in ``module``, the module that defines it),
    following ``from x import y`` re-exports and ``name = other`` aliases."""
    tree = _parse(module)
    if tree is None:
        return None, module
    head, rest = path[0], path[1:]
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == head:
                return _member(node, rest), module
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Name):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if head in targets and hops < _MAX_REEXPORTS and node.value.id != head:
                return _definition(module, [node.value.id, *rest], hops + 1)
        elif isinstance(node, ast.ImportFrom) and hops < _MAX_REEXPORTS:
            for alias in node.names:
                if (alias.asname or alias.name) == head:
                    return _definition(_absolute(module, node), [alias.name, *rest], hops + 1)
    return None, module


def _member(node: ast.AST, path: list[str]) -> ast.AST | None:
    for part in path:
        body = getattr(node, "body", [])
        node = next(
            (
                n
                for n in body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                and n.name == part
            ),
            None,
        )
        if node is None:
            return None
    return node


def factory_doc(spec: Spec) -> tuple[str | None, str]:
    """(the first paragraph of the factory's docstring, where it was read): the factory's
    own ("factory"), else its module's ("module NAME") where the factory has none, as
    most ``build_x`` functions do not."""
    if not isinstance(spec.factory, str):
        own = first_paragraph(inspect.getdoc(spec.factory))
        if own:
            return own, "factory"
        module = inspect.getmodule(spec.factory)
        doc = first_paragraph(module.__doc__) if module is not None else None
        return doc, f"module {module.__name__}" if module is not None else "factory"
    module, _, attr = spec.factory.partition(":")
    node, defined_in = _definition(module, attr.split("."))
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        own = first_paragraph(ast.get_docstring(node))
        if own:
            return own, "factory"
    tree = _parse(defined_in)
    doc = first_paragraph(ast.get_docstring(tree)) if tree is not None else None
    return doc, f"module {defined_in}"


# --------------------------------------------------------------------------- hparams


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: str  # as the signature writes it: ``Selection``
    default: Any  # the value; meaningless when ``required``
    required: bool
    doc: str | None
    # With the type aliases written out, where that differs from ``type``:
    # ``Literal['flame', 'random', 'uncertainty']``, so a reader sees the choices.
    expanded: str | None = None

    @property
    def shown_type(self) -> str:
        """``Selection = Literal['flame', 'random', 'uncertainty']``, or the type as written
        where it names no alias."""
        return f"{self.type} = {self.expanded}" if self.expanded else self.type


def hyperparameters(spec: Spec) -> tuple[list[Hyperparameter], str | None]:
    """(the spec's hyperparameters or options with their types and defaults, why they
    come from the declared defaults instead of the factory's signature, or None).
    ``benchmark.hparams.hparams_of`` reads the signature without importing it; a factory
    it cannot read (a plugin's broken reference) still lists its declared defaults."""
    try:
        from benchmark.hparams import REQUIRED, expanded_annotations, hparams_of

        found = hparams_of(spec)
        expanded = expanded_annotations(spec)
    except Exception as exc:  # a plugin's factory that cannot be read: the defaults remain
        return [
            Hyperparameter(k, type(v).__name__ if v is not None else "Any", v, False, None)
            for k, v in dict(spec.defaults).items()
        ], f"from the declared defaults: the factory's signature could not be read ({exc})"
    return [
        Hyperparameter(
            h.name, h.annotation, h.default, h.default is REQUIRED, h.doc, expanded.get(h.name)
        )
        for h in found
    ], None


# --------------------------------------------------------------------------- JSON


def _json_value(value: Any) -> Any:
    """``value`` as JSON carries it; what JSON cannot carry, as its repr."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "category": entry.category,
        "kind": entry.kind,
        "name": entry.name,
        "plugin": entry.plugin,
        "paper": entry.paper,
        "description": entry.description,
        "factory": entry.factory,
        "defaults": {k: _json_value(v) for k, v in dict(entry.spec.defaults).items()},
    }


def detail_json(entry: Entry) -> dict[str, Any]:
    """One registration with its docstring and typed hyperparameters."""
    doc, source = factory_doc(entry.spec)
    hps, fallback = hyperparameters(entry.spec)
    return {
        **entry_json(entry),
        "doc": doc,
        "doc_source": source,
        "hyperparameters": [
            {
                "name": h.name,
                "type": h.type,
                "type_expanded": h.expanded,
                "default": None if h.required else _json_value(h.default),
                "required": h.required,
                "doc": h.doc,
            }
            for h in hps
        ],
        "hyperparameters_note": fallback,
    }


def plugin_json(p: PluginInfo) -> dict[str, Any]:
    return {
        "name": p.name,
        "source": p.source,
        "distribution": p.distribution,
        "version": p.version,
        "registered": p.registered,
        "errors": p.errors,
    }


def listing_json(registry: Registry) -> dict[str, Any]:
    """``bench plugins --json``: one object per registration, and every plugin with what
    it registered and its errors."""
    return {
        "registered": [entry_json(e) for e in entries(registry)],
        "plugins": [plugin_json(p) for p in registry.plugins.values()],
    }
