"""Controls beside a trained classifier's rows: label-shuffled training labels (the control model is
trained on them) and the label-prior baseline (computed, never trained).

A model that beats both has learned something from its inputs: the label-shuffled control, trained
exactly like it, shows what the pipeline gets without any link between inputs and labels; the label
prior shows what a constant guess scores.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CONTROL_SEED_OFFSET", "label_prior_metrics", "shuffled_labels"]

#: Added to the run's seed for the permutation, so that it is not the stream of any other draw.
CONTROL_SEED_OFFSET = 7_919


def shuffled_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """The training labels under a seeded permutation: the same label counts, no link to the inputs.

    Only the training set's labels are to be passed (validation and test labels stay true).

    Raises
    ------
    ValueError
        If ``labels`` holds one label only (a permutation would change nothing).
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("label shuffling needs at least two distinct training labels")
    rng = np.random.default_rng([int(seed), CONTROL_SEED_OFFSET])
    return labels[rng.permutation(len(labels))]


def label_prior_metrics(y_true: np.ndarray) -> dict[str, float]:
    """Metrics of the label prior on binary ``y_true``: one constant score for every image
    (ROC-AUC 0.5) and everything predicted positive at it (recall 1, the best F1 a constant
    guess gets on the positive class, balanced accuracy 1/2 = 1/n_classes).

    Keys: ``auroc``, ``f1`` (positive class), ``macro_f1``, ``recall``, ``precision``,
    ``balanced_accuracy``, ``n``, ``n_positive``.
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score

    from melrepro.methods.metrics import auroc

    y = np.asarray(y_true).astype(int)
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"binary labels expected, got {sorted(set(np.unique(y)))}")
    constant = np.full(len(y), 0.5)
    every = np.ones(len(y), int)
    both = len(np.unique(y)) == 2
    return {
        "auroc": float(auroc(y, constant)) if both else float("nan"),
        "f1": float(f1_score(y, every, pos_label=1, zero_division=0)),
        "macro_f1": float(f1_score(y, every, average="macro", labels=[0, 1], zero_division=0)),
        "recall": float(recall_score(y, every, pos_label=1, zero_division=0)),
        "precision": float(precision_score(y, every, pos_label=1, zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y, every)) if both else float("nan"),
        "n": int(len(y)),
        "n_positive": int(y.sum()),
    }
