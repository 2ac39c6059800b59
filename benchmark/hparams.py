"""A method's hyperparameters, read from its factory's signature without importing it.

Each hyperparameter is written once, in the factory's signature, with its type and its
default (``rank: PositiveInt = 128``, ``proj_type: Literal["std", "left"] = "std"``).
The host needs them before anything runs (``bench validate`` refuses ``lr: fast`` at the
suite's line, ``bench plugins NAME`` lists them, a run's fingerprint hashes the defaults)
and must not import the implementation to get them (torch, transformers, scikit-learn
behind it: validation stays fast and light). So the factory's module is located
(``importlib.util.find_spec``) and parsed with ``ast``; the defaults are literals
(``ast.literal_eval``) and the annotations are evaluated by a small interpreter over a
fixed namespace (builtins, ``typing``'s ``Literal``/``Annotated``/``Optional``/``Union``,
pydantic's constrained numbers, ``annotated_types``' bounds, and type aliases the module
itself assigns). Values are then checked with pydantic's ``TypeAdapter`` in strict JSON
mode: an int passes for a float, a bool does not pass for an int, a string never passes
for a number, a list passes for a tuple (YAML has no tuples).

A factory whose signature cannot be read that way (a parameter without annotation,
``**kwargs``, a default that is not a literal, a type outside the namespace) falls back to
its registration's declared defaults and the old check (type inferred from the default):
``signature_problem`` says why. A registration's ``defaults`` are then only overrides for
a variant that shares a factory (``magnitude-mask`` is ``RandomMask`` with other defaults).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any


class _Required:
    """The default of a hyperparameter that has none."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: its name, its type as written, its default and a line of doc."""

    name: str
    annotation: str
    default: Any
    doc: str | None = None


class Unreadable(Exception):
    """A factory's signature cannot be read without importing it (the reason)."""


# --------------------------------------------------------------------------- the namespace

_TYPING = ("Literal", "Annotated", "Optional", "Union", "Any")
_PYDANTIC = (
    "PositiveInt",
    "PositiveFloat",
    "NonNegativeInt",
    "NonNegativeFloat",
    "NegativeInt",
    "NegativeFloat",
    "NonPositiveInt",
    "NonPositiveFloat",
    "FiniteFloat",
)
_ANNOTATED_TYPES = ("Gt", "Ge", "Lt", "Le", "Interval", "MultipleOf", "MinLen", "MaxLen", "Len")
_BUILTINS = ("int", "float", "str", "bool", "tuple", "list", "dict")
# Modules an annotation may name its types through (``typing.Literal``, ``at.Gt``).
_MODULES = {
    "typing": _TYPING,
    "typing_extensions": _TYPING,
    "pydantic": _PYDANTIC,
    "annotated_types": _ANNOTATED_TYPES,
}
_KNOWN = frozenset((*_TYPING, *_PYDANTIC, *_ANNOTATED_TYPES, *_BUILTINS))


@cache
def _namespace() -> dict[str, Any]:
    """The objects annotations may use (pydantic is imported only when a value is checked,
    not to list hyperparameters)."""
    import typing

    import annotated_types
    import pydantic

    ns: dict[str, Any] = {name: getattr(typing, name) for name in _TYPING}
    ns.update({name: getattr(pydantic, name) for name in _PYDANTIC})
    ns.update({name: getattr(annotated_types, name) for name in _ANNOTATED_TYPES})
    ns.update({"int": int, "float": float, "str": str, "bool": bool})
    ns.update({"tuple": tuple, "list": list, "dict": dict})
    return ns


# --------------------------------------------------------------------------- reading source


@dataclass(frozen=True)
class _Module:
    name: str
    tree: ast.Module
    lines: tuple[str, ...]

    def top(self, name: str) -> ast.stmt | None:
        """The last top-level definition, assignment or import of ``name``."""
        found = None
        for node in self.tree.body:
            if name in _bound_by(node):
                found = node
        return found


