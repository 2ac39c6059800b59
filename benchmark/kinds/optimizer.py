"""The optimizer kind: a method is a ``torch.optim.Optimizer`` over a model trained from
scratch; the protocol (``benchmark.protocols.optimizer``) drives the training loop and
measures loss, time to a target, step time, throughput and memory."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from benchmark.kinds.definition import KindDef, KindInfo, MetricDecl, Option, phase_metrics

if TYPE_CHECKING:
    import torch
    from torch import nn


# --------------------------------------------------------------------------- capabilities


@runtime_checkable
class ClosureStep(Protocol):
    """An optimizer that evaluates the loss more than once per step (sharpness-aware and
    zeroth-order methods): with ``needs_closure`` true it receives ``step(closure)`` and
    computes its own gradients; its extra forward passes count in its step time."""

    needs_closure: bool

    def step(self, closure: Any = None) -> Any: ...


@runtime_checkable
class OptimizerWorkload(Protocol):
    """A model trained from scratch; the optimizer protocol drives the loop."""

    target_loss: float | None
    items_unit: str  # what throughput counts, e.g. "tokens"

    def build_model(self, seed: int, device: torch.device) -> nn.Module: ...

    def train_batches(self, seed: int, device: torch.device) -> Iterator[Any]:
        """An endless stream of training batches, deterministic for a seed."""
        ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def items_in(self, batch: Any) -> int:
        """How many items (tokens, samples) a batch holds, for throughput."""
        ...

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Held-out figures; must include 'eval_loss' (in ``loss_unit``) and may add
        'perplexity' and the figures named in ``figure_units``. A workload with a
        validation split also takes ``split="val"`` / ``split="test"``."""
        ...


@runtime_checkable
class LossUnit(Protocol):
    """Optional: the unit of the workload's loss (default "nats": a language model's; an
    autoencoder's is an MSE)."""

    loss_unit: str


@runtime_checkable
class ReportsFigures(Protocol):
    """Optional: further figures ``evaluate`` reports, name -> unit, kept as metrics under
    those names (lower is better)."""

    figure_units: Mapping[str, str]


def workload_figures(workload: Any) -> dict[str, str]:
    """The metrics a workload (or its factory class) adds through ``figure_units``, name ->
    unit."""
    return dict(workload.figure_units) if isinstance(workload, ReportsFigures) else {}


# --------------------------------------------------------------------------- metrics

