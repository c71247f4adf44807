"""siim2020's reference rows of table01, computed and never trained as networks: the label prior
of each protocol's evaluation set, and a logistic regression on age, sex and the mean colour of
the image (no pixels beyond three means), which shows how much the base model owes to the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.papers.siim2020.evaluate import choose_threshold, evaluate_at
from melrepro.papers.siim2020.names import PROTOCOL_SUFFIX

__all__ = [
    "LABEL_PRIOR",
    "METADATA_LR",
    "label_prior_row",
    "metadata_features",
    "metadata_logistic_row",
]

#: table01 labels of the reference rows (the protocol's suffix is appended).
LABEL_PRIOR = "Label prior (trivial baseline)"
METADATA_LR = "Age, sex and mean colour (logistic regression, All)"


def label_prior_row(info: Mapping[str, Any]) -> dict[str, Any]:
    """The label prior on the evaluation set of one training's ``metrics.json`` (its protocol):
    one constant score (ROC-AUC 0.5), everything called melanoma (recall 1)."""
    from melrepro.methods.controls import label_prior_metrics

    n, n_mel = int(info["n_eval"]), int(info["n_eval_melanomas"])
    prior = label_prior_metrics(np.r_[np.ones(n_mel, int), np.zeros(n - n_mel, int)])
    return {
        "label": f"{LABEL_PRIOR}{PROTOCOL_SUFFIX[info['protocol']]}",
        "protocol": info["protocol"],
        "threshold": float("nan"),
        "threshold_rule": "constant score: everything melanoma",
        "f1": prior["f1"],
        "auroc": prior["auroc"],
        "recall": prior["recall"],
        "n_eval": n,
        "n_eval_melanomas": n_mel,
    }


def metadata_features(
    rows: pd.DataFrame, manifest: pd.DataFrame, colour: pd.DataFrame
) -> np.ndarray:
    """(N, 5) features of ``rows``: age, male (0/1, missing 0.5), mean red, green, blue (0-255)."""
    meta = manifest.set_index("image_id").loc[rows["image_id"]]
    age = pd.to_numeric(meta["age"], errors="coerce").astype(float)
    age = age.fillna(age.mean()).to_numpy()
    sex = meta["sex"].astype("string")
    male = np.where(sex.isna(), 0.5, (sex == "male").to_numpy(float, na_value=0.0))
    rgb = colour.set_index("image_id").loc[rows["image_id"], ["mean_r", "mean_g", "mean_b"]]
    return np.column_stack([age, male, rgb.to_numpy(float)])


def metadata_logistic_row(
    manifest_path: str | Path,
    rows_path: str | Path,
    brightness_paths: Sequence[str | Path],
    *,
    tpr_range: Sequence[float],
    protocol: str = "patient",
) -> dict[str, Any]:
    """A logistic regression on :func:`metadata_features`, fitted on All's training rows (one
    protocol's ``rows.parquet``) and scored on the evaluation set with the paper's threshold rule."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    manifest = pd.read_parquet(manifest_path)
    # the brightness shards (images.read_brightness, read here: that module needs torch, and this
    # runs in the report environment)
    colour = pd.concat([pd.read_parquet(p) for p in brightness_paths], ignore_index=True)
    rows = pd.read_parquet(rows_path)
    rows = rows[rows["dataset"] == "all"]
    train, ev = rows[rows["role"] == "train"], rows[rows["role"] == "eval"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(metadata_features(train, manifest, colour), train["target"].to_numpy(int))
    y = ev["target"].to_numpy(int)
    score = model.predict_proba(metadata_features(ev, manifest, colour))[:, 1]
    low, high = (float(v) for v in tpr_range)
    threshold, rule = choose_threshold(y, score, (low, high))
    scores = evaluate_at(y, score, threshold)
    return {
        "label": f"{METADATA_LR}{PROTOCOL_SUFFIX[protocol]}",
        "protocol": protocol,
        "threshold": threshold,
        "threshold_rule": rule,
        "f1": scores["f1"],
        "auroc": scores["auroc"],
        "recall": scores["recall"],
        "n_eval": len(ev),
        "n_eval_melanomas": int(y.sum()),
        "n_train": len(train),
    }
