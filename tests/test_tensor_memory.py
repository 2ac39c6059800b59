"""The tensor-level memory meter against sizes worked out by hand for a known model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.measure.tensor_memory import measure_step_memory, track_step_memory
from benchmark.protocols import optimizer as protocol
from plugins.optimizers.galore import build_galore

from .helpers import context
from .test_protocol_optimizer import TINY

F32 = 4
# Linear(32, 64) and Linear(64, 16) with biases, float32.
PARAM_BYTES = F32 * (32 * 64 + 64 + 64 * 16 + 16)  # 12608
N_PARAM_TENSORS = 4
RANK = 4


class Net(nn.Module):
    """Named like a transformer block so GaLore projects both weights."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(32, 64)
        self.mlp = nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.relu(self.attn(x)))


def adamw(model: nn.Module, foreach: bool | None = None) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=foreach)


def galore(model: nn.Module) -> torch.optim.Optimizer:
    return build_galore(
        model,
        lr=1e-2,
        rank=RANK,
        update_gap=200,
        scale=0.25,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
    )


def train(model: nn.Module, opt: torch.optim.Optimizer, batch: int):  # type: ignore[no-untyped-def]
    """A plain training step on fresh random data of ``batch`` rows."""
    g = torch.Generator().manual_seed(1)

    def step() -> torch.Tensor:
        x, y = torch.randn(batch, 32, generator=g), torch.randn(batch, 16, generator=g)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def measure(build, batch: int = 8, steps: int = 2):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = Net()
    opt = build(model)
    return track_step_memory(model, opt, train(model, opt, batch), steps=steps)


def test_counts_storages_exactly_once_and_stops_at_free() -> None:
    model = nn.Linear(10, 10, bias=False)  # 400 bytes
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # no state
    data = torch.arange(100_000.0)  # a data set made before the pass: not the step's memory

    def step() -> None:
        batch = torch.stack([data[i : i + 25] for i in (0, 100, 1000, 5000)])  # 400 bytes
        a = torch.zeros(1000)  # 4000 bytes
        views = [a[::2], a.view(10, 100), a[3:7], a.view(100, 10).T]  # a's storage
        e = torch.tensor([0.5] * 250)  # 1000 bytes, built outside the dispatcher
        b = torch.zeros(2000)  # 8000 bytes: the peak
        del b
        c = torch.ones(1500)  # 6000 bytes, allocated after b was freed
        del views, c, e, a, batch

    result = track_step_memory(model, opt, step, steps=2)
    assert result.peak_bytes == 400 + 400 + 4000 + 1000 + 8000
    assert result.at_peak == {
        "params": 400,
        "grads": 0,
        "optimizer_state": 0,
        "buffers": 0,
        "activations": 400 + 4000 + 1000 + 8000,
    }


@pytest.mark.parametrize("foreach", [False, None, True])
def test_adamw_breakdown_matches_the_analytic_sizes(foreach: bool | None) -> None:
    result = measure(lambda m: adamw(m, foreach))
    state = 2 * PARAM_BYTES + N_PARAM_TENSORS * F32  # exp_avg, exp_avg_sq, fp32 `step` each
    at = result.at_peak
    assert at["params"] == PARAM_BYTES
    # A small batch puts the peak inside optimizer.step, where every gradient is live.
    assert at["grads"] == PARAM_BYTES
    assert at["optimizer_state"] == state
    assert result.optimizer_state_bytes == state
    assert at["buffers"] == 0
    assert at["activations"] > 0
    assert result.peak_bytes >= PARAM_BYTES + PARAM_BYTES + state
    assert sum(at.values()) == result.peak_bytes


def test_adamw_step_tensors_are_what_torch_stores() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = adamw(model)
    train(model, opt, 8)()
    for p in model.parameters():
        step = opt.state[p]["step"]
        assert step.dtype == torch.float32 and step.dim() == 0
        assert step.untyped_storage().nbytes() == F32


def galore_state_bytes() -> int:
    """attn.weight is 64 x 32 (m >= n: projector r x n, moments m x r); mlp.weight is
    16 x 64 (m < n: projector m x r, moments r x n); the biases get AdamW with a Python
    int step counter."""
    r = RANK
    attn = r * 32 + 2 * 64 * r
    mlp = 16 * r + 2 * r * 64
    biases = 2 * (64 + 16)
    return F32 * (attn + mlp + biases)  # 5504


def test_galore_state_matches_its_analytic_size() -> None:
    result = measure(galore)
    assert result.optimizer_state_bytes == galore_state_bytes()
    assert result.at_peak["optimizer_state"] == galore_state_bytes()
    assert result.at_peak["params"] == PARAM_BYTES


