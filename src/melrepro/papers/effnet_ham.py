"""effnet_ham: EfficientNet-B0 on ISIC 2018 task 3 (HAM10000), malignant vs benign.

Path-level functions called by the rules of ``workflow/rules/effnet_ham.smk``: train one
variant of the recipe (Baseline 1, Baseline 2 and the three experiments of §4.3 are
configurations of the same function), build table01, and draw fig01-fig03, fig05 and fig06.

Labels: the paper's ``lesions.csv`` takes the ISIC archive's ``benign_malignant`` field. HAM10000
has no such column; the task-3 classes that the archive marks malignant are melanoma (MEL),
basal cell carcinoma (BCC) and actinic keratosis / intraepithelial carcinoma (AKIEC), which
gives 19.5 % malignant on the 10,015 training images, close to the paper's 18.63 %
(the archive marks part of AKIEC benign). The classes counted as malignant are a config value.

References
----------
Silva, P., Diz, P. Skin Cancer Detection Using Convolutional Neural Networks (FCUL, 2025),
https://github.com/PedroDiz/AP-2025.

Artifact index (id: function that writes it):

    table01          tabulate_results (metrics of every train_variant run)
    fig01            plot_class_distribution
    fig02            plot_loss_curves
    fig03            plot_confusion
    fig04            the rule graph: melrepro.report.rulegraph via workflow/rules/report.smk
    fig05            plot_gradcam_examples (maps of compute_gradcam)
    fig06            plot_gradcam_outside (maps of compute_gradcam)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from melrepro.methods import metrics

if TYPE_CHECKING:
    import torch

    from melrepro.methods import training

# torch, torchvision and pytorch-grad-cam are imported inside the functions that train or explain,
# so that the table and figure jobs start without them (~5 s each).

__all__ = [
    "METRIC_COLUMNS",
    "cache_resolution",
    "check_lesions_disjoint",
    "compute_gradcam",
    "load_task3",
    "mean_pairwise_correlation",
    "plot_class_distribution",
    "plot_confusion",
    "plot_gradcam_examples",
    "plot_gradcam_outside",
    "plot_loss_curves",
    "split_options",
    "tabulate_results",
    "train_variant",
]

logger = logging.getLogger(__name__)

#: table01's metric columns (paper §4.1) and the keys of ``metrics.json`` they come from.
METRIC_COLUMNS = {
    "AUROC": "auroc",
    "Balanced accuracy": "balanced_accuracy",
    "Macro-F1": "macro_f1",
    "Recall": "recall",
}
#: Keys of a recipe that configure preprocessing rather than :class:`TrainOptions`.
PREPROCESSING_KEYS = ("image_size", "colour_constancy", "sog_power", "augment")
_SPLITS = ("train", "val", "test")
#: The authors' test-time operating point: the threshold that keeps 95 % specificity.
SPEC95 = 0.95
#: Test-probability SD below which a model is called degenerate (near-constant output).
DEGENERATE_SD = 1e-3
#: table01's protocols: (row label, metrics.json key of the test metrics, of the intervals,
#: of the threshold).
PROTOCOLS = (
    ("Youden (validation)", "test", "youden_val", "threshold"),
    ("95% specificity (test)", "test_spec95", "spec95_test", "threshold_spec95"),
)


def cache_resolution(image_size: int, aspect_ratio: float = 4 / 3) -> str:
    """The image-cache resolution that centre-crops to exactly ``image_size``.

    ISIC 2018 task 3 images are 600×450 (4:3). Caching with the longest side
    ``ceil(image_size * aspect_ratio)`` makes the short side ``image_size``, so the paper's
    centre crop to a square needs no further resampling (224 -> ``max299``).
    """
    return f"max{math.ceil(image_size * aspect_ratio)}"


def split_options(
    recipe: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, **globals_: Any
) -> tuple[dict[str, Any], training.TrainOptions]:
    """Merge a variant's overrides into the recipe and split preprocessing from training.

    Parameters
    ----------
    recipe : mapping
        The ``effnet_ham.recipe`` config block (Baseline 2).
    overrides : mapping, optional
        The variant's ``overrides``.
    **globals_
        Run-wide training options (``seed``, ``pretrained``, ``device``, ``threads``...).

    Returns
    -------
    preprocessing : dict with ``image_size``, ``colour_constancy``, ``sog_power``, ``augment``
    options : TrainOptions
    """
    from melrepro.methods import training

    merged = {**recipe, **(overrides or {})}
    pre = {k: merged.pop(k) for k in PREPROCESSING_KEYS if k in merged}
    pre.setdefault("image_size", 224)
    pre.setdefault("colour_constancy", "none")
    pre.setdefault("sog_power", 6.0)
    pre.setdefault("augment", True)
    return pre, training.TrainOptions.from_dict(merged, **globals_)


def check_lesions_disjoint(frame: pd.DataFrame) -> None:
    """Raise when a lesion has images in more than one split.

    Parameters
    ----------
    frame : DataFrame with ``lesion_id`` and ``split``

    Raises
    ------
    ValueError
        Listing (up to five of) the lesions that cross splits.
    """
    known = frame.dropna(subset=["lesion_id"])
    n_splits = known.groupby("lesion_id")["split"].nunique()
    crossing = n_splits[n_splits > 1]
    if len(crossing):
        raise ValueError(
            f"{len(crossing)} lesions appear in more than one split, e.g. "
            f"{list(crossing.index[:5])}; the split must be grouped by lesion_id"
        )


def load_task3(
    manifest_path: str | Path,
    split_path: str | Path,
    cache_paths: Sequence[str | Path],
    *,
    malignant_labels: Sequence[str] = ("MEL", "BCC", "AKIEC"),
    image_size: int = 224,
    colour_constancy: str = "none",
    sog_power: float = 6.0,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Read the task-3 images of a split, label them and preprocess them once.

    Parameters
    ----------
    manifest_path, split_path : path
        ``isic2018_task3`` manifest and split (``lesion_70_15_15``).
    cache_paths : sequence of path
        The image-cache shards.
    malignant_labels : sequence of str
        Task-3 classes counted as malignant (target 1).
    image_size : int
        Side after centre crop and resize (paper: 224).
    colour_constancy : {"none", "shades_of_grey"}
    sog_power : float

    Returns
    -------
    frame : DataFrame
        ``image_id, split, label, lesion_id, target`` for every image with a split, in
        manifest order.
    images : dict
        ``image_id -> (image_size, image_size, 3) uint8``.

    Raises
    ------
    ValueError
        If a lesion crosses splits, an image of the split is missing from the cache, or an
        unknown class is listed as malignant.
    """
    from melrepro.data.imagecache import read_cache
    from melrepro.methods import transforms

    manifest = pd.read_parquet(manifest_path)
    split = pd.read_parquet(split_path)[["image_id", "split"]]
    unknown = set(malignant_labels) - set(manifest["label"].dropna().astype(str))
    if unknown:
        raise ValueError(f"malignant_labels {sorted(unknown)} do not occur in the manifest labels")
    frame = manifest[["image_id", "label", "lesion_id"]].merge(split, on="image_id", how="inner")
    frame = frame[frame["split"].isin(_SPLITS) & frame["label"].notna()].reset_index(drop=True)
    frame["image_id"] = frame["image_id"].astype(str)
    frame["target"] = frame["label"].astype(str).isin(list(malignant_labels)).astype(int)
    check_lesions_disjoint(frame)
    cache = read_cache(cache_paths)
    missing = sorted(set(frame["image_id"]) - set(cache))
    if missing:
        raise ValueError(f"{len(missing)} images are not in the cache, e.g. {missing[:5]}")
    cc = None if colour_constancy == "none" else colour_constancy
    images = {
        i: transforms.preprocess_image(
            cache[i].image, image_size, colour_constancy=cc, sog_power=sog_power
        )
        for i in frame["image_id"]
    }
    counts = frame.groupby("split")["target"].agg(["size", "sum"])
    logger.info(
        "Loaded %d images at %d px; per split (n, malignant):\n%s", len(frame), image_size, counts
    )
    return frame, images


