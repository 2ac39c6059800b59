"""What a kind is: one ``KindDef`` per kind, declared in that kind's own module.

A kind (optimizer, compressor, ...) is everything the host needs to run, check, rank,
draw and document one family of methods: the contract of what its factories build, the
optional capabilities a protocol may use (typed ``runtime_checkable`` Protocols instead of
``hasattr`` probes), its workload contract, its protocol (a lazy ``module:attribute``
reference), its protocol options, its ranking, its plot, its curves over steps, its
leaderboard notes and its metrics. The host iterates over registered ``KindDef``s and
never names a kind, so a plugin adds a kind by registering one object
(``methodbench_register_kinds``).

Nothing here imports torch: kinds are registered during discovery, which ``bench
validate`` and ``bench plugins`` keep light; references are imported when a run needs them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

# "workload": the direction of the workload's quality metric (accuracy up, perplexity down).
Direction = Literal["higher", "lower", "none", "workload"]
# What a ``<placeholder>`` in a declared metric name stands for: a registered name (an
# attack's ``finetune-1024``) or a word.
_PLACEHOLDER = re.compile(r"<([a-z_]+)>")
_NAME_PART = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"


@dataclass(frozen=True)
class MetricDecl:
    """One metric a kind's protocol emits: declared once, rendered to ``docs/METRICS.md``
    and checked against every run's record (``executors.runner``: an undeclared figure is
    set aside in ``info["undeclared_metrics"]``, and fails the run in strict mode).

    ``name`` may hold one ``<placeholder>`` for a family (``attack_<attack>_quality``: one
    per attack run). ``unit`` is the unit the record carries (``"the workload's quality
    unit"`` where a workload decides it); ``direction`` says which way is better ("none":
    a figure reported for context, not to be ranked; "workload": the workload's quality
    metric decides); ``measures`` says what it is and
    ``how`` how the protocol obtains it, one sentence each. ``absent``: why a run may
    lack the metric altogether (a detector without p-values reports no Type-I error);
    a leaderboard says it for a row without the figure, instead of "not reported"."""

    name: str
    unit: str
    direction: Direction
    measures: str
    how: str
    absent: str | None = None

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        return self._pattern(None)

    def _pattern(self, placeholders: Mapping[str, Iterable[str]] | None) -> re.Pattern[str]:
        """The name as a regex; a placeholder listed in ``placeholders`` matches only the
        names given for it (the run's own attacks), any other any name."""
        parts = _PLACEHOLDER.split(self.name)
        # split() alternates literal text and placeholder names.
        regex = ""
        for i, part in enumerate(parts):
            if i % 2 == 0:
                regex += re.escape(part)
            elif placeholders is not None and part in placeholders:
                names = sorted(placeholders[part], key=len, reverse=True)
                regex += "(?:" + "|".join(re.escape(n) for n in names) + ")" if names else "(?!)"
            else:
                regex += _NAME_PART
        return re.compile(f"^{regex}$")

    @property
    def is_family(self) -> bool:
        return bool(_PLACEHOLDER.search(self.name))

    @property
    def literal_length(self) -> int:
        """How much of the name is literal text: a longer one is the more specific family
        (``attack_<attack>_scratch_quality`` before ``attack_<attack>_quality``)."""
        return len(_PLACEHOLDER.sub("", self.name))

    def matches(self, metric: str, placeholders: Mapping[str, Iterable[str]] | None = None) -> bool:
        """Whether ``metric`` is this name, or one of this family's members; with
        ``placeholders`` (``{"attack": the run's attacks}``) a family member must name one
        of the given values."""
        if metric == self.name:
            return True
        if not self.is_family:
            return False
        pattern = self.pattern if placeholders is None else self._pattern(placeholders)
        return bool(pattern.match(metric))


@dataclass(frozen=True)
class Option:
    """One option of a kind's protocol (a suite's ``protocol:`` key): its type, written as
    a hyperparameter's annotation is (``"PositiveInt | None"``, ``"Annotated[float,
    Interval(gt=1)] | None"``; ``benchmark.hparams`` reads and checks it, so ``bench
    validate`` refuses a value the protocol would refuse, with the suite's file and
    line), its default and what it does."""

    type: str
    default: Any
    doc: str = ""


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
    of ``tiebreak``; a ``verdict`` puts its bad rows last. ``notes`` are appended to the
    table's ranking note (what a reader must know to read it, e.g. which class is
    positive)."""

    primary: str
    higher_is_better: bool
    columns: tuple[str, ...]
    tiebreak: tuple[tuple[str, bool], ...] = ()
    primary_bin: float | None = None
    verdict: Verdict | None = None
    notes: tuple[str, ...] = ()

    def metric_names(self) -> tuple[str, ...]:
        """Every metric the ranking reads: each must be a declared metric of its kind."""
        names = [self.primary, *self.columns, *(m for m, _ in self.tiebreak)]
        if self.verdict is not None:
            names.append(self.verdict.metric)
        return tuple(dict.fromkeys(n for n in names if n))


def load_reference(ref: str) -> Any:
    """The object a ``package.module:attribute`` reference names (imported on first use)."""
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class KindDef:
    """One kind, whole. Registered through ``methodbench_register_kinds``.

    - ``built``: ``module:attribute`` of the class or ``runtime_checkable`` Protocol every
      object a method's factory builds must be an instance of (checked before a protocol
      relies on it); ``leading_args``: the positional arguments the factory takes before
      its hyperparameters (an optimizer's ``model``).
    - ``capabilities``: optional attributes of the built object, name -> ``runtime_checkable``
      Protocol; ``workload`` the Protocol a workload's factory result offers and
      ``workload_capabilities`` its optional ones. Protocols test them with ``isinstance``.
    - ``run``: ``module:attribute`` of the protocol, ``run(RunContext) -> ProtocolResult``.
    - ``options``: the protocol's options (a suite's ``protocol:``), name -> ``Option``
      (type, default, doc); ``option_defaults`` the defaults alone.
    - ``ranking``: the leaderboard's ranking and columns; ``plot``: ``module:attribute`` of
      a function ``Table -> PNG bytes | None`` drawn beside the kind's tables.
    - ``step_curves``: the curves the protocol records over training steps (``axis: steps``),
      each a declared metric (``check_kind``).
    - ``metrics``: every metric the protocol emits; ``extra_metrics(workload)`` maps the
      ones a workload (or its factory) adds on its own to their units (an autoencoder's
      ``figure_units``; they are lower-is-better).
    - ``takes_attacks``: whether an experiment of this kind may name ``attacks``.
    """

    name: str
    summary: str
    built: str
    run: str
    ranking: KindInfo
    metrics: tuple[MetricDecl, ...]
    leading_args: tuple[str, ...] = ()
    capabilities: Mapping[str, type] = field(default_factory=dict)
    workload: type | None = None
    workload_capabilities: Mapping[str, type] = field(default_factory=dict)
    options: Mapping[str, Option] = field(default_factory=dict)
    plot: str | None = None
    step_curves: tuple[str, ...] = ()
    takes_attacks: bool = False
    extra_metrics: Callable[[Any], Mapping[str, str]] | None = None

    @property
    def run_module(self) -> str:
        """The protocol's module, known without importing it (for fingerprints, preloads)."""
        return self.run.partition(":")[0]

    def load_run(self) -> Callable[..., Any]:
        return load_reference(self.run)

    def load_built(self) -> type:
        return load_reference(self.built)

    def load_plot(self) -> Callable[..., bytes | None] | None:
        return None if self.plot is None else load_reference(self.plot)

    @property
    def option_defaults(self) -> dict[str, Any]:
        """Each protocol option's default, by name (what a run's protocol falls back on)."""
        return {name: option.default for name, option in self.options.items()}

    @cached_property
    def _by_specificity(self) -> tuple[MetricDecl, ...]:
        """Families, the most literal text first: a name two families match (an attack
        named ``finetune-1024`` makes ``attack_finetune-1024_scratch_quality`` fit
        ``attack_<attack>_quality`` too) belongs to the more specific one."""
        families = [d for d in self.metrics if d.is_family]
        return tuple(sorted(families, key=lambda d: d.literal_length, reverse=True))

    def declaration(
        self, metric: str, placeholders: Mapping[str, Iterable[str]] | None = None
    ) -> MetricDecl | None:
        """The declaration a metric name falls under: an exact name, else the most specific
        family that matches (``placeholders``: the values a family's placeholders may take
        in this run, e.g. ``{"attack": spec.attacks}``; None: any name)."""
        exact = next((d for d in self.metrics if d.name == metric), None)
        if exact is not None:
            return exact
        return next((d for d in self._by_specificity if d.matches(metric, placeholders)), None)

    def undeclared(
        self,
        metrics: Iterable[str],
        workload: Any = None,
        placeholders: Mapping[str, Iterable[str]] | None = None,
    ) -> list[str]:
        """The names among ``metrics`` that no declaration (nor the workload) covers.

        ``placeholders`` None lets a family's placeholder take any name: for checks of the
        declarations themselves (ranking columns, step curves), which have no run. A run's
        figures must be checked with the run's own values (the runner passes
        ``{"attack": the run's attacks}``), or a misspelt family member would pass."""
        extra = (
            set(self.extra_metrics(workload))
            if self.extra_metrics is not None and workload is not None
            else set()
        )
        return sorted(
            m for m in metrics if m not in extra and self.declaration(m, placeholders) is None
        )


