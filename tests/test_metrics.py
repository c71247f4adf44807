"""Tests for melrepro.methods.metrics: answers worked out by hand and agreement with scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melrepro.methods import metrics


def test_auroc_hand_made_scores():
    """Check AUROC on 2 positives x 2 negatives: 3 of 4 pairs ordered correctly -> 0.75."""
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.6, 0.4, 0.9])
    assert metrics.auroc(y, s) == pytest.approx(0.75)


def test_auroc_one_class_is_nan():
    """Check AUROC is NaN (not an exception) when only one class is present."""
    assert np.isnan(metrics.auroc(np.zeros(4, int), np.arange(4.0)))


def test_youden_threshold_hand_made_roc():
    """Check Youden on a hand-made ROC.

    Scores (label): 0.9(1) 0.8(1) 0.7(0) 0.6(1) 0.4(0) 0.3(0) 0.2(1) 0.1(0).
    Thresholds and J = TPR - FPR: 0.9: .25-0; 0.8: .5-0; 0.7: .5-.25; 0.6: .75-.25 = .5;
    0.4: .75-.5; 0.2: 1-.5 = .5. Max J = 0.5 is reached first (highest threshold) at 0.8.
    """
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    assert metrics.youden_threshold(y, s) == pytest.approx(0.8)


def test_youden_threshold_perfect_separation():
    """Check a perfectly separable ROC puts the threshold at the lowest positive score."""
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    assert metrics.youden_threshold(y, s) == pytest.approx(0.7)


def test_youden_threshold_needs_both_classes():
    """Check a single-class input is refused, then a valid call succeeds."""
    with pytest.raises(ValueError, match="both classes"):
        metrics.youden_threshold(np.ones(3, int), np.array([0.1, 0.2, 0.3]))
    assert metrics.youden_threshold(np.array([0, 1]), np.array([0.1, 0.2])) == 0.2


def test_f1_optimal_threshold_respects_tpr_range():
    """Check the F1 optimum is searched only among thresholds with TPR in range.

    Same scores as the Youden test (4 positives). Unrestricted F1 per threshold:
    0.8 -> TP2 FP0 FN2 = .667; 0.6 -> TP3 FP1 FN1 = .75; 0.2 -> TP4 FP3 = .727.
    Best overall 0.6 (TPR .75). With TPR in [0.9, 1.0] only 0.2 and 0.1 qualify -> 0.2.
    """
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    assert metrics.f1_optimal_threshold(y, s) == pytest.approx(0.6)
    assert metrics.f1_optimal_threshold(y, s, tpr_range=(0.9, 1.0)) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no threshold"):
        metrics.f1_optimal_threshold(y, s, tpr_range=(0.55, 0.6))


def test_binary_metrics_hand_made_confusion():
    """Check all threshold metrics on a 2x2 confusion worked out by hand.

    Threshold 0.5 -> TN=2 FP=1 FN=1 TP=2: recall 2/3, specificity 2/3, balanced 2/3,
    F1 of each class 2/3 -> macro-F1 2/3.
    """
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.4, 0.7, 0.9])
    m = metrics.binary_metrics(y, s, 0.5)
    assert (m.tn, m.fp, m.fn, m.tp) == (2, 1, 1, 2)
    assert m.recall == pytest.approx(2 / 3)
    assert m.balanced_accuracy == pytest.approx(2 / 3)
    assert m.macro_f1 == pytest.approx(2 / 3)
    assert m.auroc == pytest.approx(roc_auc_score(y, s))


def test_confusion_keeps_absent_classes():
    """Check the confusion matrix is n_classes square even when a class never occurs."""
    cm = metrics.confusion(np.array([0, 0]), np.array([0, 0]), n_classes=2)
    assert cm.tolist() == [[2, 0], [0, 0]]


def test_labels_must_be_binary():
    """Check non-0/1 labels are rejected with the values found."""
    with pytest.raises(ValueError, match="0/1"):
        metrics.auroc(np.array([0, 2]), np.array([0.1, 0.2]))


def test_specificity_threshold_is_the_authors_rule():
    """Check the 95 %-specificity threshold against the authors' notebook rule and by hand.

    20 negatives 0.00..0.95 and 5 positives: allowing 1 false positive of 20 (specificity 0.95)
    the threshold is the highest negative score 0.95, so every positive above it is found.
    """
    neg = np.arange(20) / 20
    pos = np.array([0.97, 0.96, 0.9, 0.5, 0.99])
    y = np.r_[np.zeros(20, int), np.ones(5, int)]
    s = np.r_[neg, pos]
    t = metrics.specificity_threshold(y, s, 0.95)
    assert t == pytest.approx(0.95)
    pred = s >= t
    assert (pred[y == 0]).mean() <= 0.05
    assert pred[y == 1].sum() == 3
    # The notebook's code, verbatim in spirit: roc_curve defaults, last index with spec >= 0.95.
    from sklearn.metrics import roc_curve

    fpr, _, thr = roc_curve(y, s)
    assert t == pytest.approx(thr[np.where(1 - fpr >= 0.95)[0][-1]])


def test_bootstrap_intervals_bracket_the_estimate_and_match_sklearn():
    """Check the fast bootstrap metrics equal sklearn's on a resample and the CI brackets them."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = np.clip(y * 0.3 + rng.uniform(size=60), 0, 1)
    auc, bal, f1, rec = metrics._fast_metrics(y, s, 0.6)
    pred = (s >= 0.6).astype(int)
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert bal == pytest.approx(balanced_accuracy_score(y, pred))
    assert f1 == pytest.approx(f1_score(y, pred, average="macro"))
    assert rec == pytest.approx(recall_score(y, pred))
    ci = metrics.bootstrap_intervals(y, s, threshold=0.6, n_boot=300, seed=1)
    for name, value in zip(
        ("auroc", "balanced_accuracy", "macro_f1", "recall"), (auc, bal, f1, rec), strict=True
    ):
        low, high = ci[name]
        assert low < value < high
    # AUROC's interval on 60 images is about +-2 standard errors (~0.07 each), not a point.
    assert 0.1 < ci["auroc"][1] - ci["auroc"][0] < 0.5
    ci95 = metrics.bootstrap_intervals(y, s, specificity=0.95, n_boot=200, seed=1)
    assert ci95["auroc"] != ci["auroc"] or ci95["recall"] != ci["recall"]
    with pytest.raises(ValueError, match="exactly one"):
        metrics.bootstrap_intervals(y, s)
