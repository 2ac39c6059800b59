"""How one optimizer run is executed and scored.

The loop is the plain one every optimizer paper uses (zero_grad, loss, backward, step)
on the workload's stream of batches (an optimizer with ``needs_closure = True`` instead
gets ``step(closure)`` and computes its own gradients, as sharpness-aware methods must),
up to the step budget or the time budget. Step time is measured with device
synchronisation, warm-up steps excluded; evaluation time is excluded from step time and
from time-to-target.

Evaluation follows AlgoPerf: the held-out *validation* loss is measured before the first
step and every ``eval_every`` steps (protocol option; default 2% of the step budget, so a
target is located to within a fiftieth of the run), and steps- and time-to-target are
interpolated linearly between the two evaluations that bracket the target. The learning
curve, the target and the validation figure a grid winner is chosen on
(``val_eval_loss``) are validation figures; the reported ``eval_loss`` is the *test*
loss at the end, with its 95% interval over the test windows.

A run is ``diverged`` when its training loss is non-finite, and also when it exceeds
``divergence_factor`` times the first step's loss: a far too large learning rate can
climb by orders of magnitude without ever producing a NaN, and such a run is no result to
rank. Healthy runs stay far below the bound, so 10x flags only blow-ups (both measured:
``results/optimizers-tiny/README.md``).
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from scipy import stats

from benchmark.kinds.optimizer import KIND, ClosureStep, LossUnit, ReportsFigures
from benchmark.measure.meters import phase
from benchmark.measure.tensor_memory import measure_step_memory
from benchmark.measure.tensors import tensor_bytes
from benchmark.measure.timing import Stats, clock_label, synchronize
from benchmark.protocols.base import Diverged, ProtocolResult, RunContext
from benchmark.records import Curve, Metric

DEFAULT_STEPS = 100
EVAL_FRACTION = 0.02  # default evaluation interval, as a fraction of the step budget
OPTIONS: dict[str, Any] = KIND.option_defaults


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


def _train_step(
    wl: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Any
) -> torch.Tensor:
    """One training step, the same for the timed loop and the memory pass."""
    if isinstance(optimizer, ClosureStep) and optimizer.needs_closure:
        return optimizer.step(_closure(wl, model, batch, optimizer))
    optimizer.zero_grad(set_to_none=True)
    loss = wl.loss(model, batch)
    loss.backward()
    optimizer.step()
    return loss


def _first_steps_memory(ctx: RunContext, model: torch.nn.Module) -> dict[str, Metric]:
    """Tensor memory of the first two steps of a twin of the run (a copy of the model, the
    same optimizer, the same batches), before the timed loop and without touching it.
    The first steps are where every method does the same things: the state is created
    and low-rank methods compute their first projector (GaLore's SVD), so the peak is
    taken at a defined point for all, not wherever a refresh happens to fall after
    training. Random generators are forked so the run itself draws what it would have."""
    wl, device = ctx.workload, ctx.device
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        twin = copy.deepcopy(model)
        twin_optimizer = ctx.build_method(twin)
        twin_batches = wl.train_batches(ctx.spec.seed, device)
        figures = measure_step_memory(
            twin,
            twin_optimizer,
            lambda: _train_step(wl, twin, twin_optimizer, next(twin_batches)),
            steps=2,
        )
    return figures  # the twin is freed on return


def _loss_unit(workload: object) -> str:
    """A language model's loss is in nats; a workload whose loss is something else (an
    autoencoder's reconstruction MSE) names its unit in ``loss_unit``."""
    return str(workload.loss_unit) if isinstance(workload, LossUnit) else "nats"


def _loss_metric(figures: dict[str, float], meter: str, unit: str = "nats") -> Metric:
    """A held-out mean loss with its 95% interval over the evaluation windows, when the
    workload reports their standard error."""
    value = figures["eval_loss"]
    stderr, n = figures.get("eval_loss_stderr"), figures.get("eval_items")
    ci: dict[str, Any] = {}
    if stderr is not None and n is not None and n >= 2:
        half = float(stats.t.ppf(0.975, int(n) - 1)) * stderr
        ci = {"ci_low": value - half, "ci_high": value + half, "n": int(n)}
    return Metric(value=value, unit=unit, meter=meter, higher_is_better=False, **ci)


def _divergence_factor(options: dict[str, Any]) -> float | None:
    factor = {**OPTIONS, **options}["divergence_factor"]
    if factor is None:
        return None
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor > 1:
        raise ValueError(f"divergence_factor must be a number > 1 or null, not {factor!r}")
    return float(factor)


def _eval_every(options: dict[str, Any], steps: int) -> int:
    every = {**OPTIONS, **options}["eval_every"]
    if every is None:
        return max(1, round(steps * EVAL_FRACTION))
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"eval_every must be a whole number of steps >= 1 or null, not {every!r}")
    return every


def crossing(points: list[tuple[float, float, float]], target: float) -> tuple[float, float] | None:
    """(step, time) where the loss first reaches ``target``, interpolated linearly between
    the two evaluations around it; ``points`` are (step, time, loss) in order. None when
    the target is never reached; the first point itself when it already meets it."""
    for i, (step, t, loss) in enumerate(points):
        if not math.isfinite(loss) or loss > target:
            continue
        if i == 0:
            return step, t
        s0, t0, l0 = points[i - 1]
        frac = (l0 - target) / (l0 - loss) if math.isfinite(l0) and l0 > loss else 1.0
        return s0 + frac * (step - s0), t0 + frac * (t - t0)
    return None


def _splits_supported(wl: Any) -> bool:
    try:
        return "split" in inspect.signature(wl.evaluate).parameters
    except (TypeError, ValueError):
        return False


