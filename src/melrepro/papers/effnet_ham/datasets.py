"""effnet_ham datasets: the task-3 manifest and lesion split -> labelled, preprocessed images.

Labels: the paper's ``lesions.csv`` takes the ISIC archive's ``benign_malignant`` field. HAM10000
has no such column; the task-3 classes that the archive marks malignant are melanoma (MEL),
basal cell carcinoma (BCC) and actinic keratosis / intraepithelial carcinoma (AKIEC), which
gives 19.5 % malignant on the 10,015 training images, close to the paper's 18.63 %
(the archive marks part of AKIEC benign). The classes counted as malignant are a config value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from melrepro.methods import training

# torch and torchvision are imported inside the functions that build training objects, so that
# the table and figure jobs start without them (~5 s each).

__all__ = [
    "PREPROCESSING_KEYS",
    "SPLITS",
    "cache_resolution",
    "check_lesions_disjoint",
    "load_task3",
    "load_variant",
    "split_dataset",
    "split_options",
]

logger = logging.getLogger(__name__)

#: Keys of a recipe that configure preprocessing rather than :class:`TrainOptions`.
PREPROCESSING_KEYS = ("image_size", "colour_constancy", "sog_power", "augment")
#: The splits of ``lesion_70_15_15``, in table and figure order.
SPLITS = ("train", "val", "test")


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
    frame = frame[frame["split"].isin(SPLITS) & frame["label"].notna()].reset_index(drop=True)
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


def load_variant(
    manifest_path: str | Path,
    split_path: str | Path,
    cache_paths: Sequence[str | Path],
    *,
    recipe: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    malignant_labels: Sequence[str],
    **globals_: Any,
) -> tuple[dict[str, Any], training.TrainOptions, pd.DataFrame, dict[str, np.ndarray]]:
    """A variant's preprocessing and options (:func:`split_options`) and its images, preprocessed
    accordingly (:func:`load_task3`): ``(preprocessing, options, frame, images)``."""
    pre, options = split_options(recipe, overrides, **globals_)
    frame, images = load_task3(
        manifest_path,
        split_path,
        cache_paths,
        malignant_labels=malignant_labels,
        image_size=pre["image_size"],
        colour_constancy=pre["colour_constancy"],
        sog_power=pre["sog_power"],
    )
    return pre, options, frame, images


def split_dataset(
    frame: pd.DataFrame, images: dict[str, np.ndarray], split: str, transform: Any
) -> tuple[pd.DataFrame, training.ArrayDataset]:
    """The rows of one split (manifest order) and their images as a training dataset."""
    from melrepro.methods import training

    rows = frame[frame["split"] == split].reset_index(drop=True)
    stack = [images[i] for i in rows["image_id"]]
    return rows, training.ArrayDataset(stack, rows["target"].to_numpy(), transform)
