"""Regression verdicts between two sets of records, decided with each figure's noise.

A configuration is (kind, method, hyperparameters, workload with its options, device); its
records are its seeds. For each configuration and each judged metric the difference
d = NEW - OLD, signed so that d > 0 is worse, gets a 95% interval from what the records
carry, in this order:

1. three or more seeds on both sides: Welch's t interval on the seeds' values (the
   seed-to-seed variation, which includes the training noise);
2. else, both sides' test-set intervals (Wilson, DeLong, t over windows: what each metric's
   meter recorded): a normal interval with se = sqrt(se_old^2 + se_new^2), each se the mean
   half-width / 1.96 over the side's runs;
3. else no noise is recorded (a byte count, a single deterministic run): the values are
   compared as exact.

With δ the rule's minimum effect (``--fail-on eval_loss:+2%`` gives δ = 2% of |OLD|;
without a rule the kind's headline metric is judged with δ = 0):

- ``regressed``: the interval lies above 0 and d > δ (worse, beyond noise and beyond δ);
- ``improved``: the interval lies below 0 and d < -δ;
- ``unchanged``: the interval's upper end is at most δ (a regression larger than δ is
  ruled out), or exact values within δ;
- ``inconclusive``: none of these (too noisy to tell; not a failure).

Per configuration, besides: ``missing`` (in OLD, not in NEW: fails unless allowed),
``new`` (only in NEW), ``status changed`` (ok in OLD, some seed not ok in NEW: fails),
``lost`` (a judged figure OLD had is null or absent in NEW: fails) and ``incomparable``
(a timing figure whose two sides ran in different timing regimes: never judged).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from scipy import stats

from benchmark.kinds import KIND_INFO
from benchmark.measure.environment import describe_regime, regime_key
from benchmark.records import RunRecord, is_timing
from benchmark.store import hparams_label

_RULE = re.compile(
    r"^(?P<metric>[A-Za-z0-9_.\-]+):(?P<sign>[+-])(?P<amount>\d+(\.\d+)?)(?P<pct>%?)$"
)

FAILING = ("regressed", "missing", "status changed", "lost")
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Rule:
    """``METRIC:+N%`` (an increase is bad; relative), ``METRIC:-X`` (a decrease is bad;
    absolute): the metric to judge, its bad direction and the smallest change that counts."""

    metric: str
    increase_is_bad: bool
    amount: float
    relative: bool
    text: str

    def tolerance(self, old: float) -> float:
        return abs(old) * self.amount / 100 if self.relative else self.amount


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


Config = tuple[str, str, str, str, str]


def config_of(r: RunRecord) -> Config:
    s = r.spec
    return (s.kind, s.method, hparams_label(s.hparams), s.workload_label, s.device)


def config_name(c: Config) -> str:
    kind, method, hp, workload, device = c
    return f"{kind}/{method}[{hp}] on {workload} ({device})"


@dataclass
class Verdict:
    """One row of a comparison: a configuration, and a metric where one was judged."""

    config: str
    verdict: str
    metric: str | None = None
    old: float | None = None
    new: float | None = None
    difference: float | None = None  # NEW - OLD in the metric's own sign
    ci: tuple[float, float] | None = None  # 95% interval of the difference, same sign
    tolerance: float | None = None
    method: str = ""  # how the interval was made
    note: str = ""

    @property
    def failing(self) -> bool:
        return self.verdict in FAILING


@dataclass
class Comparison:
    rows: list[Verdict] = field(default_factory=list)
    allow_missing: bool = False

    @property
    def failed(self) -> bool:
        return any(
            r.failing and not (r.verdict == "missing" and self.allow_missing) for r in self.rows
        )

    @property
    def compared(self) -> int:
        return len({r.config for r in self.rows if r.verdict not in ("missing", "new")})

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.rows)


def _values(records: Sequence[RunRecord], metric: str) -> list[float]:
    return [
        float(r.metrics[metric].value)  # type: ignore[arg-type]
        for r in records
        if r.status == "ok" and metric in r.metrics and r.metrics[metric].value is not None
    ]


def _test_set_se(records: Sequence[RunRecord], metric: str) -> float | None:
    """Mean standard error from the runs' own 95% intervals (None if any run lacks one)."""
    halves = []
    for r in records:
        m = r.metrics.get(metric)
        if r.status != "ok" or m is None or m.value is None:
            continue
        if m.ci_low is None or m.ci_high is None:
            return None
        halves.append((m.ci_high - m.ci_low) / 2)
    return statistics.fmean(halves) / Z95 if halves else None


