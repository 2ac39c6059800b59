"""The metric glossary, rendered from the kinds' declarations (``KindDef.metrics``).

``python -m benchmark.kinds.glossary > docs/METRICS.md`` writes it; a test checks the
committed file equals this output, and the runner fails any run whose protocol emits a
metric its kind does not declare, so the glossary covers every figure of every record.
"""

from __future__ import annotations

from benchmark.kinds.definition import KindDef
from benchmark.kinds.registered import BUILTIN_KINDS, get_kind

_BETTER = {"higher": "higher", "lower": "lower", "none": "-", "workload": "workload's"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_kind(kind: KindDef) -> str:
    lines = [f"## {kind.name}", "", kind.summary, ""]
    ranking = kind.ranking
    direction = "higher" if ranking.higher_is_better else "lower"
    lines.append(f"Headline: `{ranking.primary}` ({direction} is better).")
    lines += ["", "| metric | unit | better | what it measures | how it is measured |"]
    lines.append("|---|---|---|---|---|")
    for d in kind.metrics:
        cells = [f"`{d.name}`", d.unit, _BETTER[d.direction], d.measures, d.how]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render(kinds: list[KindDef]) -> str:
    head = [
        "# Metrics",
        "",
        "Generated from each kind's declarations (`benchmark/kinds/<kind>.py`) by",
        "`python -m benchmark.kinds.glossary > docs/METRICS.md`; do not edit by hand.",
        "A run whose protocol emits a metric its kind does not declare fails.",
        "",
        "A name with `<attack>` is a family: one metric per attack the run requested. An",
        'optimizer workload may add figures of its own (`figure_units`, "lower is better").',
        '"better": which way is better ("-": reported for context, not ranked; "workload\'s":',
        "the direction of the workload's quality metric, e.g. accuracy up, perplexity down).",
        "Every record's metric also carries its meter: the exact instrument of that run.",
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(render_kind(k) for k in kinds)


def builtin_glossary() -> str:
    """The glossary of the built-in kinds (what ``docs/METRICS.md`` holds)."""
    kinds = [get_kind(m.rpartition(".")[2]) for m in BUILTIN_KINDS]
    return render([k for k in kinds if k is not None])


if __name__ == "__main__":
    print(builtin_glossary(), end="")
