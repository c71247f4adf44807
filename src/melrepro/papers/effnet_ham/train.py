"""effnet_ham training: one variant of the recipe, trained and evaluated on test.

Baseline 1, Baseline 2 and the three experiments of §4.3 are configurations of
:func:`train_variant` (the ``effnet_ham.recipe`` config block and a variant's ``overrides``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from melrepro.papers.effnet_ham.datasets import load_variant, split_dataset
from melrepro.papers.effnet_ham.evaluate import ProtocolEvaluation, evaluate_protocols

if TYPE_CHECKING:
    from melrepro.methods import training

# torch and torchvision are imported inside the functions that train, so that the table and
# figure jobs start without them (~5 s each).

__all__ = ["train_variant"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _VariantData:
    """The datasets of one variant and where its training augmentation runs."""

    train: training.ArrayDataset
    val_rows: pd.DataFrame
    val: training.ArrayDataset
    test_rows: pd.DataFrame
    test: training.ArrayDataset
    train_transform: Any
    on_device: bool

    @property
    def augmentation(self) -> str:
        """``"device"`` or ``"loader"`` (as recorded in ``metrics.json``)."""
        return "device" if self.on_device else "loader"


def _shuffle_training_targets(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``frame`` with the targets of its training rows permuted (validation and test kept)."""
    from melrepro.methods.controls import shuffled_labels

    out = frame.copy()
    train = (out["split"] == "train").to_numpy()
    out.loc[train, "target"] = shuffled_labels(out.loc[train, "target"].to_numpy(), seed)
    return out


def _variant_data(
    frame: pd.DataFrame,
    images: dict[str, np.ndarray],
    pre: Mapping[str, Any],
    options: training.TrainOptions,
    augment_on: str,
) -> _VariantData:
    """Train, validation and test datasets with the variant's transforms."""
    from melrepro.methods import training, transforms

    train_tf = (
        transforms.train_transform(pre["image_size"])
        if pre["augment"]
        else transforms.eval_transform()
    )
    on_device = pre["augment"] and training.augments_on_device(augment_on, options.device)
    # On the device the loader only collates cached uint8 images; the pixel work runs there.
    _, train_ds = split_dataset(frame, images, "train", None if on_device else train_tf)
    val_rows, val_ds = split_dataset(frame, images, "val", transforms.eval_transform())
    test_rows, test_ds = split_dataset(frame, images, "test", transforms.eval_transform())
    return _VariantData(train_ds, val_rows, val_ds, test_rows, test_ds, train_tf, on_device)


def _predict_and_evaluate(
    result: training.TrainResult,
    data: _VariantData,
    options: training.TrainOptions,
    n_bootstrap: int,
) -> tuple[np.ndarray, np.ndarray, ProtocolEvaluation]:
    """The best model's validation and test probabilities, and both protocols on them."""
    import torch

    from melrepro.methods import training

    device = torch.device(result.device)
    val_prob = training.predict(result.model, data.val, options=options, device=device)
    test_prob = training.predict(result.model, data.test, options=options, device=device)
    evaluation = evaluate_protocols(
        data.val_rows["target"].to_numpy(),
        val_prob,
        data.test_rows["target"].to_numpy(),
        test_prob,
        n_bootstrap=n_bootstrap,
        seed=options.seed,
    )
    return val_prob, test_prob, evaluation


