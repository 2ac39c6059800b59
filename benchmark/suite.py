"""Declarative suites: YAML -> validated ``Suite`` -> expanded ``RunSpec`` list.

Validation happens in two passes, both reported with the file, the line and the key:
the shape (pydantic), then the names against the plugin registry (unknown method,
workload, hyperparameter or attack, with a "did you mean"). Every problem is collected,
not just the first, so a user fixes a suite in one go.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
)

from benchmark.host import Registry, UnknownName, mistyped_hparams, suggest, unknown_hparams
from benchmark.hparams import type_problems
from benchmark.kinds import KIND_INFO, Kind, KindDef, get_kind, registered_kinds
from benchmark.records import Axis, Budget, RunSpec, refuse_non_json
from benchmark.suite_yaml import SuiteDocumentError, read_suite_document

Device = Literal["auto", "cpu", "cuda"]


class SuiteError(ValueError):
    """A suite that cannot be run; ``problems`` holds one located message each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DeviceUnavailable(RuntimeError):
    """The suite or the command line asks for a device this machine does not have."""


def _distinct_seeds(seeds: list[int]) -> list[int]:
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"seeds {repeated} are listed more than once (a seed is one run)")
    return seeds


# Whole numbers only (``true`` is not seed 1, ``1.5`` not seed 1), each once, within what
# every generator accepts.
Seeds = Annotated[
    list[Annotated[StrictInt, Field(ge=0, lt=2**63)]], AfterValidator(_distinct_seeds)
]


class SuiteBudget(Budget):
    """A run's budget as a suite writes it: ``eval_every`` (steps between evaluations, for
    the kinds whose protocol has that option) is shorthand for ``protocol: {eval_every:
    N}`` and travels there, so a run's id is the same whichever way the suite says it."""

    eval_every: int | None = Field(default=None, ge=1)


def option_axes(options: dict[str, Any]) -> dict[str, list[Any]]:
    """The options of a workload entry that are sweeps: a list of numbers or booleans
    (``hidden_width: [8, 16, 32]``) is one run per value, as a method's grid is. A list of
    strings stays one value (names, as ``categories: [a, b]``); no built-in workload takes
    a list of numbers as one value (``check_names`` refuses one that would)."""
    return {
        k: v
        for k, v in options.items()
        if isinstance(v, list) and v and all(isinstance(x, int | float) for x in v)
    }


def option_points(options: dict[str, Any]) -> list[dict[str, Any]]:
    """A workload entry's options once its sweeps are expanded, in file order."""
    axes = option_axes(options)
    if not axes:
        return [options]
    return [
        {**options, **dict(zip(axes, point, strict=True))}
        for point in itertools.product(*axes.values())
    ]


def _axis_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class MethodEntry(BaseModel):
    """A method with fixed hyperparameters, a tuning grid and variants.

    ``grid`` axes are *tuned*: reports keep one winner over them, chosen on validation.
    ``variants`` axes are operating points reported side by side (a pruning amount, a bit
    width): choosing a "winner" among them would only pick the mildest compression. Both
    are expanded as a product."""

    model_config = ConfigDict(extra="forbid")

    name: str
    hparams: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variants: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("grid", "variants")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid axis {key!r} has no values")
        return grid

    @field_validator("hparams", "grid", "variants")
    @classmethod
    def _finite(cls, values: dict[str, Any]) -> dict[str, Any]:
        return refuse_non_json(values)


class WorkloadEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _finite(cls, values: dict[str, Any]) -> dict[str, Any]:
        return refuse_non_json(values)


