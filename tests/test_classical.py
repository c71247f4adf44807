"""Tests of melrepro.methods.classical: metrics, classifiers, selection, and leakage-free CV."""

from __future__ import annotations

import numpy as np
import pytest

from melrepro.methods import classical
from melrepro.methods.classical import (
    CLASSIFIERS,
    ClassifierSettings,
    binary_metrics,
    cross_validate,
    make_classifier,
    select_features,
)


def test_binary_metrics_known_answer():
    """Check AC, Spec, Sens and AUC by hand: 3 TP, 1 FN, 4 TN, 2 FP."""
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 1])
    score = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.05, 0.15, 0.6, 0.65])
    m = binary_metrics(y, pred, score)
    assert m["AC"] == pytest.approx(70.0)
    assert m["Sens"] == pytest.approx(75.0)
    assert m["Spec"] == pytest.approx(100 * 4 / 6)
    # pairs (pos, neg) ranked correctly: 0.9, 0.8, 0.7 beat all 6; 0.1 beats 0.05 only -> 19/24
    assert m["AUC"] == pytest.approx(100 * 19 / 24)


def test_make_classifier_builds_all_seven_and_rejects_unknown():
    """Check every paper classifier builds and an unknown name lists the valid ones."""
    for name in CLASSIFIERS:
        assert make_classifier(name, ClassifierSettings(), 0) is not None
    with pytest.raises(ValueError, match="choose from SVM, KNN"):
        make_classifier("LDA", ClassifierSettings(), 0)


def test_select_features_keeps_n_select_and_finds_the_informative_ones():
    """Check the L1 selector keeps exactly k features including the two that carry the label."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 40))
    y = (x[:, 3] + x[:, 17] > 0).astype(int)
    _, keep = select_features(x, y, ClassifierSettings(n_select=5), seed=0)
    assert keep.size == 5
    assert {3, 17} <= set(keep.tolist())


def test_cross_validate_separable_data_scores_perfectly():
    """Check the CV loop and metric layout on data a single feature separates."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 30)
    x = rng.normal(size=(60, 8))
    x[:, 0] += 10 * y
    res = cross_validate({"set": (x, [f"f{i}" for i in range(8)])}, y,
                         classifiers=("SVM", "KNN", "RF", "QDA"), n_splits=5,
                         settings=ClassifierSettings(n_select=3, qda_shrinkage="auto"))  # fmt: skip
    summary = res.summary()
    assert list(summary.columns) == ["AC", "Spec", "Sens", "AUC"]
    assert len(res.metrics) == 4 * 5
    assert (summary.to_numpy() == 100).all()
    sel = res.selection.set_index("feature")["count"]
    assert sel["f0"] == 5  # chosen in every fold


def test_within_fold_selection_never_sees_the_test_fold(monkeypatch):
    """Check no leakage: the scaler and the selector are fitted on training rows only."""
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 20)
    x = rng.normal(size=(40, 6))
    x[:, -1] = np.arange(40)  # row id rides along as a feature
    seen: list[set[int]] = []
    real = classical.select_features

    def spy(xs, ys, settings, seed):
        seen.append(set(xs[:, -1].astype(int).tolist()))
        return real(xs, ys, settings, seed)

    monkeypatch.setattr(classical, "select_features", spy)
    from sklearn.model_selection import StratifiedKFold

    folds = list(StratifiedKFold(5, shuffle=True, random_state=7).split(y, y))
    cross_validate({"s": (x, list("abcdef"))}, y, classifiers=("KNN",), n_splits=5, seed=7,
                   settings=ClassifierSettings(n_select=3))  # fmt: skip
    assert len(seen) == 5
    for rows, (train, test) in zip(seen, folds, strict=True):
        assert rows == set(train.tolist())
        assert rows.isdisjoint(test.tolist())
    seen.clear()
    cross_validate({"s": (x, list("abcdef"))}, y, classifiers=("KNN",), n_splits=5, seed=7,
                   protocol="before_cv", settings=ClassifierSettings(n_select=3))  # fmt: skip
    assert seen == [set(range(40))]  # the paper's protocol: one fit on all images


def test_selection_before_cv_inflates_scores_on_pure_noise():
    """Check what the protocol is worth: on noise labels, within-fold AUC stays near chance
    (< 70) while selecting on all data first reaches a clearly optimistic AUC (> 75)."""
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 30)
    x = rng.normal(size=(60, 3000))
    sets = {"noise": (x, [str(i) for i in range(3000)])}
    kw = {"classifiers": ("SVM",), "n_splits": 5, "settings": ClassifierSettings(n_select=20)}
    honest = cross_validate(sets, y, protocol="within_fold", **kw).summary()["AUC"].iloc[0]
    leaky = cross_validate(sets, y, protocol="before_cv", **kw).summary()["AUC"].iloc[0]
    assert honest < 70
    assert leaky > 75


def test_cross_validate_rejects_bad_input():
    """Check unknown protocol and too few images per class, then a valid call."""
    y = np.repeat([0, 1], 3)
    sets = {"s": (np.arange(12.0).reshape(6, 2), ["a", "b"])}
    with pytest.raises(ValueError, match="unknown protocol"):
        cross_validate(sets, y, protocol="nested")
    with pytest.raises(ValueError, match="at least 10 images"):
        cross_validate(sets, y)
    assert len(cross_validate(sets, y, n_splits=3, classifiers=("SVM",)).metrics) == 3