def _bound_by(node: ast.stmt) -> set[str]:
    """The names a top-level statement binds."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {t.id for t in targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.ImportFrom | ast.Import):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    return set()


def _origin(module: str) -> str:
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError, AttributeError) as exc:
        raise Unreadable(f"module {module!r} cannot be found ({exc})") from exc
    if found is None or not found.origin or not found.origin.endswith(".py"):
        raise Unreadable(f"module {module!r} has no Python source to read")
    return found.origin


@cache
def _parse(path: str, mtime_ns: int, name: str) -> _Module:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return _Module(name, ast.parse(text, filename=path), tuple(text.splitlines()))


def _module(name: str) -> _Module:
    path = _origin(name)
    try:
        return _parse(path, os.stat(path).st_mtime_ns, name)
    except (OSError, SyntaxError, ValueError) as exc:
        raise Unreadable(f"module {name!r} does not parse ({exc})") from exc


def _resolve_import(mod: _Module, node: ast.ImportFrom, name: str) -> tuple[_Module, str]:
    """Follow ``from x import name`` within the factory's own top-level package."""
    if node.level:
        base = mod.name.split(".")
        package = mod.name if _origin(mod.name).endswith("__init__.py") else ".".join(base[:-1])
        parts = package.split(".")
        target = ".".join(parts[: len(parts) - node.level + 1])
        target = f"{target}.{node.module}" if node.module else target
    else:
        target = node.module or ""
    if target.split(".")[0] != mod.name.split(".")[0]:
        raise Unreadable(f"{name!r} comes from {target!r}, outside {mod.name.split('.')[0]!r}")
    alias = next(a for a in node.names if (a.asname or a.name) == name)
    return _module(target), alias.name


def _locate(ref: str) -> tuple[_Module, ast.FunctionDef | ast.ClassDef, bool]:
    """(module, node, is_method) of a ``module:attribute`` reference."""
    module_name, _, attr = ref.partition(":")
    mod = _module(module_name)
    parts = attr.split(".")
    for _ in range(8):  # re-exports, followed a few hops
        node = mod.top(parts[0])
        if isinstance(node, ast.ImportFrom):
            mod, parts[0] = _resolve_import(mod, node, parts[0])
            continue
        break
    else:
        raise Unreadable(f"{ref!r}: too many re-exports")
    if not isinstance(node, ast.FunctionDef | ast.ClassDef):
        raise Unreadable(f"{ref!r} is not a def or class statement in {mod.name!r}")
    is_method = False
    for part in parts[1:]:
        if not isinstance(node, ast.ClassDef):
            raise Unreadable(f"{ref!r}: {node.name!r} is not a class")
        inner = [
            n for n in node.body if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == part
        ]
        if not inner:
            raise Unreadable(f"{ref!r}: {node.name!r} defines no {part!r}")
        node, is_method = inner[-1], isinstance(inner[-1], ast.FunctionDef)
    return mod, node, is_method


