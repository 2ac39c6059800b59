"""The metric glossary, rendered from the kinds' declarations (``KindDef.metrics``) and
the registered workloads' own figures (``KindDef.extra_metrics`` of each workload's
factory: an autoencoder's ``figure_units``).

``python -m benchmark.kinds.glossary > docs/METRICS.md`` writes it; a test checks the
committed file equals this output. The runner sets aside any metric a run's kind does not
declare (``info["undeclared_metrics"]``; the run fails in the tests' strict mode), so the
glossary's tables cover every ranked figure of a record from the built-in plugins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from benchmark.kinds.definition import KindDef
from benchmark.kinds.registered import BUILTIN_KINDS, get_kind

if TYPE_CHECKING:
    from benchmark.host import Registry

_BETTER = {"higher": "higher", "lower": "lower", "none": "-", "workload": "workload's"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_kind(
    kind: KindDef, workload_figures: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    """A kind's section; ``workload_figures``: workload name -> the figures it adds, with
    their units (lower is better, as the protocol records them)."""
    lines = [f"## {kind.name}", "", kind.summary, ""]
    ranking = kind.ranking
    direction = "higher" if ranking.higher_is_better else "lower"
    lines.append(f"Headline: `{ranking.primary}` ({direction} is better).")
    lines += ["", "| metric | unit | better | what it measures | how it is measured |"]
    lines.append("|---|---|---|---|---|")
    for d in kind.metrics:
        how = d.how if d.absent is None else f"{d.how} Not reported where {d.absent}."
        cells = [f"`{d.name}`", d.unit, _BETTER[d.direction], d.measures, how]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    shown = {w: figures for w, figures in sorted((workload_figures or {}).items()) if figures}
    if shown:
        lines += ["", "Figures a workload adds on its own (lower is better):", ""]
        lines += ["| workload | metric | unit |", "|---|---|---|"]
        for workload, figures in shown.items():
            for name, unit in figures.items():
                lines.append("| " + " | ".join(_cell(c) for c in (workload, f"`{name}`", unit)))
                lines[-1] += " |"
    return "\n".join(lines) + "\n"


def registered_workload_figures(kind: KindDef, registry: Registry) -> dict[str, dict[str, str]]:
    """Workload name -> the figures each registered workload of ``kind`` adds, read off its
    factory (a class declaring ``figure_units``; its module is imported)."""
    if kind.extra_metrics is None:
        return {}
    return {
        name: dict(kind.extra_metrics(spec.load()))
        for (kind_name, name), spec in registry.workloads.items()
        if kind_name == kind.name
    }


def render(kinds: list[KindDef], registry: Registry | None = None) -> str:
    """The glossary of ``kinds``, with the figures ``registry``'s workloads add."""
    head = [
        "# Metrics",
        "",
        "Generated from each kind's declarations (`benchmark/kinds/<kind>.py`) by",
        "`python -m benchmark.kinds.glossary > docs/METRICS.md`; do not edit by hand.",
        "A metric a kind does not declare is set aside in a run's",
        '`info["undeclared_metrics"]` (the run fails with `METHODBENCH_STRICT_METRICS=1`, as',
        "in the project's tests).",
        "",
        "A name with `<attack>` is a family: one metric per attack the run requested. An",
        'optimizer workload may add figures of its own (`figure_units`, "lower is better").',
        '"better": which way is better ("-": reported for context, not ranked; "workload\'s":',
        "the direction of the workload's quality metric, e.g. accuracy up, perplexity down).",
        "Every record's metric also carries its meter: the exact instrument of that run.",
        "",
    ]
    sections = [
        render_kind(k, registered_workload_figures(k, registry) if registry else None)
        for k in kinds
    ]
    return "\n".join(head) + "\n" + "\n".join(sections)


def builtin_glossary() -> str:
    """The glossary of the built-in kinds and workloads (what ``docs/METRICS.md`` holds)."""
    from benchmark.host import Registry

    kinds = [get_kind(m.rpartition(".")[2]) for m in BUILTIN_KINDS]
    return render([k for k in kinds if k is not None], Registry())


if __name__ == "__main__":
    print(builtin_glossary(), end="")
