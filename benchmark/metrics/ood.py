"""Out-of-distribution metrics (scores: higher = more OOD).

Own implementations in numpy, checked against scikit-learn in the tests. Two conventions
meet here, and published figures use both, so each metric says which it follows:

- AUROC: the Mann-Whitney statistic (ties count one half); the same under either choice
  of positive class.
- AUPR: ``aupr_in`` / ``aupr_out`` (positive class ID / OOD, OpenOOD's names) are AVERAGE
  PRECISION, Σ (R_k − R_{k−1}) P_k, scikit-learn's ``average_precision_score``: a step
  function, no interpolation. OpenOOD computes its AUPR as the TRAPEZOID area under the
  precision-recall points (``sklearn.metrics.auc(recall, precision)``), which interpolates
  precision linearly between recall levels; the two differ, in either direction, by up to
  a few points on the same scores. ``aupr_in_trapezoid`` / ``aupr_out_trapezoid`` give
  OpenOOD's figure for comparing with its tables.
- FPR at 95% TPR: ``fpr_at_95_tpr`` takes OOD as positive, as OpenOOD does: the fraction of
  ID inputs flagged at the threshold that flags 95% of the OOD inputs.
  ``fpr_at_95_tpr_id`` takes ID as positive, as the MSP (Hendrycks & Gimpel 2017), ODIN
  (Liang et al. 2018) and energy (Liu et al. 2020) papers do: the fraction of OOD inputs
  accepted at the threshold that accepts 95% of the ID inputs. The two differ whenever the
  score distributions are not mirror images, so the second is the one to set beside those
  papers' FPR95 columns. Both take the first threshold at which the positives reach 95%
  (as pytorch-ood and OpenOOD v1.5 do). The papers' own code picks the threshold
  differently (Hendrycks et al.'s: the one whose recall is closest to 0.95; ODIN's: FPR
  averaged over TPR in [0.9495, 0.9505]); on 400 + 400 inputs that moves the figure by up
  to ~0.03, so a comparison with their tables is close, not exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_ROC_POINTS = 200


def _as_1d(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError("scores must be finite")
    return a


def roc_curve(scores_neg: Any, scores_pos: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) over the distinct thresholds, decreasing, starting at (0, 0)."""
    neg, pos = _as_1d(scores_neg), _as_1d(scores_pos)
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(labels)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    tpr = np.r_[0.0, tps / max(len(pos), 1)]
    fpr = np.r_[0.0, fps / max(len(neg), 1)]
    thresholds = np.r_[np.inf, scores[last_of_tie]]
    return fpr, tpr, thresholds


def auroc(scores_neg: Any, scores_pos: Any) -> float:
    """P(score_pos > score_neg) + 0.5·P(equal): the area under the ROC curve."""
    neg, pos = _as_1d(scores_neg), _as_1d(scores_pos)
    allv = np.concatenate([neg, pos])
    ranks = _average_ranks(allv)
    rank_sum = ranks[len(neg) :].sum()
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _precision_recall(scores_neg: Any, scores_pos: Any) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) at each distinct threshold, from the highest score down."""
    fpr, tpr, _ = roc_curve(scores_neg, scores_pos)
    n_pos, n_neg = len(_as_1d(scores_pos)), len(_as_1d(scores_neg))
    tp, fp = tpr[1:] * n_pos, fpr[1:] * n_neg
    return tp / np.maximum(tp + fp, 1e-300), tpr[1:]


def average_precision(scores_neg: Any, scores_pos: Any) -> float:
    """Σ (R_k − R_{k−1}) P_k over thresholds: scikit-learn's average precision (a step
    sum; not the trapezoid area OpenOOD reports as AUPR, see ``aupr_trapezoid``)."""
    precision, recall = _precision_recall(scores_neg, scores_pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_trapezoid(scores_neg: Any, scores_pos: Any) -> float:
    """The trapezoid area under the precision-recall points, starting from (recall 0,
    precision 1): OpenOOD's AUPR. Kept beside average precision because the two differ
    on the same scores, and a table that reports one cannot be compared with the other."""
    precision, recall = _precision_recall(scores_neg, scores_pos)
    r, p = np.r_[0.0, recall], np.r_[1.0, precision]
    return float(np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2))


def fpr_at_tpr(scores_neg: Any, scores_pos: Any, tpr_level: float = 0.95) -> float:
    """The fraction of negatives flagged at the first threshold detecting ``tpr_level``."""
    fpr, tpr, _ = roc_curve(scores_neg, scores_pos)
    idx = int(np.searchsorted(tpr, tpr_level, side="left"))
    return float(fpr[min(idx, len(fpr) - 1)])


def fpr_at_tpr_id(scores_in: Any, scores_out: Any, tpr_level: float = 0.95) -> float:
    """ID positive: the fraction of OOD inputs accepted as ID at the first threshold that
    accepts ``tpr_level`` of the ID inputs (an input is accepted when its score is at or
    below the threshold). The convention of the MSP, ODIN and energy papers' FPR95."""
    return fpr_at_tpr(-_as_1d(scores_out), -_as_1d(scores_in), tpr_level)


def ood_metrics(scores_in: Any, scores_out: Any) -> dict[str, Any]:
    """AUROC; AUPR-in / AUPR-out as average precision and as OpenOOD's trapezoid;
    FPR@95%TPR with OOD positive and with ID positive; ROC points (OOD positive)."""
    s_in, s_out = _as_1d(scores_in), _as_1d(scores_out)
    fpr, tpr, _ = roc_curve(s_in, s_out)
    if len(fpr) > MAX_ROC_POINTS:
        keep = np.unique(np.linspace(0, len(fpr) - 1, MAX_ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {
        "auroc": auroc(s_in, s_out),
        "aupr_in": average_precision(-s_out, -s_in),
        "aupr_out": average_precision(s_in, s_out),
        "aupr_in_trapezoid": aupr_trapezoid(-s_out, -s_in),
        "aupr_out_trapezoid": aupr_trapezoid(s_in, s_out),
        "fpr_at_95_tpr": fpr_at_tpr(s_in, s_out, 0.95),
        "fpr_at_95_tpr_id": fpr_at_tpr_id(s_in, s_out, 0.95),
        "roc_fpr": fpr.tolist(),
        "roc_tpr": tpr.tolist(),
    }