def _decorators(node: ast.FunctionDef | ast.ClassDef) -> set[str]:
    names = set()
    for d in node.decorator_list:
        d = d.func if isinstance(d, ast.Call) else d
        names.add(d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", ""))
    return names


def _init_of(mod: _Module, cls: ast.ClassDef, depth: int = 0) -> ast.FunctionDef | None:
    """The ``__init__`` a class uses (its own or a base's in the same module); None: the
    class takes no arguments."""
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            return node
    if "dataclass" in _decorators(cls):
        raise Unreadable(f"{cls.name!r} is a dataclass: give it an explicit __init__")
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id == "object":
            continue
        found = mod.top(base.id) if isinstance(base, ast.Name) else None
        if isinstance(found, ast.ClassDef) and depth < 8:
            return _init_of(mod, found, depth + 1)
        raise Unreadable(f"{cls.name!r} inherits __init__ from {ast.unparse(base)!r}")
    return None


# --------------------------------------------------------------------------- annotations


def _names_in(node: ast.expr) -> Iterator[ast.expr]:
    """The type names an annotation uses: ``Literal[...]``'s arguments are values."""
    if isinstance(node, ast.Name | ast.Attribute):
        yield node
    elif isinstance(node, ast.Subscript):
        yield from _names_in(node.value)
        head = node.value.attr if isinstance(node.value, ast.Attribute) else node.value
        if getattr(head, "id", head) == "Literal":
            return
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        for a in args:
            yield from _names_in(a)
    elif isinstance(node, ast.BinOp):
        yield from _names_in(node.left)
        yield from _names_in(node.right)
    elif isinstance(node, ast.Call):
        yield from _names_in(node.func)
    elif isinstance(node, ast.Tuple | ast.List):
        for e in node.elts:
            yield from _names_in(e)


def _annotation_expr(mod: _Module, node: ast.expr, depth: int = 0) -> ast.expr:
    """The annotation with string annotations parsed and the module's own type aliases
    (``Fraction = Annotated[float, Interval(gt=0, le=1)]``) substituted; refuses a name
    outside the namespace."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError as exc:
            raise Unreadable(f"annotation {node.value!r} does not parse") from exc

    class Substitute(ast.NodeTransformer):
        def visit_Name(self, n: ast.Name) -> ast.expr:
            if n.id in _KNOWN:
                return n
            return _alias(mod, n.id, depth)

        def visit_Attribute(self, n: ast.Attribute) -> ast.expr:
            if isinstance(n.value, ast.Name) and n.attr in _MODULES.get(n.value.id, ()):
                return ast.copy_location(ast.Name(n.attr, ast.Load()), n)
            raise Unreadable(f"type {ast.unparse(n)!r} is outside the annotation namespace")

        def visit_Subscript(self, n: ast.Subscript) -> ast.expr:
            n.value = self.visit(n.value)
            if isinstance(n.value, ast.Name) and n.value.id == "Literal":
                return n  # values, not types
            n.slice = self.visit(n.slice)
            return n

        def visit_Constant(self, n: ast.Constant) -> ast.expr:
            if isinstance(n.value, str):  # a forward reference inside a type
                return _annotation_expr(mod, n, depth + 1)
            return n

    import copy

    return Substitute().visit(copy.deepcopy(node))


def _alias(mod: _Module, name: str, depth: int) -> ast.expr:
    if depth > 8:
        raise Unreadable(f"type alias {name!r} nests too deeply")
    node = mod.top(name)
    if isinstance(node, ast.ImportFrom):
        try:
            target, real = _resolve_import(mod, node, name)
        except Unreadable as exc:
            raise Unreadable(f"type {name!r} is outside the annotation namespace") from exc
        return _alias(target, real, depth + 1)
    value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
    if value is None:
        raise Unreadable(f"type {name!r} is outside the annotation namespace")
    return _annotation_expr(mod, value, depth + 1)


def _evaluate(node: ast.expr) -> Any:
    """The type an annotation expression (already substituted) denotes, built from the
    namespace by walking the tree: nothing is ``eval``'d."""
    import typing

    ns = _namespace()
    if isinstance(node, ast.Name):
        return ns[node.id]
    if isinstance(node, ast.Constant):
        if node.value is None:
            return type(None)
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return typing.Union[_evaluate(node.left), _evaluate(node.right)]  # noqa: UP007
    if isinstance(node, ast.Subscript):
        head = _evaluate(node.value)
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head is typing.Literal:
            args = tuple(ast.literal_eval(e) for e in elts)
        else:
            args = tuple(_evaluate(e) for e in elts)
        return head[args if len(args) > 1 else args[0]]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        func = ns[node.func.id]
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        return func(*args, **kwargs)
    if isinstance(node, ast.UnaryOp | ast.Tuple):
        return ast.literal_eval(node)
    if node.__class__.__name__ == "Ellipsis" or (
        isinstance(node, ast.Constant) and node.value is Ellipsis
    ):
        return ...
    raise Unreadable(f"annotation {ast.unparse(node)!r} is not a type this host reads")


# --------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class _Param:
    hparam: HParam
    type_expr: ast.expr | None  # None: a callable's annotation object, in ``type_obj``
    type_obj: Any = None


def _comment(mod: _Module, node: ast.AST) -> str | None:
    """A trailing ``# ...`` on the line where a parameter ends: its one-line doc."""
    line = mod.lines[node.end_lineno - 1] if node.end_lineno else ""  # type: ignore[attr-defined]
    rest = line[node.end_col_offset :]  # type: ignore[attr-defined]
    if "#" in rest and rest.split("#", 1)[0].strip() in ("", ","):
        return rest.split("#", 1)[1].strip() or None
    return None


def _docstring_lines(*nodes: ast.AST | None) -> dict[str, str]:
    """``name: description`` lines (or ``name (type): ...``) of the docstrings given."""
    import re

    out: dict[str, str] = {}
    for node in nodes:
        doc = ast.get_docstring(node) if node is not None else None  # type: ignore[arg-type]
        for line in (doc or "").splitlines():
            m = re.match(r"^\s*[`*]*(\w+)[`*]*\s*(\([^)]*\))?\s*:\s+(\S.*)$", line)
            if m:
                out.setdefault(m.group(1), m.group(3).strip())
    return out


def _ast_params(ref: str, leading: int) -> list[_Param]:
    mod, node, is_method = _locate(ref)
    docs_from: list[ast.AST | None] = [node]
    if isinstance(node, ast.ClassDef):
        init = _init_of(mod, node)
        if init is None:
            return []
        docs_from.append(init)
        func, skip = init, 1
    else:
        func = node
        skip = 1 if is_method and "staticmethod" not in _decorators(node) else 0
    a = func.args
    if a.kwarg is not None:
        raise Unreadable(f"{ref!r} takes **{a.kwarg.arg}: its hyperparameters are not named")
    positional = [*a.posonlyargs, *a.args]
    pos_defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults))
    pos_defaults += list(a.defaults)
    if len(positional) < skip + leading:
        raise Unreadable(f"{ref!r} takes fewer than {leading} leading argument(s)")
    n_posonly = len(a.posonlyargs)
    pairs = list(zip(positional, pos_defaults, strict=True))[skip + leading :]
    if n_posonly > skip + leading:
        raise Unreadable(f"{ref!r} has positional-only hyperparameters")
    pairs += list(zip(a.kwonlyargs, a.kw_defaults, strict=True))
    docs = _docstring_lines(*docs_from)
    params = []
    for arg, default_node in pairs:
        if arg.annotation is None:
            raise Unreadable(f"{ref!r}: parameter {arg.arg!r} has no type annotation")
        if default_node is None:
            default = REQUIRED
        else:
            try:
                default = ast.literal_eval(default_node)
            except ValueError as exc:
                raise Unreadable(
                    f"{ref!r}: the default of {arg.arg!r} ({ast.unparse(default_node)}) is "
                    "not a literal"
                ) from exc
        written = arg.annotation
        if isinstance(written, ast.Constant) and isinstance(written.value, str):
            text = written.value
        else:
            text = ast.unparse(written)
        expr = _annotation_expr(mod, written)
        for name in _names_in(expr):
            if not isinstance(name, ast.Name) or name.id not in _KNOWN:
                raise Unreadable(f"{ref!r}: type of {arg.arg!r} ({text}) is not readable")
        doc = _comment(mod, default_node or arg) or docs.get(arg.arg)
        params.append(_Param(HParam(arg.arg, text, default, doc), expr))
    return params


