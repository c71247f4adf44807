"""siim2020's trainings: the base model or an expert model on one (protocol, dataset), trained
with the shared training core, thresholded on the evaluation set, predicting the test set.

:func:`train_model_on` runs, in order: :func:`_train_options`, :func:`_assemble_datasets` (rows,
images, augmented copies, metadata), :func:`_model_spec`, :func:`_train_and_predict` (the core's
``train_model`` and ``predict``), :func:`_threshold_and_scores`, :func:`_expert_routing` (expert
models only), :func:`_metrics_info`, :func:`_write_outputs` (predictions.parquet, the exported
model, metrics.json) and :func:`_write_run_info`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from melrepro.papers.siim2020.evaluate import choose_threshold, evaluate_at
from melrepro.papers.siim2020.images import augment_copy, load_images
from melrepro.papers.siim2020.names import CONTROL_MODEL, row_label

if TYPE_CHECKING:  # torch is imported lazily: table and figure jobs start without it
    import torch

    from melrepro.methods import training
    from melrepro.methods.metadata_models import ModelSpec

__all__ = ["train_model_on"]

logger = logging.getLogger(__name__)


def _architecture(model: str) -> str:
    """The network of ``model``: the label-shuffled control is the base model."""
    return "base" if model == CONTROL_MODEL else model


def _metadata(frame: pd.DataFrame, model: str, sites: Sequence[str]) -> np.ndarray:
    from melrepro.methods.metadata_models import encode_metadata

    return encode_metadata(
        frame, sites=sites, include_sex=model != "sex", route_female=model == "sex"
    )


@dataclass
class _Sets:
    """The data of one training: the rows of the validation and evaluation sets, the manifest's
    test rows, the four datasets, the test metadata and the loaded images."""

    val_rows: pd.DataFrame
    eval_rows: pd.DataFrame
    test: pd.DataFrame
    train: training.ArrayDataset
    val: training.ArrayDataset
    eval: training.ArrayDataset
    test_ds: training.ArrayDataset
    test_meta: np.ndarray
    images: dict


def _assemble_datasets(
    manifest_path: str | Path,
    rows_path: str | Path,
    image_paths: Sequence[str | Path],
    *,
    model: str,
    dataset: str,
    augment: Mapping[str, float],
    sites: Sequence[str],
    seed: int,
) -> _Sets:
    """The training (with its augmented copies), validation, evaluation and test datasets of
    ``dataset``, each image with the metadata vector of ``model``."""
    from melrepro.methods import training

    rows = pd.read_parquet(rows_path)
    rows = rows[rows["dataset"] == dataset].reset_index(drop=True)
    manifest = pd.read_parquet(manifest_path).set_index("image_id")
    test = manifest[manifest["official_split"] == "test"].reset_index()
    ids = sorted(set(rows["image_id"]) | set(test["image_id"]))
    images = load_images(image_paths, ids)
    meta_cols = ["age", "sex", "site"]

    def part(role: str, augmented: bool = False) -> tuple[pd.DataFrame, training.ArrayDataset]:
        sub = rows[rows["role"] == role].reset_index(drop=True)
        stack = [
            augment_copy(images[i], seed=seed, image_id=i, copy=int(c), params=augment)
            if augmented
            else images[i]
            for i, c in zip(sub["image_id"], sub["copy"], strict=True)
        ]
        meta = _metadata(manifest.loc[sub["image_id"], meta_cols].reset_index(), model, sites)
        return sub, training.ArrayDataset(stack, sub["target"].to_numpy(), metadata=meta)

    _, train_ds = part("train", augmented=True)
    val_rows, val_ds = part("val")
    eval_rows, eval_ds = part("eval")
    test_meta = _metadata(test[["image_id", *meta_cols]], model, sites)
    test_ds = training.ArrayDataset(
        [images[i] for i in test["image_id"]], np.zeros(len(test), int), metadata=test_meta
    )
    return _Sets(
        val_rows=val_rows,
        eval_rows=eval_rows,
        test=test,
        train=train_ds,
        val=val_ds,
        eval=eval_ds,
        test_ds=test_ds,
        test_meta=test_meta,
        images=images,
    )


def _model_spec(
    model: str, test_meta: np.ndarray, brightness_threshold: float, head: Mapping[str, Any]
) -> ModelSpec:
    """The model factory of ``model`` (the sex model's routing flag is no metadata input)."""
    from melrepro.methods.metadata_models import ModelSpec

    return ModelSpec(
        kind=model,
        n_metadata=test_meta.shape[1] - (1 if model == "sex" else 0),
        brightness_threshold=brightness_threshold,
        hidden=tuple(head.get("hidden", (512, 128))),
        metadata_dropout=float(head.get("metadata_dropout", 0.3)),
        dropout=float(head.get("dropout", 0.5)),
    )


def _threshold_and_scores(
    sets: _Sets,
    p_val: np.ndarray,
    p_eval: np.ndarray,
    tpr_range: Sequence[float],
    dataset: str,
) -> tuple[float, str, dict[str, Any], float]:
    """The threshold (rule of §6 on the evaluation set), its rule, the evaluation scores at it,
    and the validation ROC-AUC (NaN where a set holds one class)."""
    y_eval = sets.eval_rows["target"].to_numpy()
    low, high = (float(v) for v in tpr_range)
    if len(np.unique(y_eval)) == 2:
        threshold, rule = choose_threshold(y_eval, p_eval, (low, high))
        scores = evaluate_at(y_eval, p_eval, threshold)
    else:  # the author's image-level removal can leave no melanoma in the evaluation set
        threshold, rule = float("nan"), "none: one class in the evaluation set"
        scores = dict.fromkeys(("f1", "auroc", "recall", "precision"), float("nan"))
        scores |= dict.fromkeys(("tn", "fp", "fn", "tp"), 0)
        logger.warning("evaluation set of %s has one class only: no threshold", dataset)
    from melrepro.methods.metrics import auroc

    y_val = sets.val_rows["target"].to_numpy()
    val_auroc = float(auroc(y_val, p_val)) if len(np.unique(y_val)) == 2 else float("nan")
    return threshold, rule, scores, val_auroc


def _expert_routing(
    net: torch.nn.Module, eval_ds: training.ArrayDataset, model: str, device: torch.device
) -> dict[str, int]:
    """How many evaluation images each expert of ``model`` receives (empty for the base model)."""
    import torch

    routing = {}
    if model != "base":
        net = net.eval()
        chunks = []
        with torch.inference_mode():  # in chunks: the whole set as float would not fit
            for start in range(0, len(eval_ds), 256):
                idx = range(start, min(start + 256, len(eval_ds)))
                x = torch.stack([eval_ds[i][0] for i in idx]).to(device)
                m = eval_ds.metadata[start : start + 256].to(device)
                chunks.append(net.expert_of(x, m).cpu().numpy())
        expert = np.concatenate(chunks) if chunks else np.zeros(0, int)
        names = net.EXPERT_NAMES[model]
        routing = {names[k]: int((expert == k).sum()) for k in (0, 1)}
    return routing


def _metrics_info(
    *,
    protocol: str,
    model: str,
    dataset: str,
    threshold: float,
    rule: str,
    scores: Mapping[str, Any],
    val_auroc: float,
    sets: _Sets,
    brightness_threshold: float,
    routing: Mapping[str, int],
    head: Mapping[str, Any],
) -> dict[str, Any]:
    """The paper's part of metrics.json (one table01 row and its bookkeeping); the training core
    adds the run's own keys (best epoch, seconds, device, weights, options)."""
    return {
        "protocol": protocol,
        "model": model,
        "dataset": dataset,
        "label": row_label(model, dataset, protocol),
        "threshold": threshold,
        "threshold_rule": rule,
        **scores,
        "val_auroc": val_auroc,
        "n_train": len(sets.train),
        "n_val": len(sets.val),
        "n_eval": len(sets.eval),
        "n_eval_melanomas": int(sets.eval_rows["target"].to_numpy().sum()),
        "brightness_threshold": brightness_threshold,
        "routing_eval": routing,
        "image_size": int(next(iter(sets.images.values())).shape[0]),
        "head": dict(head),
    }


def _write_outputs(
    sets: _Sets,
    p_eval: np.ndarray,
    p_test: np.ndarray,
    threshold: float,
    metrics: Mapping[str, Any],
    *,
    result: training.TrainResult,
    options: training.TrainOptions,
    checkpoint_dir: str | Path,
    model_path: str | Path,
    predictions_path: str | Path,
    metrics_path: str | Path,
) -> dict[str, Any]:
    """Write predictions.parquet (evaluation and test rows, thresholded), the best weights to
    ``model_path`` and metrics.json (the core's shared tail); return the metrics written."""
    from melrepro.methods import training

    preds = pd.concat(
        [
            sets.eval_rows[["image_id", "patient_id", "target"]].assign(
                role="eval", probability=p_eval
            ),
            sets.test[["image_id", "patient_id"]].assign(
                target=pd.NA, role="test", probability=p_test
            ),
        ],
        ignore_index=True,
    )
    preds["prediction"] = (preds["probability"] >= threshold).astype(int)
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


def _train_options(
    train: Mapping[str, Any], run_info: Mapping[str, Any], threads: int
) -> training.TrainOptions:
    """The core's options: the config's ``train`` keys with the run's seed, weights and device."""
    from melrepro.methods import training

    return training.TrainOptions.from_dict(
        dict(train),
        seed=int(run_info["seed"]),
        pretrained=bool(run_info["pretrained"]),
        device=str(run_info["device"]),
        threads=threads,
    )


def _train_and_predict(
    sets: _Sets,
    spec: ModelSpec,
    options: training.TrainOptions,
    what: tuple[str, str, str],
    *,
    checkpoint_dir: str | Path,
    history_path: str | Path,
) -> tuple[training.TrainResult, np.ndarray, np.ndarray, np.ndarray]:
    """Train ``spec`` on the training set (``what``: protocol, model, dataset, for the log) and
    predict the validation, evaluation and test sets with the best weights."""
    import torch

    from melrepro.methods import training

    logger.info(
        "%s / %s / %s: %d train, %d val, %d eval, %d test images; %s",
        *what,
        len(sets.train),
        len(sets.val),
        len(sets.eval),
        len(sets.test_ds),
        spec,
    )
    result = training.train_model(
        sets.train,
        sets.val,
        options,
        checkpoint_dir=checkpoint_dir,
        history_path=history_path,
        model_factory=spec,
    )
    device = torch.device(result.device)
    p_val = training.predict(result.model, sets.val, options=options, device=device)
    p_eval = training.predict(result.model, sets.eval, options=options, device=device)
    p_test = training.predict(result.model, sets.test_ds, options=options, device=device)
    return result, p_val, p_eval, p_test


def _write_run_info(
    metrics_path: str | Path,
    run_info: Mapping[str, Any],
    config: Mapping[str, Any],
    seed: int,
    result: training.TrainResult,
) -> None:
    """run_info.json next to metrics.json: data source, config, seed, weights, device, resume."""
    from melrepro.report.runinfo import write_training_run_info

    write_training_run_info(
        metrics_path, result, data_source=run_info["data_source"], config=config, seed=seed
    )


def train_model_on(
    manifest_path: str | Path,
    rows_path: str | Path,
    counts_path: str | Path,
    image_paths: Sequence[str | Path],
    *,
    protocol: str,
    model: str,
    dataset: str,
    train: Mapping[str, Any],
    head: Mapping[str, Any],
    augment: Mapping[str, float],
    sites: Sequence[str],
    tpr_range: Sequence[float],
    checkpoint_dir: str | Path,
    model_path: str | Path,
    history_path: str | Path,
    predictions_path: str | Path,
    metrics_path: str | Path,
    run_info: Mapping[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    """Train one (protocol, model, dataset), choose the threshold on the evaluation set, and
    predict the evaluation and test images.

    Why this long: only its signature (the rule's inputs and outputs), this docstring and
    one-per-line keyword calls; each step is a helper of this module.

    Parameters
    ----------
    manifest_path, rows_path, counts_path, image_paths
        The isic2020 manifest, :func:`~melrepro.papers.siim2020.datasets.write_datasets` outputs,
        :func:`~melrepro.papers.siim2020.images.prepare_images` shards.
    protocol, model, dataset : str
        ``patient``/``author_code``; ``base``/``sex``/``brightness`` (or ``base_shuffled``, the
        base model trained on permuted training labels: the label-shuffled control); one of
        :data:`~melrepro.papers.siim2020.names.DATASETS`.
    train : mapping
        :class:`~melrepro.methods.training.TrainOptions` keys (BCE, Adam, cosine...).
    head : mapping
        ``hidden`` ([512, 128]), ``metadata_dropout`` (0.3), ``dropout`` (0.5).
    augment : mapping
        :func:`~melrepro.papers.siim2020.images.augment_copy` parameters.
    sites : sequence of str
        Site vocabulary of the metadata one-hots.
    tpr_range : (low, high)
    checkpoint_dir, model_path, history_path, predictions_path, metrics_path : path
    run_info : mapping
        ``data_source``, ``seed``, ``pretrained``, ``device``.
    threads : int
    """
    import torch

    # The job's threads from the start: the augmented copies below are built before the training
    # core sets them, and torch's default (every core) contends with the other jobs of the run.
    torch.set_num_threads(max(1, int(threads)))
    seed = int(run_info["seed"])
    options = _train_options(train, run_info, threads)
    counts = json.loads(Path(counts_path).read_text(encoding="utf-8"))
    sets = _assemble_datasets(
        manifest_path,
        rows_path,
        image_paths,
        model=model,
        dataset=dataset,
        augment=augment,
        sites=sites,
        seed=seed,
    )
    if model == CONTROL_MODEL:  # the base model on permuted training labels (validation true)
        from melrepro.methods.controls import shuffled_labels

        sets.train.labels = shuffled_labels(sets.train.labels, seed)
    threshold_b = float(counts["brightness_threshold"])
    spec = _model_spec(_architecture(model), sets.test_meta, threshold_b, head)
    result, p_val, p_eval, p_test = _train_and_predict(
        sets,
        spec,
        options,
        (protocol, model, dataset),
        checkpoint_dir=checkpoint_dir,
        history_path=history_path,
    )
    threshold, rule, scores, val_auroc = _threshold_and_scores(
        sets, p_val, p_eval, tpr_range, dataset
    )
    routing = _expert_routing(
        result.model, sets.eval, _architecture(model), torch.device(result.device)
    )
    metrics = _metrics_info(
        protocol=protocol,
        model=model,
        dataset=dataset,
        threshold=threshold,
        rule=rule,
        scores=scores,
        val_auroc=val_auroc,
        sets=sets,
        brightness_threshold=threshold_b,
        routing=routing,
        head=head,
    )
    info = _write_outputs(
        sets,
        p_eval,
        p_test,
        threshold,
        metrics,
        result=result,
        options=options,
        checkpoint_dir=checkpoint_dir,
        model_path=model_path,
        predictions_path=predictions_path,
        metrics_path=metrics_path,
    )
    logger.info("%s: threshold %.4f (%s) %s", info["label"], threshold, rule, scores)
    config = {"train": dict(train), "head": dict(head), "augment": dict(augment)}
    _write_run_info(metrics_path, run_info, config, seed, result)
    return info
