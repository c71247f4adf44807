"""gradcam_overlap: Grad-CAM of VGG16 and ResNet50 vs the ISIC 2018 task-2 feature masks.

Path-level functions called by the rules of ``workflow/rules/gradcam_overlap.smk`` (paper 004,
Nunnari, Kadir & Sonntag 2021; settings the paper leaves open come from its toolkit TIML, see
``shared/specs/gradcam_overlap.md``):

1. :func:`train_classifier` trains one 8-class ISIC 2019 classifier (VGG16 at 450 px, ResNet50
   at 227 px, Flatten-MLP heads, SGD + Nesterov, inverse-time decay, class-weighted CE, best
   checkpoint by validation accuracy) on the ``class_floor_80_10_10`` split and predicts val/test.
2. :func:`join_task2` labels the task-2 images with their ISIC 2019 ground truth.
3. :func:`compute_overlap` (one task-2 shard, one model): Grad-CAM of the predicted class at the
   paper's layer, kept at layer resolution, and the exact Jaccard of every threshold with every
   mask from the per-cell pixel counts (:mod:`melrepro.data.cellcounts`).
4. :func:`tabulate` writes table00-table06 (plus test-split-only supplements and the fig04/fig05
   Jaccard CSVs); the ``plot_*`` functions draw fig01-fig05.

Artifact index (id: function that writes it):

    table00-table06  tabulate (table00 from train_classifier predictions)
    fig01            plot_example_masks
    fig02            plot_saliency_example
    fig03            plot_jaccard_histograms
    fig04, fig05     plot_thresholds (and their CSVs from tabulate)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.data.cellcounts import CHANNELS

__all__ = [
    "CLASSES",
    "FEATURE_LABELS",
    "THRESHOLDS",
    "best_threshold",
    "class_metrics",
    "class_weights",
    "join_task2",
    "jaccard_stats",
    "mann_whitney",
    "tabulate",
    "train_classifier",
]

logger = logging.getLogger(__name__)

#: The ISIC 2019 training classes in ground-truth column order (UNK has no training images).
CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
#: Paper 004's column names of the five features and the union (Tables 1-3).
FEATURE_LABELS = {
    "globules": "Globules",
    "milia_like_cyst": "Mil.",
    "negative_network": "Neg. net.",
    "pigment_network": "Pig. net.",
    "streaks": "Streaks",
    "union": "Union",
}
#: Thresholds of §5: 0.0, 0.1, ..., 1.0.
THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(11))
_SPLITS = ("train", "val", "test")


def _jcol(channel: str, t: float) -> str:
    return f"J__{channel}__{t:.1f}"


# ---------------------------------------------------------------------------------------------
# training


def class_weights(labels: np.ndarray, n_classes: int) -> list[float]:
    """TIML's class weights ``max_c f_c / f_c`` from the training labels (0..n_classes-1).

    Raises
    ------
    ValueError
        A class without training images (its weight would be infinite).
    """
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes)
    if (counts == 0).any():
        empty = [
            CLASSES[i] if n_classes == len(CLASSES) else i for i in np.flatnonzero(counts == 0)
        ]
        raise ValueError(f"classes {empty} have no training images; class weights need every class")
    return [float(counts.max() / c) for c in counts]


def _read_cache_subset(paths: Sequence[str | Path], ids: set[str]) -> dict[str, np.ndarray]:
    """Only the ``image__<id>`` arrays of ``ids`` from image-cache shards (npz reads lazily)."""
    out: dict[str, np.ndarray] = {}
    for path in paths:
        with np.load(path) as data:
            for key in data.files:
                if key.startswith("image__") and key.split("__", 1)[1] in ids:
                    out[key.split("__", 1)[1]] = data[key]
    missing = sorted(ids - set(out))
    if missing:
        raise ValueError(
            f"{len(missing)} images are not in the cache {list(paths)[:2]}..., e.g. {missing[:5]}"
        )
    return out


class _Dihedral:
    """Random flip / quarter turn per draw (the default's stand-in for TIML's x8 expansion)."""

    def __call__(self, x: Any) -> Any:
        import torch

        k = int(torch.randint(0, 8, (1,)))
        x = torch.rot90(x, k % 4, dims=(1, 2))
        if k >= 4:
            x = torch.flip(x, dims=(2,))
        return x.to(torch.float32) / 255.0


def _dihedral8(images: list[np.ndarray], labels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """TIML's ``hflip_rot4`` preset: every image in its 8 flips and quarter turns."""
    out = []
    for im in images:
        for flip in (False, True):
            base = im[:, ::-1] if flip else im
            out += [np.ascontiguousarray(np.rot90(base, k)) for k in range(4)]
    return out, np.repeat(labels, 8)