_LOSS = "the workload's loss unit (nats; an autoencoder's MSE)"
_NO_VAL = "the workload has no validation split"
_TENSOR_METER = "tensor-storage accounting over two extra training steps of a copy of the run"
METRICS: tuple[MetricDecl, ...] = (
    MetricDecl(
        "eval_loss",
        _LOSS,
        "lower",
        "the held-out test loss of the trained model; the kind's headline.",
        "workload.evaluate on the test split after the last step, with a Student-t 95% "
        "interval over the evaluation windows where the workload reports their standard error.",
    ),
    MetricDecl(
        "val_eval_loss",
        _LOSS,
        "lower",
        "the validation loss after the last step, on which grid winners are chosen.",
        "workload.evaluate on the validation split (workloads that have one), interval as "
        "for eval_loss.",
        absent=_NO_VAL,
    ),
    MetricDecl(
        "final_train_loss",
        _LOSS,
        "lower",
        "the training loss of the last step.",
        "the loss the training loop computed on the last step's batch.",
    ),
    MetricDecl(
        "train_loss",
        _LOSS,
        "lower",
        "the training loss at every step: a step curve (and what observers get at each "
        "evaluation), not a record metric; its last value is final_train_loss.",
        "the loss the training loop computed on each step's batch.",
    ),
    MetricDecl(
        "perplexity",
        "ppl",
        "lower",
        "the test perplexity of a language model.",
        "reported by workload.evaluate as exp of the per-token test loss.",
        absent="the workload is not a language model (it reports no perplexity)",
    ),
    MetricDecl(
        "steps_done",
        "steps",
        "none",
        "how many training steps ran.",
        "counted by the training loop; fewer than the budget when the time budget stopped it.",
    ),
    MetricDecl(
        "steps_to_target",
        "steps",
        "lower",
        "the step at which the validation loss first reaches the workload's target loss.",
        "interpolated linearly between the two evaluations (eval_every steps apart) that "
        "bracket the target; null when the target is never reached or not declared.",
    ),
    MetricDecl(
        "time_to_target",
        "s",
        "lower",
        "the training time until the validation loss first reaches the target loss.",
        "summed measured step times (evaluation excluded), interpolated between the two "
        "evaluations that bracket the target.",
    ),
    MetricDecl(
        "step_time",
        "s",
        "lower",
        "the time of one training step (zero_grad, loss, backward, step).",
        "median over the steps after warm-up (min(3, steps // 5) excluded), each timed with "
        "device synchronisation before and after, with p10/p90.",
    ),
    MetricDecl(
        "tokens_per_s",
        "the workload's items per second (tokens/s, samples/s)",
        "higher",
        "training throughput.",
        "items in the timed (post-warm-up) batches divided by the sum of their step times.",
    ),
    MetricDecl(
        "optimizer_state_bytes",
        "bytes",
        "lower",
        "what the optimizer keeps between steps.",
        "bytes of every tensor in optimizer.state after training.",
    ),
    MetricDecl(
        "param_count",
        "parameters",
        "none",
        "the trainable parameters of the model.",
        "sum of numel over parameters that require gradients.",
    ),
    MetricDecl(
        "peak_memory",
        "bytes",
        "lower",
        "the headline memory peak of a training step, the same definition on every device.",
        f"step_peak_tensor_bytes: live tensor bytes at the peak of the first two steps, "
        f"{_TENSOR_METER}.",
    ),
    MetricDecl(
        "step_peak_tensor_bytes",
        "bytes",
        "lower",
        "all live tensor bytes at the peak of a training step.",
        f"{_TENSOR_METER} (a TorchDispatchMode counting each storage once).",
    ),
    MetricDecl(
        "step_params_bytes",
        "bytes",
        "lower",
        "parameter bytes live at the step's peak.",
        f"{_TENSOR_METER}, storages classified as parameters.",
    ),
    MetricDecl(
        "step_grads_bytes",
        "bytes",
        "lower",
        "gradient bytes live at the step's peak.",
        f"{_TENSOR_METER}, storages held as a parameter's .grad.",
    ),
    MetricDecl(
        "step_peak_optimizer_state_bytes",
        "bytes",
        "lower",
        "optimizer-state bytes live at the step's peak.",
        f"{_TENSOR_METER}, storages held in optimizer.state.",
    ),
    MetricDecl(
        "step_buffers_bytes",
        "bytes",
        "lower",
        "module buffer bytes live at the step's peak.",
        f"{_TENSOR_METER}, storages registered as module buffers.",
    ),
    MetricDecl(
        "step_activations_bytes",
        "bytes",
        "lower",
        "every other tensor live at the step's peak: activations, temporaries, the batch.",
        f"{_TENSOR_METER}, storages of no other category.",
    ),
    MetricDecl(
        "step_optimizer_state_bytes",
        "bytes",
        "lower",
        "the optimizer state after the last of the measured steps.",
        f"{_TENSOR_METER}, optimizer.state's storages after the last step.",
    ),
    *phase_metrics("train", "the timed training loop ran"),
)

KIND = KindDef(
    name="optimizer",
    summary="Training a model from scratch with a torch.optim.Optimizer.",
    built="torch.optim:Optimizer",
    leading_args=("model",),
    run="benchmark.protocols.optimizer:run",
    capabilities={"needs_closure": ClosureStep},
    workload=OptimizerWorkload,
    workload_capabilities={"loss_unit": LossUnit, "figure_units": ReportsFigures},
    options={
        # Typed as the protocol checks them (benchmark.protocols.optimizer).
        "divergence_factor": Option(
            "Annotated[float, Interval(gt=1)] | None",
            10.0,
            "a loss above this multiple of the first step's loss is a divergence; null "
            "disables the check (a non-finite loss always is one); ignored when the first "
            "loss is <= 0",
        ),
        "eval_every": Option(
            "PositiveInt | None",
            None,
            "steps between validation evaluations; null: 2% of the step budget (at least 1)",
        ),
    },
    ranking=KindInfo(
        primary="eval_loss",
        higher_is_better=False,
        columns=(
            "eval_loss",
            "perplexity",
            "steps_to_target",
            "time_to_target",
            "step_time",
            "tokens_per_s",
            "peak_memory",
            "optimizer_state_bytes",
            "train_host_rss_growth",
        ),
    ),
    plot="benchmark.kinds.optimizer_plot:optimizer_curves",
    step_curves=("eval_loss", "train_loss"),
    metrics=METRICS,
    extra_metrics=workload_figures,
)
