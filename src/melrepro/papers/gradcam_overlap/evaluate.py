"""gradcam_overlap evaluation: Grad-CAM maps and exact Jaccard curves, then the paper's statistics.

:func:`compute_overlap` (rule ``compute_gradcam_overlap``, one task-2 shard, one model) writes
the maps and the per-image overlap table; :func:`class_metrics`, :func:`jaccard_stats`,
:func:`mann_whitney` and :func:`overlap_tables` turn predictions and overlap tables into the
numbers of tables 0 and 2-6 (written by :mod:`.tables`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.data.cellcounts import CHANNELS
from melrepro.papers.gradcam_overlap import (
    CLASSES,
    FEATURE_LABELS,
    THRESHOLDS,
    jaccard_column,
)
from melrepro.papers.gradcam_overlap.datasets import analysis_set, read_cache_subset
from melrepro.papers.gradcam_overlap.train import load_options

__all__ = [
    "BOUND_COLUMNS",
    "best_threshold",
    "class_metrics",
    "compute_overlap",
    "jaccard_stats",
    "mann_whitney",
    "overlap_tables",
    "read_overlap_tables",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Grad-CAM and overlap


def _gradcam_maps(
    model: Any,
    target: Any,
    rows: pd.DataFrame,
    images: dict[str, np.ndarray],
    grid: Sequence[int],
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer-resolution Grad-CAM maps, predicted classes and constant-map flags of ``rows``."""
    import torch

    from melrepro.methods import saliency

    keys = rows["isic2019_id"].fillna(rows["image_id"])  # no ISIC 2019 copy: the task-2 image
    x = (
        torch.stack([torch.from_numpy(images[i]).permute(2, 0, 1) for i in keys]).to(torch.float32)
        / 255.0
        if len(rows)
        else torch.zeros(0, 3, 1, 1)
    )
    if len(rows):
        maps, classes, constant = saliency.gradcam_layer_maps(
            model, x, target, batch_size=batch_size
        )
    else:
        maps = np.zeros((0, *grid), np.float32)
        classes, constant = np.zeros(0, int), np.zeros(0, bool)
    return maps, classes, constant


def _overlap_table(
    rows: pd.DataFrame,
    maps: np.ndarray,
    classes: np.ndarray,
    constant: np.ndarray,
    counts: dict[str, Any],
) -> pd.DataFrame:
    """One row per image: prediction, constant flag, and per channel ``has__`` and Jaccards."""
    from melrepro.methods import saliency

    table = rows[["image_id", "isic2019_id", "label", "isic2019_split"]].copy()
    table["predicted"] = [CLASSES[c] for c in classes]
    table["correct"] = table["predicted"] == table["label"]
    table["constant_map"] = constant
    jac = np.full((len(rows), len(CHANNELS), len(THRESHOLDS)), np.nan)
    has = np.zeros((len(rows), len(CHANNELS)), bool)
    oracle = np.full((len(rows), len(CHANNELS)), np.nan)
    white = np.full((len(rows), len(CHANNELS)), np.nan)
    for i, image_id in enumerate(rows["image_id"]):
        pixels, masks = counts[image_id]
        jac[i] = saliency.cell_jaccard(maps[i], pixels, masks, THRESHOLDS)
        has[i] = masks.sum(axis=(1, 2)) > 0
        oracle[i] = saliency.cell_oracle_jaccard(pixels, masks)
        white[i] = saliency.cell_white_jaccard(pixels, masks)
    for k, channel in enumerate(CHANNELS):
        table[f"has__{channel}"] = has[:, k]
        # the ceiling (best union of cells of this grid) and the trivial all-white map
        table[f"oracle__{channel}"] = oracle[:, k]
        table[f"white__{channel}"] = white[:, k]
        for j, t in enumerate(THRESHOLDS):
            table[jaccard_column(channel, t)] = jac[:, k, j]
    return table


def _task2_images(
    rows: pd.DataFrame, archive_root: str | Path | None, size: int
) -> dict[str, np.ndarray]:
    """The rows' images that have no ISIC 2019 copy, from the task-2 archive at ``size`` px."""
    if "task2_uri" not in rows or rows["task2_uri"].isna().all():
        return {}
    if archive_root is None:
        raise ValueError(
            f"{int(rows['task2_uri'].notna().sum())} task-2 image(s) have no ISIC 2019 copy; "
            "pass task2_archive to read them"
        )
    from PIL import Image

    from melrepro.data.archive_io import ArchiveFolder
    from melrepro.data.imagecache import resize_image

    out = {}
    with ArchiveFolder(archive_root) as archive:
        for image_id, uri in rows.loc[rows["task2_uri"].notna(), ["image_id", "task2_uri"]].values:
            with Image.open(io.BytesIO(archive.read(uri))) as image:
                out[image_id] = resize_image(image.convert("RGB"), (size, size))
    return out


