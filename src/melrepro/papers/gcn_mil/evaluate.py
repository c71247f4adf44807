"""Trained head + 0° bags + cache -> recognition metrics and Eq. 3 segmentation (``evaluate_gcn_mil``).

η (§2.3's threshold of the Eq. 3 score map) is chosen on the training melanomas and JA is the
mean over the test melanomas: the paper's "melanoma-related skin lesion segmentation" (§2.3), "only
calibrated on melanoma data" (§4.2). The same with every class (η chosen on all training images,
JA over all test images) is kept as an alternative, reported beside it (``*_all_classes``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from melrepro.methods import mil
from melrepro.methods.devices import choose_device
from melrepro.papers.gcn_mil.bags import BagGraphs, collate, load_bags
from melrepro.papers.gcn_mil.common import read_cache, to_working, write_run_info
from melrepro.papers.gcn_mil.options import ModelOptions

# The paper's one logger (its log lines name it, as before the package split).
logger = logging.getLogger("melrepro.papers.gcn_mil")


#: The readings of the segmentation: the classes whose training images choose η and whose test
#: images JA averages. ``melanoma`` is the paper's; ``all_classes`` the alternative.
SEGMENTATION_CLASSES = {"melanoma": ("melanoma",), "all_classes": tuple(mil.CLASSES)}


def thresholds_from(start: float = 0.0, stop: float = 1.0, step: float = 0.05) -> np.ndarray:
    """The η grid of §2.3 (0 to 1 every 0.05), rounded so 0.3 is 0.3 and not 0.30000000000000004."""
    n = round((stop - start) / step)
    return np.round(start + step * np.arange(n + 1), 10)


def _load_model(
    model_path: str | Path, in_channels: int, dev: torch.device
) -> tuple[mil.GCNMIL, BagGraphs]:
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    opts = ModelOptions(**state["model_options"])
    net = mil.GCNMIL(
        in_channels,
        opts.hidden_channels,
        opts.attention_channels,
        len(mil.CLASSES),
        init=opts.init,
    )
    net.load_state_dict(state["model"])
    graph = state.get("graph", {})
    graphs = BagGraphs(
        graph.get("adjacency", "block"), graph.get("radius_factor", float(np.sqrt(2)))
    )
    return net.to(dev).eval(), graphs


def _predict_bag(
    net: mil.GCNMIL, graphs: BagGraphs, bag: Mapping[str, Any], dev
) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        x, edge_index, batch, _ = collate([bag], graphs, dev)
        logits, alpha = net(x, edge_index, batch)
    return torch.softmax(logits[0], 0).cpu().numpy(), alpha.cpu().numpy()


def recognition_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """SK-AUC, melanoma AUC, accuracy and recall (melanoma vs rest) of §3.2.

    ``predictions`` has ``label`` and ``p_<class>`` columns; a bag is called melanoma when
    melanoma is its most probable class.
    """
    from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

    def auc(y: np.ndarray, score: np.ndarray) -> float:
        return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")

    y_mel = (predictions["label"] == "melanoma").to_numpy().astype(int)
    y_sk = (predictions["label"] == "seborrheic_keratosis").to_numpy().astype(int)
    probs = predictions[[f"p_{c}" for c in mil.CLASSES]].to_numpy()
    called_mel = (probs.argmax(1) == mil.CLASSES.index("melanoma")).astype(int)
    return {
        "sk_auc": auc(y_sk, predictions["p_seborrheic_keratosis"].to_numpy()),
        "auc": auc(y_mel, predictions["p_melanoma"].to_numpy()),
        "accuracy": float(accuracy_score(y_mel, called_mel)),
        "recall": float(recall_score(y_mel, called_mel, zero_division=0.0)),
    }


#: The segmentation references computed per image beside the model's Jaccard (no model in
#: them): the "everything" mask (trivial baseline) and the block-grid oracle (ceiling).
REFERENCE_JACCARDS = ("jaccard_everything", "jaccard_oracle")


def _segmentation_sweep(
    bag: Mapping[str, Any], mask: np.ndarray | None, cache_path, alpha, probs, etas: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Eq. 3 block scores of one bag, the Jaccard index of its score map at every η, and the
    references of :data:`REFERENCE_JACCARDS` for its mask at its block grid."""
    if mask is None:
        raise ValueError(f"{bag['image_id']} has no Part 1 mask in {cache_path}")
    mask = to_working(mask, tuple(bag["shape"]), order=0) > 0
    coords = bag["coords"].numpy()
    scores = mil.block_scores(alpha, probs)
    score_map = mil.segmentation_map(tuple(bag["shape"]), coords, bag["block_size"], scores)
    references = {
        "jaccard_everything": mil.everything_jaccard(mask),
        "jaccard_oracle": mil.oracle_block_jaccard(mask, coords, bag["block_size"]),
    }
    sweep = np.array([mil.jaccard_index(score_map >= eta, mask) for eta in etas])
    return sweep, scores, references