class Experiment(BaseModel):
    """Methods of one kind crossed with workloads and seeds."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    workloads: list[WorkloadEntry] = Field(min_length=1)
    methods: list[MethodEntry] = Field(min_length=1)
    seeds: Seeds | None = None
    budget: SuiteBudget | None = None
    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    attacks: list[str] = Field(default_factory=list)
    protocol: dict[str, Any] = Field(default_factory=dict)
    # What the report draws the metric against (``axis: workload.hidden_width`` or the
    # mapping form); see ``records.Axis``. Carried by every run, not part of its id.
    axis: Annotated[Axis | None, BeforeValidator(_axis_shorthand)] = None

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        """A kind registered in this process (built-ins, and those of the plugins a
        ``Registry`` has loaded: every caller builds it before loading a suite)."""
        known = registered_kinds()
        if kind not in known:
            raise ValueError(
                f"unknown kind {kind!r}{suggest(kind, known)}; known: {', '.join(sorted(known))}"
            )
        return kind

    @field_validator("protocol")
    @classmethod
    def _finite(cls, values: dict[str, Any]) -> dict[str, Any]:
        return refuse_non_json(values)

    @field_validator("workloads", "methods", mode="before")
    @classmethod
    def _names_as_shorthand(cls, entries: Any) -> Any:
        if isinstance(entries, list):
            return [{"name": e} if isinstance(e, str) else e for e in entries]
        return entries


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = ""
    device: Device = "auto"
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)
    budget: SuiteBudget = Field(default_factory=SuiteBudget)
    timeout_s: float = Field(default=1800.0, gt=0, allow_inf_nan=False)
    # Runs at a time when the command line does not say (timing-sensitive suites declare
    # 1; the executor pins concurrent runs to their own cores either way).
    jobs: int | None = Field(default=None, ge=1)
    # When set, every method entry of an experiment that tunes anything must try exactly
    # this many grid points, so no method wins by having been tuned harder than the others.
    tuning_budget: int | None = Field(default=None, ge=1)
    experiments: list[Experiment] = Field(min_length=1)


# --------------------------------------------------------------------------- loading


def load_suite(path: str | Path) -> Suite:
    """Parse and shape-check a suite file; raise SuiteError with located messages."""
    path = Path(path)
    if not path.exists():
        raise SuiteError([f"{path}: no such suite file"])
    if not path.is_file():
        raise SuiteError([f"{path}: not a regular file (a suite is a YAML file)"])
    try:
        data, root = read_suite_document(path)
    except SuiteDocumentError as exc:
        raise SuiteError([str(exc)]) from None
    except OSError as exc:
        raise SuiteError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if not isinstance(data, dict):
        raise SuiteError([f"{path}:1: a suite is a mapping with 'name' and 'experiments'"])
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            given = err.get("input")
            shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
            problems.append(f"{_where(path, root, loc)}: {_dotted(loc)}: {err['msg']}{shown}")
        raise SuiteError(problems) from None


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _where(path: Path, root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    """``file:line`` of the deepest YAML node the error location reaches."""
    node = root
    line = 1 if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return f"{path}:{line}"


# --------------------------------------------------------------------------- checking names


def check_names(suite: Suite, registry: Registry, path: str | Path = "<suite>") -> None:
    """Every method, workload, hyperparameter, option and attack must be registered."""
    path = Path(path)
    try:
        root = read_suite_document(path)[1] if path.is_file() else None
    except (SuiteDocumentError, OSError):
        root = None  # load_suite already refused it; messages then lack line numbers
    problems: list[str] = []

    def add(loc: tuple[Any, ...], message: str) -> None:
        problems.append(f"{_where(path, root, loc)}: {_dotted(loc)}: {message}")

    for i, exp in enumerate(suite.experiments):
        base = ("experiments", i)
        try:
            registry.kind(exp.kind)
        except UnknownName as exc:
            add((*base, "kind"), str(exc))
            continue
        for j, w in enumerate(exp.workloads):
            try:
                spec = registry.workload(exp.kind, w.name)
            except UnknownName as exc:
                add((*base, "workloads", j, "name"), str(exc))
                continue
            if problem := spec.reference_problem():
                add((*base, "workloads", j, "name"), problem)
            sweeps = option_axes(w.options)
            fixed = {k: v for k, v in w.options.items() if k not in sweeps}
            problems_here = (
                unknown_hparams(spec, w.options)
                + mistyped_hparams(spec, fixed)
                + mistyped_hparams(spec, sweeps, axes=True)
            )
            for key in sweeps:
                # Ambiguous: the option's type (or, undeclared, its default) takes the list.
                whole = type_problems(spec, {key: sweeps[key]})
                if whole == [] or isinstance(spec.defaults.get(key), list | tuple):
                    problems_here = [p for p in problems_here if p[0] != key]  # one says it
                    problems_here.append(
                        (
                            key,
                            f"a list of numbers in a workload's options is a sweep (one run "
                            f"per value), but {spec.name}'s option {key!r} takes a list",
                        )
                    )
            for key, msg in problems_here:
                add((*base, "workloads", j, "options", key), msg)
        tuned_here = any(m.grid for m in exp.methods)  # experiments without a grid: exempt
        for j, m in enumerate(exp.methods):
            points = grid_size(m)
            if suite.tuning_budget is not None and tuned_here and points != suite.tuning_budget:
                add(
                    (*base, "methods", j, "grid" if m.grid else "name"),
                    f"{m.name} tries {points} grid point(s) but the suite declares "
                    f"tuning_budget: {suite.tuning_budget} (an equal budget per method)",
                )
            try:
                mspec = registry.method(exp.kind, m.name)
            except UnknownName as exc:
                add((*base, "methods", j, "name"), str(exc))
                continue
            if problem := mspec.reference_problem():
                add((*base, "methods", j, "name"), problem)
            for field in ("hparams", "grid", "variants"):
                given = getattr(m, field)
                problems_here = unknown_hparams(mspec, given) + mistyped_hparams(
                    mspec, given, axes=field != "hparams"
                )
                for key, msg in problems_here:
                    add((*base, "methods", j, field, key), msg)
            for a, b in (("hparams", "grid"), ("hparams", "variants"), ("grid", "variants")):
                overlap = sorted(set(getattr(m, a)) & set(getattr(m, b)))
                if overlap:
                    add((*base, "methods", j, b), f"{overlap} set both in {a} and in {b}")
        known = protocol_options(exp.kind)
        for key in exp.protocol:
            if key not in known:
                add(
                    (*base, "protocol", key),
                    f"the {exp.kind} protocol has no option {key!r}{suggest(key, known)}; "
                    f"it accepts: {', '.join(sorted(known)) or 'none'}",
                )
        for key, msg in protocol_option_problems(registry.kind(exp.kind), exp.protocol):
            add((*base, "protocol", key), msg)
        budgets = [("budget", exp.budget)] if exp.budget else []
        for where, budget in budgets:
            if budget.eval_every is not None and "eval_every" not in known:
                add(
                    (*base, where, "eval_every"),
                    f"the {exp.kind} protocol has no evaluation interval (eval_every)",
                )
        every = exp.budget.eval_every if exp.budget else None
        if every is not None and exp.protocol.get("eval_every", every) != every:
            add(
                (*base, "protocol", "eval_every"),
                f"eval_every is {exp.protocol['eval_every']!r} here and {every!r} in budget",
            )
        for loc, msg in axis_problems(exp):
            add((*base, "axis", *loc), msg)
        if exp.attacks and not _kind_of(exp).takes_attacks:
            takers = [k.name for k in registry.kinds.values() if k.takes_attacks]
            add(
                (*base, "attacks"),
                f"attacks apply to {' and '.join(takers) or 'no'} experiments only",
            )
        for j, name in enumerate(exp.attacks):
            try:
                if problem := registry.attack(name).reference_problem():
                    add((*base, "attacks", j), problem)
            except UnknownName as exc:
                add((*base, "attacks", j), str(exc))
    if problems:
        raise SuiteError(problems)


def step_curves(kind: str) -> tuple[str, ...]:
    """The curves a kind's protocol records over training steps, for ``axis: steps``."""
    found = get_kind(kind)
    return found.step_curves if found is not None else ()


