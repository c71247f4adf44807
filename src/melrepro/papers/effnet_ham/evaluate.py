"""effnet_ham evaluation: test probabilities -> metrics under both thresholds, and Grad-CAM.

:func:`evaluate_protocols` serves :func:`melrepro.papers.effnet_ham.train.train_variant`;
:func:`compute_gradcam` explains a trained variant on its test images (the maps of fig05 and
fig06).
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

from melrepro.methods import metrics
from melrepro.papers.effnet_ham.datasets import load_variant

if TYPE_CHECKING:
    import torch

    from melrepro.methods import training

# torch and pytorch-grad-cam are imported inside the functions that explain, so that the table
# and figure jobs start without them (~5 s each).

__all__ = [
    "DEGENERATE_SD",
    "SPEC95",
    "ProtocolEvaluation",
    "compute_gradcam",
    "evaluate_protocols",
    "mean_pairwise_correlation",
]

logger = logging.getLogger(__name__)

#: The authors' test-time operating point: the threshold that keeps 95 % specificity.
SPEC95 = 0.95
#: Test-probability SD below which a model is called degenerate (near-constant output).
DEGENERATE_SD = 1e-3


@dataclass(frozen=True)
class ProtocolEvaluation:
    """A variant's thresholds and metrics under both protocols (what ``metrics.json`` holds)."""

    threshold: float
    threshold_spec95: float
    test: metrics.BinaryMetrics
    test_spec95: metrics.BinaryMetrics
    val: metrics.BinaryMetrics
    intervals: dict[str, Any]
    probability_sd: dict[str, float]


def evaluate_protocols(
    y_val: np.ndarray,
    val_prob: np.ndarray,
    y_test: np.ndarray,
    test_prob: np.ndarray,
    *,
    n_bootstrap: int,
    seed: int,
) -> ProtocolEvaluation:
    """Thresholds, test metrics with bootstrap intervals, and the spread of the probabilities.

    Logs both protocols and warns when the test probabilities are near-constant (SD below
    :data:`DEGENERATE_SD`).
    """
    # Two protocols (issue 12): the paper's text (Youden's J on validation, applied to test) and
    # the authors' code (the threshold of 95 % specificity chosen on the test set itself).
    threshold = metrics.youden_threshold(y_val, val_prob)
    threshold95 = metrics.specificity_threshold(y_test, test_prob, SPEC95)
    test_metrics = metrics.binary_metrics(y_test, test_prob, threshold)
    test95 = metrics.binary_metrics(y_test, test_prob, threshold95)
    val_metrics = metrics.binary_metrics(y_val, val_prob, threshold)
    intervals = {
        "youden_val": metrics.bootstrap_intervals(
            y_test, test_prob, threshold=threshold, n_boot=n_bootstrap, seed=seed
        ),
        "spec95_test": metrics.bootstrap_intervals(
            y_test, test_prob, specificity=SPEC95, n_boot=n_bootstrap, seed=seed
        ),
        # Milestone 1 (the paper's Baseline 1) reports validation metrics at Youden's point
        # chosen on validation itself: the interval of that reading, resampling validation.
        "youden_val_on_val": metrics.bootstrap_intervals(
            y_val, val_prob, threshold=threshold, n_boot=n_bootstrap, seed=seed
        ),
    }
    spread = {"val": float(np.std(val_prob)), "test": float(np.std(test_prob))}
    logger.info("Youden threshold (validation) %.4f; test %s", threshold, test_metrics)
    logger.info("95%% specificity threshold (test) %.4f; test %s", threshold95, test95)
    logger.info("Probability SD: %s", spread)
    if spread["test"] < DEGENERATE_SD:
        logger.warning(
            "test probabilities are near-constant (SD %.2g < %.2g): a degenerate model",
            spread["test"],
            DEGENERATE_SD,
        )
    return ProtocolEvaluation(
        threshold=threshold,
        threshold_spec95=threshold95,
        test=test_metrics,
        test_spec95=test95,
        val=val_metrics,
        intervals=intervals,
        probability_sd=spread,
    )