def _write_outputs(
    result: training.TrainResult,
    data: _VariantData,
    val_prob: np.ndarray,
    test_prob: np.ndarray,
    evaluation: ProtocolEvaluation,
    *,
    frame: pd.DataFrame,
    variant: str,
    options: training.TrainOptions,
    pre: Mapping[str, Any],
    n_bootstrap: int,
    checkpoint_dir: str | Path,
    model_path: str | Path,
    predictions_path: str | Path,
    metrics_path: str | Path,
) -> dict[str, Any]:
    """Write ``predictions.parquet``, the best weights and ``metrics.json``; return the metrics."""
    from melrepro.methods import training

    threshold, threshold95 = evaluation.threshold, evaluation.threshold_spec95
    preds = pd.concat(
        [data.val_rows.assign(probability=val_prob), data.test_rows.assign(probability=test_prob)],
        ignore_index=True,
    )
    preds["prediction"] = (preds["probability"] >= threshold).astype(int)
    preds["prediction_spec95"] = (preds["probability"] >= threshold95).astype(int)
    metrics = {
        "variant": variant,
        "threshold": threshold,
        "threshold_spec95": threshold95,
        "test": evaluation.test.as_dict(),
        "test_spec95": evaluation.test_spec95.as_dict(),
        "val": evaluation.val.as_dict(),
        "intervals": evaluation.intervals,
        "n_bootstrap": n_bootstrap,
        "probability_sd": evaluation.probability_sd,
        "image_size": pre["image_size"],
        "n_images": frame.groupby("split").size().to_dict(),
        "n_malignant": frame.groupby("split")["target"].sum().astype(int).to_dict(),
        "augmentation": data.augmentation,
        "preprocessing": pre,
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


def _write_run_info(
    result: training.TrainResult,
    metrics_path: str | Path,
    *,
    run_info: Mapping[str, Any],
    recipe: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    malignant_labels: Sequence[str],
    seed: int,
) -> None:
    """``run_info.json`` beside ``metrics.json``."""
    from melrepro.report.runinfo import write_training_run_info

    config = {
        "recipe": dict(recipe),
        "overrides": dict(overrides or {}),
        "malignant_labels": list(malignant_labels),
    }
    write_training_run_info(
        metrics_path, result, data_source=run_info["data_source"], config=config, seed=seed
    )


def train_variant(
    manifest_path: str | Path,
    split_path: str | Path,
    cache_paths: Sequence[str | Path],
    *,
    variant: str,
    recipe: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    malignant_labels: Sequence[str],
    label_shuffled: bool = False,
    checkpoint_dir: str | Path,
    model_path: str | Path,
    history_path: str | Path,
    predictions_path: str | Path,
    metrics_path: str | Path,
    run_info: Mapping[str, Any],
    threads: int = 1,
    num_workers: int = 0,
    n_bootstrap: int = 1000,
    augment_on: str = "auto",
) -> dict[str, Any]:
    """Train one variant and evaluate it on test under both of the paper's protocols.

    Youden's threshold is chosen on validation (the paper's §4.2); the 95 %-specificity
    threshold on the test set (the authors' code). Each metric gets a percentile bootstrap
    interval over the test images, and ``metrics.json`` records the spread (SD) of the
    predicted probabilities, which exposes a degenerate, near-constant model.

    Parameters
    ----------
    manifest_path, split_path, cache_paths
        Inputs (see :func:`melrepro.papers.effnet_ham.datasets.load_task3`).
    variant : str
        Variant key (``baseline2``...), used in logs and outputs.
    recipe, overrides : mapping
        Baseline 2 recipe and the variant's changes (see
        :func:`melrepro.papers.effnet_ham.datasets.split_options`).
    malignant_labels : sequence of str
    label_shuffled : bool
        Train on the training labels under a seeded permutation (validation and test labels
        true): the label-shuffled control.
    checkpoint_dir : path
        Per-epoch checkpoints (not a Snakemake output, so they survive a killed job).
    model_path, history_path, predictions_path, metrics_path : path
        Outputs: best weights, per-epoch losses, per-image probabilities of val and test
        (with the prediction at the Youden threshold), and the metrics as JSON.
    run_info : mapping
        ``data_source``, ``seed``, ``pretrained``, ``device`` (from the workflow config).
    threads, num_workers : int
        Torch threads and DataLoader workers.
    n_bootstrap : int
        Bootstrap resamples of the test set for the 95 % intervals.
    augment_on : str
        Where the training augmentation runs: ``"loader"``, ``"device"`` (uint8 batches
        augmented on the device) or ``"auto"`` (on a GPU, the device); see
        :func:`melrepro.methods.training.augments_on_device`.

    Returns
    -------
    dict
        The content of ``metrics_path``.

    Notes
    -----
    Why this long: only its signature and this docstring (the rule's inputs and outputs); the steps
    are the helpers above.
    """
    from melrepro.methods import training

    pre, options, frame, images = load_variant(
        manifest_path,
        split_path,
        cache_paths,
        recipe=recipe,
        overrides=overrides,
        malignant_labels=malignant_labels,
        seed=int(run_info["seed"]),
        pretrained=bool(run_info["pretrained"]),
        device=str(run_info["device"]),
        threads=threads,
        num_workers=num_workers,
    )
    if label_shuffled:
        frame = _shuffle_training_targets(frame, options.seed)
    data = _variant_data(frame, images, pre, options, augment_on)
    logger.info(
        "Variant %s: %s; preprocessing %s; augmentation in the %s",
        variant,
        options,
        pre,
        data.augmentation,
    )
    result = training.train_model(
        data.train,
        data.val,
        options,
        checkpoint_dir=checkpoint_dir,
        history_path=history_path,
        device_transform=data.train_transform if data.on_device else None,
    )
    val_prob, test_prob, evaluation = _predict_and_evaluate(result, data, options, n_bootstrap)
    info = _write_outputs(
        result,
        data,
        val_prob,
        test_prob,
        evaluation,
        frame=frame,
        variant=variant,
        options=options,
        pre=pre,
        n_bootstrap=n_bootstrap,
        checkpoint_dir=checkpoint_dir,
        model_path=model_path,
        predictions_path=predictions_path,
        metrics_path=metrics_path,
    )
    _write_run_info(
        result,
        metrics_path,
        run_info=run_info,
        recipe=recipe,
        overrides=overrides,
        malignant_labels=malignant_labels,
        seed=options.seed,
    )
    return info
