"""gradcam_overlap training: one 8-class ISIC 2019 classifier per model on the shared core.

:func:`train_classifier` is the recipe (rule ``train_gradcam_overlap``); :func:`load_options`
reads back the options a model was trained with (for :mod:`.evaluate`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.papers.gradcam_overlap import CLASSES
from melrepro.papers.gradcam_overlap.datasets import (
    build_datasets,
    check_image_size,
    class_weights,
    classifier_frame,
    read_cache_subset,
    shuffle_train_labels,
)

__all__ = ["load_options", "train_classifier"]

logger = logging.getLogger(__name__)


def _split_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The TrainOptions keys of a model's settings, its ``augment`` and ``class_weighting``.

    ``label`` (the tables' name), ``layer`` and ``grid`` (Grad-CAM's) are not training settings,
    nor is ``shuffle_train_labels`` (the label-shuffled control, read by the caller).
    """
    settings = dict(settings)
    augment = settings.pop("augment", "dihedral8")
    weighting = settings.pop("class_weighting", "max_over_f")
    for key in ("label", "layer", "grid", "shuffle_train_labels"):
        settings.pop(key, None)
    return settings, augment, weighting


def _train_options(
    settings: Mapping[str, Any],
    weights: list[float] | None,
    run_info: Mapping[str, Any],
    threads: int,
) -> Any:
    """The TrainOptions of an 8-class, class-weighted cross-entropy classifier."""
    from melrepro.methods import training

    return training.TrainOptions.from_dict(
        settings,
        n_classes=len(CLASSES),
        loss="ce",
        class_weights=weights,
        seed=int(run_info["seed"]),
        pretrained=bool(run_info["pretrained"]),
        device=str(run_info["device"]),
        threads=threads,
    )


def _predict_val_test(
    result: Any, frame: pd.DataFrame, images: dict[str, np.ndarray], options: Any
) -> pd.DataFrame:
    """The best model's class probabilities and prediction for every val and test image."""
    import torch

    from melrepro.methods import training

    device = torch.device(result.device)
    parts = []
    for name in ("val", "test"):
        rows = frame[frame["split"] == name].reset_index(drop=True)
        plain = training.ArrayDataset([images[i] for i in rows["image_id"]], rows["y"].to_numpy())
        probs = training.predict(result.model, plain, options=options, device=device)
        part = rows[["image_id", "label", "split"]].copy()
        for k, c in enumerate(CLASSES):
            part[f"p_{c}"] = probs[:, k]
        part["prediction"] = [CLASSES[k] for k in probs.argmax(1)]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _write_results(
    preds: pd.DataFrame,
    result: Any,
    options: Any,
    *,
    frame: pd.DataFrame,
    model_key: str,
    weights: list[float] | None,
    augment: str,
    checkpoint_dir: str | Path,
    model_path: str | Path,
    predictions_path: str | Path,
    metrics_path: str | Path,
) -> dict[str, Any]:
    """Write predictions.parquet, publish best.pt as the model and write metrics.json.

    Returns the content of ``metrics_path``.
    """
    from melrepro.methods import training

    test = preds[preds["split"] == "test"]
    metrics = {
        "model": model_key,
        "best_val_accuracy": result.best_score,
        "test_accuracy": float((test["prediction"] == test["label"]).mean()),
        "n_predicted_classes": int(test["prediction"].nunique()),
        # across test images, averaged over the classes: near 0 for a constant (degenerate) model
        "test_probability_sd": float(test[[f"p_{c}" for c in CLASSES]].std(ddof=1).mean()),
        "n_images": frame.groupby("split").size().to_dict(),
        "class_weights": weights,
        "augment": augment,
        "shuffle_train_labels": bool(frame.attrs.get("shuffled", False)),
    }
    return training.write_run_outputs(
        result,
        options,
        preds,
        predictions_path=predictions_path,
        checkpoint_dir=checkpoint_dir,
        model_path=model_path,
        metrics_path=metrics_path,
        metrics=metrics,
    )


