"""Splits as data: official, stratified k-fold, and grouped stratified train/val(/test) splits."""

from __future__ import annotations

import logging
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

__all__ = [
    "SPLIT_NAMES",
    "class_floor_split",
    "grouped_split",
    "groups_of",
    "make_split",
    "stratified_folds",
    "write_split",
]

logger = logging.getLogger(__name__)

#: Split names understood by :func:`make_split`.
SPLIT_NAMES = ("official", "cv10", "lesion_70_15_15", "patient_85_15", "class_floor_80_10_10")


def groups_of(manifest: pd.DataFrame, column: str) -> pd.Series:
    """Group id per image: ``column`` where known, else the image itself (its own group)."""
    groups = manifest[column].astype("string")
    return groups.fillna("image:" + manifest["image_id"].astype(str))


def _take_fold(
    y: np.ndarray, groups: np.ndarray, fraction: float, seed: int, resolution: int | None = None
) -> np.ndarray:
    """Boolean mask of about ``fraction`` of the rows, stratified on ``y``, whole groups only.

    Without ``resolution`` the part is one fold of ``round(1 / fraction)`` (0.15 -> 1/7 =
    14.3 %); with it, the folds of ``n`` (``k / n`` the closest fraction with ``n <=
    resolution``, 0.15 -> 3/20) are added in turn while each brings the part's size closer to
    ``fraction`` of the rows (folds of grouped data differ in size).
    """
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(
            f"cannot split {len(y)} images in {n_groups} group(s); need at least 2 groups"
        )
    take = 1
    n_splits = max(2, round(1.0 / fraction))
    if resolution:
        ratio = Fraction(fraction).limit_denominator(resolution)
        take, n_splits = max(1, ratio.numerator), max(2, ratio.denominator)
    # Few groups (tiny data): fewer, larger folds rather than a failure.
    if n_splits > min(n_groups, np.unique(y, return_counts=True)[1].max()):
        take, n_splits = 1, min(max(2, round(1.0 / fraction)), n_groups)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    mask = np.zeros(len(y), dtype=bool)
    with warnings.catch_warnings():
        # Rare classes with fewer members than folds are expected (e.g. DF in HAM10000).
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds = [held for _, held in splitter.split(np.zeros(len(y)), y, groups)]
    if not resolution or take == 1:
        mask[folds[0]] = True
        return mask
    target = fraction * len(y)
    # Subset sum over the fold sizes: reachable total -> the first subset (in fold order) reaching it.
    reachable: dict[int, tuple[int, ...]] = {0: ()}
    for k, held_out in enumerate(folds):
        for total, chosen in list(reachable.items()):
            reachable.setdefault(total + len(held_out), (*chosen, k))
    best = min((t for t in reachable if t > 0), key=lambda t: (abs(t - target), t))
    for k in reachable[best]:
        mask[folds[k]] = True
    return mask


def grouped_split(
    y: np.ndarray,
    groups: np.ndarray,
    fractions: list[float],
    *,
    seed: int,
    resolution: int | None = None,
) -> np.ndarray:
    """Assign ``train``/``val``/``test`` (or ``train``/``val``) so that no group crosses splits.

    Parameters
    ----------
    y : (n,) array
        Class labels to stratify on.
    groups : (n,) array
        Group ids (lesion or patient); every image of a group lands in the same split.
    fractions : list of 2 or 3 floats
        Train, val[, test] fractions; they must sum to 1.
    seed : int
        Shuffling seed.
    resolution : int, optional
        Build each part from several folds of up to this many (see :func:`_take_fold`), so that
        0.15 is met as 3/20 rather than 1/7.

    Notes
    -----
    Built from scikit-learn's ``StratifiedGroupKFold``: the test part is one fold of
    ``round(1 / test_fraction)`` folds, then val is one fold of the rest, so the fractions are
    met approximately (exactly only when group sizes allow).
    """
    if len(fractions) not in (2, 3) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions {fractions}; expected 2 or 3 numbers summing to 1")
    if any(not 0 < float(f) < 1 for f in fractions):
        raise ValueError(
            f"fractions {fractions} (data.splits in the config); expected each strictly "
            "between 0 and 1"
        )
    y, groups = np.asarray(y), np.asarray(groups)
    split = np.full(len(y), "train", dtype=object)
    remaining = np.arange(len(y))
    if len(fractions) == 3:
        test = _take_fold(y, groups, fractions[2], seed, resolution)
        split[test] = "test"
        remaining = np.flatnonzero(~test)
    val_fraction = fractions[1] / sum(fractions[:2])
    val = _take_fold(y[remaining], groups[remaining], val_fraction, seed + 1, resolution)
    split[remaining[val]] = "val"
    return split


