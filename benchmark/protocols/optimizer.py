"""How one optimizer run is executed and scored.

The loop is the plain one every optimizer paper uses (zero_grad, loss, backward, step)
on the workload's stream of batches (an optimizer with ``needs_closure = True`` instead
gets ``step(closure)`` and computes its own gradients, as sharpness-aware methods must),
up to the step budget or the time budget. Step time is measured with device
synchronisation, warm-up steps excluded; evaluation time is excluded from step time and
from time-to-target. Steps- and time-to-target use the held-out loss, as AlgoPerf does,
checked at each evaluation point.

A run is ``diverged`` when its training loss is non-finite, and also when it exceeds
``divergence_factor`` times the first step's loss: AdamW at lr=1e3 on the tiny LLaMA
climbs to ~1e7 nats without ever producing a NaN, and such a run is no result to rank.
Healthy runs stay far below the bound (the largest rise over the first loss in the
optimizers-tiny suite, 80 runs, is 1.07x), so 10x flags only blow-ups.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from benchmark.measure.meters import phase
from benchmark.measure.tensors import tensor_bytes
from benchmark.measure.timing import Stats, synchronize
from benchmark.protocols.base import Diverged, ProtocolResult, RunContext
from benchmark.records import Curve, Metric

DEFAULT_STEPS = 100
EVAL_POINTS = 5
OPTIONS: dict[str, Any] = {
    # A loss above this multiple of the first step's loss is a divergence; None disables
    # the check (a non-finite loss always is one). Ignored when the first loss is <= 0.
    "divergence_factor": 10.0,
}


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """What the optimizer keeps between steps: every tensor in ``optimizer.state``."""
    return sum(tensor_bytes(state) for state in optimizer.state.values())


def _params(model: torch.nn.Module) -> Iterable[torch.Tensor]:
    return (p for p in model.parameters() if p.requires_grad)


def _closure(
    wl: Any, model: torch.nn.Module, batch: Any, optimizer: torch.optim.Optimizer
) -> Callable[..., torch.Tensor]:
    """The loss on the current batch, for optimizers that evaluate it more than once
    (sharpness-aware and zeroth-order methods). ``backward=False`` is a forward pass only.
    Their step returns the loss at the unperturbed weights, which the curve records."""

    def closure(backward: bool = True) -> torch.Tensor:
        if not backward:
            with torch.no_grad():
                return wl.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss = wl.loss(model, batch)
        loss.backward()
        return loss

    return closure


def _divergence_factor(options: dict[str, Any]) -> float | None:
    factor = {**OPTIONS, **options}["divergence_factor"]
    if factor is None:
        return None
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor > 1:
        raise ValueError(f"divergence_factor must be a number > 1 or null, not {factor!r}")
    return float(factor)


def _timer_name(device: torch.device) -> str:
    """The loop reads a host clock after synchronising, so name that, not CUDA events."""
    return "perf_counter" if device.type != "cuda" else "perf_counter (cuda synchronised)"


def run(ctx: RunContext) -> ProtocolResult:
    wl, device, spec = ctx.workload, ctx.device, ctx.spec
    factor = _divergence_factor(spec.protocol)
    steps = spec.budget.steps or DEFAULT_STEPS
    time_budget = spec.budget.time_s
    warmup = min(3, steps // 5)
    eval_every = max(1, steps // EVAL_POINTS)

    torch.manual_seed(spec.seed)
    model = wl.build_model(spec.seed, device)
    model.train()
    optimizer = ctx.build_method(model)
    batches = wl.train_batches(spec.seed, device)
    target = wl.target_loss

    train_loss: list[float] = []
    eval_curve: tuple[list[float], list[float | None]] = ([], [])
    step_times: list[float] = []
    items = 0
    train_time = 0.0  # measured time of all steps, warm-up included, evaluation excluded
    reached: tuple[int, float] | None = None
    stopped_by_time = False
    limit: float | None = None  # the divergence bound, set from the first step's loss
    last_eval: dict[str, float] = {}

    def evaluate(step: int) -> None:
        nonlocal reached, last_eval
        last_eval = wl.evaluate(model, device)
        loss = last_eval["eval_loss"]
        eval_curve[0].append(step)
        eval_curve[1].append(loss if math.isfinite(loss) else None)
        if target is not None and reached is None and loss <= target:
            reached = (step, train_time)

    with phase("train", device) as train_phase:
        for step in range(1, steps + 1):
            batch = next(batches)
            synchronize(device)
            t0 = time.perf_counter()
            if getattr(optimizer, "needs_closure", False):
                loss = optimizer.step(_closure(wl, model, batch, optimizer))
            else:
                optimizer.zero_grad(set_to_none=True)
                loss = wl.loss(model, batch)
                loss.backward()
                optimizer.step()
            value = float(loss.detach())  # synchronises with the device
            synchronize(device)
            dt = time.perf_counter() - t0
            if not math.isfinite(value):
                raise Diverged(f"training loss is {value} at step {step}")
            if step == 1 and factor is not None and value > 0:
                limit = factor * value
            if limit is not None and value > limit:
                raise Diverged(
                    f"training loss {value:.4g} at step {step} exceeds {factor:g}x the first "
                    f"step's loss ({train_loss[0]:.4g}); protocol option divergence_factor"
                )
            train_loss.append(value)
            train_time += dt
            if step > warmup:
                step_times.append(dt)
                items += wl.items_in(batch)
            if step % eval_every == 0 or step == steps:
                evaluate(step)
            if step % max(1, steps // 10) == 0:
                ctx.progress(f"step {step}/{steps} loss {value:.4f}")
            if time_budget is not None and train_time >= time_budget:
                stopped_by_time = True
                break
    done = len(train_loss)
    if not eval_curve[0] or eval_curve[0][-1] != done:  # stopped by time between evaluations
        evaluate(done)
    final = last_eval
    if not math.isfinite(final["eval_loss"]):
        raise Diverged(f"evaluation loss is {final['eval_loss']} after {done} steps")

    timer = _timer_name(device)
    metrics: dict[str, Metric] = {
        "eval_loss": Metric(
            value=final["eval_loss"], unit="nats", meter="workload.evaluate", higher_is_better=False
        ),
        "final_train_loss": Metric(
            value=train_loss[-1], unit="nats", meter="training loop", higher_is_better=False
        ),
        "steps_done": Metric(value=float(done), unit="steps", meter="training loop"),
        "optimizer_state_bytes": Metric(
            value=float(optimizer_state_bytes(optimizer)),
            unit="bytes",
            meter="optimizer.state",
            higher_is_better=False,
        ),
        "param_count": Metric(
            value=float(sum(p.numel() for p in _params(model))),
            unit="parameters",
            meter="model.parameters",
        ),
    }
    if "perplexity" in final:
        metrics["perplexity"] = Metric(
            value=final["perplexity"], unit="ppl", meter="workload.evaluate", higher_is_better=False
        )
    if target is None:
        why = "the workload declares no target loss"
        metrics["steps_to_target"] = Metric.null("steps", "eval loss", why)
        metrics["time_to_target"] = Metric.null("s", "eval loss", why)
    elif reached is None:
        why = f"eval loss {target:g} not reached in {done} steps"
        metrics["steps_to_target"] = Metric.null("steps", "eval loss", why)
        metrics["time_to_target"] = Metric.null("s", "eval loss", why)
    else:
        metrics["steps_to_target"] = Metric(
            value=float(reached[0]),
            unit="steps",
            meter=f"eval loss <= {target:g}",
            higher_is_better=False,
        )
        metrics["time_to_target"] = Metric(
            value=reached[1],
            unit="s",
            meter=f"{timer}, eval loss <= {target:g}",
            higher_is_better=False,
        )
    if step_times:
        stats = Stats.of(step_times)
        metrics["step_time"] = stats.metric(
            "s", f"{timer} (synchronised, {warmup} warm-up steps excluded)"
        )
        metrics["tokens_per_s"] = Metric(
            value=items / sum(step_times),
            unit=f"{wl.items_unit}/s",
            meter=timer,
            n=stats.n,
            higher_is_better=True,
        )
    else:
        why = f"only {done} steps, all of them warm-up"
        metrics["step_time"] = Metric.null("s", timer, why)
        metrics["tokens_per_s"] = Metric.null(f"{wl.items_unit}/s", timer, why)
    phase_metrics = train_phase.metrics()
    metrics.update(phase_metrics)
    metrics["peak_memory"] = phase_metrics["train_peak_memory"]
    curves = {
        "train_loss": Curve(
            x=list(range(1, done + 1)), y=train_loss, y_label="train loss", unit="nats"
        ),
        "eval_loss": Curve(x=eval_curve[0], y=eval_curve[1], y_label="eval loss", unit="nats"),
    }
    info = {
        "target_loss": target,
        "divergence_factor": factor,
        "stopped_by_time_budget": stopped_by_time,
        "hparams": ctx.hparams,
        "optimizer": type(optimizer).__name__,
    }
    return ProtocolResult(metrics=metrics, curves=curves, info=info)