def train_classifier(
    manifest_path: str | Path,
    split_path: str | Path,
    cache_paths: Sequence[str | Path],
    *,
    model_key: str,
    settings: Mapping[str, Any],
    checkpoint_dir: str | Path,
    model_path: str | Path,
    history_path: str | Path,
    predictions_path: str | Path,
    metrics_path: str | Path,
    run_info: Mapping[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    """Train one ISIC 2019 classifier and predict its validation and test images.

    Why this long: the signature and this docstring (the rule's inputs and outputs); the steps
    are the helpers above.

    Parameters
    ----------
    manifest_path, split_path : path
        ``isic2019`` manifest and its ``class_floor_80_10_10`` split.
    cache_paths : sequence of path
        Image-cache shards at ``sq<image_size>`` (whole image squashed to a square, paper 004).
    model_key : str
        ``vgg16`` or ``resnet50`` (used in logs and outputs).
    settings : mapping
        ``augment`` (dihedral8, random_dihedral, none), ``class_weighting`` (max_over_f, none),
        ``shuffle_train_labels`` (true: the label-shuffled control, training labels permuted by
        :func:`~.datasets.shuffle_train_labels`) and
        :class:`~melrepro.methods.training.TrainOptions` keys (backbone, image_size, head...).
    run_info : mapping
        ``data_source``, ``seed``, ``pretrained``, ``device``.

    Returns
    -------
    dict
        The content of ``metrics_path``.
    """
    from melrepro.methods import training

    shuffled = bool(settings.get("shuffle_train_labels", False))
    settings, augment, weighting = _split_settings(settings)
    frame = classifier_frame(manifest_path, split_path)
    if shuffled:
        frame = shuffle_train_labels(frame, int(run_info["seed"]))
    train_y = frame.loc[frame["split"] == "train", "y"].to_numpy()
    weights = class_weights(train_y, len(CLASSES)) if weighting == "max_over_f" else None
    options = _train_options(settings, weights, run_info, threads)
    # Training reads only the train and val images; the test images are read after it (the
    # training set is freed first), so they never share memory with it.
    fit = frame["split"].isin(("train", "val"))
    images = read_cache_subset(cache_paths, set(frame.loc[fit, "image_id"]))
    check_image_size(images, int(options.image_size))
    data = build_datasets(frame, images, augment, splits=("train", "val"))
    logger.info(
        "%s: %s; augment=%s, class weights %s; images per split %s",
        model_key,
        options,
        augment,
        weights,
        frame.groupby("split").size().to_dict(),
    )
    result = training.train_model(
        data["train"],
        data["val"],
        options,
        checkpoint_dir=checkpoint_dir,
        history_path=history_path,
    )
    del data
    images = {i: images[i] for i in frame.loc[frame["split"] == "val", "image_id"]}
    test_images = read_cache_subset(cache_paths, set(frame.loc[~fit, "image_id"]))
    check_image_size(test_images, int(options.image_size))
    images.update(test_images)
    info = _write_results(
        _predict_val_test(result, frame, images, options),
        result,
        options,
        frame=frame,
        model_key=model_key,
        weights=weights,
        augment=augment,
        checkpoint_dir=checkpoint_dir,
        model_path=model_path,
        predictions_path=predictions_path,
        metrics_path=metrics_path,
    )
    from melrepro.report.runinfo import write_training_run_info

    write_training_run_info(
        metrics_path,
        result,
        data_source=run_info["data_source"],
        config=dict(settings)
        | {"augment": augment, "class_weighting": weighting, "shuffle_train_labels": shuffled},
        seed=options.seed,
    )
    return info


def load_options(metrics_path: str | Path) -> Any:
    """The TrainOptions a model was trained with (from its metrics.json)."""
    from melrepro.methods import training

    options = json.loads(Path(metrics_path).read_text(encoding="utf-8"))["options"]
    return training.TrainOptions.from_dict(options)
