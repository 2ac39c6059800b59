"""The memory of one training step, counted in tensors and split by what each byte is for.

Why tensors and not the process or the allocator: on a CPU the resident set carries half
a gigabyte of interpreter, torch and allocator slack, which buries an optimizer state of a
few megabytes (two optimizers' RSS can differ by hundreds of MiB while their states differ
by under one: ``results/overhead/README.md``); a CUDA allocator peak is better but rounds
every block and exists on one kind of device only. Live tensor storages are the same
figure on every device, exact to the byte, and they can be attributed: memory-efficient
optimizers claim a smaller state, so the state has to be a column of its own, not a guess
from a difference of totals.

Why a ``TorchDispatchMode`` of our own rather than torch's ``MemTracker``
(``torch.distributed._tools.mem_tracker``): MemTracker is private API; it names a
storage by the region that allocated it, so on a CPU AdamW's in-step temporaries land in
"Optstate" (three times the parameters instead of two); and it raises
NotImplementedError when a module runs twice inside one context, which closure
optimizers and tied weights do. Here a storage's category is what it is (a parameter, a
parameter's ``.grad``, a tensor held in ``optimizer.state``, a module buffer), read from
those references, whoever allocated it.

How bytes are counted: what the pass allocates, plus what the model and the optimizer
already hold. Every storage an aten op returns is followed to its untyped storage,
counted once (views share their base's) by ``nbytes()`` until a weakref finalizer on it
fires; torch keeps one Python object per live storage, so the finalizer fires when the
memory is released, not when this meter drops its reference. Parameters, gradients,
optimizer state and buffers that exist before the pass are registered on entry. Other
older tensors are not the step's: a view of one (a batch window sliced from the data set,
which the tiny LLaMA's stream does) is not new memory, while the batch stacked from those
windows is. Bytes are what tensors hold: no allocator rounding, caching or
fragmentation, and scratch space inside one kernel (never a tensor) is not seen; tensors
without a storage (sparse, nested) are skipped, and a storage resized outside an op
(``UntypedStorage.resize_``) is re-read the next time an op returns it. Every device is
summed (AdamW keeps its ``step`` counters on the CPU when the parameters are on a GPU).
The cost is a Python call per aten op (measured: ``results/overhead/README.md``), so
the meter runs on a couple of extra steps outside any timed phase.

How the categories at the peak stay consistent: a storage's role is only certain when
the references are in place, so roles are read at "classification moments": on entry,
before and after each ``optimizer.step`` (the optimizer's step hooks), and after each
step call. The peak is tracked online with a clock that ticks at every allocation and
free; at the end, each storage live at the peak takes the role it had at the first
moment after the peak at which it was still alive (so a gradient being computed in
backward already counts as a gradient, and moments created inside the first step count
as optimizer state), or, if it died before any, its role at the last moment before the
peak (a projector being replaced). A storage with no role at that moment is an
activation or temporary (the batch, saved activations, the loss, an optimizer's
intermediates such as AdamW's denominator). When one storage plays several roles the
first of parameter, gradient, optimizer state, buffer wins. The categories at the peak
sum exactly to the peak.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass

from benchmark.records import Metric

PARAMS = "params"
GRADS = "grads"
STATE = "optimizer_state"
BUFFERS = "buffers"
OTHER = "activations"
CATEGORIES: tuple[str, ...] = (PARAMS, GRADS, STATE, BUFFERS, OTHER)

METER = "live tensor storages (TorchDispatchMode)"


class _Storage:
    """One storage's life on the tracker's clock and its role at each classification
    moment (absent: no role then)."""

    __slots__ = ("born", "died", "nbytes", "ref", "roles")

    def __init__(self, nbytes: int, born: int) -> None:
        self.nbytes = nbytes
        self.born = born
        self.died: int | None = None
        self.roles: dict[int, str] = {}
        self.ref: weakref.ref[Any] | None = None


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


def _collect(obj: Any, out: list[torch.Tensor]) -> None:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _collect(v, out)
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect(v, out)


def _storages(t: torch.Tensor) -> list[torch.UntypedStorage]:
    if type(t) is not torch.Tensor and is_traceable_wrapper_subclass(t):
        attrs, _ = t.__tensor_flatten__()  # type: ignore[attr-defined]
        inner = [getattr(t, attr) for attr in attrs]
        return [s for x in inner if isinstance(x, torch.Tensor) for s in _storages(x)]
    try:
        return [t.untyped_storage()]
    except (RuntimeError, NotImplementedError, TypeError):
        return []  # sparse, nested: no single storage


@dataclass(frozen=True)
class StepMemory:
    """What one pass measured, in bytes."""

    peak_bytes: int
    at_peak: dict[str, int]  # per category, summing to peak_bytes
    optimizer_state_bytes: int  # optimizer.state's storages at the end of the last step
    steps: int

    def metrics(self) -> dict[str, Metric]:
        at_peak = f"{METER}, at the peak of {self.steps} training steps"

        def m(value: int, meter: str) -> Metric:
            return Metric(value=float(value), unit="bytes", meter=meter, higher_is_better=False)

        return {
            "step_peak_tensor_bytes": m(self.peak_bytes, f"{METER}, peak of {self.steps} steps"),
            "step_params_bytes": m(self.at_peak[PARAMS], at_peak),
            "step_grads_bytes": m(self.at_peak[GRADS], at_peak),
            "step_peak_optimizer_state_bytes": m(self.at_peak[STATE], at_peak),
            "step_buffers_bytes": m(self.at_peak[BUFFERS], at_peak),
            "step_activations_bytes": m(self.at_peak[OTHER], at_peak),
            "step_optimizer_state_bytes": m(
                self.optimizer_state_bytes, f"{METER}, optimizer.state after the last step"
            ),
        }


METRIC_NAMES: tuple[str, ...] = (
    "step_peak_tensor_bytes",
    "step_params_bytes",
    "step_grads_bytes",
    "step_peak_optimizer_state_bytes",
    "step_buffers_bytes",
    "step_activations_bytes",
    "step_optimizer_state_bytes",
)


class StepMemoryTracker(TorchDispatchMode):
    """``with StepMemoryTracker(model, optimizer) as t: <steps, calling t.mark() after
    each>``, then ``t.result(steps)``."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        super().__init__()
        self.model = model
        self.optimizer = optimizer
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: dict[int, _Storage] = {}  # id of the live storage object -> record
        self._clock = 0
        self._peak_clock = 0
        self._peak_moment = 0  # moments before the peak
        self._dead_at_peak: list[_Storage] = []  # live at the current peak, dead since
        self._moment_clocks: list[int] = []
        self._moment_bytes: list[dict[str, int]] = []
        self._hooks: list[Any] = []
        self._alias_cache: dict[Any, bool] = {}
        self._active = False

    # ------------------------------------------------------------------ storages

    def _free(self, key: int, _ref: object) -> None:
        if not self._active:
            return
        rec = self._live.pop(key, None)
        if rec is None:
            return
        self._clock += 1
        rec.died = self._clock
        self.live_bytes -= rec.nbytes
        if rec.born <= self._peak_clock:
            self._dead_at_peak.append(rec)

    def _add(self, key: int, storage: torch.UntypedStorage, nbytes: int) -> _Storage:
        self._clock += 1
        rec = _Storage(nbytes, self._clock)
        rec.ref = weakref.ref(storage, partial(self._free, key))
        self._live[key] = rec
        self.live_bytes += nbytes
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
            self._peak_clock = self._clock
            self._peak_moment = len(self._moment_clocks)
            self._dead_at_peak.clear()
        return rec

    def _see(
        self, t: torch.Tensor, older: Callable[[], set[int]] | None = None
    ) -> tuple[_Storage, ...]:
        """The records of ``t``'s storages, registering new ones, except those whose ids
        ``older`` gives (storages an aliasing op took as inputs)."""
        return tuple(r for storage in _storages(t) for r in self._see_storage(storage, older))

    def _see_storage(
        self, storage: torch.UntypedStorage, older: Callable[[], set[int]] | None
    ) -> tuple[_Storage, ...]:
        key = id(storage)
        rec = self._live.get(key)
        if rec is None:
            if storage.device.type == "meta" or (older is not None and key in older()):
                return ()
            nbytes = storage.nbytes()
            return (self._add(key, storage, nbytes),) if nbytes else ()
        if storage.nbytes() != rec.nbytes:  # resized in place: the old size is gone
            self._live.pop(key)
            self._clock += 1
            rec.died = self._clock
            self.live_bytes -= rec.nbytes
            if rec.born <= self._peak_clock:
                self._dead_at_peak.append(rec)
            rec.ref = None  # dropped without firing: the new record's finalizer takes over
            nbytes = storage.nbytes()
            return (self._add(key, storage, nbytes),) if nbytes else ()
        return (rec,)

    def _walk(self, obj: Any, older: Callable[[], set[int]] | None = None) -> None:
        for v in obj:
            if isinstance(v, torch.Tensor):
                self._see(v, older)
            elif type(v) is list or type(v) is tuple:
                self._walk(v, older)

    def _aliases(self, func: Any) -> bool:
        """Whether an op may return its inputs' storages (views, in-place and out= ops).
        ``lift_fresh`` aliases by its schema, but its input is the tensor ``torch.tensor``
        just built outside the dispatcher: new memory."""
        known = self._alias_cache.get(func)
        if known is None:
            schema = getattr(func, "_schema", None)
            known = func is not torch.ops.aten.lift_fresh.default and (
                schema is None or any(r.alias_info is not None for r in schema.returns)
            )
            self._alias_cache[func] = known
        return known

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self._aliases(func):
            self._walk((out,))  # every storage it returns is new
            return out
        ids: list[set[int]] = []

        def older() -> set[int]:  # only for an output storage this meter does not know
            if not ids:
                found: list[torch.Tensor] = []
                _collect((args, kwargs), found)
                ids.append({id(s) for x in found for s in _storages(x)})
            return ids[0]

        # A view of an older tensor this meter does not count (the data set a batch is
        # sliced from) is not the step's memory.
        self._walk((out,), older)
        return out

    # ------------------------------------------------------------------ roles

    def _holders(self) -> list[tuple[str, torch.Tensor]]:
        params: dict[int, torch.Tensor] = {id(p): p for p in self.model.parameters()}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                params.setdefault(id(p), p)
        found: list[tuple[str, torch.Tensor]] = [(PARAMS, p) for p in params.values()]
        found += [(GRADS, p.grad) for p in params.values() if p.grad is not None]
        found += [(STATE, t) for t in _tensors(list(self.optimizer.state.values()))]
        found += [(BUFFERS, b) for b in self.model.buffers()]
        return found

    def mark(self) -> None:
        """A classification moment: read every storage's role from the references now."""
        seen = [(role, rec) for role, t in self._holders() for rec in self._see(t)]
        k = len(self._moment_clocks)
        self._moment_clocks.append(self._clock)  # after registering: all are born by now
        sizes = dict.fromkeys(CATEGORIES, 0)
        for role, rec in seen:
            if k not in rec.roles:  # the first role (priority order) wins
                rec.roles[k] = role
                sizes[role] += rec.nbytes
        self._moment_bytes.append(sizes)

    def _role_at_peak(self, rec: _Storage) -> str:
        clocks = self._moment_clocks
        for k in range(self._peak_moment, len(clocks)):
            if rec.died is not None and rec.died <= clocks[k]:
                break  # dead at this moment and every later one
            return rec.roles.get(k, OTHER)
        for k in range(min(self._peak_moment, len(clocks)) - 1, -1, -1):
            if clocks[k] >= rec.born:
                return rec.roles.get(k, OTHER)
            break
        return OTHER

    # ------------------------------------------------------------------ context

    def __enter__(self) -> StepMemoryTracker:
        self._active = True
        self._hooks = [
            self.optimizer.register_step_pre_hook(lambda *_: self.mark()),
            self.optimizer.register_step_post_hook(lambda *_: self.mark()),
        ]
        self.mark()  # parameters, gradients, state and buffers that already exist
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            for handle in self._hooks:
                handle.remove()
            self._hooks = []
            self.mark()
            self._active = False

    def result(self, steps: int) -> StepMemory:
        live = [r for r in self._live.values() if r.born <= self._peak_clock]
        at_peak = dict.fromkeys(CATEGORIES, 0)
        for rec in (*live, *self._dead_at_peak):
            at_peak[self._role_at_peak(rec)] += rec.nbytes
        if sum(at_peak.values()) != self.peak_bytes:
            raise AssertionError(f"categories {at_peak} do not sum to the peak {self.peak_bytes}")
        return StepMemory(
            peak_bytes=self.peak_bytes,
            at_peak=at_peak,
            optimizer_state_bytes=self._moment_bytes[-1][STATE],
            steps=steps,
        )


def null_metrics(reason: str) -> dict[str, Metric]:
    return {name: Metric.null("bytes", METER, reason) for name in METRIC_NAMES}


def track_step_memory(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run_step: Callable[[], object],
    steps: int = 2,
) -> StepMemory:
    """Run ``run_step`` ``steps`` times under the tracker; exact figures, errors raised."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, not {steps}")
    with StepMemoryTracker(model, optimizer) as tracker:
        for _ in range(steps):
            run_step()  # its result (the loss) is dropped before the moment below
            tracker.mark()
    return tracker.result(steps)


def measure_step_memory(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run_step: Callable[[], object],
    steps: int = 2,
) -> dict[str, Metric]:
    """Peak live tensor bytes over ``steps`` calls of ``run_step`` (one training step:
    forward, backward, ``optimizer.step``) and its breakdown, as metrics.

    Two steps by default: the first creates the optimizer state, the second runs with
    it. A pass that fails gives null metrics with the reason, never zeros.
    """
    try:
        return track_step_memory(model, optimizer, run_step, steps).metrics()
    except Exception as exc:  # the figures are missing, not zero
        return null_metrics(f"memory pass failed: {type(exc).__name__}: {exc}")