def _predict_shards(
    model_path: str | Path,
    feature_paths: Sequence[str | Path],
    cache_paths: Sequence[str | Path],
    etas: np.ndarray,
    dev: torch.device,
):
    """One pass over the shards: prediction rows, Jaccard sweeps, npz arrays, grids, model.

    The model is loaded at the first non-empty shard; a cache shard is read only when one of
    its images is a training or test image. Returns ``(rows, per_image, scores_out,
    all_bags, net, graphs)``; ``net`` and ``graphs`` are None when no shard had a bag.
    """
    net, graphs = None, None
    rows, per_image = [], {}
    all_bags: list[dict[str, Any]] = []
    scores_out: dict[str, np.ndarray] = {}
    for feature_path, cache_path in zip(feature_paths, cache_paths, strict=True):
        bags = load_bags([feature_path], angle_zero_only=True)
        if not bags:
            continue
        if net is None:
            net, graphs = _load_model(model_path, bags[0]["features"].shape[1], dev)
        cache = None
        all_bags.extend({k: b[k] for k in ("coords", "block_size", "stride", "grid")} for b in bags)
        for bag in bags:
            probs, alpha = _predict_bag(net, graphs, bag, dev)
            row = {"image_id": bag["image_id"], "split": bag["split"], "label": bag["label"]}
            row.update({f"p_{c}": float(p) for c, p in zip(mil.CLASSES, probs, strict=True)})
            rows.append(row)
            scores_out[f"alpha__{bag['image_id']}"] = alpha.astype(np.float32)
            if bag["split"] not in ("train", "test"):
                continue
            if cache is None:
                cache = read_cache([cache_path])
            mask = cache[bag["image_id"]].mask
            per_image[bag["image_id"]], scores, references = _segmentation_sweep(
                bag, mask, cache_path, alpha, probs, etas
            )
            row.update(references)
            scores_out[f"scores__{bag['image_id']}"] = scores.astype(np.float32)
    return rows, per_image, scores_out, all_bags, net, graphs


