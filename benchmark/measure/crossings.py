"""What crosses between the two sides of a security split, seen from the untrusted device.

One state machine serves two users: the security protocol's trace (how many crossings,
how many bytes) and the transcript an attacker holding the untrusted device records
(the tensors themselves). Both follow the same rules, so the bytes a split is charged for
and the traffic an attacker reads can never disagree.

Rules. The inputs start, and the outputs end, on the untrusted host (where the
application runs). Execution enters the trusted side when a trusted leaf starts while the
untrusted side holds control: the untrusted device *sends* the leaf's first tensor
argument. It returns when an untrusted leaf finishes without a trusted leaf having run
inside it (a wrapper that only delegates to a trusted layer is not untrusted work): the
untrusted device has then *received* the output of the last trusted module that completed
before that leaf started (for a split whose host is trusted, that is the tensor the
untrusted leaf was handed). Offline leaves (input-independent precomputation) neither
cross nor count. One round trip is an ``Exchange``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchmark.measure.tensors import leaf_modules, tensor_bytes

#: ``site_of(path)``: for a module's dotted path inside ``split.trusted``, the name of the
#: original model's module whose computation it serves, and how the untrusted host uses
#: the reply for that module: ``"replace"`` (the reply is the module's whole output) or
#: ``"add"`` (the reply is added to the untrusted side's own share of that module's
#: weight, held under the same name). None for trusted work that is no module's (glue).
SiteOf = Callable[[str], tuple[str, str] | None]


def keyed_site(path: str) -> tuple[str, str] | None:
    """The convention of the built-in splits: ``split.trusted`` is a ModuleDict whose keys
    are the original modules' dotted names with ``.`` written ``__``."""
    head = path.split(".", 1)[0]
    return (head.replace("__", "."), "replace") if head else None


@dataclass
class Exchange:
    """One round trip: the untrusted device sent ``sent``, the trusted device computed
    (part of) ``sites`` (original module names, in the order their work completed) and the
    untrusted device received ``received``. ``combine`` says how the host uses the reply
    for ``sites[0]`` (see ``SiteOf``)."""

    sent: torch.Tensor
    received: torch.Tensor | None = None
    sites: list[str] = field(default_factory=list)
    combine: str = "replace"

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.sent) + tensor_bytes(self.received)


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, list | tuple):
        for item in obj:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(obj, dict):
        return _first_tensor(list(obj.values()))
    return None


class CrossingRecorder:
    """Hooks on a split's sides that cut one forward into ``Exchange``s.

    ``keep_tensors`` False keeps only what the trace needs (byte counts), so timing runs
    do not copy activations."""

    def __init__(
        self,
        sides: dict[str, nn.Module],
        site_of: SiteOf = keyed_site,
        keep_tensors: bool = True,
    ) -> None:
        self.keep = keep_tensors
        self.exchanges: list[Exchange] = []
        self.sent_bytes = 0
        self.received_bytes = 0
        trusted = sides["trusted"]
        self._trusted_leaves = {id(m) for m in leaf_modules(trusted)}
        self._offline = (
            {id(m) for m in leaf_modules(sides["offline"])} if "offline" in sides else set()
        )
        self._site = {}
        self._trusted_modules: dict[int, nn.Module] = {}
        for path, module in trusted.named_modules():
            self._trusted_modules.setdefault(id(module), module)
            self._site.setdefault(id(module), site_of(path) if path else None)
        self._untrusted_leaves = {
            id(m): m
            for name, root in sides.items()
            if name != "trusted"
            for m in leaf_modules(root)
            if id(m) not in self._trusted_leaves and id(m) not in self._offline
        }
        self._on_trusted = False
        self._open: list[list[Any]] = []  # [delegated to trusted, last trusted output then]
        self._last_out: Any = None
        self._handles: list[Any] = []

    # ------------------------------------------------------------------ hooks

    def _trusted_pre(self, module: nn.Module, args: Any) -> None:
        if id(module) not in self._trusted_leaves:
            return
        for frame in self._open:
            frame[0] = True
        if not self._on_trusted:
            sent = _first_tensor(args)
            sent = torch.empty(0) if sent is None else sent
            self.sent_bytes += tensor_bytes(sent)
            self.exchanges.append(Exchange(sent=self._copy(sent)))
            self._on_trusted = True

    def _trusted_post(self, module: nn.Module, _args: Any, out: Any) -> None:
        if not self._on_trusted:
            return
        self._last_out = out
        site = self._site.get(id(module))
        ex = self.exchanges[-1]
        if site is not None:
            name, combine = site
            if name not in ex.sites:
                if not ex.sites:
                    ex.combine = combine
                ex.sites.append(name)

    def _untrusted_pre(self, _module: nn.Module, _args: Any) -> None:
        self._open.append([False, self._last_out])

    def _untrusted_post(self, _module: nn.Module, _args: Any, _out: Any) -> None:
        delegated, last = self._open.pop()
        if not delegated and self._on_trusted:
            self._close(last)

    def _close(self, received: Any) -> None:
        tensor = _first_tensor(received)
        tensor = torch.empty(0) if tensor is None else tensor
        self.received_bytes += tensor_bytes(tensor)
        self.exchanges[-1].received = self._copy(tensor)
        self._on_trusted = False

    def _copy(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().clone() if self.keep else torch.empty(0)

    # ------------------------------------------------------------------ use

    def __enter__(self) -> CrossingRecorder:
        for module in self._trusted_modules.values():
            self._handles.append(module.register_forward_pre_hook(self._trusted_pre))
            self._handles.append(module.register_forward_hook(self._trusted_post))
        for module in self._untrusted_leaves.values():
            self._handles.append(module.register_forward_pre_hook(self._untrusted_pre))
            self._handles.append(module.register_forward_hook(self._untrusted_post))
        return self

    def finish(self, output: Any) -> None:
        """The forward returned ``output``: if the trusted side held control, the output
        crosses back to the host."""
        if self._on_trusted:
            self._close(output)

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @property
    def crossings(self) -> int:
        """Tensors that crossed, either way (a round trip is two)."""
        return sum(1 + (ex.received is not None) for ex in self.exchanges)


class Transcript(list[Exchange]):
    """The exchanges of one forward, and the ``output`` the host got in the end."""

    output: Any = None


def record_transcript(
    split: Any, inputs: Any, site_of: SiteOf = keyed_site, sides: dict[str, nn.Module] | None = None
) -> Transcript:
    """The exchanges of one hybrid forward of ``split`` on ``inputs`` (a shared helper for
    a split's ``transcript``)."""
    if sides is None:
        sides = {"trusted": split.trusted, "untrusted": split.untrusted}
        offline = getattr(split, "offline", None)
        if isinstance(offline, nn.Module):
            sides["offline"] = offline
    # no_grad, not inference_mode: an attack may feed the tensors to autograd.
    with torch.no_grad(), CrossingRecorder(sides, site_of) as rec:
        output = split.forward(inputs)
        rec.finish(output)
    transcript = Transcript(rec.exchanges)
    transcript.output = output
    return transcript
