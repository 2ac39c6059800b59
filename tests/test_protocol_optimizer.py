"""The optimizer protocol on the tiny LLaMA (the workload itself: test_workloads_text)."""

from __future__ import annotations

import pytest
import torch

from benchmark.kinds import MethodSpec
from benchmark.protocols import optimizer as protocol
from benchmark.protocols.base import Diverged

from .helpers import context

TINY = {
    "vocab_size": 512,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 1,
    "num_heads": 2,
    "seq_len": 32,
    "batch_size": 4,
    "eval_batches": 2,
    "target_loss": 6.5,
}


def test_adamw_trains_and_reports_every_figure() -> None:
    ctx = context("optimizer", "adamw", "tiny-llama", options=TINY, hparams={"lr": 3e-3}, steps=40)
    result = protocol.run(ctx)
    m, curve = result.metrics, result.curves["train_loss"].y
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.5, "the loss goes down"
    assert m["eval_loss"].unit == "nats" and m["perplexity"].value > 1
    assert m["steps_done"].value == 40
    assert m["step_time"].n == 40 - 3 and m["step_time"].p90 >= m["step_time"].value
    assert m["tokens_per_s"].value > 0
    assert m["steps_to_target"].value is not None and m["steps_to_target"].value <= 40
    # On a CPU the CUDA and NVML meters are null with a reason, never zero.
    for key in ("train_cuda_peak_allocated", "train_gpu_energy"):
        assert m[key].value is None and m[key].reason
    # The headline is the tensor-level peak of a training step, one definition everywhere;
    # the RSS growth of the training phase stays beside it.
    assert m["peak_memory"] == m["step_peak_tensor_bytes"] and m["peak_memory"].value > 0
    assert m["train_host_rss_growth"].meter.endswith("peak above the phase's start")
    assert result.curves["eval_loss"].x[-1] == 40


