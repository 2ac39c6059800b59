"""Regression verdicts between two sets of records, decided with each figure's noise.

A configuration is (kind, method, hyperparameters, workload with its options, device,
budget, attacks, protocol options); its records are its seeds. For each configuration and
judged metric the difference d = NEW - OLD, signed so that d > 0 is worse, gets a 95%
interval from what the records carry: the seed-to-seed variance (Welch's t when both sides
have two or more seeds; the one side's variance standing in for the other when that has a
single seed) plus, in quadrature, the runs' own test-set standard errors (from the
intervals their meters recorded: Wilson, DeLong, t over evaluation windows). With neither,
the values compare as exact.

With δ the rule's minimum effect (``--fail-on eval_loss:+2%`` gives δ = 2% of |OLD|;
without rules each kind's headline metric is judged with δ = 0; rules replace those
defaults):

- ``unchanged``: identical figures, or the interval's upper end is at most δ (a
  regression larger than δ is ruled out at 97.5%);
- ``regressed``: the interval lies above 0 and the point estimate d exceeds δ (worse
  beyond noise, and by more than δ as far as can be told; a true change of exactly δ
  fires about half the time);
- ``improved``: the mirror image;
- ``inconclusive``: none of these (too noisy to tell; not a failure).

Per configuration, besides: ``missing`` (a configuration or some of its seeds in OLD, not
in NEW: fails unless allowed), ``new`` (only in NEW), ``status changed`` (ok in OLD, some
seed not ok in NEW: fails), ``baseline failed`` (no ok run in OLD: nothing to judge
against, shown, not failing), ``lost`` (a judged figure OLD had is null or absent in NEW:
fails), ``incomparable`` (a timing whose two sides ran in different timing regimes:
never judged) and ``not judged`` (no rule given and the configuration's kind is not
registered in this process, so it has no headline metric to judge by: not counted as
compared; ``bench compare`` refuses such a comparison rather than pass it). A regime
names the device model, threads, concurrency and pinning, not the machine instance or
the day: timings against an old baseline are best judged by an A/B run
(``benchmark/ab.py``), both sides now.
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
from benchmark.kinds.registered import unregistered_note
from benchmark.measure.environment import describe_regime, regime_key
from benchmark.records import RunRecord, hparams_label, is_timing

_RULE = re.compile(
    r"^(?P<metric>[A-Za-z0-9_.\-]+):(?P<sign>[+-])(?P<amount>\d+(\.\d+)?)(?P<pct>%?)$"
)

FAILING = ("regressed", "missing", "status changed", "lost")
NOT_JUDGED = "not judged"
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


Config = tuple[str, str, str, str, str, str]


def config_of(r: RunRecord) -> Config:
    """What makes two runs the same experiment, seeds aside: a different budget, attack set
    or protocol option is another configuration, never more seeds of this one."""
    s = r.spec
    extra = {"budget": s.budget.model_dump(exclude_none=True), "attacks": s.attacks}
    extra["protocol"] = s.protocol
    rest = json.dumps({k: v for k, v in extra.items() if v}, sort_keys=True)
    return (s.kind, s.method, hparams_label(s.hparams), s.workload_label, s.device, rest)


def config_name(c: Config) -> str:
    kind, method, hp, workload, device, rest = c
    more = f" {rest}" if rest != "{}" else ""
    return f"{kind}/{method}[{hp}] on {workload} ({device}){more}"


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
        skipped = ("missing", "new", NOT_JUDGED)
        return len({r.config for r in self.rows if r.verdict not in skipped})

    @property
    def unjudged_kinds(self) -> list[str]:
        """Kinds whose shared configurations were not judged: not registered, no rule."""
        return sorted({r.config.partition("/")[0] for r in self.rows if r.verdict == NOT_JUDGED})

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.rows)


def _values(records: Sequence[RunRecord], metric: str) -> list[float]:
    return [
        float(r.metrics[metric].value)  # type: ignore[arg-type]
        for r in records
        if r.status == "ok" and metric in r.metrics and r.metrics[metric].value is not None
    ]


def _test_set_se(records: Sequence[RunRecord], metric: str) -> float | None:
    """Standard error of the side's mean from its runs' own 95% intervals: the mean
    half-width / 1.96 (the test set is shared by every seed, so this part of the error does
    not shrink with more seeds). Runs without an interval are left out; None if none has
    one."""
    halves = []
    for r in records:
        m = r.metrics.get(metric)
        if r.status != "ok" or m is None or m.value is None:
            continue
        if m.ci_low is not None and m.ci_high is not None:
            halves.append((m.ci_high - m.ci_low) / 2)
    return statistics.fmean(halves) / Z95 if halves else None


def _interval(
    old: Sequence[RunRecord], new: Sequence[RunRecord], metric: str
) -> tuple[float, float, float, tuple[float, float] | None, str]:
    """(old mean, new mean, new - old, its 95% interval or None for exact values, how).

    Seed-to-seed variation (training noise) and the test set's sampling error are both
    in the interval wherever the records show them: Welch's t over seeds when both sides
    have two or more; when one side has one, the other side's seed variance stands in for
    it (t with that side's degrees of freedom); the runs' test-set standard errors are
    added in quadrature (a shared test set does not average out over seeds)."""
    ov, nv = _values(old, metric), _values(new, metric)
    mo, mn = statistics.fmean(ov), statistics.fmean(nv)
    d = mn - mo
    so, sn = _test_set_se(old, metric), _test_set_se(new, metric)
    test_se2 = (so or 0.0) ** 2 + (sn or 0.0) ** 2
    has_test = so is not None or sn is not None
    seed_se2, df, how = 0.0, math.inf, ""
    if len(ov) >= 2 and len(nv) >= 2:
        vo, vn = statistics.variance(ov), statistics.variance(nv)
        seed_se2 = vo / len(ov) + vn / len(nv)
        if seed_se2 > 0:
            terms = [(v / n) ** 2 / (n - 1) for v, n in ((vo, len(ov)), (vn, len(nv))) if v > 0]
            df = seed_se2**2 / sum(terms)
        how = f"Welch t over seeds ({len(ov)}+{len(nv)})"
    elif len(ov) >= 2 or len(nv) >= 2:
        more = ov if len(ov) >= 2 else nv
        var = statistics.variance(more)
        seed_se2 = var * (1 / len(ov) + 1 / len(nv))
        df = len(more) - 1
        how = f"t with one side's seed variance ({len(ov)}+{len(nv)} seeds)"
    else:
        how = "one seed a side: no seed-to-seed information"
    se2 = seed_se2 + test_se2
    if has_test:
        how += " + test-set intervals"
    if se2 == 0:
        return mo, mn, d, None, how + "; no noise recorded: compared as exact"
    q = float(stats.t.ppf(0.975, df)) if math.isfinite(df) else Z95
    half = q * math.sqrt(se2)
    return mo, mn, d, (d - half, d + half), how


def _judge(d_bad: float, ci_bad: tuple[float, float] | None, tol: float) -> str:
    """The verdict for a difference signed so that positive is worse."""
    if d_bad == 0:
        return "unchanged"  # the same figures (a re-run on the same machine)
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
        if not any(r.status == "ok" for r in o):
            why = "; ".join(f"seed {r.spec.seed}: {r.status} ({r.reason})" for r in o)
            result.rows.append(Verdict(name, "baseline failed", note=why[:500]))
            continue
        if bad:
            why = "; ".join(f"seed {r.spec.seed}: {r.status} ({r.reason})" for r in bad)
            result.rows.append(Verdict(name, "status changed", note=why[:500]))
        gone = sorted({r.spec.seed for r in o} - {r.spec.seed for r in n})
        if gone:
            result.rows.append(Verdict(name, "missing", note=f"seeds {gone} not in NEW"))
        if not rules and c[0] not in KIND_INFO:
            result.rows.append(Verdict(name, NOT_JUDGED, note=unregistered_note(c[0])))
            continue
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
    "baseline failed",
    "inconclusive",
    "incomparable",
    "improved",
    "unchanged",
    NOT_JUDGED,
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
