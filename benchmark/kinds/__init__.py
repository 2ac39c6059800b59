"""The four kind contracts and the specs that plugins register.

A plugin registers *specs* (plain data plus a factory). The host checks each spec against
its kind's contract when it is registered (``check_spec``) and checks the object a factory
builds when a run uses it (``check_built``), so a broken plugin is reported with a reason
instead of failing somewhere deep inside a protocol.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

if TYPE_CHECKING:  # the host lists and validates without importing torch
    import torch
    from torch import nn

Kind = Literal["optimizer", "compressor", "security_split", "detector"]
KINDS: tuple[str, ...] = get_args(Kind)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


class ContractError(ValueError):
    """A plugin's spec or built object does not satisfy its kind's contract."""


# --------------------------------------------------------------------------- method side


@runtime_checkable
class Compressor(Protocol):
    """What a compressor factory builds: ``compress`` returns a real smaller/faster model."""

    def compress(self, model: nn.Module, ctx: Any) -> nn.Module: ...


@runtime_checkable
class SplitModel(Protocol):
    """A model partitioned between a trusted and an untrusted device.

    ``untrusted_state`` is what an attacker holding the untrusted device stores, keyed by
    the original model's parameter names (a residual under the original name, a missing
    layer simply absent), so attacks can load it into a fresh copy of the architecture.

    A split should also offer ``transcript(inputs) -> list[Exchange]``
    (``benchmark.measure.crossings``): what the untrusted device sent and received, round
    trip by round trip, during one hybrid forward, with the original modules the trusted
    side computed; ``record_transcript`` builds it from hooks. A split without it still
    runs, but the traffic attack fails on it, so its verdict is ``incomplete``. Optional
    attributes: ``offline`` (a module of input-independent precomputation, with
    ``offline_side`` naming the side that holds it) and ``untrusted_dtype``.
    """

    trusted: nn.Module
    untrusted: nn.Module

    def forward(self, inputs: torch.Tensor) -> torch.Tensor: ...

    def untrusted_state(self) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class SecuritySplitter(Protocol):
    """What a security_split factory builds."""

    def split(self, model: nn.Module) -> SplitModel: ...


@runtime_checkable
class Detector(Protocol):
    """What a detector factory builds. Higher scores mean more likely out-of-distribution.

    A detector may also offer ``pvalue(model, batch) -> Tensor`` (small means anomalous);
    the detector protocol then reports the Type-I error at alpha as well.
    """

    def fit(self, model: nn.Module, in_distribution_batches: Iterable[Any]) -> None: ...

    def score(self, model: nn.Module, batch: Any) -> torch.Tensor: ...


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


class _Factory:
    """What every spec does with its factory: a callable, or a lazy ``module:attribute``."""

    factory: Callable[..., Any] | str
    defaults: Mapping[str, Any]
    name: str

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

    ``defaults`` lists every hyperparameter the factory accepts with its default; a suite
    that names any other hyperparameter is rejected with a "did you mean".
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
    """A model, its data and its quality metric for one kind; ``factory(**options)``."""

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


def check_spec(spec: object) -> None:
    """Reject a registration that breaks its kind's contract, with the reason."""
    if not isinstance(spec, MethodSpec | WorkloadSpec | AttackSpec):
        raise ContractError(
            f"register() takes a MethodSpec, WorkloadSpec or AttackSpec, got {type(spec).__name__}"
        )
    if not isinstance(spec.name, str) or not _NAME.match(spec.name):
        raise ContractError(
            f"name {spec.name!r} must be lower-case letters, digits, '_', '-' or '.'"
        )
    if not isinstance(spec, AttackSpec) and spec.kind not in KINDS:
        raise ContractError(f"{spec.name}: kind {spec.kind!r} is not one of {list(KINDS)}")
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


def _leading_args(spec: object) -> int:
    """Positional arguments a factory takes before its hyperparameters (an optimizer's
    model)."""
    return 1 if isinstance(spec, MethodSpec) and spec.kind == "optimizer" else 0


_BUILT_CONTRACT: dict[str, type] = {
    "compressor": Compressor,
    "security_split": SecuritySplitter,
    "detector": Detector,
}


