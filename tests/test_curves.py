"""Curves over a suite's axis: the suite syntax, grouping by seed, t-intervals, the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from benchmark import store
from benchmark.host import Registry
from benchmark.records import Axis, Curve, Metric, RunRecord, RunSpec
from benchmark.report import write_reports
from benchmark.report.curves import build_curves
from benchmark.suite import SuiteError, check_names, count_runs, expand, load_suite

WIDTH = Axis(name="workload.width", metric="eval_loss", scale="log", label="hidden width")

# Loss per (width, seed): falls, peaks at width 16, falls again (double descent).
LOSS = {
    2: (3.0, 3.1, 2.9),
    4: (2.0, 2.1, 1.9),
    16: (3.0, 3.05, 2.95),
    64: (1.5, 1.6, 1.4),
    256: (1.0, 1.05, 0.95),
}


def record(
    width: int | None,
    seed: int,
    loss: float | None,
    *,
    lr: float = 0.001,
    workload: str = "ae",
    status: str = "ok",
    axis: Axis | None = WIDTH,
    curve: Curve | None = None,
) -> RunRecord:
    options: dict[str, object] = {"noise": 0.2}
    if width is not None:
        options["width"] = width
    spec = RunSpec(
        suite="s",
        kind="optimizer",
        method="adamw",
        hparams={"lr": lr},
        workload=workload,
        workload_options=options,
        seed=seed,
        axis=axis,
    )
    metrics = {} if loss is None else {"eval_loss": Metric(value=loss, unit="nats", meter="t")}
    return RunRecord(
        id=spec.id,
        spec=spec,
        status=status,
        metrics=metrics,
        curves={"eval_loss": curve} if curve is not None else {},
        reason=None if status == "ok" else "boom",
    )


def sweep(lr: float = 0.001, **kw: object) -> list[RunRecord]:
    return [
        record(w, s, v, lr=lr, **kw)  # type: ignore[arg-type]
        for w, vs in LOSS.items()
        for s, v in enumerate(vs)
    ]


def test_groups_by_configuration_and_computes_t_intervals() -> None:
    records = sweep() + sweep(lr=0.01)
    (fig,) = build_curves(records)
    assert fig.kind == "optimizer" and fig.metric == "eval_loss" and fig.scale == "log"
    assert fig.unit == "nats" and fig.higher_is_better is False
    assert len(fig.curves) == 2, "one curve per learning rate: lr is not the axis"
    curve = next(c for c in fig.curves if c.hparams == {"lr": 0.001})
    assert curve.options == {"noise": 0.2}, "the axis is not part of the configuration"
    assert [p.x for p in curve.points] == [2, 4, 16, 64, 256]
    assert all(p.n == 3 and p.seeds == (0, 1, 2) for p in curve.points)
    # By hand: mean and Student-t 95% interval with 2 degrees of freedom.
    vals = LOSS[16]
    mean = sum(vals) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    point = curve.points[2]
    assert point.mean == pytest.approx(mean)
    assert point.interval == pytest.approx((mean - half, mean + half))
    assert point.half_width == pytest.approx(half)
    assert curve.descents.descent_type == "double descent"
    assert curve.descents.peak_x == [16.0]


def test_one_seed_has_no_band_and_no_judgement() -> None:
    records = [record(w, 0, vs[0]) for w, vs in LOSS.items()]
    (fig,) = build_curves(records)
    (curve,) = fig.curves
    assert all(p.interval is None and p.half_width is None for p in curve.points)
    assert not curve.descents.judged and curve.descents.n_peaks == 0
    assert any("one seed" in n for n in fig.notes)


def test_failed_and_unrelated_runs_are_left_out_and_resumed_ones_kept() -> None:
    records = sweep()
    records.append(record(16, 3, None, status="diverged"))  # same configuration: left out
    records.append(record(16, 4, 9.0, workload="other"))  # another workload: no axis there
    records.append(record(None, 5, 1.0))  # does not set the axis's option
    # A run recorded before the suite named its axis (resumed since): still on the curve.
    records.append(record(16, 6, 3.0, axis=None))
    (fig,) = build_curves(records)
    assert {c.workload for c in fig.curves} == {"ae", "other"}
    curve = next(c for c in fig.curves if c.workload == "ae")
    assert curve.left_out == 1
    assert curve.points[2].seeds == (0, 1, 2, 6)


def test_no_axis_no_figure() -> None:
    assert build_curves([record(16, 0, 1.0, axis=None)]) == []


def test_steps_axis_reads_each_runs_curve() -> None:
    axis = Axis(name="steps", metric="eval_loss")
    ys = ([3.0, 2.0, 1.5], [3.2, 2.2, 1.3])
    records = [
        record(16, s, 1.0, axis=axis, curve=Curve(x=[0, 10, 20], y=list(y)))
        for s, y in enumerate(ys)
    ]
    (fig,) = build_curves(records)
    (curve,) = fig.curves
    assert curve.options == {"noise": 0.2, "width": 16}
    assert [(p.x, p.n) for p in curve.points] == [(0, 2), (10, 2), (20, 2)]
    assert curve.points[1].mean == pytest.approx(2.1)
    assert fig.scale == "linear", "step 0 cannot go on a log axis"
    assert fig.axis.x_label == "step"


def test_a_curve_is_one_configuration_that_declared_the_axis() -> None:
    """Runs that differ in protocol options are other curves, and runs of a configuration
    that no run declared the axis for (another experiment of the suite) are not drawn."""
    axis = Axis(name="steps", metric="eval_loss")
    curve = Curve(x=[0, 10], y=[3.0, 2.0])
    runs = [record(16, s, 1.0, axis=axis, curve=curve) for s in (0, 1)]
    other = [
        r.model_copy(update={"spec": r.spec.model_copy(update={"protocol": {"eval_every": 2}})})
        for r in runs
    ]
    undeclared = [record(32, s, 1.0, axis=None, curve=curve) for s in (0, 1)]
    (fig,) = build_curves(runs + other + undeclared)
    assert sorted(c.protocol.get("eval_every", 0) for c in fig.curves) == [0, 2]
    assert all(c.options["width"] == 16 and c.points[0].n == 2 for c in fig.curves)
    assert any("protocol eval_every=2" in c.configuration for c in fig.curves)


def test_report_draws_the_curve_and_lists_descents(tmp_path: Path) -> None:
    for r in sweep():
        store.write_record(tmp_path, r)
    paths = write_reports(tmp_path)
    html = paths["html"].read_text()
    assert "Curves and descents" in html and "class='axis-curve'" in html
    assert "data:image/png;base64," in html
    md = paths["markdown"].read_text()
    section = md.split("## Curves and descents", 1)[1]
    assert "eval_loss against hidden width" in section and "x log" in section
    assert "double descent" in section and "| 1 | 16: 3 |" in section
    assert "# Leaderboard" in md and "ae[" in md, "the leaderboard keeps its tables"
    frame = pd.read_csv(paths["curves_csv"])
    assert len(frame) == 5 and frame["n_peaks"].eq(1).all()
    assert frame.loc[frame["is_peak"], "x"].tolist() == [16]
    assert frame["n"].eq(3).all() and frame["ci_low"].lt(frame["mean"]).all()
    data = json.loads(paths["curves_json"].read_text())
    (curve,) = data[0]["curves"]
    assert curve["n_peaks"] == 1 and curve["n_descents"] == 2
    assert curve["descent_type"] == "double descent"
    assert [p["x"] for p in curve["peaks"]] == [16]


def test_report_without_axis_writes_no_curves(tmp_path: Path) -> None:
    store.write_record(tmp_path, record(16, 0, 1.0, axis=None))
    paths = write_reports(tmp_path)
    assert "curves_csv" not in paths and not (tmp_path / "curves.csv").exists()
    assert "Curves and descents" not in paths["markdown"].read_text()


# --------------------------------------------------------------------------- suites

SUITE = """\
name: sweep
seeds: [0, 1]
experiments:
  - kind: optimizer
    workloads:
      - name: tiny-llama
        options: {hidden_size: [8, 16, 32], seq_len: 16}
    methods:
      - name: adamw
        hparams: {lr: 0.001}
    budget: {steps: 20, eval_every: 5}
    axis: {name: workload.hidden_size, scale: log, metric: eval_loss, label: "hidden width"}
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_suite_sweeps_a_workload_option_and_carries_the_axis(
    tmp_path: Path, registry: Registry
) -> None:
    path = write(tmp_path, SUITE)
    suite = load_suite(path)
    check_names(suite, registry, path)
    specs = expand(suite, device="cpu")
    assert count_runs(suite) == len(specs) == 3 * 2
    assert [s.workload_options["hidden_size"] for s in specs] == [8, 8, 16, 16, 32, 32]
    assert all(s.workload_options["seq_len"] == 16 for s in specs)
    assert all(s.protocol == {"eval_every": 5} and s.budget.steps == 20 for s in specs)
    assert {s.axis for s in specs} == {
        Axis(name="workload.hidden_size", metric="eval_loss", scale="log", label="hidden width")
    }
    # The axis is not part of a run: without it, every id is the same.
    plain = expand(load_suite(write(tmp_path, SUITE.rsplit("    axis:", 1)[0])), device="cpu")
    assert [s.id for s in plain] == [s.id for s in specs]
    assert all(s.axis is None for s in plain)
    # budget.eval_every is protocol.eval_every under another name: the same runs.
    moved = SUITE.replace("steps: 20, eval_every: 5}", "steps: 20}\n    protocol: {eval_every: 5}")
    assert [s.id for s in expand(load_suite(write(tmp_path, moved)), device="cpu")] == [
        s.id for s in specs
    ]


