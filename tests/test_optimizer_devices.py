"""Every registered optimizer keeps its work on its parameters' device.

A tensor built inside ``step`` without ``device=`` lands on the default device (the CPU);
on a GPU the first op that mixes it with a parameter-device tensor fails, on a CPU-only
machine the same code runs silently. The check here needs no GPU. Parameters, gradients
and losses are CPU tensors wrapped in ``OnDevice``, which reports another device: meta,
one a CPU-only build knows and never initialises (a CUDA label trips the build's CUDA
checks in ``.to`` and in the factories). Every op of the step, the wrappers' own and,
through a dispatch mode, the factories, is checked against CUDA's device rule before it
runs on the real CPU data underneath. The values are real, so the step takes its real
branches. Every tensor-to-Python conversion of a device tensor (``.item()``,
``float(t)``, ``if t > 0``), every data-dependent shape and every device-to-host copy is
a host sync: on a GPU each one waits for the queue to drain. Those are listed per
optimizer in ``HOST_SYNCS`` with the reason each exists; a new one fails the test until
it is listed.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves, tree_map

from tests.helpers import registry
from tests.test_optimizers import Block, data

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()
VIRTUAL = torch.device("meta")
CPU = torch.device("cpu")
SCALAR = torch.ops.aten._local_scalar_dense.default
# Ops whose output shape depends on the data: on a GPU each one waits for the result.
DATA_SHAPED = {"nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive"}
# Ops that may take tensors on two devices: copies, and CPU index tensors.
MOVES = {"_to_copy", "copy_", "to", "_copy_from", "_copy_from_and_resize"}
INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}
REAL_GENERATOR = torch.Generator

Factory = Callable[[nn.Module], torch.optim.Optimizer]


def optimizer_names() -> list[str]:
    return sorted(name for kind, name in registry().methods if kind == "optimizer")


def default_factory(name: str) -> Factory:
    spec = registry().method("optimizer", name)
    return lambda model: spec.load()(model, **dict(spec.defaults))


# Cadences shortened so that three steps pass through every refresh path (a new subspace,
# moment transport/realignment, a reseeded projection, a convergence check): the code that
# runs every few hundred steps is where a tensor built on the default device hides.
SHORT_CADENCE = {"update_gap": 2, "kappa": 2, "min_gap": 1, "max_gap": 2}
STEPS = 3


def short_cadence_factory(name: str) -> Factory:
    spec = registry().method("optimizer", name)
    options = {**dict(spec.defaults)}
    options.update({k: v for k, v in SHORT_CADENCE.items() if k in options})
    return lambda model: spec.load()(model, **options)


# Each allowed host sync: (file, function) -> why it is there. A site that no longer
# syncs is harmless here; a new one fails until it is listed with its reason.
HOST_SYNCS: dict[str, dict[tuple[str, str], str]] = {
    "adarankgrad": {
        ("plugins/optimizers/adarankgrad.py", "adaptive_rank"): (
            "the rank r_t is read from the singular values' energy and sets the shapes of "
            "the projector and moments; a shape lives on the host (once per refresh)"
        ),
        ("plugins/optimizers/adarankgrad.py", "_due"): (
            "the convergence check decides whether the subspace (and so tensor shapes) "
            "changes: one scalar read per window of min_gap steps"
        ),
    },
    "plumage": {
        ("plugins/optimizers/plumage.py", "inclusion_probabilities"): (
            "the min(m, n) singular values go to the host for the water-filling of the "
            "inclusion probabilities and the systematic sample (once per refresh)"
        ),
    },
}


@dataclass
class DeviceReport:
    """What one optimizer step did with devices and host syncs."""

    error: str | None = None
    wrong_device: list[str] = field(default_factory=list)
    syncs: list[tuple[str, str]] = field(default_factory=list)


def _site() -> tuple[str, str]:
    """The innermost frame outside torch's own machinery (torch.optim's algorithms count)
    and outside this file: where the step asked for it."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename).resolve()
        if path == HERE or frame.filename.endswith("optim/optimizer.py"):
            continue
        if "/torch/" in frame.filename and "/torch/optim/" not in frame.filename:
            continue
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(path.name)
        return (str(where), frame.name)
    return ("<unknown>", "?")


def _where() -> str:
    return ":".join(_site())