def _dataset(
    frame: pd.DataFrame, images: dict[str, np.ndarray], split: str, transform: Any
) -> tuple[pd.DataFrame, training.ArrayDataset]:
    from melrepro.methods import training

    rows = frame[frame["split"] == split].reset_index(drop=True)
    stack = [images[i] for i in rows["image_id"]]
    return rows, training.ArrayDataset(stack, rows["target"].to_numpy(), transform)


def train_variant(
    manifest_path: str | Path,
    split_path: str | Path,
    cache_paths: Sequence[str | Path],
    *,
    variant: str,
    recipe: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    malignant_labels: Sequence[str],
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
        Inputs (see :func:`load_task3`).
    variant : str
        Variant key (``baseline2``...), used in logs and outputs.
    recipe, overrides : mapping
        Baseline 2 recipe and the variant's changes (see :func:`split_options`).
    malignant_labels : sequence of str
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
    """
    import torch

    from melrepro.methods import training, transforms

    pre, options = split_options(
        recipe,
        overrides,
        seed=int(run_info["seed"]),
        pretrained=bool(run_info["pretrained"]),
        device=str(run_info["device"]),
        threads=threads,
        num_workers=num_workers,
    )
    frame, images = load_task3(
        manifest_path,
        split_path,
        cache_paths,
        malignant_labels=malignant_labels,
        image_size=pre["image_size"],
        colour_constancy=pre["colour_constancy"],
        sog_power=pre["sog_power"],
    )
    train_tf = (
        transforms.train_transform(pre["image_size"])
        if pre["augment"]
        else transforms.eval_transform()
    )
    on_device = pre["augment"] and training.augments_on_device(augment_on, options.device)
    # On the device the loader only collates cached uint8 images; the pixel work runs there.
    _, train_ds = _dataset(frame, images, "train", None if on_device else train_tf)
    val_rows, val_ds = _dataset(frame, images, "val", transforms.eval_transform())
    test_rows, test_ds = _dataset(frame, images, "test", transforms.eval_transform())
    augmentation = "device" if on_device else "loader"
    logger.info(
        "Variant %s: %s; preprocessing %s; augmentation in the %s",
        variant,
        options,
        pre,
        augmentation,
    )
    result = training.train_model(
        train_ds,
        val_ds,
        options,
        checkpoint_dir=checkpoint_dir,
        history_path=history_path,
        device_transform=train_tf if on_device else None,
    )
    device = torch.device(result.device)
    val_prob = training.predict(result.model, val_ds, options=options, device=device)
    test_prob = training.predict(result.model, test_ds, options=options, device=device)
    y_val, y_test = val_rows["target"].to_numpy(), test_rows["target"].to_numpy()
    # Two protocols (issue 12): the paper's text (Youden's J on validation, applied to test) and
    # the authors' code (the threshold of 95 % specificity chosen on the test set itself).
    threshold = metrics.youden_threshold(y_val, val_prob)
    threshold95 = metrics.specificity_threshold(y_test, test_prob, SPEC95)
    test_metrics = metrics.binary_metrics(y_test, test_prob, threshold)
    test95 = metrics.binary_metrics(y_test, test_prob, threshold95)
    val_metrics = metrics.binary_metrics(y_val, val_prob, threshold)
    intervals = {
        "youden_val": metrics.bootstrap_intervals(
            y_test, test_prob, threshold=threshold, n_boot=n_bootstrap, seed=options.seed
        ),
        "spec95_test": metrics.bootstrap_intervals(
            y_test, test_prob, specificity=SPEC95, n_boot=n_bootstrap, seed=options.seed
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

    preds = pd.concat(
        [val_rows.assign(probability=val_prob), test_rows.assign(probability=test_prob)],
        ignore_index=True,
    )
    preds["prediction"] = (preds["probability"] >= threshold).astype(int)
    preds["prediction_spec95"] = (preds["probability"] >= threshold95).astype(int)
    Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
    preds.to_parquet(predictions_path, index=False)
    training.export_best(checkpoint_dir, model_path)
    info = {
        "variant": variant,
        "threshold": threshold,
        "threshold_spec95": threshold95,
        "test": test_metrics.as_dict(),
        "test_spec95": test95.as_dict(),
        "val": val_metrics.as_dict(),
        "intervals": intervals,
        "n_bootstrap": n_bootstrap,
        "probability_sd": spread,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": float(result.history["seconds"].sum()),
        "image_size": pre["image_size"],
        "n_images": frame.groupby("split").size().to_dict(),
        "n_malignant": frame.groupby("split")["target"].sum().astype(int).to_dict(),
        "device": result.device,
        "augmentation": augmentation,
        "weights": result.weights,
        "options": options.to_dict(),
        "preprocessing": pre,
    }
    Path(metrics_path).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")

    from melrepro.report.runinfo import write_run_info

    write_run_info(
        Path(metrics_path).parent,
        data_source=run_info["data_source"],
        config={
            "recipe": dict(recipe),
            "overrides": dict(overrides or {}),
            "malignant_labels": list(malignant_labels),
        },
        seed=options.seed,
        weights=result.weights,
        device=result.device,
        resumed_from_epoch=result.resumed_from_epoch,
    )
    return info


def tabulate_results(
    metrics_paths: Sequence[str | Path],
    labels: Sequence[str],
    output: str | Path,
    *,
    run_info: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """table01: AUROC, balanced accuracy, macro-F1 and recall under both protocols.

    Two rows per variant (index ``Model, Protocol``): Youden's threshold from validation and
    the 95 %-specificity threshold from test (see :data:`PROTOCOLS`), each metric with its
    95 % bootstrap interval (``<metric> CI low/high``), the number of test images (and
    malignant ones) and the SD of the test probabilities.

    Parameters
    ----------
    metrics_paths : sequence of path
        ``metrics.json`` of each variant, in table order.
    labels : sequence of str
        Row labels (``Baseline 1``...), same order.
    output : path
        ``table01.csv`` (a ``.md`` twin is written beside it).
    run_info : mapping, optional
        ``data_source``, ``seed``...: writes ``run_info.json`` beside the table, with the
        device and weights of every variant.
    """
    from melrepro.report.tables import write_table

    if len(metrics_paths) != len(labels):
        raise ValueError(f"{len(metrics_paths)} metrics files for {len(labels)} labels")
    rows = []
    for path, label in zip(metrics_paths, labels, strict=True):
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        n_test = int(info["n_images"].get("test", 0))
        n_mal = int(info["n_malignant"].get("test", 0))
        for protocol, metrics_key, interval_key, threshold_key in PROTOCOLS:
            row: dict[str, Any] = {"Model": label, "Protocol": protocol}
            for col, key in METRIC_COLUMNS.items():
                low, high = info["intervals"][interval_key][key]
                row[col] = info[metrics_key][key]
                row[f"{col} CI low"] = low
                row[f"{col} CI high"] = high
            row["Threshold"] = info[threshold_key]
            row["n test"] = n_test
            row["n malignant"] = n_mal
            row["Probability SD"] = info["probability_sd"]["test"]
            row["Epochs"] = info["epochs_run"]
            row["Best epoch"] = info["best_epoch"]
            row["Image size"] = info["image_size"]
            rows.append(row)
    table = pd.DataFrame(rows).set_index(["Model", "Protocol"])
    write_table(
        table,
        output,
        title=(
            "Table 1. Test metrics with 95 % bootstrap intervals, at Youden's threshold chosen "
            "on validation (the paper's text) and at 95 % specificity chosen on test (the "
            "authors' code)"
        ),
    )
    if run_info is not None:
        from melrepro.report.runinfo import write_run_info

        infos = [json.loads(Path(p).read_text(encoding="utf-8")) for p in metrics_paths]
        write_run_info(
            Path(output).parent,
            data_source=run_info["data_source"],
            config={"variants": [i["variant"] for i in infos]},
            seed=run_info.get("seed"),
            weights=sorted({i["weights"] for i in infos}),
            device=sorted({i["device"] for i in infos}),
            variants={
                i["variant"]: {"weights": i["weights"], "device": i["device"]} for i in infos
            },
        )
    return table


def plot_class_distribution(
    manifest_path: str | Path,
    split_path: str | Path,
    output: str | Path,
    *,
    malignant_labels: Sequence[str] = ("MEL", "BCC", "AKIEC"),
) -> pd.DataFrame:
    """fig01: benign and malignant counts in train / validation / test (with percentages)."""
    from melrepro.report.figures import new_figure, save_figure

    manifest = pd.read_parquet(manifest_path)
    split = pd.read_parquet(split_path)[["image_id", "split"]]
    frame = manifest[["image_id", "label", "lesion_id"]].merge(split, on="image_id")
    frame = frame[frame["split"].isin(_SPLITS) & frame["label"].notna()]
    check_lesions_disjoint(frame)
    frame["class"] = np.where(
        frame["label"].astype(str).isin(list(malignant_labels)), "malignant", "benign"
    )
    counts = (
        frame.groupby(["split", "class"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=list(_SPLITS), columns=["benign", "malignant"], fill_value=0)
    )
    fig, ax = new_figure(figsize=(6, 4))
    x = np.arange(len(counts))
    for k, (cls, colour) in enumerate([("benign", "tab:blue"), ("malignant", "tab:red")]):
        bars = ax.bar(x + (k - 0.5) * 0.38, counts[cls], 0.38, label=cls, color=colour)
        share = counts[cls] / counts.sum(axis=1).replace(0, np.nan) * 100
        ax.bar_label(
            bars,
            labels=[f"{n}\n{p:.1f}%" for n, p in zip(counts[cls], share, strict=True)],
            fontsize=8,
        )
    ax.set_xticks(x, ["train", "validation", "test"])
    ax.set_ylabel("images")
    total = counts.sum()
    ax.set_title(
        f"Class distribution ({total['malignant'] / total.sum() * 100:.1f}% malignant: "
        f"{', '.join(malignant_labels)})"
    )
    ax.legend()
    ax.margins(y=0.2)
    save_figure(fig, output)
    return counts


def plot_loss_curves(history_path: str | Path, output: str | Path) -> None:
    """fig02: training and validation loss per epoch (frozen warm-up epochs shaded)."""
    from melrepro.report.figures import new_figure, save_figure

    hist = pd.read_csv(history_path)
    fig, ax = new_figure(figsize=(6, 4))
    ax.plot(hist["epoch"], hist["train_loss"], marker="o", label="train")
    ax.plot(hist["epoch"], hist["val_loss"], marker="o", label="validation")
    frozen = hist.loc[hist["frozen"].astype(bool), "epoch"]
    if len(frozen):
        ax.axvspan(frozen.min() - 0.5, frozen.max() + 0.5, color="0.9", label="frozen backbone")
    ax.set_xlabel("epoch")
    ax.set_ylabel("focal BCE loss")
    ax.set_title("Training and validation loss")
    ax.legend()
    save_figure(fig, output)


def plot_confusion(predictions_path: str | Path, output: str | Path) -> np.ndarray:
    """fig03: test confusion matrix at the Youden threshold chosen on validation."""
    from sklearn.metrics import ConfusionMatrixDisplay

    from melrepro.report.figures import new_figure, save_figure

    preds = pd.read_parquet(predictions_path)
    test = preds[preds["split"] == "test"]
    cm = metrics.confusion(test["target"].to_numpy(), test["prediction"].to_numpy())
    fig, ax = new_figure(figsize=(4.5, 4))
    ConfusionMatrixDisplay(cm, display_labels=["benign", "malignant"]).plot(
        ax=ax, cmap="Blues", colorbar=False
    )
    ax.set_title("Test confusion matrix (Youden threshold)")
    save_figure(fig, output)
    return cm


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
        Outputs of :func:`train_variant` for the explained variant.
    manifest_path, split_path, cache_paths
        As for :func:`load_task3`.
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
    """
    import torch

    from melrepro.data.archive_io import ArchiveFolder
    from melrepro.methods import saliency, training, transforms

    if region not in ("auto", "border"):
        raise ValueError(f"region must be 'auto' or 'border', got {region!r}")
    torch.set_num_threads(threads)
    pre, options = split_options(recipe, overrides)
    frame, images = load_task3(
        manifest_path,
        split_path,
        cache_paths,
        malignant_labels=malignant_labels,
        image_size=pre["image_size"],
        colour_constancy=pre["colour_constancy"],
        sog_power=pre["sog_power"],
    )
    preds = pd.read_parquet(predictions_path)
    test = preds[preds["split"] == "test"].reset_index(drop=True)
    model = training.load_model(model_path, options)
    layer = _target_layer(model, target_layer)
    x = transforms.per_image_normalize(
        torch.stack([torch.from_numpy(images[i]).permute(2, 0, 1) for i in test["image_id"]])
    )
    maps = saliency.gradcam_maps(model, x, layer, classes=[1] * len(test))
    empty = maps.reshape(len(maps), -1).max(axis=1) <= 0
    correlation = mean_pairwise_correlation(maps)

    size = pre["image_size"]
    manifest = pd.read_parquet(manifest_path)
    mask_uri = (
        manifest.set_index(manifest["image_id"].astype(str))["mask_uri"].dropna().to_dict()
        if "mask_uri" in manifest.columns
        else {}
    )
    truth = _truth_masks(Path(truth_dir) if truth_dir else None, test["image_id"].tolist())
    regions, kinds = [], []
    archive = ArchiveFolder(archive_dir) if archive_dir else None
    for image_id in test["image_id"]:
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
    table.to_csv(output_table, index=False)
    if output_summary is not None:
        Path(output_summary).write_text(
            json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8"
        )
    return table


def _overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255.0, cam, use_rgb=True)


