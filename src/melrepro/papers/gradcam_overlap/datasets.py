"""gradcam_overlap datasets: manifests and splits -> the classifier's frame and datasets, the
task-2 join and the analysis set.

The classifier reads the ISIC 2019 images at ``sq<image_size>`` from the image cache; its
training set is augmented by TIML's dihedral presets (:func:`build_datasets`) and its loss
weighted by TIML's class weights (:func:`class_weights`). The task-2 images get their ISIC 2019
label and classifier split from :func:`join_task2`; the paper's statistics use
:func:`analysis_set` of the per-image overlap tables.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.papers.gradcam_overlap import CLASSES, SPLITS

__all__ = [
    "analysis_set",
    "build_datasets",
    "check_image_size",
    "class_weights",
    "classifier_frame",
    "join_task2",
    "read_cache_subset",
    "shuffle_train_labels",
]

logger = logging.getLogger(__name__)

#: ISIC 2017 classes in ISIC 2019's vocabulary (for task-2 images that ISIC 2019 lacks).
ISIC2017_LABELS = {"melanoma": "MEL", "seborrheic_keratosis": "BKL", "nevus": "NV"}


# ---------------------------------------------------------------------------------------------
# the classifier (ISIC 2019)


def classifier_frame(manifest_path: str | Path, split_path: str | Path) -> pd.DataFrame:
    """The ISIC 2019 images of :data:`CLASSES` in a split: ``image_id, label, split, y``."""
    manifest = pd.read_parquet(manifest_path)
    split = pd.read_parquet(split_path)[["image_id", "split"]]
    frame = manifest[["image_id", "label"]].merge(split, on="image_id", how="inner")
    frame = frame[frame["split"].isin(SPLITS) & frame["label"].isin(CLASSES)].reset_index(drop=True)
    frame["image_id"] = frame["image_id"].astype(str)
    frame["y"] = frame["label"].map({c: i for i, c in enumerate(CLASSES)}).astype(int)
    return frame


#: Added to the run's seed for the label-shuffled control's permutation (its own stream).
SHUFFLE_SEED_OFFSET = 4_004


def shuffle_train_labels(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The classifier frame with the training split's labels permuted (seeded), for the
    label-shuffled control: a model trained on them can learn the class prior, nothing that ties
    an image to its class. Validation and test labels are untouched; the training label counts
    (and so TIML's class weights) are those of the true labels."""
    out = frame.copy()
    train = np.flatnonzero(out["split"].to_numpy() == "train")
    rng = np.random.default_rng(seed + SHUFFLE_SEED_OFFSET)
    permuted = train[rng.permutation(len(train))]
    for column in ("label", "y"):
        out.loc[train, column] = out[column].to_numpy()[permuted]
    out.attrs["shuffled"] = True
    return out


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


def read_cache_subset(paths: Sequence[str | Path], ids: set[str]) -> dict[str, np.ndarray]:
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


def check_image_size(images: dict[str, np.ndarray], size: int) -> None:
    """Raise ValueError unless every cached image is ``size`` x ``size`` (the cache's sq<size>)."""
    bad = [i for i, im in images.items() if im.shape[:2] != (size, size)]
    if bad:
        raise ValueError(
            f"cache images are not {size}x{size} (e.g. {bad[0]} is {images[bad[0]].shape[:2]}); "
            f"read the cache at sq{size}"
        )


class _Dihedral:
    """Random flip / quarter turn per draw (the default's stand-in for TIML's x8 expansion)."""

    def __call__(self, x: Any) -> Any:
        import torch

        k = int(torch.randint(0, 8, (1,)))
        x = torch.rot90(x, k % 4, dims=(1, 2))
        if k >= 4:
            x = torch.flip(x, dims=(2,))
        return x.to(torch.float32) / 255.0


def build_datasets(
    frame: pd.DataFrame,
    images: dict[str, np.ndarray],
    augment: str,
    splits: Sequence[str] = SPLITS,
) -> dict[str, Any]:
    """Split -> ``ArrayDataset`` of ``frame``'s images, augmented as ``augment`` says, for each
    of ``splits`` (``images`` needs only theirs).

    ``dihedral8`` expands train and val eightfold (item ``i`` is image ``i // 8`` in orientation
    ``i % 8``, a view computed on access: :class:`.dihedral.DihedralViews`), ``random_dihedral``
    draws one flip / quarter turn per training item, ``none`` leaves the images as they are.
    """
    from melrepro.methods import training

    out = {}
    for split in splits:
        rows = frame[frame["split"] == split]
        stack = [images[i] for i in rows["image_id"]]
        y = rows["y"].to_numpy()
        if augment == "dihedral8" and split in ("train", "val"):
            from melrepro.papers.gradcam_overlap.dihedral import DihedralViews

            out[split] = DihedralViews(stack, y)
        elif augment == "random_dihedral" and split == "train":
            out[split] = training.ArrayDataset(stack, y, _Dihedral())
        else:
            out[split] = training.ArrayDataset(stack, y)
    return out


# ---------------------------------------------------------------------------------------------
# the task-2 images


def join_task2(
    task2_manifest: str | Path | pd.DataFrame,
    isic2019_manifest: str | Path | pd.DataFrame,
    isic2019_split: str | Path | pd.DataFrame,
    output: str | Path | None = None,
    isic2017_manifest: str | Path | pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every task-2 training image with its ISIC 2019 id, label and classifier split.

    ISIC 2019 stores part of the images as ``<id>_downsampled``; the suffix is stripped to join.
    One real task-2 image, ISIC_0015982, is in no ISIC 2019 set: it is an ISIC 2017 test image
    of class nevus, and the paper's counts (2,386 MEL+NV = 519 + 1,867) hold only when it counts
    as NV. Images without an ISIC 2019 row take their ISIC 2017 label (melanoma -> MEL,
    seborrheic keratosis -> BKL, nevus -> NV) from ``isic2017_manifest``; they have no
    ``isic2019_id`` (Grad-CAM reads them from the task-2 archive, ``task2_uri``) and the
    classifier split ``none``.

    Raises
    ------
    ValueError
        Task-2 images in neither ISIC 2019 nor ``isic2017_manifest`` (named).
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
    without = frame["isic2019_id"].isna()
    if without.any() and isic2017_manifest is not None:
        m17 = read(isic2017_manifest)
        labels17 = m17.set_index(m17["image_id"].astype(str))["label"].map(ISIC2017_LABELS)
        frame.loc[without, "label"] = frame.loc[without, "image_id"].map(labels17)
        uris = t2.set_index(t2["image_id"].astype(str))["image_uri"]
        frame["task2_uri"] = frame["image_id"].map(uris).where(without).astype("string")
    missing = frame.loc[frame["label"].isna(), "image_id"].tolist()
    if missing:
        raise ValueError(
            f"{len(missing)} ISIC 2018 task-2 images have no ISIC 2019 ground-truth row "
            f"(also tried <id>_downsampled) nor an ISIC 2017 one, e.g. {missing[:5]}"
        )
    if without.any():
        logger.warning(
            "%d task-2 image(s) without an ISIC 2019 copy labelled from ISIC 2017: %s",
            int(without.sum()),
            frame.loc[without, ["image_id", "label"]].to_dict("records"),
        )
    frame["isic2019_split"] = frame["isic2019_split"].fillna("none").astype(str)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(output, index=False)
    return frame


def analysis_set(table: pd.DataFrame) -> pd.DataFrame:
    """MEL and NV task-2 images with a non-empty union (the paper's 1,963)."""
    return table[table["label"].isin(["MEL", "NV"]) & table["has__union"]].reset_index(drop=True)