def _kind_of(exp: Experiment) -> Any:
    """The experiment's registered kind (``check_names`` has refused an unknown one)."""
    found = get_kind(exp.kind)
    assert found is not None, exp.kind
    return found


def axis_values(exp: Experiment) -> list[Any]:
    """Every value the experiment gives its axis's option or hyperparameter (lists of a
    sweep, grid or variants flattened), in file order; [] for ``steps`` or no axis."""
    axis = exp.axis
    if axis is None or axis.key is None:
        return []
    out: list[Any] = []
    if axis.source == "workload":
        for w in exp.workloads:
            if axis.key in w.options:
                value = w.options[axis.key]
                out += value if axis.key in option_axes(w.options) else [value]
    else:
        for m in exp.methods:
            if axis.key in m.hparams:
                out.append(m.hparams[axis.key])
            for field in (m.grid, m.variants):
                out += field.get(axis.key, [])
    return out


def axis_metric(exp: Experiment) -> str:
    """The metric an experiment's axis draws: the one it names, else the curve ``eval_loss``
    for ``steps`` where the kind records it, else the kind's headline metric."""
    assert exp.axis is not None
    if exp.axis.metric:
        return exp.axis.metric
    curves = step_curves(exp.kind)
    if exp.axis.source == "steps" and curves:
        return curves[0]
    return KIND_INFO[exp.kind].primary


