"""siim2020's evaluation: the threshold rule of §6, the metrics at a threshold, and the Kaggle
submission of the test predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["choose_threshold", "evaluate_at", "write_submission"]


def choose_threshold(
    y_true: np.ndarray, y_score: np.ndarray, tpr_range: tuple[float, float] = (0.8, 0.9)
) -> tuple[float, str]:
    """The paper's rule (§6): the threshold maximising F1 with TPR in ``tpr_range``.

    When no ROC point lies in the band (few positives), the threshold of the smallest TPR
    >= the band's lower end is taken instead.

    Returns
    -------
    threshold : float
        Predict melanoma when ``score >= threshold``.
    rule : str
        ``"F1-max, TPR in [0.8, 0.9]"`` or ``"smallest TPR >= 0.8 (none in band)"``.
    """
    from sklearn.metrics import roc_curve

    from melrepro.methods.metrics import f1_optimal_threshold

    low, high = tpr_range
    try:
        return f1_optimal_threshold(y_true, y_score, tpr_range=tpr_range), (
            f"F1-max, TPR in [{low:g}, {high:g}]"
        )
    except ValueError:
        pass
    _, tpr, thr = roc_curve(y_true, y_score, drop_intermediate=False)
    ok = np.isfinite(thr) & (tpr >= low)
    k = np.flatnonzero(ok)[np.argmin(tpr[ok])]
    # Of the thresholds that give this TPR, the largest (fewest false positives).
    same = np.flatnonzero(ok & (tpr == tpr[k]))
    return float(thr[same].max()), f"smallest TPR >= {low:g} (none in band)"


def evaluate_at(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict[str, Any]:
    """F1 of the melanoma class, ROC-AUC, recall, precision and the confusion counts."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

    from melrepro.methods.metrics import auroc

    y_pred = (np.asarray(y_score) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "f1": float(f1_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "auroc": float(auroc(y_true, y_score)),
        "recall": float(recall_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "precision": float(precision_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
    }


# ---------------------------------------------------------------- submission


def write_submission(
    predictions_path: str | Path, test_metadata_csv: str | Path, output: str | Path
) -> pd.DataFrame:
    """Kaggle ``image_name,target``: one row per test image, in test-metadata order.

    Raises
    ------
    ValueError
        If a test image has no prediction (or a prediction has no test row).
    """
    preds = pd.read_parquet(predictions_path)
    test = preds[preds["role"] == "test"].set_index("image_id")["probability"]
    order = pd.read_csv(test_metadata_csv, dtype=str, keep_default_na=False)["image"]
    missing = sorted(set(order) - set(test.index))
    extra = sorted(set(test.index) - set(order))
    if missing or extra:
        raise ValueError(
            f"{test_metadata_csv}: {len(missing)} test images without prediction "
            f"(e.g. {missing[:3]}), {len(extra)} predictions without test row (e.g. {extra[:3]})"
        )
    sub = pd.DataFrame({"image_name": order.to_numpy(), "target": test.reindex(order).to_numpy()})
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(output).with_name(Path(output).name + ".tmp")
    sub.to_csv(tmp, index=False)
    tmp.replace(output)
    return sub
