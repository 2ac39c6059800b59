"""Out-of-distribution metrics with OOD as the positive class (scores: higher = more OOD).

Own implementations in numpy, checked against scikit-learn in the tests: AUROC as the
Mann-Whitney statistic (ties count one half), average precision as scikit-learn's
step-wise sum, and FPR at 95% TPR as OpenOOD reports it.
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


def average_precision(scores_neg: Any, scores_pos: Any) -> float:
    """Σ (R_k − R_{k−1}) P_k over thresholds: scikit-learn's definition of AUPR."""
    fpr, tpr, _ = roc_curve(scores_neg, scores_pos)
    n_pos, n_neg = len(_as_1d(scores_pos)), len(_as_1d(scores_neg))
    tp, fp = tpr[1:] * n_pos, fpr[1:] * n_neg
    precision = tp / np.maximum(tp + fp, 1e-300)
    recall = tpr[1:]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(scores_neg: Any, scores_pos: Any, tpr_level: float = 0.95) -> float:
    """The fraction of negatives flagged at the first threshold detecting ``tpr_level``."""
    fpr, tpr, _ = roc_curve(scores_neg, scores_pos)
    idx = int(np.searchsorted(tpr, tpr_level, side="left"))
    return float(fpr[min(idx, len(fpr) - 1)])


def ood_metrics(scores_in: Any, scores_out: Any) -> dict[str, Any]:
    """AUROC, AUPR-in (ID positive, scores negated), AUPR-out, FPR@95%TPR, ROC points."""
    s_in, s_out = _as_1d(scores_in), _as_1d(scores_out)
    fpr, tpr, _ = roc_curve(s_in, s_out)
    if len(fpr) > MAX_ROC_POINTS:
        keep = np.unique(np.linspace(0, len(fpr) - 1, MAX_ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {
        "auroc": auroc(s_in, s_out),
        "aupr_in": average_precision(-s_out, -s_in),
        "aupr_out": average_precision(s_in, s_out),
        "fpr_at_95_tpr": fpr_at_tpr(s_in, s_out, 0.95),
        "roc_fpr": fpr.tolist(),
        "roc_tpr": tpr.tolist(),
    }