def _load_examples(maps_path: str | Path) -> tuple[dict[str, int], Any]:
    data = np.load(maps_path)
    index = {str(i): k for k, i in enumerate(data["image_ids"])}
    return index, data


def plot_gradcam_examples(
    maps_path: str | Path, table_path: str | Path, output: str | Path
) -> None:
    """fig05: Grad-CAM overlays, top row correct predictions, bottom row incorrect."""
    from melrepro.report.figures import new_figure, save_figure

    index, data = _load_examples(maps_path)
    table = pd.read_csv(table_path).set_index("image_id")
    rows = [("correct", list(data["fig05_correct"])), ("incorrect", list(data["fig05_incorrect"]))]
    n = max(1, max(len(ids) for _, ids in rows))
    fig, axes = new_figure(2, n, figsize=(2.4 * n, 5.2), squeeze=False)
    for r, (name, ids) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_axis_off()
            if c >= len(ids):
                if c == 0:
                    ax.text(0.5, 0.5, f"no {name} predictions", ha="center", va="center")
                continue
            k = index[str(ids[c])]
            ax.imshow(_overlay(data["images"][k], data["maps"][k]))
            row = table.loc[str(ids[c])]
            truth = "malignant" if row["target"] else "benign"
            ax.set_title(f"{name}\ntrue {truth}, p={row['probability']:.2f}", fontsize=8)
    fig.suptitle("Grad-CAM (red = attention)\ncorrect (top) and incorrect (bottom)", fontsize=10)
    save_figure(fig, output)