def _callable_params(factory: Callable[..., Any], leading: int) -> list[_Param]:
    """A factory given as a callable (already imported): read through ``inspect``."""
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    if target is object.__init__:
        return []
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError) as exc:
        raise Unreadable(f"{factory!r} has no signature") from exc
    params = list(sig.parameters.values())[(1 if inspect.isclass(factory) else 0) + leading :]
    out = []
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            raise Unreadable(f"{factory!r} takes **{p.name}")
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
            continue
        if p.annotation is p.empty:
            raise Unreadable(f"{factory!r}: parameter {p.name!r} has no type annotation")
        default = REQUIRED if p.default is p.empty else p.default
        if isinstance(p.annotation, str):
            try:
                out.append(annotation_param(p.name, p.annotation, default))
            except Unreadable as exc:
                raise Unreadable(f"{factory!r}: {exc}") from exc
        else:
            text = inspect.formatannotation(p.annotation)
            out.append(_Param(HParam(p.name, text, default), None, p.annotation))
    return out


def _leading(spec: Any) -> int:
    from benchmark.kinds import _leading_args

    return _leading_args(spec)


_READ: dict[tuple[str, int], tuple[int, list[_Param] | Unreadable]] = {}


def _signature(factory: Any, leading: int) -> list[_Param]:
    if isinstance(factory, str):
        # Once per reference while its module's file is unchanged (a spec is read when it
        # is built and again when it is checked).
        try:
            stamp = os.stat(_origin(factory.partition(":")[0])).st_mtime_ns
        except OSError as exc:
            raise Unreadable(str(exc)) from exc
        cached = _READ.get((factory, leading))
        if cached is None or cached[0] != stamp:
            try:
                cached = (stamp, _ast_params(factory, leading))
            except Unreadable as exc:
                cached = (stamp, exc)
            _READ[(factory, leading)] = cached
        if isinstance(cached[1], Unreadable):
            raise cached[1]
        return cached[1]
    if callable(factory):
        return _callable_params(factory, leading)
    raise Unreadable("no factory")