def _interval(
    old: Sequence[RunRecord], new: Sequence[RunRecord], metric: str
) -> tuple[float, float, float, tuple[float, float] | None, str]:
    """(old mean, new mean, new - old, its 95% interval or None for exact values, how)."""
    ov, nv = _values(old, metric), _values(new, metric)
    mo, mn = statistics.fmean(ov), statistics.fmean(nv)
    d = mn - mo
    if len(ov) >= 3 and len(nv) >= 3:
        vo, vn = statistics.variance(ov), statistics.variance(nv)
        se2 = vo / len(ov) + vn / len(nv)
        if se2 == 0:
            return mo, mn, d, None, f"seeds identical within each side ({len(ov)}+{len(nv)})"
        df = se2**2 / ((vo / len(ov)) ** 2 / (len(ov) - 1) + (vn / len(nv)) ** 2 / (len(nv) - 1))
        half = float(stats.t.ppf(0.975, df)) * math.sqrt(se2)
        return mo, mn, d, (d - half, d + half), f"Welch t over seeds ({len(ov)}+{len(nv)})"
    so, sn = _test_set_se(old, metric), _test_set_se(new, metric)
    if so is not None and sn is not None:
        half = Z95 * math.hypot(so, sn)
        return mo, mn, d, (d - half, d + half), "normal, from the runs' test-set intervals"
    return mo, mn, d, None, "no noise recorded: compared as exact"


def _judge(d_bad: float, ci_bad: tuple[float, float] | None, tol: float) -> str:
    """The verdict for a difference signed so that positive is worse."""
    if ci_bad is None:
        if d_bad > tol:
            return "regressed"
        if d_bad < -tol:
            return "improved"
        return "unchanged"
    low, high = ci_bad
    if low > 0 and d_bad > tol:
        return "regressed"
    if high < 0 and d_bad < -tol:
        return "improved"
    if high <= tol:
        return "unchanged"
    return "inconclusive"


def _timing_regimes(records: Sequence[RunRecord]) -> set[object]:
    return {regime_key(r.environment) for r in records if r.status == "ok"}


def _rules_for(kind: str, rules: Sequence[Rule], old: Sequence[RunRecord]) -> list[Rule]:
    """The rules to apply; without any, the kind's headline metric, any change counting."""
    if rules:
        return list(rules)
    info = KIND_INFO.get(kind)
    if info is None or not info.primary:
        return []
    higher = next(
        (
            r.metrics[info.primary].higher_is_better
            for r in old
            if info.primary in r.metrics and r.metrics[info.primary].higher_is_better is not None
        ),
        info.higher_is_better,
    )
    sign = "-" if higher else "+"
    return [Rule(info.primary, not higher, 0.0, False, f"{info.primary}:{sign}0")]


def compare(
    old: Sequence[RunRecord],
    new: Sequence[RunRecord],
    rules: Sequence[Rule] = (),
    *,
    allow_missing: bool = False,
) -> Comparison:
    result = Comparison(allow_missing=allow_missing)
    old_g: dict[Config, list[RunRecord]] = {}
    new_g: dict[Config, list[RunRecord]] = {}
    for r in old:
        old_g.setdefault(config_of(r), []).append(r)
    for r in new:
        new_g.setdefault(config_of(r), []).append(r)
    for c in old_g:
        if c not in new_g:
            result.rows.append(Verdict(config_name(c), "missing", note="in OLD, not in NEW"))
    for c in new_g:
        if c not in old_g:
            result.rows.append(Verdict(config_name(c), "new", note="only in NEW"))
    for c in sorted(old_g.keys() & new_g.keys()):
        o, n = old_g[c], new_g[c]
        name = config_name(c)
        bad = [r for r in n if r.status != "ok"]
        if any(r.status == "ok" for r in o) and bad:
            why = "; ".join(f"seed {r.spec.seed}: {r.status} ({r.reason})" for r in bad)
            result.rows.append(Verdict(name, "status changed", note=why[:500]))
        for rule in _rules_for(c[0], rules, o):
            if any(rule.metric in r.metrics for r in o + n):  # a rule for another kind: skip
                result.rows.append(_judge_metric(name, o, n, rule))
    return result