def _truth_masks(truth_dir: Path | None, image_ids: Sequence[str]) -> dict[str, Path]:
    """Synthetic-twin lesion masks by image id (files named after the image)."""
    if truth_dir is None or not Path(truth_dir).is_dir():
        return {}
    wanted = set(image_ids)
    found: dict[str, Path] = {}
    for path in sorted(Path(truth_dir).rglob("*.png")):
        stem = path.stem
        for suffix in ("_segmentation", "_mask", "_lesion"):
            stem = stem.removesuffix(suffix)
        if stem in wanted:
            found.setdefault(stem, path)
    return found


def _square_mask(data: Any, size: int) -> np.ndarray:
    """A mask image (path or PNG bytes) centre-cropped and resized like the images."""
    import io

    from PIL import Image

    from melrepro.methods import transforms

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(source) as m:
        arr = (np.asarray(m.convert("L")) > 127).astype(np.uint8)
    arr = transforms.center_crop_square(arr)
    arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.NEAREST))
    return arr.astype(bool)


def mean_pairwise_correlation(maps: np.ndarray, *, max_maps: int = 200, seed: int = 0) -> float:
    """Mean Pearson correlation over all pairs of non-empty maps (at most ``max_maps`` drawn).

    Near 1: every image gets the same map (a property of the network, not of the image).
    NaN with fewer than two non-empty maps.
    """
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    flat = flat[flat.std(axis=1) > 0]
    if len(flat) > max_maps:
        flat = flat[np.random.default_rng(seed).choice(len(flat), max_maps, replace=False)]
    if len(flat) < 2:
        return float("nan")
    corr = np.corrcoef(flat)
    return float(corr[np.triu_indices(len(flat), k=1)].mean())


def _target_layer(model: training.CNNClassifier, name: str | None) -> torch.nn.Module:
    """``name`` is a submodule path inside the backbone (``features.3``); None: the last block."""
    from melrepro.methods import training

    if not name:
        return training.gradcam_target_layer(model)
    try:
        return model.backbone.get_submodule(name)
    except AttributeError:
        raise ValueError(
            f"gradcam.target_layer {name!r} is not a submodule of the {model.backbone_name} "
            "backbone (e.g. 'features.3' for EfficientNet-B0)"
        ) from None


def _test_maps(
    model_path: str | Path,
    options: training.TrainOptions,
    test: pd.DataFrame,
    images: dict[str, np.ndarray],
    target_layer: str | None,
) -> np.ndarray:
    """Grad-CAM of the malignant logit for every test image, (N, S, S) in [0, 1]."""
    import torch

    from melrepro.methods import saliency, training, transforms

    model = training.load_model(model_path, options)
    layer = _target_layer(model, target_layer)
    x = transforms.per_image_normalize(
        torch.stack([torch.from_numpy(images[i]).permute(2, 0, 1) for i in test["image_id"]])
    )
    return saliency.gradcam_maps(model, x, layer, classes=[1] * len(test))


def _lesion_regions(
    image_ids: Sequence[str],
    manifest_path: str | Path,
    *,
    archive_dir: str | Path | None,
    truth_dir: str | Path | None,
    region: str,
    border_width: float,
    size: int,
) -> tuple[list[np.ndarray], list[str]]:
    """Each image's lesion region (S, S) bool and where it came from.

    The source is ``border`` (``region="border"``), ``segmentation`` (the manifest's
    ``mask_uri`` in ``archive_dir``), ``truth`` (``truth_dir``) or ``none`` (an empty region).
    """
    from melrepro.data.archive_io import ArchiveFolder
    from melrepro.methods import saliency

    manifest = pd.read_parquet(manifest_path)
    mask_uri = (
        manifest.set_index(manifest["image_id"].astype(str))["mask_uri"].dropna().to_dict()
        if "mask_uri" in manifest.columns
        else {}
    )
    truth = _truth_masks(Path(truth_dir) if truth_dir else None, list(image_ids))
    regions, kinds = [], []
    archive = ArchiveFolder(archive_dir) if archive_dir else None
    for image_id in image_ids:
        if region == "border":
            regions.append(~saliency.border_mask((size, size), border_width))
            kinds.append("border")
        elif archive is not None and image_id in mask_uri:
            regions.append(_square_mask(archive.read(mask_uri[image_id]), size))
            kinds.append("segmentation")
        elif image_id in truth:
            regions.append(_square_mask(truth[image_id], size))
            kinds.append("truth")
        else:
            regions.append(np.zeros((size, size), dtype=bool))
            kinds.append("none")
    if archive is not None:
        archive.close()
    return regions, kinds