def test_galore_peak_is_below_adamw_by_exactly_the_state_difference() -> None:
    """Forward and backward allocate the same tensors whatever the optimizer, and the
    optimizer state is constant while they run (from the second step on). So when both
    peaks fall inside backward, the peaks differ by exactly the state difference."""
    batch = 1024  # activations dwarf the parameters: the peak is in backward
    a, g = measure(adamw, batch), measure(galore, batch)
    for result in (a, g):  # inside backward: only some gradients exist yet
        assert 0 < result.at_peak["grads"] < PARAM_BYTES
    state_a = 2 * PARAM_BYTES + N_PARAM_TENSORS * F32
    assert a.optimizer_state_bytes - g.optimizer_state_bytes == state_a - galore_state_bytes()
    assert a.peak_bytes - g.peak_bytes == state_a - galore_state_bytes()
    assert a.at_peak["activations"] == g.at_peak["activations"]
    assert a.at_peak["grads"] == g.at_peak["grads"]


def test_galore_peak_is_below_adamw_when_the_step_dominates() -> None:
    a, g = measure(adamw), measure(galore)
    assert g.peak_bytes < a.peak_bytes
    # Both peaks are inside optimizer.step: every gradient is live.
    assert a.at_peak["grads"] == g.at_peak["grads"] == PARAM_BYTES


class ScratchSGD(torch.optim.Optimizer):
    """Momentum SGD that needs a large scratch buffer inside every step."""

    SCRATCH = 100_000  # elements: 400 kB, far more than the model

    def __init__(self, params) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params, {"lr": 0.01})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        scratch = torch.ones(self.SCRATCH)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                state["momentum"].mul_(0.9).add_(p.grad, alpha=float(scratch[0]))
                p.add_(state["momentum"], alpha=-group["lr"])  # in place: no temporaries
        return None


@pytest.mark.parametrize("steps", [1, 2])
def test_a_temporary_inside_step_is_not_optimizer_state(steps: int) -> None:
    result = measure(lambda m: ScratchSGD(m.parameters()), steps=steps)
    # With one step the momentum is created inside the measured step and still counts as
    # state at the peak; the scratch buffer, created in the same step, does not.
    assert result.at_peak["optimizer_state"] == PARAM_BYTES
    assert result.optimizer_state_bytes == PARAM_BYTES
    assert result.at_peak["activations"] >= ScratchSGD.SCRATCH * F32
    assert result.peak_bytes >= 3 * PARAM_BYTES + ScratchSGD.SCRATCH * F32


def test_state_that_exists_before_the_pass_is_counted() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = adamw(model)
    step = train(model, opt, 8)
    step()  # the state and the gradients now exist, before the tracker starts
    result = track_step_memory(model, opt, lambda: None, steps=1)  # no tensor work at all
    state = 2 * PARAM_BYTES + N_PARAM_TENSORS * F32
    assert result.at_peak["optimizer_state"] == result.optimizer_state_bytes == state
    assert result.at_peak["grads"] == result.at_peak["params"] == PARAM_BYTES
    assert result.peak_bytes == 2 * PARAM_BYTES + state


def test_metrics_are_bytes_and_a_failed_pass_is_null_never_zero() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = adamw(model)
    metrics = measure_step_memory(model, opt, train(model, opt, 8))
    assert metrics["step_peak_tensor_bytes"].value == sum(
        metrics[k].value
        for k in (
            "step_params_bytes",
            "step_grads_bytes",
            "step_peak_optimizer_state_bytes",
            "step_buffers_bytes",
            "step_activations_bytes",
        )
    )
    for m in metrics.values():
        assert m.unit == "bytes" and m.higher_is_better is False and m.meter

    def broken() -> None:
        raise RuntimeError("no such kernel")

    nulls = measure_step_memory(model, opt, broken)
    assert set(nulls) == set(metrics)
    for m in nulls.values():
        assert m.value is None and "no such kernel" in (m.reason or "")


def test_buffers_are_their_own_category() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.Linear(64, 16))
    opt = adamw(model)
    result = track_step_memory(model, opt, train(model, opt, 8), steps=2)
    # running_mean, running_var (64 floats each) and num_batches_tracked (one int64).
    assert result.at_peak["buffers"] == 2 * 64 * F32 + 8


def test_the_protocol_headline_is_the_tensor_peak_for_closure_optimizers_too() -> None:
    ctx = context(
        "optimizer",
        "lorenza",
        "tiny-llama",
        options=TINY,
        steps=4,
        hparams={"rank": 8, "update_gap": 4, "lr": 3e-3},
    )
    m = protocol.run(ctx).metrics
    assert m["peak_memory"] == m["step_peak_tensor_bytes"]
    assert m["step_params_bytes"].value == m["param_count"].value * F32
    # LORENZA's state has a fixed size: counted by storage it agrees with the tensor count.
    assert m["step_optimizer_state_bytes"].value == m["optimizer_state_bytes"].value > 0
    assert m["step_activations_bytes"].value > 0
    parts = ("params", "grads", "peak_optimizer_state", "buffers", "activations")
    assert m["peak_memory"].value == sum(m[f"step_{k}_bytes"].value for k in parts)
