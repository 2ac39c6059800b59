"""The detector kind: a method scores inputs for being out-of-distribution (higher = more
likely OOD); the protocol (``benchmark.protocols.detector``) fits it on in-distribution
data and reports OpenOOD's metrics with OOD as the positive class."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from benchmark.kinds.definition import KindDef, KindInfo, MetricDecl

if TYPE_CHECKING:
    import torch
    from torch import nn

# --------------------------------------------------------------------------- method side


@runtime_checkable
class Detector(Protocol):
    """What a detector factory builds. Higher scores mean more likely out-of-distribution.
    ``fit`` may also take ``calibration_batches`` (half of the in-distribution validation
    split, where the workload has one)."""

    def fit(self, model: nn.Module, in_distribution_batches: Iterable[Any]) -> None: ...

    def score(self, model: nn.Module, batch: Any) -> torch.Tensor: ...


@runtime_checkable
class PValues(Protocol):
    """Optional: a p-value per input (small means anomalous); the protocol then reports the
    Type-I error and the power at alpha."""

    def pvalue(self, model: nn.Module, batch: Any) -> torch.Tensor: ...


@runtime_checkable
class Filters(Protocol):
    """Optional: a keep/reject decision per input (True = OOD); the protocol then reports
    precision, recall and F1 of the in-distribution targets it keeps."""

    def predict(self, model: nn.Module, batch: Any) -> torch.Tensor: ...


@runtime_checkable
class CalibrationSource(Protocol):
    """Optional: which data the detector calibrated on, for ``info["calibration"]``."""

    calibration_source: str | None


# --------------------------------------------------------------------------- workload side


@runtime_checkable
class PenultimateFeatures(Protocol):
    """Optional on a detector workload's model: the features its last layer reads, one row
    per input (``[B, D]``); feature-space detectors (Mahalanobis, KNN, ReAct, FLAME)
    need it, and its ``last_layer`` (``kinds.workload.LastLayer``) maps them to logits."""

    def penultimate(self, inputs: Any) -> torch.Tensor: ...


@runtime_checkable
class DetectorWorkload(Protocol):
    """A trained classifier with an in-distribution and an out-of-distribution test set."""

    in_name: str
    out_name: str

    def model(self, device: torch.device) -> nn.Module: ...

    def fit_batches(self, device: torch.device) -> Iterable[Any]:
        """In-distribution ``(inputs, labels)`` batches to fit on, held apart from the test set."""
        ...

    def test_batches(self, which: str, device: torch.device, split: str = "test") -> Iterable[Any]:
        """Held-out input batches; ``which`` is "in" or "out"; ``split`` "test" (reported)
        or "val" (where ``validation`` says there is one: in and out sets disjoint from the
        test sets and from ``fit_batches``)."""
        ...


@runtime_checkable
class LabelOracle(Protocol):
    """Optional: a label oracle whose ``used`` count the protocol reports (``labels_used``)."""

    oracle: Any


@runtime_checkable
class RunSeeded(Protocol):
    """Optional, for workloads whose test data are drawn per run: the protocol calls it
    with the run's seed before anything is drawn, so seeds replicate data."""

    def bind_run_seed(self, seed: int) -> None: ...


# --------------------------------------------------------------------------- metrics

