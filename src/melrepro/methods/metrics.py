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
    "bootstrap_intervals",
    "balanced_accuracy",
    "binary_metrics",
    "confusion",
    "f1_optimal_threshold",
    "macro_f1",
    "recall",
    "specificity_threshold",
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


def specificity_threshold(
    y_true: np.ndarray, y_score: np.ndarray, specificity: float = 0.95
) -> float:
    """The lowest ROC threshold whose specificity is still at least ``specificity``.

    This is the effnet_ham authors' test-time rule (their notebook, cell "Find threshold for
    95% specificity"): ``roc_curve`` with its default ``drop_intermediate=True``, the last
    (lowest) threshold with ``1 - fpr >= specificity``, and 0.5 when no ROC point reaches it.
    Recall at that threshold is the highest recall that keeps the specificity.

    Parameters
    ----------
    y_true : (N,) array of {0, 1}
    y_score : (N,) float array
    specificity : float in (0, 1]

    Returns
    -------
    float
        Predict positive when ``score >= t``.

    Raises
    ------
    ValueError
        If ``y_true`` lacks a class or ``specificity`` is outside (0, 1].
    """
    y_true = _check_binary(y_true, y_score)
    if not 0.0 < specificity <= 1.0:
        raise ValueError(f"specificity must be in (0, 1], got {specificity}")
    if len(np.unique(y_true)) < 2:
        raise ValueError("a specificity threshold needs both classes in y_true")
    fpr, _, thr = skm.roc_curve(y_true, y_score)
    ok = np.flatnonzero(1.0 - fpr >= specificity - 1e-12)
    if len(ok) == 0:
        return 0.5
    t = float(thr[ok[-1]])
    return t if np.isfinite(t) else float(np.max(y_score))


def _fast_metrics(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float, float, float]:
    """(AUROC, balanced accuracy, macro-F1, recall) without sklearn, for bootstrap loops."""
    from scipy.stats import rankdata

    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    ranks = rankdata(s)
    auc = (ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    pred = s >= t
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn, tn = n_pos - tp, n_neg - fp
    rec = tp / n_pos
    spec = tn / n_neg
    f1_pos = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    f1_neg = 2 * tn / (2 * tn + fn + fp) if tn else 0.0
    return float(auc), (rec + spec) / 2, (f1_pos + f1_neg) / 2, rec


def bootstrap_intervals(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    threshold: float | None = None,
    specificity: float | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of AUROC, balanced accuracy, macro-F1 and recall.

    Images are resampled with replacement (resamples with one class only are skipped, as in the
    authors' ``compute_auroc_ci``). The decision threshold is either fixed (``threshold``,
    chosen elsewhere, e.g. Youden on validation) or re-chosen on every resample at
    ``specificity`` (the spec95-on-test protocol), so the interval includes that choice.

    Returns
    -------
    dict
        ``{"auroc": (low, high), "balanced_accuracy": ..., "macro_f1": ..., "recall": ...}``;
        NaN bounds when no resample has both classes.
    """
    if (threshold is None) == (specificity is None):
        raise ValueError("give exactly one of threshold and specificity")
    y = _check_binary(y_true, y_score)
    s = np.asarray(y_score, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        yb, sb = y[idx], s[idx]
        if yb.min() == yb.max():
            continue
        t = threshold if specificity is None else specificity_threshold(yb, sb, specificity)
        draws.append(_fast_metrics(yb, sb, float(t)))
    names = ("auroc", "balanced_accuracy", "macro_f1", "recall")
    if not draws:
        return {n: (float("nan"), float("nan")) for n in names}
    arr = np.asarray(draws)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {
        n: (float(lo), float(hi))
        for n, (lo, hi) in zip(names, np.percentile(arr, q, axis=0).T, strict=True)
    }
