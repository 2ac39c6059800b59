"""Attribute a quantity (FLOPs, seconds) to the *sides* of a partitioned model.

A side is a module tree (a security split's ``trusted``, ``untrusted`` or ``offline``
part). Every module of every side gets forward hooks; the quantity accrued between two
hook events goes to the side of the innermost module running at that moment. So work done
outside any leaf, such as an attention block's score products written as functional calls
in its ``forward``, is charged to the side that owns that block, not lost or charged to the
other side, which hooks on leaves alone would do.

Work done while no side's module runs (the glue of the caller) is reported as
``"unattributed"``; ``"total"`` is the whole quantity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn


class SideMeter:
    """Hooks that split the readings of ``meter`` among ``sides`` while installed."""

    def __init__(self, sides: dict[str, nn.Module], meter: Callable[[], float]) -> None:
        self.meter = meter
        self.totals: dict[str, float] = {name: 0.0 for name in sides}
        self.totals["unattributed"] = 0.0
        self._side_of: dict[int, str] = {}
        self._modules: dict[int, nn.Module] = {}
        for name, root in sides.items():
            for module in root.modules():
                # A module reachable from two sides counts for the first one listed.
                self._side_of.setdefault(id(module), name)
                self._modules.setdefault(id(module), module)
        self._stack: list[str] = []
        self._mark = 0.0
        self._start = 0.0

    def _flush(self) -> None:
        now = self.meter()
        self.totals[self._stack[-1] if self._stack else "unattributed"] += now - self._mark
        self._mark = now

    @contextmanager
    def installed(self) -> Iterator[SideMeter]:
        handles = []

        def pre(module: nn.Module, _args: Any) -> None:
            self._flush()
            self._stack.append(self._side_of[id(module)])

        def post(module: nn.Module, _args: Any, _out: Any) -> None:
            self._flush()
            self._stack.pop()

        for module in self._modules.values():
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
        self._start = self._mark = self.meter()
        try:
            yield self
        finally:
            self._flush()
            for h in handles:
                h.remove()
            self.totals["total"] = self._mark - self._start