def _declared(spec: Any) -> Mapping[str, Any]:
    """What the registration itself wrote (before ``defaults`` was derived)."""
    declared = getattr(spec, "declared", None)
    if declared is not None:  # a spec's own overrides, possibly none
        return declared
    return getattr(spec, "defaults", None) or {}


def _derived(spec: Any) -> list[_Param] | None:
    """The signature's parameters with the registration's overrides as defaults; None
    when the spec stays on its declared defaults."""
    if not getattr(spec, "derive_hparams", False):
        return None
    try:
        params = _signature(spec.factory, _leading(spec))
    except Unreadable:
        return None
    declared = _declared(spec)
    if any(k not in {p.hparam.name for p in params} for k in declared):
        return None  # the factory does not take what is declared: check_spec says so
    return [
        _Param(
            HParam(p.hparam.name, p.hparam.annotation, declared[p.hparam.name], p.hparam.doc),
            p.type_expr,
            p.type_obj,
        )
        if p.hparam.name in declared
        else p
        for p in params
    ]


def signature_problem(spec: Any) -> str | None:
    """Why ``spec``'s hyperparameters come from its declared defaults rather than its
    factory's signature (None: they come from the signature)."""
    if not getattr(spec, "derive_hparams", False):
        return f"{type(spec).__name__} options are declared, not derived"
    try:
        params = _signature(spec.factory, _leading(spec))
    except Unreadable as exc:
        return str(exc)
    names = {p.hparam.name for p in params}
    extra = sorted(k for k in _declared(spec) if k not in names)
    if extra:
        return f"declares defaults {extra} that its factory does not take"
    return None


def derived_defaults(spec: Any) -> dict[str, Any] | None:
    """The defaults a spec's factory declares in its signature, the registration's
    overrides applied (None: not derivable). A required hyperparameter has none."""
    params = _derived(spec)
    if params is None:
        return None
    return {p.hparam.name: p.hparam.default for p in params if p.hparam.default is not REQUIRED}


def hparams_of(spec: Any) -> list[HParam]:
    """The hyperparameters of ``spec``'s factory (its module is parsed, not imported), in
    signature order; for a factory that cannot be read, its declared defaults with the
    type of each default's value."""
    params = _derived(spec)
    if params is not None:
        return [p.hparam for p in params]
    return [
        HParam(name, "Any" if value is None else type(value).__name__, value)
        for name, value in dict(getattr(spec, "defaults", {}) or {}).items()
    ]


def expanded_annotations(spec: Any) -> dict[str, str]:
    """{hyperparameter: its annotation with the module's type aliases written out}, for
    those where that differs from the annotation as written (``Selection`` reads
    ``Literal['flame', 'random', 'uncertainty']``): ``bench plugins NAME`` shows the
    choices, not only the alias's name. Empty where the signature is not read."""
    out: dict[str, str] = {}
    for p in _derived(spec) or []:
        if p.type_expr is not None and ast.unparse(p.type_expr) != p.hparam.annotation:
            out[p.hparam.name] = ast.unparse(p.type_expr)
    return out


# --------------------------------------------------------------------------- validation


@cache
def _adapter_for_expr(dumped: str) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(_evaluate(ast.parse(dumped, mode="eval").body))