def _datasets(frame: pd.DataFrame, images: dict[str, np.ndarray], augment: str) -> dict[str, Any]:
    from melrepro.methods import training

    out = {}
    for split in _SPLITS:
        rows = frame[frame["split"] == split]
        stack = [images[i] for i in rows["image_id"]]
        y = rows["y"].to_numpy()
        transform = None
        if augment == "dihedral8" and split in ("train", "val"):
            stack, y = _dihedral8(stack, y)
        elif augment == "random_dihedral" and split == "train":
            transform = _Dihedral()
        out[split] = training.ArrayDataset(stack, y, transform)
    return out


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

    Parameters
    ----------
    manifest_path, split_path : path
        ``isic2019`` manifest and its ``class_floor_80_10_10`` split.
    cache_paths : sequence of path
        Image-cache shards at ``sq<image_size>`` (whole image squashed to a square, paper 004).
    model_key : str
        ``vgg16`` or ``resnet50`` (used in logs and outputs).
    settings : mapping
        ``augment`` (dihedral8, random_dihedral, none), ``class_weighting`` (max_over_f, none)
        and :class:`~melrepro.methods.training.TrainOptions` keys (backbone, image_size, head...).
    run_info : mapping
        ``data_source``, ``seed``, ``pretrained``, ``device``.

    Returns
    -------
    dict
        The content of ``metrics_path``.
    """
    import torch

    from melrepro.methods import training

    settings = dict(settings)
    augment = settings.pop("augment", "dihedral8")
    weighting = settings.pop("class_weighting", "max_over_f")
    settings.pop("label", None)
    for key in ("layer", "grid"):
        settings.pop(key, None)
    manifest = pd.read_parquet(manifest_path)
    split = pd.read_parquet(split_path)[["image_id", "split"]]
    frame = manifest[["image_id", "label"]].merge(split, on="image_id", how="inner")
    frame = frame[frame["split"].isin(_SPLITS) & frame["label"].isin(CLASSES)].reset_index(
        drop=True
    )
    frame["image_id"] = frame["image_id"].astype(str)
    frame["y"] = frame["label"].map({c: i for i, c in enumerate(CLASSES)}).astype(int)
    train_y = frame.loc[frame["split"] == "train", "y"].to_numpy()
    weights = class_weights(train_y, len(CLASSES)) if weighting == "max_over_f" else None
    options = training.TrainOptions.from_dict(
        settings,
        n_classes=len(CLASSES),
        loss="ce",
        class_weights=weights,
        seed=int(run_info["seed"]),
        pretrained=bool(run_info["pretrained"]),
        device=str(run_info["device"]),
        threads=threads,
    )
    images = _read_cache_subset(cache_paths, set(frame["image_id"]))
    size = int(options.image_size)
    bad = [i for i, im in images.items() if im.shape[:2] != (size, size)]
    if bad:
        raise ValueError(
            f"cache images are not {size}x{size} (e.g. {bad[0]} is {images[bad[0]].shape[:2]}); "
            f"read the cache at sq{size}"
        )
    data = _datasets(frame, images, augment)
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
    preds = pd.concat(parts, ignore_index=True)
    Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
    preds.to_parquet(predictions_path, index=False)
    training.export_best(checkpoint_dir, model_path)
    test = preds[preds["split"] == "test"]
    info = {
        "model": model_key,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_score,
        "epochs_run": len(result.history),
        "train_seconds": float(result.history["seconds"].sum()),
        "test_accuracy": float((test["prediction"] == test["label"]).mean()),
        "n_predicted_classes": int(test["prediction"].nunique()),
        # across test images, averaged over the classes: near 0 for a constant (degenerate) model
        "test_probability_sd": float(test[[f"p_{c}" for c in CLASSES]].std(ddof=1).mean()),
        "n_images": frame.groupby("split").size().to_dict(),
        "class_weights": weights,
        "augment": augment,
        "device": result.device,
        "weights": result.weights,
        "options": options.to_dict(),
    }
    Path(metrics_path).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    from melrepro.report.runinfo import write_run_info

    write_run_info(
        Path(metrics_path).parent,
        data_source=run_info["data_source"],
        config=dict(settings) | {"augment": augment, "class_weighting": weighting},
        seed=options.seed,
        weights=result.weights,
        device=result.device,
        resumed_from_epoch=result.resumed_from_epoch,
    )
    return info


def load_options(metrics_path: str | Path) -> Any:
    """The TrainOptions a model was trained with (from its metrics.json)."""
    from melrepro.methods import training

    options = json.loads(Path(metrics_path).read_text(encoding="utf-8"))["options"]
    return training.TrainOptions.from_dict(options)


# ---------------------------------------------------------------------------------------------
# join and overlap


def join_task2(
    task2_manifest: str | Path | pd.DataFrame,
    isic2019_manifest: str | Path | pd.DataFrame,
    isic2019_split: str | Path | pd.DataFrame,
    output: str | Path | None = None,
) -> pd.DataFrame:
    """Every task-2 training image with its ISIC 2019 id, label and classifier split.

    ISIC 2019 stores part of the images as ``<id>_downsampled``; the suffix is stripped to join.

    Raises
    ------
    ValueError
        Task-2 images without an ISIC 2019 row (named).
    """

    def read(x: Any) -> pd.DataFrame:
        return x if isinstance(x, pd.DataFrame) else pd.read_parquet(x)

    t2 = read(task2_manifest)
    m19 = read(isic2019_manifest)[["image_id", "label"]].copy()
    s19 = read(isic2019_split)[["image_id", "split"]]
    m19 = m19.merge(s19, on="image_id", how="left")
    m19["isic2019_id"] = m19["image_id"].astype(str)
    m19["image_id"] = m19["isic2019_id"].str.removesuffix("_downsampled")
    frame = t2[["image_id", "width", "height", "shard"]].copy()
    frame["image_id"] = frame["image_id"].astype(str)
    frame = frame.merge(m19.rename(columns={"split": "isic2019_split"}), on="image_id", how="left")
    missing = frame.loc[frame["isic2019_id"].isna(), "image_id"].tolist()
    if missing:
        raise ValueError(
            f"{len(missing)} ISIC 2018 task-2 images have no ISIC 2019 ground-truth row "
            f"(also tried <id>_downsampled), e.g. {missing[:5]}"
        )
    frame["isic2019_split"] = frame["isic2019_split"].fillna("none").astype(str)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(output, index=False)
    return frame


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
) -> pd.DataFrame:
    """Grad-CAM maps and per-image Jaccard curves of one task-2 shard for one model.

    Every task-2 image of the shard gets a map (the predicted class, pre-softmax logit, layer
    ``layer`` kept at its ``grid`` resolution, min-max normalised) and, for every channel
    (five features, union), its Jaccard at every threshold of :data:`THRESHOLDS` (NaN where the
    mask is empty). The table has one row per image: ``image_id, isic2019_id, label,
    isic2019_split, predicted, correct, constant_map, has__<channel>, J__<channel>__<t>``.
    """
    import torch

    from melrepro.data.cellcounts import read_cell_counts
    from melrepro.methods import cnn_heads, saliency, training

    if threads:
        torch.set_num_threads(threads)
    join = pd.read_parquet(join_path)
    rows = join[join["shard"] == shard].reset_index(drop=True)
    options = load_options(metrics_path)
    model = training.load_model(model_path, options)
    target = cnn_heads.keras_layer(model, layer)
    images = _read_cache_subset(cache_paths, set(rows["isic2019_id"]))
    x = (
        torch.stack([torch.from_numpy(images[i]).permute(2, 0, 1) for i in rows["isic2019_id"]]).to(
            torch.float32
        )
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
    if maps.shape[1:] != tuple(grid):
        raise ValueError(
            f"layer {layer} gives {maps.shape[1:]} maps at {options.image_size} px, config grid "
            f"is {tuple(grid)}: fix gradcam_overlap.models.<model>.grid"
        )
    counts = read_cell_counts(list(cellcount_paths))
    table = rows[["image_id", "isic2019_id", "label", "isic2019_split"]].copy()
    table["predicted"] = [CLASSES[c] for c in classes]
    table["correct"] = table["predicted"] == table["label"]
    table["constant_map"] = constant
    jac = np.full((len(rows), len(CHANNELS), len(THRESHOLDS)), np.nan)
    has = np.zeros((len(rows), len(CHANNELS)), bool)
    for i, image_id in enumerate(rows["image_id"]):
        pixels, masks = counts[image_id]
        jac[i] = saliency.cell_jaccard(maps[i], pixels, masks, THRESHOLDS)
        has[i] = masks.sum(axis=(1, 2)) > 0
    for k, channel in enumerate(CHANNELS):
        table[f"has__{channel}"] = has[:, k]
        for j, t in enumerate(THRESHOLDS):
            table[_jcol(channel, t)] = jac[:, k, j]
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


# ---------------------------------------------------------------------------------------------
# statistics and tables


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
    return frame[[_jcol(channel, t) for t in THRESHOLDS]].to_numpy(dtype=float)


def analysis_set(table: pd.DataFrame) -> pd.DataFrame:
    """MEL and NV task-2 images with a non-empty union (the paper's 1,963)."""
    return table[table["label"].isin(["MEL", "NV"]) & table["has__union"]].reset_index(drop=True)


def overlap_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Tables 2/3 (per feature), 4/5 (union by class and correctness) and the rows of table 6
    for one model's analysis set."""
    data = analysis_set(table)
    per_feature = []
    for channel in CHANNELS:
        subset = data[data[f"has__{channel}"]]
        stats = jaccard_stats(_values(subset, channel))
        per_feature.append({"Feature": FEATURE_LABELS[channel], "n": len(subset), **stats})
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


def _read_tables(paths: Sequence[str | Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def tabulate(
    predictions: Mapping[str, str | Path],
    overlap_tables_paths: Mapping[str, Sequence[str | Path]],
    labels: Mapping[str, str],
    *,
    paper_values_path: str | Path,
    example: str,
    tables_dir: str | Path,
    run_info: Mapping[str, Any],
) -> dict[str, pd.DataFrame]:
    """Write table00-table06, the test-split supplements and fig04/fig05's Jaccard CSVs.

    Parameters
    ----------
    predictions : model key -> predictions.parquet of :func:`train_classifier`
    overlap_tables_paths : model key -> the per-shard tables of :func:`compute_overlap`
    labels : model key -> label in the tables (VGG16, RESNET50); the first model is the paper's
        VGG16 (table02, table04, fig03, fig04), the second its ResNet50.
    paper_values_path : path
        ``config/paper_values/gradcam_overlap.csv``: table06 flags paper U values above n1 n2.
    example : str
        The task-2 image of fig04/fig05 (``ISIC_0000013`` on the real data).
    """
    from melrepro.report.runinfo import write_run_info
    from melrepro.report.scorecard import read_paper_values
    from melrepro.report.tables import write_table

    tables_dir = Path(tables_dir)
    models = list(predictions)
    out: dict[str, pd.DataFrame] = {}
    blocks = []
    for key in models:
        preds = pd.read_parquet(predictions[key])
        test = preds[preds["split"] == "test"]
        block = class_metrics(test["label"], test["prediction"])
        block.insert(0, "Model", labels[key])
        blocks.append(block)
    out["table00"] = pd.concat(blocks, ignore_index=True).set_index(["Model", "Class"])

    overlap = {key: _read_tables(overlap_tables_paths[key]) for key in models}
    first = overlap[models[0]]
    mel_nv = first[first["label"].isin(["MEL", "NV"])]
    counts = {FEATURE_LABELS[c]: int(mel_nv[f"has__{c}"].sum()) for c in CHANNELS}
    counts |= {
        "Samples": len(mel_nv),
        "MEL": int((mel_nv["label"] == "MEL").sum()),
        "NV": int((mel_nv["label"] == "NV").sum()),
        "All task-2 images": len(first),
    }
    counts |= {f"Constant maps {labels[k]}": int(overlap[k]["constant_map"].sum()) for k in models}
    out["table01"] = pd.DataFrame([{"Images": "MEL+NV", **counts}]).set_index("Images")

    paper = read_paper_values(paper_values_path)
    paper_u = paper[(paper["artifact"] == "table06") & (paper["column"] == "U")]
    paper_n = paper[paper["artifact"].isin(["table04", "table05"]) & (paper["column"] == "count")]
    for subset_name, restrict in (("", None), ("_test", "test")):
        mw_rows = []
        for key, table_id, group_id in zip(
            models, ("table02", "table03"), ("table04", "table05"), strict=False
        ):
            table = overlap[key]
            if restrict:
                table = table[table["isic2019_split"] == restrict]
            result = overlap_tables(table)
            out[f"{table_id}{subset_name}"] = result["features"]
            out[f"{group_id}{subset_name}"] = result["groups"]
            mw = result["mann_whitney"]
            mw.insert(0, "Model", labels[key])
            mw["U exceeds n1 n2"] = mw["U"] > mw["n1"] * mw["n2"]
            if not restrict:
                for i, row in mw.iterrows():
                    cls = row["Vs."].split("-")[0]
                    u = paper_u.loc[paper_u["row"] == f"{labels[key]} / {row['Vs.']}", "value"]
                    # paper values are read as printed (strings): compare as numbers
                    n = pd.to_numeric(
                        paper_n[paper_n["artifact"] == group_id].set_index("row")["value"],
                        errors="coerce",
                    )
                    n1, n2 = n.get(f"{cls}-correct"), n.get(f"{cls}-wrong")
                    mw.loc[i, "paper U"] = float(u.iloc[0]) if len(u) else np.nan
                    mw.loc[i, "paper U exceeds paper n1 n2"] = bool(
                        len(u)
                        and n1 is not None
                        and n2 is not None
                        and float(u.iloc[0]) > float(n1) * float(n2)
                    )
            mw_rows.append(mw)
        out[f"table06{subset_name}"] = pd.concat(mw_rows, ignore_index=True).set_index(
            ["Model", "Vs."]
        )

    for key, fig_id in zip(models, ("fig04", "fig05"), strict=False):
        row = overlap[key][overlap[key]["image_id"] == example]
        if row.empty:
            raise ValueError(f"example image {example!r} is not among the task-2 images")
        out[fig_id] = pd.DataFrame(
            {
                "Threshold": [f"{t:.1f}" for t in THRESHOLDS],
                "Jaccard": [float(row.iloc[0][_jcol("union", t)]) for t in THRESHOLDS],
            }
        ).set_index("Threshold")

    titles = {
        "table00": "Table 0 (paper §3): ISIC 2019 test split, per-class accuracy and sensitivity",
        "table01": "Table 1: task-2 MEL+NV images with a non-empty mask",
        "table02": f"Table 2: {labels[models[0]]} best threshold and Jaccard per feature",
        "table03": f"Table 3: {labels[models[-1]]} best threshold and Jaccard per feature",
        "table04": f"Table 4: {labels[models[0]]} union, MEL/NV x correct/wrong",
        "table05": f"Table 5: {labels[models[-1]]} union, MEL/NV x correct/wrong",
        "table06": "Table 6: Mann-Whitney U, correct vs wrong, at the global union threshold",
        "fig04": f"Fig. 4: {labels[models[0]]} Jaccard of {example} by threshold",
        "fig05": f"Fig. 5: {labels[models[-1]]} Jaccard of {example} by threshold",
    }
    for name, df in out.items():
        base = name.removesuffix("_test")
        title = titles.get(base, name)
        if name.endswith("_test"):
            title += " (supplement: only images in the classifier's test split)"
        write_table(df, tables_dir / f"{name}.csv", title=title)
    write_run_info(
        tables_dir,
        data_source=run_info["data_source"],
        config={"labels": dict(labels), "example": example},
        seed=run_info.get("seed"),
        weights="see results/gradcam_overlap/models/<model>/run_info.json",
    )
    return out


# ---------------------------------------------------------------------------------------------
# figures (no torch: matplotlib, PIL and the archive)


def _example_record(manifest_path: str | Path, example: str) -> Any:
    manifest = pd.read_parquet(manifest_path)
    rows = manifest[manifest["image_id"].astype(str) == example]
    if rows.empty:
        raise ValueError(f"{manifest_path}: no image {example!r} (gradcam_overlap.example)")
    return rows.iloc[0]


def _read_image(archive_root: str | Path, uri: str, grey: bool = False) -> np.ndarray:
    import io

    from PIL import Image

    from melrepro.data.archive_io import ArchiveFolder

    with ArchiveFolder(archive_root) as archive, Image.open(io.BytesIO(archive.read(uri))) as im:
        return np.asarray(im.convert("L" if grey else "RGB"))


def _example_masks(
    manifest_path: str | Path, archive_root: str | Path, example: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from melrepro.data.layouts import ATTRIBUTES

    record = _example_record(manifest_path, example)
    image = _read_image(archive_root, record["image_uri"])
    masks = {"segmentation": _read_image(archive_root, record["mask_uri"], grey=True) > 127}
    union = np.zeros(image.shape[:2], bool)
    for name in ATTRIBUTES:
        m = _read_image(archive_root, record[f"attr_{name}_uri"], grey=True) > 127
        masks[name] = m
        union |= m
    masks["union"] = union
    return image, masks


def plot_example_masks(
    manifest_path: str | Path, archive_root: str | Path, example: str, output: str | Path
) -> list[str]:
    """fig01: the example image, its task-1 segmentation, its non-empty feature masks and union."""
    from melrepro.report.figures import new_figure, save_figure

    image, masks = _example_masks(manifest_path, archive_root, example)
    shown = ["segmentation"] + [k for k in CHANNELS[:-1] if masks[k].any()] + ["union"]
    fig, axes = new_figure(1, len(shown) + 1, figsize=(2.4 * (len(shown) + 1), 2.6))
    axes[0].imshow(image)
    axes[0].set_title(example, fontsize=9)
    for ax, name in zip(axes[1:], shown, strict=True):
        ax.imshow(masks[name], cmap="gray", vmin=0, vmax=1)
        ax.set_title(FEATURE_LABELS.get(name, name), fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    save_figure(fig, output)
    return shown


def _example_map(maps_paths: Sequence[str | Path], example: str) -> tuple[np.ndarray, int]:
    for path in maps_paths:
        with np.load(path) as data:
            ids = list(data["image_id"])
            if example in ids:
                i = ids.index(example)
                return data["maps"][i], int(data["classes"][i])
    raise ValueError(f"no saliency map of {example!r} in {list(maps_paths)}")


def upsample_nearest(saliency: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour upsampling with the cell convention of :mod:`melrepro.data.cellcounts`."""
    from melrepro.data.cellcounts import cell_index

    h, w = saliency.shape
    return saliency[cell_index(height, h)][:, cell_index(width, w)]


def plot_saliency_example(
    manifest_path: str | Path,
    archive_root: str | Path,
    maps: Mapping[str, Sequence[str | Path]],
    labels: Mapping[str, str],
    example: str,
    output: str | Path,
) -> None:
    """fig02: the example image, then per model its grey saliency map and JET heat map."""
    import matplotlib

    from melrepro.report.figures import new_figure, save_figure

    record = _example_record(manifest_path, example)
    image = _read_image(archive_root, record["image_uri"])
    fig, axes = new_figure(1, 1 + 2 * len(maps), figsize=(2.4 * (1 + 2 * len(maps)), 2.8))
    axes[0].imshow(image)
    axes[0].set_title(example, fontsize=9)
    jet = matplotlib.colormaps["jet"]
    for k, (key, paths) in enumerate(maps.items()):
        s, cls = _example_map(paths, example)
        up = upsample_nearest(s, *image.shape[:2])
        axes[1 + 2 * k].imshow((255 * up).astype(np.uint8), cmap="gray", vmin=0, vmax=255)
        axes[1 + 2 * k].set_title(f"{labels[key]} saliency ({CLASSES[cls]})", fontsize=9)
        axes[2 + 2 * k].imshow(jet(up)[..., :3])
        axes[2 + 2 * k].set_title(f"{labels[key]} heat map", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    save_figure(fig, output)


def plot_jaccard_histograms(
    table_paths: Sequence[str | Path], label: str, output: str | Path, threshold: float = 0.5
) -> None:
    """fig03: 2x3 histograms of the Jaccard at ``threshold`` per feature and union (one model)."""
    from melrepro.report.figures import new_figure, save_figure

    data = analysis_set(_read_tables(table_paths))
    fig, axes = new_figure(2, 3, figsize=(10, 6), sharex=True)
    for ax, channel in zip(axes.ravel(), CHANNELS, strict=True):
        values = data.loc[data[f"has__{channel}"], _jcol(channel, threshold)].dropna()
        ax.hist(values, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
        ax.set_title(f"{FEATURE_LABELS[channel]} (n = {len(values)})", fontsize=10)
        ax.set_xlabel(f"Jaccard at {threshold:.1f}")
        ax.set_ylabel("images")
    fig.suptitle(f"{label}: Jaccard of the thresholded saliency map with each feature")
    save_figure(fig, output)


def plot_thresholds(
    manifest_path: str | Path,
    archive_root: str | Path,
    maps_paths: Sequence[str | Path],
    jaccard_csv: str | Path,
    label: str,
    example: str,
    output: str | Path,
) -> None:
    """fig04/fig05: the example's saliency thresholded at 0.0 ... 1.0, with the union Jaccard."""
    from melrepro.report.figures import new_figure, save_figure

    record = _example_record(manifest_path, example)
    s, _ = _example_map(maps_paths, example)
    up = upsample_nearest(s, int(record["height"]), int(record["width"]))
    jac = pd.read_csv(jaccard_csv)["Jaccard"].to_numpy()
    fig, axes = new_figure(1, len(THRESHOLDS), figsize=(1.6 * len(THRESHOLDS), 2.2))
    for ax, t, j in zip(axes, THRESHOLDS, jac, strict=True):
        region = (up >= t) & (t < 1.0)
        ax.imshow(region, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"t={t:.1f}\nJ={j:.3f}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{label}: {example} thresholded saliency vs union of features", fontsize=10)
    save_figure(fig, output)
