"""The optimizer protocol and the tiny-LLaMA workload."""

from __future__ import annotations

import pytest
import torch

from benchmark.kinds import MethodSpec
from benchmark.protocols import optimizer as protocol
from benchmark.protocols.base import Diverged
from benchmark.workloads.text import CorpusLM

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
    assert result.metrics["steps_done"].value < 100_000


def test_corpus_split_tokenizer_cache_and_determinism() -> None:
    w = CorpusLM(**TINY)
    text = "And God said, Let there be light: and there was light."
    assert w.tokenizer.decode(w.tokenizer.encode(text).ids) == text
    again = CorpusLM(**TINY)  # from the cache: same tokenizer, same streams
    assert again.tokenizer.to_str() == w.tokenizer.to_str()
    assert (again.eval_ids == w.eval_ids).all()
    cpu = torch.device("cpu")
    a, b, c = (next(w.train_batches(s, cpu)) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 33)


def test_llama60m_preset_is_the_galore_config() -> None:
    from benchmark.workloads.text import PRESETS

    p = PRESETS["llama60m"]
    assert (
        p["hidden_size"],
        p["intermediate_size"],
        p["num_heads"],
        p["num_layers"],
        p["seq_len"],
    ) == (512, 1376, 8, 8, 256)


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