_OOD = "benchmark.metrics.ood on the detector's scores of the in- and out-of-distribution test sets"
_NO_PVALUES = "the detector gives no p-values"
_NO_PREDICT = "the detector does not predict (no keep/reject decision)"
METRICS: tuple[MetricDecl, ...] = (
    MetricDecl(
        "auroc",
        "fraction",
        "higher",
        "how well scores separate OOD from ID test inputs (OOD positive); the kind's headline.",
        f"area under the ROC curve, {_OOD}, with DeLong's 95% interval.",
    ),
    MetricDecl(
        "val_auroc",
        "fraction",
        "higher",
        "AUROC on the validation split, on which grid winners are chosen.",
        "the same fitted detector on validation in/out sets disjoint from the test sets and "
        "the fit data (in: the half it did not calibrate on), DeLong interval.",
        absent="the workload has no validation split",
    ),
    MetricDecl(
        "aupr_in",
        "fraction",
        "higher",
        "precision-recall area with in-distribution as the positive class.",
        f"average precision (scikit-learn's step sum), {_OOD}.",
    ),
    MetricDecl(
        "aupr_out",
        "fraction",
        "higher",
        "precision-recall area with OOD as the positive class.",
        f"average precision (step sum), {_OOD}.",
    ),
    MetricDecl(
        "aupr_in_trapezoid",
        "fraction",
        "higher",
        "aupr_in as OpenOOD reports it.",
        "trapezoid area under the precision-recall points (OpenOOD's AUPR).",
    ),
    MetricDecl(
        "aupr_out_trapezoid",
        "fraction",
        "higher",
        "aupr_out as OpenOOD reports it.",
        "trapezoid area under the precision-recall points (OpenOOD's AUPR).",
    ),
    MetricDecl(
        "fpr_at_95_tpr",
        "fraction",
        "lower",
        "the share of ID inputs flagged when 95% of OOD inputs are flagged (OOD positive, "
        "OpenOOD's FPR95).",
        "at the threshold the OOD scores fix, with a Wilson interval over the ID items.",
    ),
    MetricDecl(
        "fpr_at_95_tpr_id",
        "fraction",
        "lower",
        "the share of OOD inputs accepted when 95% of ID inputs are accepted (ID positive, "
        "the MSP, ODIN and energy papers' FPR95).",
        "at the threshold the ID scores fix, with a Wilson interval over the OOD items.",
    ),
    MetricDecl(
        "type1_error_at_alpha",
        "fraction",
        "lower",
        "the share of ID test inputs a detector with p-values flags at level alpha (a "
        "calibrated test keeps it at alpha).",
        "ID p-values <= alpha (the method's alpha hyperparameter, default 0.05), Wilson "
        "interval over the ID items.",
        absent=_NO_PVALUES,
    ),
    MetricDecl(
        "type1_error_at_5pct",
        "fraction",
        "lower",
        "the share of ID test inputs with p <= 0.05.",
        "counted over the ID test p-values, Wilson interval over the ID items.",
        absent=_NO_PVALUES,
    ),
    MetricDecl(
        "type1_error_at_1pct",
        "fraction",
        "lower",
        "the share of ID test inputs with p <= 0.01.",
        "counted over the ID test p-values, Wilson interval over the ID items.",
        absent=_NO_PVALUES,
    ),
    MetricDecl(
        "power_at_alpha",
        "fraction",
        "higher",
        "the share of OOD inputs flagged at level alpha.",
        "OOD p-values <= alpha, Wilson interval over the OOD items.",
        absent=_NO_PVALUES,
    ),
    MetricDecl(
        "target_precision",
        "fraction",
        "higher",
        "of the inputs a filtering detector keeps, the share that are in-distribution targets.",
        "predict() on the ID and OOD test sets (kept = predict False), Wilson interval over "
        "the kept items.",
        absent=_NO_PREDICT,
    ),
    MetricDecl(
        "target_recall",
        "fraction",
        "higher",
        "of the in-distribution targets, the share a filtering detector keeps.",
        "predict() on the ID test set, Wilson interval over the targets.",
        absent=_NO_PREDICT,
    ),
    MetricDecl(
        "target_f1",
        "fraction",
        "higher",
        "the harmonic mean of target precision and recall.",
        "2 TP / (2 TP + FP + FN) from predict() on the test sets.",
        absent=_NO_PREDICT,
    ),
    MetricDecl(
        "labels_used",
        "labels",
        "lower",
        "how many labels the detector asked the workload's label oracle for.",
        "the oracle's used count after the run.",
        absent="the workload has no label oracle",
    ),
    MetricDecl(
        "fit_time",
        "s",
        "lower",
        "how long fitting (and calibrating) the detector took.",
        "host clock around fit(), with device synchronisation.",
    ),
    MetricDecl(
        "latency_per_sample",
        "s",
        "lower",
        "the scoring time per input.",
        "median over batches of batch time / batch size (first batch excluded), with p10/p90.",
    ),
)

KIND = KindDef(
    name="detector",
    summary="Scoring inputs for being out-of-distribution (higher = more likely OOD).",
    built="benchmark.kinds.detector:Detector",
    run="benchmark.protocols.detector:run",
    capabilities={
        "pvalue": PValues,
        "predict": Filters,
        "calibration_source": CalibrationSource,
    },
    workload=DetectorWorkload,
    workload_capabilities={"oracle": LabelOracle, "bind_run_seed": RunSeeded},
    ranking=KindInfo(
        primary="auroc",
        higher_is_better=True,
        columns=(
            "auroc",
            "aupr_in",
            "aupr_out",
            "fpr_at_95_tpr",
            "fpr_at_95_tpr_id",
            "type1_error_at_alpha",
            "power_at_alpha",
            "target_f1",
            "labels_used",
            "fit_time",
            "latency_per_sample",
        ),
        notes=("OOD is the positive class",),
    ),
    plot="benchmark.kinds.detector_plot:detector_roc",
    metrics=METRICS,
)