def run(ctx: RunContext) -> ProtocolResult:
    wl, device, spec = ctx.workload, ctx.device, ctx.spec
    factor = _divergence_factor(spec.protocol)
    steps = spec.budget.steps or DEFAULT_STEPS
    time_budget = spec.budget.time_s
    warmup = min(3, steps // 5)
    eval_every = _eval_every(spec.protocol, steps)
    has_val = _splits_supported(wl)

    torch.manual_seed(spec.seed)
    model = wl.build_model(spec.seed, device)
    model.train()
    optimizer = ctx.build_method(model)
    batches = wl.train_batches(spec.seed, device)
    step_memory = _first_steps_memory(ctx, model)
    target = wl.target_loss

    train_loss: list[float] = []
    eval_curve: tuple[list[float], list[float | None]] = ([], [])
    step_times: list[float] = []
    items = 0
    train_time = 0.0  # measured time of all steps, warm-up included, evaluation excluded
    points: list[tuple[float, float, float]] = []  # (step, train time, validation loss)
    stopped_by_time = False
    limit: float | None = None  # the divergence bound, set from the first step's loss
    last_eval: dict[str, float] = {}

    def evaluate(step: int) -> None:
        nonlocal last_eval
        last_eval = (
            wl.evaluate(model, device, split="val") if has_val else wl.evaluate(model, device)
        )
        loss = last_eval["eval_loss"]
        eval_curve[0].append(step)
        eval_curve[1].append(loss if math.isfinite(loss) else None)
        points.append((float(step), train_time, loss))
        # Observers get the curves as they are drawn (after the step's timing).
        figures = {"eval_loss": loss}
        if train_loss:
            figures["train_loss"] = train_loss[-1]
        ctx.progress(step, **figures)

    evaluate(0)

    with phase("train", device) as train_phase:
        for step in range(1, steps + 1):
            batch = next(batches)
            synchronize(device)
            t0 = time.perf_counter()
            loss = _train_step(wl, model, optimizer, batch)
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
                ctx.say(f"step {step}/{steps} loss {value:.4f}")
            if time_budget is not None and train_time >= time_budget:
                stopped_by_time = True
                break
    done = len(train_loss)
    if not eval_curve[0] or eval_curve[0][-1] != done:  # stopped by time between evaluations
        evaluate(done)
    validation = last_eval
    final = wl.evaluate(model, device, split="test") if has_val else validation
    if not math.isfinite(final["eval_loss"]):
        raise Diverged(f"evaluation loss is {final['eval_loss']} after {done} steps")
    reached = crossing(points, target) if target is not None else None

    timer = clock_label(device)
    unit = _loss_unit(wl)
    metrics: dict[str, Metric] = {
        "eval_loss": _loss_metric(
            final, "workload.evaluate (test split)" if has_val else "workload.evaluate", unit
        ),
        "final_train_loss": Metric(
            value=train_loss[-1], unit=unit, meter="training loop", higher_is_better=False
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
    if has_val:
        metrics["val_eval_loss"] = _loss_metric(
            validation, "workload.evaluate (validation split)", unit
        )
    if "perplexity" in final:
        metrics["perplexity"] = Metric(
            value=final["perplexity"], unit="ppl", meter="workload.evaluate", higher_is_better=False
        )
    # Any other figure the workload's evaluation reports (an autoencoder's train MSE) is
    # kept under its own name, in the workload's ``figure_units`` (lower is better).
    figure_units = wl.figure_units if isinstance(wl, ReportsFigures) else {}
    for name, value in final.items():
        if name in figure_units and name not in metrics and isinstance(value, int | float):
            metrics[name] = Metric(
                value=float(value),
                unit=str(figure_units[name]),
                meter="workload.evaluate (test split)" if has_val else "workload.evaluate",
                higher_is_better=False,
            )
    if target is None:
        why = "the workload declares no target loss"
        metrics["steps_to_target"] = Metric.null("steps", "eval loss", why)
        metrics["time_to_target"] = Metric.null("s", "eval loss", why)
    elif reached is None:
        why = f"validation loss {target:g} not reached in {done} steps"
        metrics["steps_to_target"] = Metric.null("steps", "validation loss", why)
        metrics["time_to_target"] = Metric.null("s", "validation loss", why)
    else:
        how = f"validation loss <= {target:g}, interpolated between evaluations {eval_every} apart"
        metrics["steps_to_target"] = Metric(
            value=reached[0], unit="steps", meter=how, higher_is_better=False
        )
        metrics["time_to_target"] = Metric(
            value=reached[1], unit="s", meter=f"{timer}, {how}", higher_is_better=False
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
    # The headline peak has one definition on every device (the phase's RSS growth and
    # CUDA peaks stay as secondary figures).
    metrics.update(step_memory)
    metrics["peak_memory"] = metrics["step_peak_tensor_bytes"]
    curves = {
        "train_loss": Curve(
            x=list(range(1, done + 1)), y=train_loss, y_label="train loss", unit=unit
        ),
        "eval_loss": Curve(
            x=eval_curve[0],
            y=eval_curve[1],
            y_label="validation loss" if has_val else "eval loss",
            unit=unit,
        ),
    }
    info = {
        "target_loss": target,
        "eval_every": eval_every,
        "curve_split": "validation" if has_val else "test (the workload has no validation split)",
        "divergence_factor": factor,
        "stopped_by_time_budget": stopped_by_time,
        "hparams": ctx.hparams,
        "optimizer": type(optimizer).__name__,
    }
    return ProtocolResult(metrics=metrics, curves=curves, info=info)