def axis_problems(exp: Experiment) -> list[tuple[tuple[Any, ...], str]]:
    """(location under ``axis``, message) for an axis the experiment cannot draw: an option
    or hyperparameter it neither sets nor varies, values that are not numbers, a log scale
    over values <= 0, ``steps`` for a kind without step curves or an unknown curve."""
    axis = exp.axis
    if axis is None:
        return []
    if axis.source == "steps":
        curves = step_curves(exp.kind)
        if not curves:
            return [((), f"the {exp.kind} protocol records no curve over steps")]
        metric = axis_metric(exp)
        if metric not in curves:
            return [
                (
                    ("metric",),
                    f"the {exp.kind} protocol records no curve {metric!r} over steps"
                    f"{suggest(metric, curves)}; it records: {', '.join(curves)}",
                )
            ]
        return []
    key = axis.key
    assert key is not None
    if axis.source == "workload":
        known = sorted({k for w in exp.workloads for k in w.options})
        what, where = "option", "no workload of this experiment sets"
    else:
        known = sorted({k for m in exp.methods for f in (m.hparams, m.grid, m.variants) for k in f})
        what, where = "hyperparameter", "no method of this experiment sets"
    if key not in known:
        return [
            (
                ("name",),
                f"{where} the {what} {key!r}{suggest(key, known)}; an axis must be one the "
                f"experiment sets or varies: {', '.join(known) or 'none set'}",
            )
        ]
    values = axis_values(exp)
    odd = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float)]
    if odd:
        return [((("name",)), f"axis {axis.name} takes {odd[0]!r}: an axis needs numbers")]
    if axis.scale == "log" and any(v <= 0 for v in values):
        return [(("scale",), f"a log scale needs positive values; {axis.name} has {min(values)}")]
    return []


def grid_size(method: MethodEntry) -> int:
    """How many configurations a method entry tries (its tuning budget)."""
    size = 1
    for values in method.grid.values():
        size *= len(values)
    return size


def protocol_options(kind: str) -> dict[str, Any]:
    """The options a kind's protocol accepts, with defaults."""
    found = get_kind(kind)
    return found.option_defaults if found is not None else {}


def protocol_option_problems(kind: KindDef, given: dict[str, Any]) -> list[tuple[str, str]]:
    """(option, message) for each value of a suite's ``protocol:`` that the option's
    declared type refuses (``Option.type``, read by the hyperparameters' machinery), and
    for each default of the kind's own that its type refuses."""
    from benchmark.hparams import annotation_param, annotation_problems

    params = {
        name: annotation_param(name, option.type, option.default)
        for name, option in kind.options.items()
    }
    owner = f"the {kind.name} protocol"
    problems = annotation_problems(owner, params, given)
    # A default its own type refuses (a plugin kind's bug) would pass every suite that
    # leaves the option alone, and fail only when the protocol reads it.
    unset = {name: option.default for name, option in kind.options.items() if name not in given}
    return problems + [
        (name, f"{why} (the kind's own default: fix the kind's Option)")
        for name, why in annotation_problems(owner, params, unset)
    ]


# --------------------------------------------------------------------------- expansion


# Where a GPU driver shows itself on Linux (NVIDIA; AMD's for ROCm builds of torch).
_GPU_DRIVER_PATHS = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd")