# --------------------------------------------------------------------------- shared metrics

_PHASE_FIGURES: tuple[tuple[str, str, Direction, str, str], ...] = (
    (
        "peak_memory",
        "bytes",
        "lower",
        "the phase's headline memory peak",
        "the CUDA allocator's peak on a GPU, elsewhere the host RSS growth over the phase "
        "(the metric's meter names which).",
    ),
    (
        "host_rss_peak",
        "bytes",
        "lower",
        "the process's (and its children's) peak resident set during the phase",
        "the kernel's VmHWM high-water mark, reset at the phase's start (a 0.25 s RSS sampler "
        "where it cannot be reset).",
    ),
    (
        "host_rss_growth",
        "bytes",
        "lower",
        "how far the resident set rose above its level at the phase's start",
        "host_rss_peak minus the RSS read when the phase began.",
    ),
    (
        "cuda_peak_allocated",
        "bytes",
        "lower",
        "the CUDA allocator's peak of allocated bytes in the phase (null off CUDA)",
        "torch.cuda.max_memory_allocated after reset_peak_memory_stats at the phase's start.",
    ),
    (
        "cuda_peak_reserved",
        "bytes",
        "lower",
        "the CUDA allocator's peak of reserved bytes in the phase (null off CUDA)",
        "torch.cuda.max_memory_reserved after reset_peak_memory_stats at the phase's start.",
    ),
    (
        "gpu_device_memory_peak",
        "bytes",
        "lower",
        "the GPU's used memory at its highest sample, every process and the CUDA context "
        "included (null without NVML)",
        "NVML memory_info.used sampled every 0.2 s on a thread.",
    ),
    (
        "gpu_process_memory_peak",
        "bytes",
        "lower",
        "this process's GPU memory at its highest sample (null where NVML does not list it)",
        "NVML's compute-process list sampled every 0.2 s.",
    ),
    (
        "gpu_power_mean",
        "W",
        "lower",
        "the GPU board's mean power draw over the phase",
        "NVML power_usage sampled every 0.2 s, averaged.",
    ),
    (
        "gpu_power_peak",
        "W",
        "lower",
        "the GPU board's highest sampled power draw in the phase",
        "the largest NVML power_usage sample (every 0.2 s).",
    ),
    (
        "gpu_energy",
        "J",
        "lower",
        "the energy the GPU board used during the phase",
        "the difference of NVML's total-energy counter between the phase's start and end "
        "(power samples integrated by the trapezoid rule where the board has no counter).",
    ),
)


def phase_metrics(phase: str, what: str) -> tuple[MetricDecl, ...]:
    """The figures ``benchmark.measure.meters.phase(phase)`` reports, declared for a kind
    whose protocol measures ``what`` in that phase. Every one is lower-is-better, as the
    meters mark them in records (memory, power and energy spent)."""
    return tuple(
        MetricDecl(f"{phase}_{name}", unit, direction, f"{measures}, while {what}.", how)
        for name, unit, direction, measures, how in _PHASE_FIGURES
    )