def _gradcam_table(
    test: pd.DataFrame,
    maps: np.ndarray,
    empty: np.ndarray,
    regions: Sequence[np.ndarray],
    kinds: Sequence[str],
) -> pd.DataFrame:
    """One row per test image: prediction, empty map, saliency and area outside the lesion."""
    from melrepro.methods import saliency

    table = test[["image_id", "label", "target", "probability", "prediction"]].copy()
    table["correct"] = table["target"] == table["prediction"]
    table["empty"] = empty
    table["outside_fraction"] = [
        saliency.outside_fraction(m, r) if k != "none" else float("nan")
        for m, r, k in zip(maps, regions, kinds, strict=True)
    ]
    table["area_outside"] = [
        float(1 - r.mean()) if k != "none" else float("nan")
        for r, k in zip(regions, kinds, strict=True)
    ]
    table["region"] = kinds
    return table


def _gradcam_summary(
    table: pd.DataFrame,
    empty: np.ndarray,
    correlation: float,
    kinds: Sequence[str],
    *,
    target_layer: str | None,
    size: int,
) -> dict[str, Any]:
    """The content of ``summary.json`` (logged, with a warning when maps are empty)."""
    summary = {
        "n_maps": len(table),
        "n_empty": int(empty.sum()),
        "mean_pairwise_correlation": correlation,
        "target": "malignant logit",
        "target_layer": target_layer or "last block",
        "map_side": int(size),
        "regions": pd.Series(kinds).value_counts().to_dict(),
        "images_without_mask": table.loc[table["region"] == "none", "image_id"].tolist(),
        "median_outside_fraction": float(table["outside_fraction"].median()),
        "median_area_outside": float(table["area_outside"].median()),
        "share_above_area": float(
            (table["outside_fraction"] > table["area_outside"])[
                table["outside_fraction"].notna()
            ].mean()
        ),
    }
    logger.info(
        "Grad-CAM summary: %s", {k: v for k, v in summary.items() if k != "images_without_mask"}
    )
    if summary["n_empty"]:
        logger.warning("%d of %d Grad-CAM maps are empty", summary["n_empty"], len(table))
    return summary


def _save_examples(
    output_maps: str | Path,
    table: pd.DataFrame,
    images: dict[str, np.ndarray],
    maps: np.ndarray,
    regions: Sequence[np.ndarray],
    n_examples: int,
) -> None:
    """Pick the examples of fig05 (most confident correct, incorrect) and fig06 (most saliency
    outside the lesion beyond its area) and save them to ``output_maps``."""
    confidence = (table["probability"] - 0.5).abs()
    correct = table[table["correct"]].assign(c=confidence).nlargest(n_examples, "c").index
    wrong = table[~table["correct"]].assign(c=confidence).nlargest(n_examples, "c").index
    excess = table["outside_fraction"] - table["area_outside"]
    outside = excess.fillna(-2).nlargest(n_examples).index
    keep = list(dict.fromkeys([*correct, *wrong, *outside]))
    Path(output_maps).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        output_maps,
        image_ids=np.array(table.loc[keep, "image_id"].tolist()),
        images=np.stack([images[table.at[k, "image_id"]] for k in keep]),
        maps=maps[keep].astype(np.float32),
        regions=np.stack([regions[k] for k in keep]),
        fig05_correct=np.array(table.loc[correct, "image_id"].tolist()),
        fig05_incorrect=np.array(table.loc[wrong, "image_id"].tolist()),
        fig06=np.array(table.loc[outside, "image_id"].tolist()),
    )