def plot_gradcam_outside(maps_path: str | Path, table_path: str | Path, output: str | Path) -> None:
    """fig06: share of saliency outside the lesion against the share of the image outside it.

    Left: one point per test image with a lesion mask; a flat (uninformative) map lies on the
    identity line, a map on the lesion below it. Right: the images furthest above the line,
    lesion outlined.
    """
    from melrepro.report.figures import new_figure, save_figure

    index, data = _load_examples(maps_path)
    table = pd.read_csv(table_path)
    measured = table[table["outside_fraction"].notna()]
    ids = [str(i) for i in data["fig06"]][:4]
    n = max(1, len(ids))
    fig, axes = new_figure(
        2,
        n + 2,
        figsize=(2.3 * (n + 2), 5.0),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.2, 1.2] + [1] * n},
    )
    gs = axes[0][0].get_gridspec()
    for ax in (axes[0][0], axes[0][1], axes[1][0], axes[1][1]):
        ax.remove()
    ax = fig.add_subplot(gs[:, :2])
    for correct, colour, name in ((True, "tab:green", "correct"), (False, "tab:red", "wrong")):
        part = measured[measured["correct"] == correct]
        ax.scatter(part["area_outside"], part["outside_fraction"], s=18, c=colour, label=name)
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, ls="--", label="flat map")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("share of the image outside the lesion")
    ax.set_ylabel("share of saliency outside the lesion")
    ax.legend(fontsize=7, loc="lower right")
    above = (measured["outside_fraction"] > measured["area_outside"]).sum()
    n_none = int((table["region"] == "none").sum())
    ax.set_title(
        f"{above} of {len(measured)} maps put more saliency outside\nthan a flat map would"
        + (f" ({n_none} images without mask)" if n_none else ""),
        fontsize=8,
    )
    rows = table.set_index("image_id")
    for c, image_id in enumerate(ids):
        k = index[image_id]
        row = rows.loc[image_id]
        for r, picture in enumerate(
            [data["images"][k], _overlay(data["images"][k], data["maps"][k])]
        ):
            a = axes[r][c + 2]
            a.imshow(picture)
            a.contour(data["regions"][k], levels=[0.5], colors="lime", linewidths=0.8)
            a.set_axis_off()
        axes[0][c + 2].set_title(
            f"{row['outside_fraction']:.0%} of saliency outside\n"
            f"({row['area_outside']:.0%} of the area)",
            fontsize=8,
        )
    for c in range(len(ids), n):
        for r in range(2):
            axes[r][c + 2].set_axis_off()
    fig.suptitle("Grad-CAM of the malignant logit outside the lesion (green outline)", fontsize=10)
    save_figure(fig, output)