def test_short_form_defaults_the_metric_to_the_headline(tmp_path: Path) -> None:
    text = SUITE.replace(
        '{name: workload.hidden_size, scale: log, metric: eval_loss, label: "hidden width"}',
        "workload.hidden_size",
    )
    (spec, *_) = expand(load_suite(write(tmp_path, text)), device="cpu")
    assert spec.axis == Axis(name="workload.hidden_size", metric="eval_loss")


@pytest.mark.parametrize(
    ("axis", "line", "message"),
    [
        ("workload.hiden_size", 12, "sets the option 'hiden_size' (did you mean 'hidden_size'?)"),
        ("method.lrr", 12, "sets the hyperparameter 'lrr' (did you mean 'lr'?)"),
        ("{name: steps, metric: eval_los}", 12, "no curve 'eval_los' over steps (did you mean"),
        ("{name: workload.seq_len, scale: log}", 12, None),
    ],
)
def test_unknown_axis_is_a_located_error(
    tmp_path: Path, registry: Registry, axis: str, line: int, message: str | None
) -> None:
    text = SUITE.rsplit("    axis:", 1)[0] + f"    axis: {axis}\n"
    if message is None:  # a valid axis (a fixed option may be one): no error
        path = write(tmp_path, text)
        check_names(load_suite(path), registry, path)
        return
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as err:
        check_names(load_suite(path), registry, path)
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}:{line}: experiments[0].axis.")
    assert message in problem