def compute_gradcam(
    model_path: str | Path,
    predictions_path: str | Path,
    manifest_path: str | Path,
    split_path: str | Path,
    cache_paths: Sequence[str | Path],
    output_maps: str | Path,
    output_table: str | Path,
    *,
    recipe: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    malignant_labels: Sequence[str],
    output_summary: str | Path | None = None,
    archive_dir: str | Path | None = None,
    truth_dir: str | Path | None = None,
    target_layer: str | None = None,
    region: str = "auto",
    border_width: float = 0.15,
    n_examples: int = 4,
    threads: int = 1,
) -> pd.DataFrame:
    """Grad-CAM of the malignant logit on every test image, and its share outside the lesion.

    As in the authors' code (``ClassifierOutputTarget(0)`` on the one-logit model) the map
    explains the malignant logit for every image, not the predicted class: a map of the
    predicted class is empty after Grad-CAM's ReLU for most benign predictions.

    The lesion is, in order: the HAM10000 lesion segmentation of the image (the manifest's
    ``mask_uri``; training images of the real archive and of the twin), the twin's true mask
    (``truth_dir``, synthetic only), or none (the image is not measured, ``region = "none"``).
    ``region="border"`` measures against the image minus a border frame instead (the old,
    mask-free reading of "attends to image corners").

    Parameters
    ----------
    model_path, predictions_path : path
        Outputs of :func:`melrepro.papers.effnet_ham.train.train_variant` for the explained
        variant.
    manifest_path, split_path, cache_paths
        As for :func:`melrepro.papers.effnet_ham.datasets.load_task3`.
    output_maps : path
        ``.npz`` with the examples of fig05 and fig06: ``images`` (K, S, S, 3) uint8,
        ``maps`` (K, S, S) float32 in [0, 1], ``regions`` (K, S, S) bool, ``image_ids``.
    output_table : path
        CSV, one row per test image: ``image_id, label, target, probability, prediction,
        correct, empty, outside_fraction, area_outside, region``; ``area_outside`` is the share
        of the image outside the lesion, which a flat map would put outside.
    recipe, overrides, malignant_labels
        The variant's configuration (for the preprocessing).
    output_summary : path, optional
        JSON: number of maps and of empty maps, mean pairwise correlation of the maps, the
        target and layer, masks found per source, median outside share and area share.
    archive_dir : path, optional
        ``resources/archives/isic2018_task3`` (where the manifest's ``mask_uri`` points).
    truth_dir : path, optional
        Folder of synthetic truth masks (PNG named after the image).
    target_layer : str, optional
        Backbone submodule explained (``features.3``); default the last convolutional block.
    region : {"auto", "border"}
    border_width : float
        Frame width per side for ``region="border"``.
    n_examples : int
        Examples per row of fig05 (correct, incorrect) and in fig06.
    threads : int

    Notes
    -----
    Why this long: only its signature and this docstring (the rule's inputs and outputs); the steps
    are the helpers above.
    """
    import torch

    if region not in ("auto", "border"):
        raise ValueError(f"region must be 'auto' or 'border', got {region!r}")
    torch.set_num_threads(threads)
    pre, options, _, images = load_variant(
        manifest_path,
        split_path,
        cache_paths,
        recipe=recipe,
        overrides=overrides,
        malignant_labels=malignant_labels,
    )
    preds = pd.read_parquet(predictions_path)
    test = preds[preds["split"] == "test"].reset_index(drop=True)
    maps = _test_maps(model_path, options, test, images, target_layer)
    empty = maps.reshape(len(maps), -1).max(axis=1) <= 0
    correlation = mean_pairwise_correlation(maps)

    size = pre["image_size"]
    regions, kinds = _lesion_regions(
        test["image_id"].tolist(),
        manifest_path,
        archive_dir=archive_dir,
        truth_dir=truth_dir,
        region=region,
        border_width=border_width,
        size=size,
    )
    table = _gradcam_table(test, maps, empty, regions, kinds)
    summary = _gradcam_summary(
        table, empty, correlation, kinds, target_layer=target_layer, size=size
    )
    _save_examples(output_maps, table, images, maps, regions, n_examples)
    table.to_csv(output_table, index=False)
    if output_summary is not None:
        Path(output_summary).write_text(
            json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8"
        )
    return table