def test_adamw_state_bytes_match_the_analytic_size() -> None:
    ctx = context("optimizer", "adamw", "tiny-llama", options=TINY, steps=3)
    result = protocol.run(ctx)
    model = ctx.workload.build_model(0, torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    # exp_avg and exp_avg_sq per parameter (fp32) plus one scalar fp32 'step' tensor each.
    expected = sum(2 * p.numel() * 4 + 4 for p in params)
    assert result.metrics["optimizer_state_bytes"].value == expected
    assert result.metrics["step_optimizer_state_bytes"].value == expected  # counted by storage


@pytest.mark.parametrize("amsgrad", [False, True])
def test_optimizer_state_bytes_counts_what_torch_adamw_stores(amsgrad: bool) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3, bias=False))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, amsgrad=amsgrad)
    assert protocol.optimizer_state_bytes(opt) == 0  # torch allocates state on the first step
    model(torch.randn(4, 7)).sum().backward()
    opt.step()
    moments = {"exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if amsgrad else set())
    for p in model.parameters():
        state = opt.state[p]
        assert set(state) == moments | {"step"}
        assert state["step"].dtype == torch.float32 and state["step"].dim() == 0
    n = sum(p.numel() for p in model.parameters())  # 7*5 + 5 + 5*3 = 55
    assert protocol.optimizer_state_bytes(opt) == len(moments) * n * 4 + 3 * 4


def test_optimizer_state_bytes_recurses_through_nested_state() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    opt.state["extra"] = {
        "basis": [torch.zeros(3, 4), (torch.zeros(2, dtype=torch.float16), 7)],
        "seed": 123,
    }
    assert protocol.optimizer_state_bytes(opt) == 3 * 4 * 4 + 2 * 2


def test_adamw_blow_up_is_diverged_even_when_the_loss_stays_finite() -> None:
    # AdamW at lr=1e3 sends the loss to ~1e7 nats without a NaN; it must not rank as "ok".
    ctx = context("optimizer", "adamw", "tiny-llama", options=TINY, hparams={"lr": 1e3}, steps=20)
    with pytest.raises(Diverged, match=r"at step 2 exceeds 10x the first step's loss"):
        protocol.run(ctx)
    off = context(
        "optimizer",
        "adamw",
        "tiny-llama",
        options=TINY,
        hparams={"lr": 1e3},
        steps=4,
        protocol={"divergence_factor": None},
    )
    result = protocol.run(off)
    assert max(result.curves["train_loss"].y) > 1e3 and result.info["divergence_factor"] is None


def test_divergence_factor_must_be_a_number_above_one() -> None:
    ctx = context(
        "optimizer",
        "adamw",
        "tiny-llama",
        options=TINY,
        steps=2,
        protocol={"divergence_factor": 0.5},
    )
    with pytest.raises(ValueError, match="divergence_factor"):
        protocol.run(ctx)


class PoisonSGD(torch.optim.SGD):
    """Writes NaN into the weights after a few steps, as an unstable method would."""

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        super().step(closure)
        self.state.setdefault("n", 0)
        self.state["n"] += 1
        if self.state["n"] == 3:
            with torch.no_grad():
                next(iter(self.param_groups[0]["params"])).fill_(float("nan"))


def test_non_finite_loss_is_diverged() -> None:
    spec = MethodSpec(
        kind="optimizer",
        name="poison",
        factory=lambda model, lr: PoisonSGD(model.parameters(), lr=lr),
        defaults={"lr": 0.01},
    )
    ctx = context("optimizer", "poison", "tiny-llama", options=TINY, steps=30, method_spec=spec)
    with pytest.raises(Diverged, match="at step 4"):
        protocol.run(ctx)


def test_time_budget_stops_early() -> None:
    ctx = context("optimizer", "adamw", "tiny-llama", options=TINY, steps=100_000, time_s=0.5)
    result = protocol.run(ctx)
    assert result.info["stopped_by_time_budget"]
    done = result.metrics["steps_done"].value
    assert done < 100_000
    # The final evaluation happens once, at the step the clock stopped the run.
    evals = result.curves["eval_loss"]
    assert evals.x[-1] == done and evals.x == sorted(set(evals.x))
    assert result.metrics["val_eval_loss"].value == evals.y[-1]  # the curve is validation


def test_closure_optimizers_run_through_the_protocol() -> None:
    ctx = context(
        "optimizer",
        "lorenza",
        "tiny-llama",
        options=TINY,
        steps=8,
        hparams={"rank": 8, "update_gap": 4, "lr": 3e-3},
    )
    result = protocol.run(ctx)
    curve = result.curves["train_loss"].y
    assert len(curve) == 8 and all(c == c for c in curve)
    assert result.metrics["steps_done"].value == 8


def test_target_crossing_is_interpolated_between_evaluations() -> None:
    # Validation loss 8 at step 0, 6 at step 10, 4 at step 20 (times 0, 1, 3 s): a 5-nat
    # target is crossed half-way between steps 10 and 20, at step 15 and 2 s.
    points = [(0.0, 0.0, 8.0), (10.0, 1.0, 6.0), (20.0, 3.0, 4.0)]
    assert protocol.crossing(points, 5.0) == pytest.approx((15.0, 2.0))
    assert protocol.crossing(points, 7.5) == pytest.approx((2.5, 0.25))
    assert protocol.crossing(points, 3.0) is None
    assert protocol.crossing(points, 9.0) == (0.0, 0.0)  # met before the first step


def test_evaluation_schedule_is_two_percent_of_the_budget_and_steps_to_target_differ() -> None:
    # 5.6 nats: lr 3e-3 gets there around step 15, lr 1e-3 around step 40.
    options = {**TINY, "target_loss": 5.6}
    ctx = context(
        "optimizer", "adamw", "tiny-llama", options=options, hparams={"lr": 3e-3}, steps=50
    )
    result = protocol.run(ctx)
    assert result.info["eval_every"] == 1
    assert result.curves["eval_loss"].x[:3] == [0, 1, 2]  # from before the first step
    slow = context(
        "optimizer", "adamw", "tiny-llama", options=options, hparams={"lr": 1e-3}, steps=50
    )
    fast_steps = result.metrics["steps_to_target"].value
    slow_steps = protocol.run(slow).metrics["steps_to_target"].value
    assert fast_steps is not None and slow_steps is not None
    assert 5 < fast_steps < slow_steps < 50
    # The reported loss is the test split's, the curve and val_eval_loss the validation's.
    m = result.metrics
    assert m["val_eval_loss"].value == result.curves["eval_loss"].y[-1]
    assert m["eval_loss"].value != m["val_eval_loss"].value
    assert m["eval_loss"].ci_low < m["eval_loss"].value < m["eval_loss"].ci_high


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_eval_every_must_be_a_positive_whole_number(bad: object) -> None:
    ctx = context(
        "optimizer", "adamw", "tiny-llama", options=TINY, steps=5, protocol={"eval_every": bad}
    )
    with pytest.raises(ValueError, match="eval_every"):
        protocol.run(ctx)


def test_the_memory_pass_on_a_twin_leaves_the_run_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def run() -> list[float | None]:
        ctx = context("optimizer", "adamw", "tiny-llama", options=TINY, steps=8)
        torch.manual_seed(0)
        return protocol.run(ctx).curves["train_loss"].y

    # A plausible bug: the twin drawing from the run's batch stream shifts its batches.
    with_pass = run()
    monkeypatch.setattr(
        protocol, "_first_steps_memory", lambda ctx, model: {"step_peak_tensor_bytes": None}
    )
    assert run() == with_pass