def test_axis_name_shape_and_values_are_checked(tmp_path: Path, registry: Registry) -> None:
    base = SUITE.rsplit("    axis:", 1)[0]
    with pytest.raises(
        SuiteError,
        match=r"suite.yaml:12: experiments\[0\]\.axis\.name: .*"
        r"workload.<option>, method.<hyperparameter> or steps",
    ):
        load_suite(write(tmp_path, base + "    axis: model.width\n"))
    bad = base.replace("hparams: {lr: 0.001}", "grid: {lr: [0, 0.1]}")
    path = write(tmp_path, bad + "    axis: {name: method.lr, scale: log}\n")
    with pytest.raises(SuiteError, match="a log scale needs positive values"):
        check_names(load_suite(path), registry, path)
    detector = """\
name: d
experiments:
  - kind: detector
    workloads: [digits-cnn]
    methods: [msp]
    axis: steps
    budget: {eval_every: 3}
"""
    path = write(tmp_path, detector)
    with pytest.raises(SuiteError) as err:
        check_names(load_suite(path), registry, path)
    assert any(
        ":6: experiments[0].axis: the detector protocol records no curve" in p
        for p in err.value.problems
    )
    assert any(":7: experiments[0].budget.eval_every:" in p for p in err.value.problems)


def test_a_list_of_names_stays_one_value(tmp_path: Path) -> None:
    text = """\
name: n
experiments:
  - kind: compressor
    workloads:
      - name: minilm-textcls
        options: {dataset: fortune, categories: [art, science]}
    methods: [magnitude-prune]
"""
    (spec,) = expand(load_suite(write(tmp_path, text)), device="cpu")
    assert spec.workload_options["categories"] == ["art", "science"]