def _cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch (a second of the two that
    ``bench validate`` may take) on a Linux machine with no GPU driver at all."""
    import sys

    if sys.platform.startswith("linux") and not any(Path(p).exists() for p in _GPU_DRIVER_PATHS):
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(requested: str) -> str:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise DeviceUnavailable(f"device {requested!r} is not one of auto, cpu, cuda")
    if requested == "cpu":
        return requested
    has_cuda = _cuda_available()
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    if requested == "cuda" and not has_cuda:
        import torch

        raise DeviceUnavailable(
            "device 'cuda' was asked for but torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
            "use --device cpu or auto"
        )
    return requested


# More runs than any sane suite (the largest shipped one has 90): a typo such as a
# ten-axis grid would otherwise be built in memory until the machine gives out.
MAX_RUNS = 10_000


# The largest a method entry's hyperparameters, a workload's options or an experiment's
# protocol options may be once written as JSON: every record carries them, so a list of
# 99,000 numbers would multiply into gigabytes of records.
MAX_ENTRY_BYTES = 64 * 1024


def oversized_entries(suite: Suite) -> list[str]:
    """Located descriptions of the entries whose JSON exceeds MAX_ENTRY_BYTES."""
    out = []
    for i, exp in enumerate(suite.experiments):
        parts: list[tuple[str, Any]] = [(f"experiments[{i}].protocol", exp.protocol)]
        parts += [
            (f"experiments[{i}].workloads[{j}].options", w.options)
            for j, w in enumerate(exp.workloads)
        ]
        parts += [
            (f"experiments[{i}].methods[{j}]", [m.hparams, m.grid, m.variants])
            for j, m in enumerate(exp.methods)
        ]
        for where, value in parts:
            size = len(json.dumps(value, default=str))
            if size > MAX_ENTRY_BYTES:
                out.append(
                    f"{where} is {size:,} bytes as JSON, more than the {MAX_ENTRY_BYTES:,} "
                    "one entry may hold (every record carries it)"
                )
    return out


def count_runs(suite: Suite) -> int:
    """How many runs ``expand`` would make, counted without building any."""
    total = 0
    for exp in suite.experiments:
        per_method = [
            math.prod(len(v) for v in (*m.grid.values(), *m.variants.values())) for m in exp.methods
        ]
        workloads = sum(len(option_points(w.options)) for w in exp.workloads)
        total += workloads * sum(per_method) * len(exp.seeds or suite.seeds)
    return total


def expand(
    suite: Suite, device: str | None = None, max_runs: int | None = MAX_RUNS
) -> list[RunSpec]:
    """All runs of a suite, in file order; ids are content hashes of each run.

    Refuses (SuiteError) a suite of more than ``max_runs`` runs before building any;
    None lifts the cap."""
    too_big = oversized_entries(suite)
    if too_big:
        raise SuiteError(too_big)
    planned = count_runs(suite)
    if max_runs is not None and planned > max_runs:
        raise SuiteError(
            [
                f"suite {suite.name!r} expands to {planned:,} runs, more than the limit of "
                f"{max_runs:,} (grids multiply: check the axes); pass --max-runs to allow it"
            ]
        )
    resolved = resolve_device(device or suite.device)
    specs: list[RunSpec] = []
    for exp in suite.experiments:
        seeds = exp.seeds or suite.seeds
        merged = {
            **suite.budget.model_dump(exclude_none=True),
            **(exp.budget.model_dump(exclude_none=True) if exp.budget else {}),
        }
        every = merged.pop("eval_every", None)
        budget = Budget(**merged)
        protocol = exp.protocol
        if every is not None and "eval_every" in protocol_options(exp.kind):
            protocol = {"eval_every": every, **protocol}
        axis = None
        if exp.axis is not None:
            axis = exp.axis.model_copy(update={"metric": axis_metric(exp)})
        workload_points = [(w.name, o) for w in exp.workloads for o in option_points(w.options)]
        for workload, options in workload_points:
            for m in exp.methods:
                axes = [*m.grid.items(), *m.variants.items()]
                points = itertools.product(*(values for _, values in axes)) if axes else [()]
                for point in points:
                    hparams = {**m.hparams, **{k: v for (k, _), v in zip(axes, point, strict=True)}}
                    for seed in seeds:
                        specs.append(
                            RunSpec(
                                suite=suite.name,
                                kind=exp.kind,
                                method=m.name,
                                hparams=hparams,
                                workload=workload,
                                workload_options=options,
                                seed=seed,
                                device=resolved,
                                budget=budget,
                                timeout_s=exp.timeout_s or suite.timeout_s,
                                attacks=exp.attacks,
                                protocol=protocol,
                                tuned=tuple(sorted(m.grid)),
                                axis=axis,
                            )
                        )
    return specs