def _choose_eta(
    predictions: pd.DataFrame,
    per_image: Mapping[str, np.ndarray],
    etas: np.ndarray,
    classes: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean training and test Jaccard per η over the images of ``classes``, and the index of η*
    (best training mean, smallest on ties).

    Raises
    ------
    ValueError
        No training image of ``classes`` has a Jaccard sweep (nothing to choose η on).
    """

    def mean_curve(split: str) -> np.ndarray:
        chosen = predictions.index[
            (predictions["split"] == split) & predictions["label"].isin(classes)
        ]
        ids = [i for i in chosen if i in per_image]
        return np.mean([per_image[i] for i in ids], axis=0) if ids else np.full(len(etas), np.nan)

    train_curve, test_curve = mean_curve("train"), mean_curve("test")
    if np.isnan(train_curve).all():
        raise ValueError(f"no training image of {list(classes)} to choose η on")
    return train_curve, test_curve, int(np.nanargmax(train_curve))


def _test_jaccard_at(
    predictions: pd.DataFrame, per_image: Mapping[str, np.ndarray], best: int
) -> list[float]:
    """Each test image's Jaccard at η index ``best`` (NaN for the other splits)."""
    return [
        per_image[i][best] if i in per_image and predictions.at[i, "split"] == "test" else np.nan
        for i in predictions.index
    ]


def _reference_means(predictions: pd.DataFrame, classes: Sequence[str], suffix: str) -> dict:
    """Mean of each :data:`REFERENCE_JACCARDS` column over the test images of ``classes``."""
    scored = predictions[(predictions["split"] == "test") & predictions["label"].isin(classes)]
    return {f"{key}{suffix}": float(scored[key].mean()) for key in REFERENCE_JACCARDS}


def _write_evaluation(
    predictions: pd.DataFrame,
    sweep: pd.DataFrame,
    metrics: Mapping[str, Any],
    scores_out: Mapping[str, np.ndarray],
    paths: Sequence[str | Path],
) -> None:
    """Predictions CSV, η sweep CSV, metrics JSON and scores npz, in that order of ``paths``."""
    predictions_path, sweep_path, metrics_path, scores_path = paths
    for path in (predictions_path, sweep_path, metrics_path, scores_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(predictions_path)
    sweep.to_csv(sweep_path, index=False)
    Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    with Path(scores_path).open("wb") as handle:
        np.savez_compressed(handle, **scores_out)


def evaluate_gcn_mil(
    model_path: str | Path,
    feature_paths: Sequence[str | Path],
    cache_paths: Sequence[str | Path],
    predictions_path: str | Path,
    sweep_path: str | Path,
    metrics_path: str | Path,
    scores_path: str | Path,
    *,
    thresholds: Mapping[str, float] | None = None,
    device: str = "auto",
    threads: int = 1,
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Recognition metrics on the test set and Eq. 3 segmentation with η chosen on training.

    ``feature_paths`` are the 0° feature files (``zero_path`` of
    :func:`melrepro.papers.gcn_mil.features.extract_gcn_mil_features`; full shards work too,
    only their 0° bags are used).
    Feature shard K must come from cache shard K (same order). One pass over the shards
    computes, for every training and test image (0° bag), the Jaccard index of the
    thresholded score map against its Part 1 mask at each η; η* maximises the mean over the
    training melanomas (ties: the smallest η) and JA is the mean over the test melanomas at η*
    (the paper's). The alternative reading does the same over every class (``*_all_classes``).

    Writes ``predictions_path`` (CSV: image_id, split, label, p_<class>, the
    :data:`REFERENCE_JACCARDS` of training/test images, a test image's jaccard at η* and
    jaccard_all_classes), ``sweep_path`` (CSV: eta, train_jaccard, test_jaccard, and
    ``*_all_classes``), ``metrics_path`` (JSON: recognition metrics, jaccard, eta, the
    reference means, each also ``*_all_classes``, n_test, n_test_melanomas, adjacency) and
    ``scores_path`` (npz: every 0° bag's attention ``alpha__<id>``, training/test images' Eq. 3
    block scores ``scores__<id>``).
    """
    torch.set_num_threads(max(1, threads))
    dev = choose_device(device)
    etas = thresholds_from(**dict(thresholds or {}))
    if len(feature_paths) != len(cache_paths):
        raise ValueError(f"{len(feature_paths)} feature but {len(cache_paths)} cache shards")
    rows, per_image, scores_out, all_bags, net, graphs = _predict_shards(
        model_path, feature_paths, cache_paths, etas, dev
    )
    predictions = pd.DataFrame(rows).set_index("image_id")
    if net is None:
        raise ValueError("no bags found in the feature shards")
    metrics = recognition_metrics(predictions[predictions["split"] == "test"])
    sweep = pd.DataFrame({"eta": etas})
    for reading, classes in SEGMENTATION_CLASSES.items():
        train_curve, test_curve, best = _choose_eta(predictions, per_image, etas, classes)
        suffix = "" if reading == "melanoma" else f"_{reading}"
        sweep[f"train_jaccard{suffix}"] = train_curve
        sweep[f"test_jaccard{suffix}"] = test_curve
        predictions[f"jaccard{suffix}"] = _test_jaccard_at(predictions, per_image, best)
        metrics[f"jaccard{suffix}"] = float(test_curve[best])
        metrics[f"eta{suffix}"] = float(etas[best])
        metrics.update(_reference_means(predictions, classes, suffix))
    test = predictions[predictions["split"] == "test"]
    metrics["n_test"] = len(test)
    metrics["n_test_melanomas"] = int((test["label"] == "melanoma").sum())
    metrics["adjacency"] = graphs.reading
    logger.info("test metrics: %s", metrics)

    _write_evaluation(
        predictions,
        sweep,
        metrics,
        scores_out,
        (predictions_path, sweep_path, metrics_path, scores_path),
    )
    write_run_info(
        Path(metrics_path).parent,
        run_info,
        device=str(dev),
        eta=metrics["eta"],
        eta_all_classes=metrics["eta_all_classes"],
        adjacency=graphs.reading,
        mean_degree=graphs.mean_degree(all_bags),
    )
    return metrics