def class_floor_split(
    y: np.ndarray,
    *,
    seed: int,
    fractions: tuple[float, float] = (0.1, 0.1),
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Per class, ``floor(f_val n_c)`` images to ``val`` then ``floor(f_test n_c)`` to ``test``.

    The rest is ``train``. This is TIML's ``Split1HotDataset`` (paper 004): on the real ISIC
    2019 class counts it holds out exactly 2,529 images per split. Images of a class are
    shuffled with ``seed``; val is taken before test.

    Parameters
    ----------
    y : (n,) array of class labels
    seed : int
    fractions : (val, test) fractions per class
    groups : (n,) array, optional
        Group ids (lesions): when given, whole groups are taken (in shuffled order) until the
        class quota is reached or passed, so no group crosses splits (a group is assigned to the
        class of its first image). None reproduces the paper (not grouped).
    """
    y = np.asarray(y).astype(str)
    split = np.full(len(y), "train", dtype=object)
    rng = np.random.default_rng(seed)
    for cls in sorted(set(y)):
        members = np.flatnonzero(y == cls)
        n_c = len(members)
        n_val, n_test = (int(np.floor(f * n_c + 1e-9)) for f in fractions)
        if groups is None:
            order = members[rng.permutation(n_c)]
            split[order[:n_val]] = "val"
            split[order[n_val : n_val + n_test]] = "test"
            continue
        g = np.asarray(groups)[members]
        unique = np.array(sorted(set(g)), dtype=object)
        unique = unique[rng.permutation(len(unique))]
        taken = {"val": 0, "test": 0}
        for group in unique:
            if split[members[g == group][0]] != "train":
                continue
            rows = np.flatnonzero(np.asarray(groups) == group)
            for name, quota in (("val", n_val), ("test", n_test)):
                if taken[name] < quota:
                    split[rows] = name
                    taken[name] += int((y[rows] == cls).sum())
                    break
    return split


def stratified_folds(y: np.ndarray, n_folds: int, *, seed: int) -> np.ndarray:
    """Fold number (0..n_folds-1) of every row, stratified on ``y`` (scikit-learn's StratifiedKFold)."""
    folds = np.empty(len(y), dtype=np.int16)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        folds[test] = fold
    return folds


def make_split(
    manifest: pd.DataFrame,
    name: str,
    *,
    seed: int,
    fractions: list[float] | None = None,
    n_folds: int = 10,
    group_by_lesion: bool = False,
) -> pd.DataFrame:
    """Build the split ``name`` of a manifest: ``image_id`` plus ``split`` and/or ``fold``.

    ``official`` copies the archive's split; ``cv10`` stratifies on ``target`` into ``n_folds``
    folds; ``lesion_70_15_15`` groups by ``lesion_id`` (train/val/test); ``patient_85_15`` groups
    by ``patient_id`` (train/val) over the labelled images, unlabelled ones stay ``test``.
    Grouped splits stratify on ``label``. ``class_floor_80_10_10`` takes floor(10 %) of every
    class for val, then floor(10 %) for test (``fractions`` = (val, test); paper 004), not grouped
    unless ``group_by_lesion``.
    """
    frame = pd.DataFrame({"image_id": manifest["image_id"].astype("string")})
    if name == "official":
        frame["split"] = manifest["official_split"].astype("string").to_numpy()
        return frame
    labelled = manifest["target"].notna().to_numpy()
    if name == "cv10":
        folds = np.full(len(manifest), -1, dtype=np.int16)
        folds[labelled] = stratified_folds(
            manifest.loc[labelled, "target"].astype(int).to_numpy(), n_folds, seed=seed
        )
        frame["fold"] = pd.array(folds, dtype="Int16")
        frame.loc[~labelled, "fold"] = pd.NA
        return frame
    if name in ("lesion_70_15_15", "patient_85_15"):
        column = "lesion_id" if name == "lesion_70_15_15" else "patient_id"
        fractions = fractions or ([0.70, 0.15, 0.15] if column == "lesion_id" else [0.85, 0.15])
        split = np.full(len(manifest), "test", dtype=object)
        sub = manifest[labelled]
        split[labelled] = grouped_split(
            sub["label"].astype(str).to_numpy(),
            groups_of(sub, column).to_numpy(),
            fractions,
            seed=seed,
            # effnet_ham (issue 12): 70/15/15 as closely as the lesions allow (3/20, not 1/7).
            # patient_85_15 keeps its split (siim2020's results must not move).
            resolution=20 if column == "lesion_id" else None,
        )
        frame["split"] = pd.array(split, dtype="string")
        return frame
    if name == "class_floor_80_10_10":
        split = np.full(len(manifest), "unlabelled", dtype=object)
        sub = manifest[labelled]
        split[labelled] = class_floor_split(
            sub["label"].astype(str).to_numpy(),
            seed=seed,
            fractions=tuple(fractions or (0.1, 0.1)),
            groups=groups_of(sub, "lesion_id").to_numpy() if group_by_lesion else None,
        )
        frame["split"] = pd.array(split, dtype="string")
        return frame
    raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLIT_NAMES)}")


def write_split(manifest_path: str | Path, name: str, output: str | Path, **options) -> Path:
    """Read a manifest, build the split ``name`` (see :func:`make_split`) and write it (parquet)."""
    manifest = pd.read_parquet(manifest_path)
    split = make_split(manifest, name, **options)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    split.to_parquet(tmp, index=False)
    tmp.replace(output)
    counts = split["split"].value_counts().to_dict() if "split" in split else {}
    logger.info("wrote split %s of %d images %s", name, len(split), counts)
    return output