def test_seeds_that_agree_exactly_still_carry_the_runs_own_error() -> None:
    """Saturated or identical seeds would give a zero band, and any wiggle would then be
    a 'peak': the runs' own test-set half-widths floor the band."""
    from benchmark.report.curves import CurvePoint

    same = CurvePoint(x=1.0, values=(0.9995, 0.9995, 0.9995), seeds=(0, 1, 2))
    assert same.half_width == pytest.approx(0.0, abs=1e-12)
    floored = CurvePoint(
        x=1.0, values=(0.9995,) * 3, seeds=(0, 1, 2), run_half_widths=(0.01, 0.02, 0.03)
    )
    assert floored.half_width == pytest.approx(0.02)
    noisy = CurvePoint(x=1.0, values=(0.5, 0.7, 0.9), seeds=(0, 1, 2), run_half_widths=(0.01,))
    assert noisy.half_width == pytest.approx(stats.t.ppf(0.975, 2) * 0.2 / math.sqrt(3))


def test_a_long_step_curve_is_judged_on_few_points() -> None:
    """200 evaluations of a falling loss, i.i.d. noise (seed 0 of a draw where judging
    every point against every other finds a false peak in 17 of 40 curves and the thinned
    curve in 1): the thinned judgement finds none, and peak indices refer to the curve."""
    import numpy as np

    from benchmark.report.curves import CurvePoint, _judge, judged_indices

    assert judged_indices([1, 2, 3, 4, 5]) == [0, 1, 2, 3, 4]
    steps = [0.0, *(40.0 * k for k in range(1, 200))]
    idx = judged_indices(steps)
    assert len(idx) <= 12 and idx[0] == 0 and idx[-1] == 199
    assert 1 in idx and idx[2] < 10, "log spacing keeps the early evaluations"
    rng = np.random.default_rng(0)
    x = np.arange(1, 201) * 40.0
    seeds = 1.0 + 2.0 * np.exp(-x / 2000) + rng.normal(0, 0.05, size=(3, x.size))
    points = [
        CurvePoint(x=float(v), values=tuple(seeds[:, i]), seeds=(0, 1, 2)) for i, v in enumerate(x)
    ]
    assert _judge(points, lower_is_better=True, thin=False).n_peaks > 0
    assert _judge(points, lower_is_better=True, thin=True).n_peaks == 0
    # A real peak on a long curve is still found, at its place in the full curve.
    bump = [
        CurvePoint(
            x=float(v),
            values=tuple(s + (3.0 if 90 <= i <= 110 else 0.0) for s in seeds[:, i]),
            seeds=(0, 1, 2),
        )
        for i, v in enumerate(x)
    ]
    found = _judge(bump, lower_is_better=True, thin=True)
    assert found.n_peaks == 1 and 90 <= found.peaks[0].index <= 110
    assert bump[found.peaks[0].index].x == found.peaks[0].x