def _adapter(p: _Param) -> Any:
    from pydantic import TypeAdapter

    if p.type_expr is not None:
        return _adapter_for_expr(ast.unparse(p.type_expr))
    return TypeAdapter(p.type_obj)


def _type_problem(p: _Param, value: Any) -> str | None:
    """Why ``value`` does not fit the hyperparameter (None: it does)."""
    from pydantic import ValidationError

    try:
        adapter = _adapter(p)
    except Exception:
        return None
    try:
        raw = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None  # NaN, a date, a set: the suite's JSON check reports it, once
    try:
        adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        return "; ".join(e["msg"] for e in exc.errors()[:3])
    return None


def annotation_param(name: str, annotation: str, default: Any = REQUIRED) -> _Param:
    """A parameter typed by an annotation string in the hyperparameters' language (a
    protocol option's ``Option.type``): parsed and checked against the namespace, without
    pydantic. Raises ``Unreadable`` for a type outside it."""
    expr = _annotation_expr(_Module("", ast.Module([], []), ()), ast.Constant(annotation))
    for node in _names_in(expr):
        if not isinstance(node, ast.Name) or node.id not in _KNOWN:
            raise Unreadable(f"type of {name!r} ({annotation}) is not readable")
    return _Param(HParam(name, annotation, default), expr)


def annotation_problems(
    owner: str, params: Mapping[str, _Param], given: Mapping[str, Any], *, what: str = "option"
) -> list[tuple[str, str]]:
    """(name, message) for each value of ``given`` its parameter's annotation refuses, as
    ``type_problems`` words it (names without a parameter are left to the caller)."""
    problems = []
    for key, value in given.items():
        p = params.get(key)
        if p is None:
            continue
        why = _type_problem(p, value)
        if why is not None:
            problems.append((key, _refusal(owner, what, p, value, why)))
    return problems


def _refusal(owner: str, what: str, p: _Param, value: Any, why: str) -> str:
    default = "" if p.hparam.default is REQUIRED else f", default {p.hparam.default!r}"
    return f"{owner}'s {what} {p.hparam.name!r} is {_shown(p)}{default}; got {value!r}: {why}"


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _what(spec: Any) -> str:
    from benchmark.kinds import WorkloadSpec

    return "option" if isinstance(spec, WorkloadSpec) else "hyperparameter"


def unknown_problems(spec: Any, given: Any) -> list[tuple[str, str]]:
    """(name, message) for each name the spec's factory does not take."""
    names = [h.name for h in hparams_of(spec)]
    accepts = ", ".join(sorted(names)) or "none"
    return [
        (
            k,
            f"{spec.name} has no {_what(spec)} {k!r}{_suggest(k, names)}; it accepts: {accepts}",
        )
        for k in given
        if k not in names
    ]


def _shown(p: _Param) -> str:
    """The annotation as written, and what it stands for when that is an alias."""
    expanded = ast.unparse(p.type_expr) if p.type_expr is not None else p.hparam.annotation
    if expanded == p.hparam.annotation:
        return p.hparam.annotation
    return f"{p.hparam.annotation} ({expanded})"


def type_problems(
    spec: Any, given: Mapping[str, Any], *, axes: bool = False
) -> list[tuple[str, str]] | None:
    """(name, message) for each value its annotation refuses (``axes``: each value is a
    list of candidates); None when the spec is not derived (the old check applies)."""
    params = _derived(spec)
    if params is None:
        return None
    by_name = {p.hparam.name: p for p in params}
    problems = []
    for key, value in given.items():
        p = by_name.get(key)
        if p is None:
            continue
        for candidate in value if axes and isinstance(value, list) else [value]:
            why = _type_problem(p, candidate)
            if why is not None:
                problems.append((key, _refusal(spec.name, _what(spec), p, candidate, why)))
                break
    return problems


def hparam_problems(spec: Any, values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(hyperparameter, message) for each value ``spec`` would refuse: an unknown name
    (with a "did you mean"), a wrong type, a bound or an unknown ``Literal`` choice."""
    from benchmark.host import mistyped_hparams

    typed = type_problems(spec, values)
    if typed is None:
        typed = mistyped_hparams(spec, dict(values))
    return unknown_problems(spec, values) + typed
