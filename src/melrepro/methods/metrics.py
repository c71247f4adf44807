"""Classification metrics and decision thresholds shared by the CNN papers.

Thin, named wrappers around :mod:`sklearn.metrics` so every paper computes AUROC,
balanced accuracy, macro-F1, recall and confusion matrices the same way, plus the two
threshold rules the papers use: Youden's J (effnet_ham, §4.2) and the F1-optimal
threshold restricted to a TPR range (siim2020).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "BinaryMetrics",
    "auroc",
    "balanced_accuracy",
    "binary_metrics",
    "confusion",
    "f1_optimal_threshold",
    "macro_f1",
    "recall",
    "youden_threshold",
]

logger = logging.getLogger(__name__)


def _check_binary(y_true: np.ndarray, y_score: np.ndarray | None = None) -> np.ndarray:
    y_true = np.asarray(y_true)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y_true.shape}")
    values = set(np.unique(y_true).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"y_true must hold 0/1 labels, got values {sorted(values)}")
    if y_score is not None and np.asarray(y_score).shape != y_true.shape:
        raise ValueError(
            f"y_score has shape {np.asarray(y_score).shape}, expected {y_true.shape} like y_true"
        )
    return y_true.astype(int)


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``).

    Parameters
    ----------
    y_true : (N,) array of {0, 1}
    y_score : (N,) float array, higher means more likely positive.

    Returns
    -------
    float
        AUROC, or NaN when only one class is present (logged as a warning).
    """
    y_true = _check_binary(y_true, y_score)
    if len(np.unique(y_true)) < 2:
        logger.warning("AUROC undefined: only one class among %d samples", len(y_true))
        return float("nan")
    return float(skm.roc_auc_score(y_true, y_score))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean of sensitivity and specificity (``sklearn.metrics.balanced_accuracy_score``)."""
    return float(skm.balanced_accuracy_score(y_true, y_pred))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 averaged over the classes with equal weight (``average="macro"``)."""
    return float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


def recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Sensitivity of the positive class (label 1)."""
    return float(skm.recall_score(y_true, y_pred, pos_label=1, zero_division=0))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class.

    Parameters
    ----------
    y_true, y_pred : (N,) int arrays in ``range(n_classes)``.
    n_classes : int
        Matrix size; classes absent from the data still get a row and column.

    Returns
    -------
    (n_classes, n_classes) int ndarray
    """
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def youden_threshold(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Threshold maximising Youden's J = TPR - FPR on a ROC curve.

    Parameters
    ----------
    y_true : (N,) array of {0, 1}
    y_score : (N,) float array

    Returns
    -------
    float
        The score threshold ``t`` (predict positive when ``score >= t``) at the first ROC
        point with the largest J; ties go to the higher threshold (fewer positives).

    Raises
    ------
    ValueError
        If ``y_true`` does not contain both classes.

    References
    ----------
    Youden, W. J. (1950). Index for rating diagnostic tests. Cancer 3(1):32-35.
    Silva & Diz, effnet_ham §4.2.
    """
    y_true = _check_binary(y_true, y_score)
    if len(np.unique(y_true)) < 2:
        raise ValueError("Youden threshold needs both classes in y_true")
    fpr, tpr, thr = skm.roc_curve(y_true, y_score, drop_intermediate=False)
    j = tpr - fpr
    best = int(np.argmax(j))
    # roc_curve's first threshold is +inf (nothing predicted positive); never choose it.
    t = float(thr[best])
    if not np.isfinite(t):
        t = float(np.max(y_score))
    return t


def f1_optimal_threshold(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    tpr_range: tuple[float, float] = (0.0, 1.0),
) -> float:
    """Threshold maximising the positive-class F1 among ROC points with TPR in a range.

    Parameters
    ----------
    y_true : (N,) array of {0, 1}
    y_score : (N,) float array
    tpr_range : (low, high)
        Only thresholds whose TPR lies in ``[low, high]`` are candidates (siim2020 uses
        (0.8, 0.9)).

    Returns
    -------
    float
        The chosen threshold (predict positive when ``score >= t``).

    Raises
    ------
    ValueError
        If no ROC point has a TPR inside ``tpr_range``, or ``y_true`` lacks a class.
    """
    y_true = _check_binary(y_true, y_score)
    low, high = tpr_range
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"tpr_range must satisfy 0 <= low <= high <= 1, got {tpr_range}")
    if len(np.unique(y_true)) < 2:
        raise ValueError("F1-optimal threshold needs both classes in y_true")
    fpr, tpr, thr = skm.roc_curve(y_true, y_score, drop_intermediate=False)
    finite = np.isfinite(thr)
    keep = finite & (tpr >= low) & (tpr <= high)
    if not keep.any():
        raise ValueError(
            f"no threshold reaches a TPR in {tpr_range}; achievable TPRs: {np.unique(tpr)}"
        )
    n_pos = y_true.sum()
    n_neg = len(y_true) - n_pos
    tp = tpr * n_pos
    fp = fpr * n_neg
    f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + (n_pos - tp)), 0.0)
    f1 = np.where(keep, f1, -1.0)
    return float(thr[int(np.argmax(f1))])


@dataclass(frozen=True)
class BinaryMetrics:
    """The threshold-free and threshold metrics of one binary evaluation."""

    auroc: float
    balanced_accuracy: float
    macro_f1: float
    recall: float
    threshold: float
    tn: int
    fp: int
    fn: int
    tp: int

    def as_dict(self) -> dict[str, float]:
        """Plain dict, for JSON and tables."""
        return asdict(self)


def binary_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> BinaryMetrics:
    """All of effnet_ham's metrics at one decision threshold.

    Parameters
    ----------
    y_true : (N,) array of {0, 1}
    y_score : (N,) probabilities of the positive class.
    threshold : float
        Predict positive when ``score >= threshold`` (chosen on validation, applied to test).

    Returns
    -------
    BinaryMetrics
    """
    y_true = _check_binary(y_true, y_score)
    y_pred = (np.asarray(y_score) >= threshold).astype(int)
    tn, fp, fn, tp = confusion(y_true, y_pred).ravel()
    return BinaryMetrics(
        auroc=auroc(y_true, y_score),
        balanced_accuracy=balanced_accuracy(y_true, y_pred),
        macro_f1=macro_f1(y_true, y_pred),
        recall=recall(y_true, y_pred),
        threshold=float(threshold),
        tn=int(tn),
        fp=int(fp),
        fn=int(fn),
        tp=int(tp),
    )
