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
    assert m["peak_memory"].meter == "psutil.rss" and m["peak_memory"].value > 0
    assert result.curves["eval_loss"].x[-1] == 40


def test_adamw_state_bytes_match_the_analytic_size() -> None:
    ctx = context("optimizer", "adamw", "tiny-llama", options=TINY, steps=3)
    result = protocol.run(ctx)
    model = ctx.workload.build_model(0, torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    # exp_avg and exp_avg_sq per parameter (fp32) plus one scalar fp32 'step' tensor each.
    expected = sum(2 * p.numel() * 4 + 4 for p in params)
    assert result.metrics["optimizer_state_bytes"].value == expected


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
    assert result.metrics["eval_loss"].value == evals.y[-1]


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