def _judge_metric(name: str, o: list[RunRecord], n: list[RunRecord], rule: Rule) -> Verdict:
    metric = rule.metric
    ov, nv = _values(o, metric), _values(n, metric)
    if not ov:
        return Verdict(name, "new", metric, note=f"{metric} not in OLD")
    if not nv:
        return Verdict(name, "lost", metric, old=statistics.fmean(ov), note="null or absent in NEW")
    sample = next(r.metrics[metric] for r in o + n if metric in r.metrics)
    if is_timing(sample, metric):
        regimes = _timing_regimes(o) | _timing_regimes(n)
        if len(regimes) != 1 or None in regimes:
            described = sorted({describe_regime(r.environment) for r in o + n})
            return Verdict(
                name,
                "incomparable",
                metric,
                note="a timing from different or unrecorded timing regimes: "
                + " vs ".join(described),
            )
    mo, mn, d, ci, how = _interval(o, n, metric)
    sign = 1.0 if rule.increase_is_bad else -1.0
    tol = rule.tolerance(mo)
    ci_bad = None if ci is None else tuple(sorted((sign * ci[0], sign * ci[1])))
    verdict = _judge(sign * d, ci_bad, tol)  # type: ignore[arg-type]
    return Verdict(name, verdict, metric, mo, mn, d, ci, tol, how, f"rule {rule.text}")


# --------------------------------------------------------------------------- output


ORDER = (
    "regressed",
    "status changed",
    "lost",
    "missing",
    "inconclusive",
    "incomparable",
    "improved",
    "unchanged",
    "new",
)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def rows_for_display(result: Comparison) -> list[list[str]]:
    rows = sorted(result.rows, key=lambda r: (ORDER.index(r.verdict), r.config, r.metric or ""))
    out = []
    for r in rows:
        ci = "-" if r.ci is None else f"[{r.ci[0]:.4g}, {r.ci[1]:.4g}]"
        out.append(
            [
                r.verdict,
                r.config,
                r.metric or "-",
                _fmt(r.old),
                _fmt(r.new),
                ci,
                _fmt(r.tolerance),
                r.method or r.note,
            ]
        )
    return out


HEAD = ["verdict", "configuration", "metric", "old", "new", "95% CI of new-old", "δ", "how"]


def summary_line(result: Comparison) -> str:
    counts = ", ".join(f"{v} {result.count(v)}" for v in ORDER if result.count(v))
    verdict = "REGRESSION" if result.failed else "no regression"
    return f"{result.compared} configurations compared ({counts}); verdict: {verdict}"


def render_text(result: Comparison) -> str:
    lines = [summary_line(result)]
    for row in rows_for_display(result):
        lines.append("  " + " | ".join(row))
    return "\n".join(lines)


def render_markdown(result: Comparison) -> str:
    from benchmark.report.render import md_row

    lines = ["## Regression check", "", summary_line(result), "", md_row(HEAD)]
    lines.append("|" + "---|" * len(HEAD))
    lines += [md_row(row) for row in rows_for_display(result)]
    return "\n".join(lines) + "\n"


def render_json(result: Comparison) -> str:
    return json.dumps(
        {
            "failed": result.failed,
            "compared": result.compared,
            "rows": [asdict(r) | {"failing": r.failing} for r in result.rows],
        },
        indent=1,
    )