def check_built(spec: MethodSpec | AttackSpec, obj: object) -> None:
    """Check what a factory returned before a protocol relies on it."""
    if isinstance(spec, AttackSpec):
        if not callable(obj):
            raise ContractError(f"attack {spec.name}: factory must return a callable")
        return
    if spec.kind == "optimizer":
        import torch

        if not isinstance(obj, torch.optim.Optimizer):
            raise ContractError(
                f"optimizer {spec.name}: factory returned {type(obj).__name__}, "
                "expected a torch.optim.Optimizer"
            )
        return
    proto = _BUILT_CONTRACT[spec.kind]
    if not isinstance(obj, proto):
        raise ContractError(
            f"{spec.kind} {spec.name}: factory returned {type(obj).__name__}, which lacks "
            f"the {proto.__name__} interface"
        )


@dataclass(frozen=True)
class Verdict:
    """A label column: ``bad`` when the mean ``metric`` >= ``threshold``, else ``good``;
    ``missing`` when the metric is null in any of the row's runs (e.g. an attack failed,
    so the worst case is unknown), or "n/a" where the null's reason does not start with
    ``missing`` (nothing to measure). Rows labelled ``bad`` rank below every good row, and
    ``missing`` rows below those: an unmeasured row is never ranked as safe."""

    metric: str
    threshold: float
    bad: str
    good: str
    column: str = "verdict"
    missing: str = "n/a"
    # When set: a row whose point estimate is good but whose 95% interval (a single run's)
    # reaches the threshold gets this label, ranked between good and bad rows.
    uncertain: str | None = None


@dataclass(frozen=True)
class KindInfo:
    """How a kind's runs are ranked on a leaderboard.

    Rows rank by ``primary`` (rounded to multiples of ``primary_bin`` when given, so that
    figures within noise of each other tie), then by each ``(metric, higher_is_better)``
    of ``tiebreak``; a ``verdict`` puts its bad rows last."""

    primary: str
    higher_is_better: bool
    columns: tuple[str, ...]
    tiebreak: tuple[tuple[str, bool], ...] = ()
    primary_bin: float | None = None
    verdict: Verdict | None = None


KIND_INFO: dict[str, KindInfo] = {
    "optimizer": KindInfo(
        primary="eval_loss",
        higher_is_better=False,
        columns=(
            "eval_loss",
            "perplexity",
            "steps_to_target",
            "time_to_target",
            "step_time",
            "tokens_per_s",
            "peak_memory",
            "optimizer_state_bytes",
            "train_host_rss_growth",
        ),
    ),
    "compressor": KindInfo(
        primary="quality_after",
        higher_is_better=True,
        columns=(
            "quality_before",
            "quality_after",
            "params_kept_ratio",
            "bytes_kept_ratio",
            "latency_speedup",
            "compression_time",
        ),
    ),
    # Ranked by the tuple (what the attacker recovers, trusted compute with the trusted
    # side's offline work against the whole model's, modelled overhead); recovered ratios
    # in the same 0.05 bin count as equally secure; a split whose attacker closes half the
    # gap to the original or more is "exposed", one whose interval reaches that line
    # "inconclusive", and one whose worst case is unknown (an attack failed)
    # "incomplete", ranked last.
    "security_split": KindInfo(
        primary="attack_recovered_ratio",
        higher_is_better=False,
        columns=(
            "max_abs_output_diff",
            "quality",
            "trusted_flops_share",
            "trusted_flops_vs_original",
            "trusted_bytes_vs_original",
            "offline_flops",
            "latency_overhead",
            "modelled_latency_overhead",
            "attack_recovered_ratio",
            "mia_auroc",
        ),
        tiebreak=(("trusted_flops_vs_original", False), ("modelled_latency_overhead", False)),
        primary_bin=0.05,
        verdict=Verdict(
            "attack_recovered_ratio",
            0.5,
            bad="exposed",
            good="protected",
            missing="incomplete",
            uncertain="inconclusive",
        ),
    ),
    "detector": KindInfo(
        primary="auroc",
        higher_is_better=True,
        columns=(
            "auroc",
            "aupr_in",
            "aupr_out",
            "fpr_at_95_tpr",
            "fpr_at_95_tpr_id",
            "type1_error_at_alpha",
            "power_at_alpha",
            "target_f1",
            "labels_used",
            "fit_time",
            "latency_per_sample",
        ),
    ),
}
