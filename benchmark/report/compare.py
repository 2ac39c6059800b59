"""Regression verdicts between two results directories, for CI.

A rule ``METRIC:+N%`` says the metric regressed when NEW > OLD·(1+N/100) (``-N%``: when
NEW < OLD·(1−N/100)); without ``%`` the bound is absolute (``eval_loss:+0.05``).
Configurations (kind, method, hyperparameters, workload, device) are compared on the
median over their seeds, so one noisy seed does not flip a verdict; a configuration that
was ok in OLD and is not ok in NEW is a regression whatever the rules.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

from benchmark.records import RunRecord
from benchmark.store import hparams_label

_RULE = re.compile(
    r"^(?P<metric>[A-Za-z0-9_.\-]+):(?P<sign>[+-])(?P<amount>\d+(\.\d+)?)(?P<pct>%?)$"
)

Config = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class Rule:
    metric: str
    increase_is_bad: bool
    amount: float
    relative: bool
    text: str

    def regressed(self, old: float, new: float) -> bool:
        bound = abs(old) * self.amount / 100 if self.relative else self.amount
        return new > old + bound if self.increase_is_bad else new < old - bound


def parse_rule(text: str) -> Rule:
    m = _RULE.match(text.strip())
    if not m:
        raise ValueError(
            f"bad --fail-on rule {text!r}: expected METRIC:+N% or METRIC:-N% (relative) or "
            "METRIC:+X (absolute), e.g. 'eval_loss:+10%' or 'auroc:-2%'"
        )
    return Rule(
        metric=m["metric"],
        increase_is_bad=m["sign"] == "+",
        amount=float(m["amount"]),
        relative=bool(m["pct"]),
        text=text.strip(),
    )


@dataclass
class Change:
    config: str
    metric: str
    old: float
    new: float
    rule: str

    @property
    def percent(self) -> float | None:
        return None if self.old == 0 else 100 * (self.new - self.old) / abs(self.old)


@dataclass
class CompareResult:
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    newly_failing: list[str] = field(default_factory=list)
    missing_in_new: list[str] = field(default_factory=list)
    new_only: list[str] = field(default_factory=list)
    null_metrics: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    compared: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.newly_failing or self.vanished)


def _config(r: RunRecord) -> Config:
    s = r.spec
    return (s.kind, s.method, hparams_label(s.hparams), s.workload_label, s.device)


def _name(c: Config) -> str:
    kind, method, hp, workload, device = c
    return f"{kind}/{method}[{hp}] on {workload} ({device})"


def _group(records: list[RunRecord]) -> dict[Config, list[RunRecord]]:
    out: dict[Config, list[RunRecord]] = {}
    for r in records:
        out.setdefault(_config(r), []).append(r)
    return out


def _median(records: list[RunRecord], metric: str) -> float | None:
    values = [r.value(metric) for r in records if r.status == "ok"]
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def compare(old: list[RunRecord], new: list[RunRecord], rules: list[Rule]) -> CompareResult:
    result = CompareResult()
    old_g, new_g = _group(old), _group(new)
    result.missing_in_new = [_name(c) for c in old_g if c not in new_g]
    result.new_only = [_name(c) for c in new_g if c not in old_g]
    for config in old_g.keys() & new_g.keys():
        result.compared += 1
        o, n = old_g[config], new_g[config]
        if any(r.status == "ok" for r in o) and not all(r.status == "ok" for r in n):
            bad = [f"{r.spec.label}: {r.status} ({r.reason})" for r in n if r.status != "ok"]
            result.newly_failing += bad
        for rule in rules:
            ov, nv = _median(o, rule.metric), _median(n, rule.metric)
            if ov is not None and nv is None:
                # A ruled figure OLD had and NEW lost (a renamed metric, a meter gone null)
                # fails: a gate that cannot see the figure must not pass it.
                result.vanished.append(f"{_name(config)}: {rule.metric} {ov:.6g} -> null")
                continue
            if ov is None or nv is None:
                if any(rule.metric in r.metrics for r in o + n):
                    result.null_metrics.append(f"{_name(config)}: {rule.metric} null in OLD")
                continue
            change = Change(_name(config), rule.metric, ov, nv, rule.text)
            if rule.regressed(ov, nv):
                result.regressions.append(change)
            elif (nv < ov) == rule.increase_is_bad and nv != ov:
                result.improvements.append(change)
    return result


def render_compare(result: CompareResult) -> str:
    def fmt(c: Change) -> str:
        pct = f" ({c.percent:+.1f}%)" if c.percent is not None else ""
        return f"  {c.config}: {c.metric} {c.old:.6g} -> {c.new:.6g}{pct}  [rule {c.rule}]"

    lines = [f"compared {result.compared} configurations (median over seeds)"]
    sections = [
        ("REGRESSED", [fmt(c) for c in result.regressions]),
        ("NEWLY NOT OK", [f"  {x}" for x in result.newly_failing]),
        ("RULED FIGURE LOST IN NEW", [f"  {x}" for x in result.vanished]),
        ("improved", [fmt(c) for c in result.improvements]),
        ("missing in NEW", [f"  {x}" for x in result.missing_in_new]),
        ("only in NEW", [f"  {x}" for x in result.new_only]),
        ("null metrics (not judged)", [f"  {x}" for x in result.null_metrics]),
    ]
    for title, items in sections:
        if items:
            lines += [f"{title}:", *items]
    lines.append("verdict: " + ("REGRESSION" if result.failed else "no regression"))
    return "\n".join(lines)