def compute_overlap(
    join_path: str | Path,
    model_path: str | Path,
    metrics_path: str | Path,
    cache_paths: Sequence[str | Path],
    cellcount_paths: Sequence[str | Path],
    *,
    shard: int,
    layer: str,
    grid: Sequence[int],
    maps_path: str | Path,
    table_path: str | Path,
    batch_size: int = 16,
    threads: int = 1,
    task2_archive: str | Path | None = None,
) -> pd.DataFrame:
    """Grad-CAM maps and per-image Jaccard curves of one task-2 shard for one model.

    A task-2 image without an ISIC 2019 copy (``task2_uri`` set by
    :func:`~melrepro.papers.gradcam_overlap.datasets.join_task2`) is read from ``task2_archive``
    and resized as the cache resizes (:func:`melrepro.data.imagecache.resize_image`).

    Every task-2 image of the shard gets a map (the predicted class, pre-softmax logit, layer
    ``layer`` kept at its ``grid`` resolution, min-max normalised) and, for every channel
    (five features, union), its Jaccard at every threshold of :data:`THRESHOLDS` (NaN where the
    mask is empty). The table has one row per image: ``image_id, isic2019_id, label,
    isic2019_split, predicted, correct, constant_map, has__<channel>, J__<channel>__<t>``, and
    per channel ``oracle__<channel>`` (the best Jaccard any map of this grid can reach,
    :func:`~melrepro.methods.saliency.cell_oracle_jaccard`) and ``white__<channel>`` (the
    all-white map's, :func:`~melrepro.methods.saliency.cell_white_jaccard`).
    """
    import torch

    from melrepro.data.cellcounts import read_cell_counts
    from melrepro.methods import training

    if threads:
        torch.set_num_threads(threads)
    join = pd.read_parquet(join_path)
    rows = join[join["shard"] == shard].reset_index(drop=True)
    options = load_options(metrics_path)
    model = training.load_model(model_path, options)
    target = training.keras_layer(model, layer)
    # DEVIATION: the paper computes Grad-CAM on the task-2 images -> on each image's ISIC 2019 copy
    # (the same photograph, some stored downsampled) from the classifier's cache, so the input is
    # exactly what the classifier saw; the maps are then compared to the task-2 masks as in the paper.
    images = read_cache_subset(cache_paths, set(rows["isic2019_id"].dropna()))
    images |= _task2_images(rows, task2_archive, options.image_size)
    maps, classes, constant = _gradcam_maps(model, target, rows, images, grid, batch_size)
    if maps.shape[1:] != tuple(grid):
        raise ValueError(
            f"layer {layer} gives {maps.shape[1:]} maps at {options.image_size} px, config grid "
            f"is {tuple(grid)}: fix gradcam_overlap.models.<model>.grid"
        )
    counts = read_cell_counts(list(cellcount_paths))
    table = _overlap_table(rows, maps, classes, constant, counts)
    Path(table_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(table_path, index=False)
    np.savez_compressed(
        maps_path, maps=maps, image_id=rows["image_id"].to_numpy(str), classes=classes
    )
    logger.info(
        "shard %d: %d maps %s, %d constant, %d distinct predictions",
        shard,
        len(rows),
        tuple(grid),
        int(constant.sum()),
        table["predicted"].nunique(),
    )
    return table


def read_overlap_tables(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The per-shard tables of :func:`compute_overlap`, concatenated."""
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# statistics


def class_metrics(labels: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
    """Table 0 block of one model: per-class one-vs-rest accuracy and sensitivity, then overall
    accuracy, balanced accuracy (mean sensitivity) and n in a row ``All``."""
    y = np.asarray(labels, dtype=object)
    p = np.asarray(predictions, dtype=object)
    rows = []
    sens = []
    for c in CLASSES:
        n_c = int((y == c).sum())
        acc = float(((p == c) == (y == c)).mean()) if len(y) else np.nan
        s = float(((p == c) & (y == c)).sum() / n_c) if n_c else np.nan
        sens.append(s)
        rows.append({"Class": c, "Accuracy": acc, "Sensitivity": s, "n": n_c})
    rows.append(
        {
            "Class": "All",
            "Overall accuracy": float((p == y).mean()) if len(y) else np.nan,
            "Balanced accuracy": float(np.nanmean(sens)) if np.isfinite(sens).any() else np.nan,
            "n": len(y),
        }
    )
    return pd.DataFrame(rows)


def best_threshold(values: np.ndarray) -> int:
    """Index of the threshold with the largest mean Jaccard (ties: the lowest threshold).

    ``values`` is (n_images, n_thresholds); -1 when there are no images.
    """
    if len(values) == 0:
        return -1
    means = np.nanmean(values, axis=0)
    return int(np.flatnonzero(means == np.nanmax(means))[0])


def jaccard_stats(values: np.ndarray, at: int | None = None) -> dict[str, float]:
    """Best threshold (or ``at``), J-min, J-mean, J-SD (ddof 1) and J-max of (n, T) values."""
    j = best_threshold(values) if at is None else at
    if j < 0 or len(values) == 0:
        return {
            "Best Thr.": np.nan,
            "J-min": np.nan,
            "J-mean": np.nan,
            "J-SD": np.nan,
            "J-max": np.nan,
        }
    col = values[:, j]
    return {
        "Best Thr.": THRESHOLDS[j],
        "J-min": float(np.min(col)),
        "J-mean": float(np.mean(col)),
        "J-SD": float(np.std(col, ddof=1)) if len(col) > 1 else np.nan,
        "J-max": float(np.max(col)),
    }


def mann_whitney(correct: np.ndarray, wrong: np.ndarray) -> dict[str, float]:
    """``scipy.stats.mannwhitneyu`` (two-sided, asymptotic, continuity) of correct vs wrong.

    U is the statistic of the first (correct) group; z is the normal approximation's.
    """
    from scipy import stats

    n1, n2 = len(correct), len(wrong)
    if n1 == 0 or n2 == 0:
        return {"U": np.nan, "p-value": np.nan, "n1": n1, "n2": n2, "z": np.nan}
    res = stats.mannwhitneyu(correct, wrong, alternative="two-sided", method="asymptotic")
    return {
        "U": float(res.statistic),
        "p-value": float(res.pvalue),
        "n1": n1,
        "n2": n2,
        "z": float(stats.norm.isf(res.pvalue / 2)) * np.sign(res.statistic - n1 * n2 / 2),
    }


def _values(frame: pd.DataFrame, channel: str) -> np.ndarray:
    return frame[[jaccard_column(channel, t) for t in THRESHOLDS]].to_numpy(dtype=float)


#: Columns beside every Jaccard row: where the model's J-mean sits between these two.
BOUND_COLUMNS = ("Oracle J-mean", "All-white J-mean")


def _bounds(frame: pd.DataFrame, channel: str) -> dict[str, float]:
    """Mean oracle ceiling and mean all-white Jaccard of ``frame``'s images (NaN when none).

    Older overlap tables without these columns give NaN.
    """
    out = {}
    for name, prefix in zip(BOUND_COLUMNS, ("oracle", "white"), strict=True):
        column = f"{prefix}__{channel}"
        values = frame[column].to_numpy(dtype=float) if column in frame else np.array([])
        out[name] = float(np.mean(values)) if len(values) else np.nan
    return out


def overlap_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Tables 2/3 (per feature), 4/5 (union by class and correctness) and the rows of table 6
    for one model's analysis set.

    Every row of tables 2-5 also has :data:`BOUND_COLUMNS`: the mean over the same images of
    the best Jaccard any map of the model's grid can reach and of the all-white map's.
    """
    data = analysis_set(table)
    per_feature = []
    for channel in CHANNELS:
        subset = data[data[f"has__{channel}"]]
        stats = jaccard_stats(_values(subset, channel))
        per_feature.append(
            {
                "Feature": FEATURE_LABELS[channel],
                "n": len(subset),
                **stats,
                **_bounds(subset, channel),
            }
        )
    t23 = pd.DataFrame(per_feature).set_index("Feature")
    union = _values(data, "union")
    g = best_threshold(union)
    groups = []
    mw = []
    for cls in ("MEL", "NV"):
        parts = {}
        for outcome in ("correct", "wrong"):
            mask = (data["label"] == cls) & (data["correct"] == (outcome == "correct"))
            values = union[mask.to_numpy()]
            parts[outcome] = values
            own = jaccard_stats(values)
            at_global = jaccard_stats(values, at=g) if g >= 0 else jaccard_stats(values[:0])
            groups.append(
                {
                    "Feature": f"{cls}-{outcome}",
                    "count": int(mask.sum()),
                    "Best Thr.": own["Best Thr."],
                    "J-mean": own["J-mean"],
                    "J-SD": own["J-SD"],
                    "J-max": own["J-max"],
                    "Global Thr.": THRESHOLDS[g] if g >= 0 else np.nan,
                    "J-mean @global": at_global["J-mean"],
                    "J-SD @global": at_global["J-SD"],
                    "J-max @global": at_global["J-max"],
                    **_bounds(data[mask], "union"),
                }
            )
        j = g if g >= 0 else 0
        mw.append(
            {
                "Vs.": f"{cls}-cor vs {cls}-wr",
                "Threshold": THRESHOLDS[g] if g >= 0 else np.nan,
                **mann_whitney(parts["correct"][:, j], parts["wrong"][:, j]),
            }
        )
    return {
        "features": t23,
        "groups": pd.DataFrame(groups).set_index("Feature"),
        "mann_whitney": pd.DataFrame(mw),
    }