class OnDevice(torch.Tensor):
    """A CPU tensor that reports ``VIRTUAL`` as its device."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> OnDevice:  # type: ignore[misc]
        out = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls,
            elem.shape,
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            device=VIRTUAL,
            requires_grad=elem.requires_grad,
        )
        out.elem = elem
        return out

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return _run(func, args, kwargs or {}, None)

    __torch_function__ = torch._C._disabled_torch_function_impl


class DeviceCheck(TorchDispatchMode):
    """Sees every op of the step, factories included; keeps the findings."""

    def __init__(self) -> None:
        super().__init__()
        self.wrong: list[str] = []
        self.syncs: list[tuple[str, str]] = []
        self.pending: dict[int, tuple[torch.Tensor, str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return _run(func, args, kwargs or {}, self)

    def check_operands(self, func: Any, name: str, args: tuple, inputs: list) -> None:
        """CUDA's rule: every operand on one device, except 0-dim CPU scalars, copies,
        and CPU index tensors into a device tensor."""
        if name in MOVES:
            return
        operands = inputs
        if name in INDEXING and args and isinstance(args[0], OnDevice):
            indices = [i for i in tree_leaves(args[1]) if isinstance(i, torch.Tensor)]
            operands = [t for t in inputs if not any(t is i for i in indices)]
        devices = {t.device.type for t in operands if t.ndim > 0 or t.device != CPU}
        if len(devices) > 1:
            shapes = [(tuple(t.shape), t.device.type) for t in inputs]
            self.wrong.append(f"{func} mixes devices {shapes} at {_where()}")

    def never_moved(self) -> list[str]:
        """Tensors built off the device whose line of descent never reached it (nor a
        scalar): a CPU draw from a seeded generator is fine once moved, a buffer built
        with ``torch.zeros(k)`` and worked on where it was built is not."""
        return [desc for _, desc in self.pending.values()]


def _data_shaped(name: str, args: tuple) -> bool:
    if name in DATA_SHAPED:
        return True
    return name == "index" and any(
        isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in tree_leaves(args[1:])
    )


def _run(func: Any, args: tuple, kwargs: dict, check: DeviceCheck | None) -> Any:
    name = func.overloadpacket.__name__
    inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    on_device = any(isinstance(t, OnDevice) for t in inputs)
    target = kwargs.get("device")
    if target is not None:
        target = torch.device(target)
        if target.type == VIRTUAL.type:
            kwargs = {**kwargs, "device": CPU}
    if check is not None:
        check.check_operands(func, name, args, inputs)
        if on_device and (func is SCALAR or _data_shaped(name, args)):
            check.syncs.append(_site())
        if on_device and name in MOVES and target == CPU:
            check.syncs.append(_site())  # a device-to-host copy waits for the device
    plain_args, plain_kwargs = tree_map(
        lambda t: t.elem if isinstance(t, OnDevice) else t, (args, kwargs)
    )
    out = func(*plain_args, **plain_kwargs)
    if func is SCALAR:
        return out
    if target is not None:
        lands_on_device = target.type == VIRTUAL.type
    elif name == "copy_":
        lands_on_device = isinstance(args[0], OnDevice)
    else:
        lands_on_device = on_device
    by_elem = {id(t.elem): t for t in inputs if isinstance(t, OnDevice)}
    born_off_device = not inputs or (
        check is not None and any(id(t) in check.pending for t in inputs)
    )

    def wrap(o: Any) -> Any:
        if not isinstance(o, torch.Tensor):
            return o
        if id(o) in by_elem:  # an in-place op returns its (wrapped) argument
            return by_elem[id(o)]
        if lands_on_device:
            return OnDevice(o)
        if check is not None and o.ndim > 0 and born_off_device:
            check.pending[id(o)] = (o, f"{func} -> cpu {tuple(o.shape)} at {_where()}")
        return o

    if check is not None:
        for t in inputs:  # a tensor built off the device hands its status on (or is moved)
            check.pending.pop(id(t), None)
    return tree_map(wrap, out)


def _to_device(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters report the virtual device."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        for key, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[key] = nn.Parameter(OnDevice(p.detach().clone()))
    return twin


def _closure(
    model: nn.Module, shadow: nn.Module, opt: torch.optim.Optimizer
) -> Callable[..., torch.Tensor]:
    """The loss and gradients at the device model's current weights, computed by a CPU
    twin (autograd cannot run through the wrappers) and handed back as device tensors."""
    x, y = data(0)
    pairs = list(zip(model.parameters(), shadow.parameters(), strict=True))

    def closure(backward: bool = True) -> torch.Tensor:
        with _disable_current_modes():
            return _twin_closure(backward)

    def _twin_closure(backward: bool) -> torch.Tensor:
        with torch.no_grad():
            for p, s in pairs:
                s.copy_(p.elem)
        if not backward:
            with torch.no_grad():
                return OnDevice(nn.functional.mse_loss(shadow(x), y))
        shadow.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(shadow(x), y)
        loss.backward()
        for p, s in pairs:
            p.grad = OnDevice(s.grad.detach().clone())
        return OnDevice(loss.detach())

    return closure


def _generator(device: Any = "cpu") -> torch.Generator:
    """A generator asked for on the virtual device: a CPU one (only devices matter)."""
    if torch.device(device).type == VIRTUAL.type:
        device = "cpu"
    return REAL_GENERATOR(device=device)


def device_report(
    factory: Factory, dtype: torch.dtype = torch.float32, steps: int = STEPS
) -> DeviceReport:
    """``steps`` steps of ``factory``'s optimizer with its parameters on a device other than
    the default one."""
    report = DeviceReport()
    torch.manual_seed(0)
    shadow = Block().to(dtype)
    model = _to_device(shadow)
    opt = factory(model)
    closure = _closure(model, shadow, opt)
    check = DeviceCheck()
    torch.Generator = _generator  # type: ignore[misc,assignment]
    try:
        for _ in range(steps):
            if getattr(opt, "needs_closure", False):
                with check:
                    opt.step(closure)
            else:
                closure()
                with check:
                    opt.step()
    except Exception as exc:  # an op that refuses the devices it was given
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(ROOT / "plugins")]
        at = f" at {ours[-1].filename}:{ours[-1].lineno}" if ours else ""
        report.error = f"{type(exc).__name__}: {exc}{at}"
    finally:
        torch.Generator = REAL_GENERATOR  # type: ignore[misc]
    report.wrong_device = check.wrong + check.never_moved()
    report.syncs = check.syncs
    for state in opt.state.values():
        for t in tree_leaves(state):
            if isinstance(t, torch.Tensor) and t.ndim and not isinstance(t, OnDevice):
                report.wrong_device.append(f"state {tuple(t.shape)} left on {t.device}")
    for p in model.parameters():
        if not isinstance(p, OnDevice):
            report.wrong_device.append(f"parameter {tuple(p.shape)} replaced on {p.device}")
    return report


@pytest.mark.parametrize("name", optimizer_names())
def test_step_keeps_every_tensor_on_the_parameter_device(name: str) -> None:
    report = device_report(short_cadence_factory(name))
    assert report.error is None, report.error
    assert not report.wrong_device, report.wrong_device


@pytest.mark.parametrize("name", optimizer_names())
def test_host_syncs_are_the_listed_ones(name: str) -> None:
    report = device_report(short_cadence_factory(name))
    allowed = HOST_SYNCS.get(name, {})
    unlisted = sorted({s for s in report.syncs if s not in allowed})
    assert not unlisted, f"{name}: tensor-to-Python conversions in step at {unlisted}"


def test_the_check_catches_a_tensor_built_on_the_default_device() -> None:
    """The bug class this file exists for, in a few lines: a buffer made with
    ``torch.zeros(k)`` then indexed by a parameter-device tensor."""

    class Careless(torch.optim.Optimizer):
        def __init__(self, params) -> None:  # type: ignore[no-untyped-def]
            super().__init__(params, {"lr": 0.1})

        @torch.no_grad()
        def step(self, closure=None):  # type: ignore[no-untyped-def]
            for group in self.param_groups:
                for p in group["params"]:
                    if p.ndim != 2:
                        continue
                    scores = torch.zeros(p.shape[0])
                    order = torch.argsort(p.grad.norm(dim=-1))
                    scores[order] = 1.0
                    p.add_(p.grad * scores[:, None], alpha=-group["lr"])

    report = device_report(lambda m: Careless(m.parameters()))
    assert any("mixes devices" in w for w in report.wrong_device), report


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", optimizer_names())
def test_one_real_cuda_step(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = Block().to("cuda", dtype)
    opt = default_factory(name)(model)
    x, y = (t.to("cuda", dtype) for t in data(0))

    def closure(backward: bool = True) -> torch.Tensor:
        if not backward:
            with torch.no_grad():
                return nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    if getattr(opt, "needs_closure", False):
        opt.step(closure)
    else:
        closure()
        opt.step()
    for p in model.parameters():
        assert p.device.type == "cuda" and p.dtype == dtype
        assert torch.isfinite(p).all()
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    for state in opt.state.values():
        for t in tree_leaves(state):
            if isinstance(t, torch.Tensor) and t.ndim:
                assert t.device.type == "cuda", (name, t.shape, t.device)
                if t.is_floating_point():
                    assert torch.isfinite(t).all(), name
