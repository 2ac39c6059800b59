"""Reading a suite file as YAML without letting the file exhaust the machine.

A suite is a few kilobytes of configuration, so anything far beyond that is hostile or a
mistake: a billion-laughs alias bomb validates in microseconds (aliases share one Python
object) and then costs minutes and gigabytes when pydantic and the grid expansion walk it,
a recursive alias or a 5000-deep list ends in a RecursionError traceback. Every limit
below is checked on the composed node graph *before* any Python object is built, and each
breach is one located ``SuiteError``.

Two conveniences every user expects and YAML 1.1 does not give: ``1e-3`` is a number (the
1.1 resolver needs a dot: ``1.0e-3``), and a key written twice is an error naming both
lines (PyYAML silently keeps the last).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

MAX_SUITE_BYTES = 1 << 20  # 1 MiB: the largest shipped suite is under 8 KiB
MAX_NODES = 100_000  # YAML nodes after expanding every alias where it is used
MAX_DEPTH = 32  # nesting of mappings and lists


class SuiteDocumentError(ValueError):
    """The file cannot be read as a suite document; the message is located."""


# Floats in exponent form without a dot (1e-3, 5E+2), on top of YAML 1.1's own forms.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class SuiteLoader(yaml.SafeLoader):
    """SafeLoader with exponent floats and duplicate keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: merged keys may be overridden, as YAML allows
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let SafeLoader report it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (first at line {first.start_mark.line + 1}, "
                    f"again at line {key_node.start_mark.line + 1}); the second would "
                    "silently win",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


SuiteLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def _check_size(root: yaml.Node, path: Path) -> None:
    """Refuse recursive aliases, nesting deeper than MAX_DEPTH and more than MAX_NODES
    nodes once every alias is expanded (counted, never built)."""
    expanded = 0
    # Iterative walk: (node, depth, ancestors on this path) so a cycle is seen as one.
    stack: list[tuple[yaml.Node, int, frozenset[int]]] = [(root, 1, frozenset())]
    while stack:
        node, depth, ancestors = stack.pop()
        expanded += 1
        line = node.start_mark.line + 1
        if expanded > MAX_NODES:
            raise SuiteDocumentError(
                f"{path}:{line}: the document expands to more than {MAX_NODES:,} values "
                "(aliases counted where they are used); a suite is a few hundred"
            )
        if depth > MAX_DEPTH:
            raise SuiteDocumentError(
                f"{path}:{line}: nested more than {MAX_DEPTH} levels deep; a suite needs about 6"
            )
        if isinstance(node, yaml.ScalarNode):
            continue
        if id(node) in ancestors:
            raise SuiteDocumentError(f"{path}:{line}: an alias refers to itself (a cycle)")
        inner = ancestors | {id(node)}
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = list(node.value)
        stack.extend((child, depth + 1, inner) for child in children)


def read_suite_document(path: Path) -> tuple[Any, yaml.Node | None]:
    """(the parsed document, its node tree for locating errors); raises
    SuiteDocumentError with ``file:line`` for anything that is not a sane YAML suite."""
    if not path.is_file():
        raise SuiteDocumentError(f"{path}: not a regular file")
    # Read at most one byte past the limit: the size stat gives is not to be trusted (a
    # file under /proc says 0 and is endless).
    with open(path, "rb") as f:
        raw = f.read(MAX_SUITE_BYTES + 1)
    if len(raw) > MAX_SUITE_BYTES:
        raise SuiteDocumentError(f"{path}: larger than {MAX_SUITE_BYTES:,} bytes, the limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SuiteDocumentError(
            f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})"
        ) from None
    loader = SuiteLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise SuiteDocumentError(
                f"{path}: nested more than {MAX_DEPTH} levels deep; a suite needs about 6"
            ) from None
        if root is None:
            return None, None
        _check_size(root, path)
        try:
            return loader.construct_document(root), root
        except (ValueError, KeyError, AttributeError, TypeError, OverflowError) as exc:
            # A value the tag cannot hold (`!!int abc`, `!!bool maybe`, an integer of
            # thousands of digits): PyYAML raises these unlocated.
            raise SuiteDocumentError(
                f"{path}: a value cannot be read: {type(exc).__name__}: {exc}"
            ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteDocumentError(f"{where}: malformed YAML: {problem}") from None
    finally:
        loader.dispose()
