"""siim2020's datasets: cleaning, the split of each protocol, All / Small / Small 3aug /
Small 5aug with their evaluation set, the brightness threshold, and every count of table02."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.papers.siim2020.images import read_brightness
from melrepro.papers.siim2020.names import DATASETS, PROTOCOLS

__all__ = [
    "brightness_threshold",
    "build_datasets",
    "clean_training",
    "small_dataset",
    "write_datasets",
]

logger = logging.getLogger(__name__)

_META = ("sex", "age", "site")


def clean_training(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The paper's cleaning of the training set (§5.1); the test set keeps every row.

    Drops the second image of every pair of the official duplicates file (``duplicate_of`` set),
    then every row with a missing sex, age or site.

    Returns
    -------
    train, test : DataFrame
    counts : dict
        ``original_*``, ``duplicates_removed``, ``missing_removed``, ``cleaned_*``, ``test_*``.
    """
    missing_cols = [c for c in ("duplicate_of", "patient_id", *_META) if c not in manifest]
    if missing_cols:
        raise ValueError(f"the isic2020 manifest lacks column(s) {missing_cols}")
    train = manifest[manifest["official_split"] == "train"].copy()
    test = manifest[manifest["official_split"] == "test"].copy()
    if train["target"].isna().any():
        raise ValueError("training rows without a target in the isic2020 manifest")
    train["target"] = train["target"].astype(int)
    # DEVIATION: the paper removes "duplicate images" without naming a list -> the official
    # ISIC_2020_Training_Duplicates.csv (image_name_2 of each pair dropped), as the author's code does.
    dup = train["duplicate_of"].notna()
    no_dup = train[~dup]
    na = no_dup[list(_META)].isna().any(axis=1)
    clean = no_dup[~na].reset_index(drop=True)
    counts = {
        "original_images": len(train),
        "original_melanomas": int(train["target"].sum()),
        "original_patients": int(train["patient_id"].nunique()),
        "original_male_share": float((train["sex"] == "male").mean()),
        "original_mean_age": float(pd.to_numeric(train["age"]).mean()),
        "original_max_images_per_patient": int(train.groupby("patient_id").size().max()),
        "duplicates_removed": int(dup.sum()),
        "duplicate_melanomas_removed": int(train.loc[dup, "target"].sum()),
        "missing_removed": int(na.sum()),
        "missing_melanomas_removed": int(no_dup.loc[na, "target"].sum()),
        "cleaned_images": len(clean),
        "cleaned_melanomas": int(clean["target"].sum()),
        "cleaned_patients": int(clean["patient_id"].nunique()),
        "cleaned_max_images_per_patient": int(clean.groupby("patient_id").size().max()),
        "cleaned_min_images_per_patient": int(clean.groupby("patient_id").size().min()),
        "test_images": len(test),
        "test_rows_with_missing_metadata": int(test[list(_META)].isna().any(axis=1).sum()),
        "female_palms_soles_melanomas": int(
            (
                (clean["sex"] == "female")
                & (clean["site"] == "palms/soles")
                & (clean["target"] == 1)
            ).sum()
        ),
        "male_oral_genital_melanomas": int(
            (
                (clean["sex"] == "male")
                & (clean["site"] == "oral/genital")
                & (clean["target"] == 1)
            ).sum()
        ),
    }
    return clean, test.reset_index(drop=True), counts


def small_dataset(frame: pd.DataFrame, *, benign_per_patient: int = 2, seed: int) -> pd.DataFrame:
    """Every melanoma plus ``benign_per_patient`` benign images of each patient, drawn with
    replacement (the author's ``create_smaller_dataset``), seeded; patients in sorted order."""
    rng = np.random.default_rng(seed)
    parts = [frame[frame["target"] == 1]]
    benign = frame[frame["target"] == 0]
    for _, group in benign.groupby("patient_id", sort=True):
        parts.append(group.iloc[rng.integers(0, len(group), benign_per_patient)])
    return pd.concat(parts, ignore_index=True)


def brightness_threshold(brightness: pd.Series | np.ndarray) -> float:
    """The brightness expert's threshold: the median brightness of the training melanomas."""
    values = np.asarray(brightness, dtype=float)
    if len(values) == 0:
        raise ValueError("no training melanomas to take the brightness median of")
    return float(np.median(values))


def _author_small_split(
    small: pd.DataFrame, n_val_patients: int, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    per_patient = small.groupby("patient_id")["target"].max()
    n_val = min(int(n_val_patients), len(per_patient) - 1)
    stratify = per_patient.to_numpy() if per_patient.value_counts().min() >= 2 else None
    train_p, val_p = train_test_split(
        per_patient.index.to_numpy(), test_size=n_val, stratify=stratify, random_state=random_state
    )
    return np.asarray(train_p), np.asarray(val_p)


def _rows(dataset: str, role: str, frame: pd.DataFrame, copies: int = 0) -> pd.DataFrame:
    base = frame[["image_id", "patient_id", "target"]].reset_index(drop=True)
    out = pd.concat([base.assign(copy=k) for k in range(copies + 1)], ignore_index=True)
    return out.assign(dataset=dataset, role=role)[
        ["dataset", "role", "image_id", "copy", "patient_id", "target"]
    ]


def _patient_parts(
    clean: pd.DataFrame, split: pd.DataFrame, *, benign_per_patient: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """All train / val by the shared patient split, Small train / val drawn from each.

    Raises
    ------
    ValueError
        A cleaned image without split, or a patient in train and val.
    """
    where = split.set_index("image_id")["split"].astype(str)
    clean["part"] = clean["image_id"].map(where)
    if clean["part"].isna().any():
        raise ValueError(f"{int(clean['part'].isna().sum())} cleaned images have no split")
    train_all = clean[clean["part"] == "train"]
    val_all = clean[clean["part"] == "val"]
    crossing = set(train_all["patient_id"]) & set(val_all["patient_id"])
    if crossing:
        raise ValueError(
            f"{len(crossing)} patients are in train and val, e.g. {sorted(crossing)[:3]}"
        )
    small_train = small_dataset(train_all, benign_per_patient=benign_per_patient, seed=seed)
    small_val = small_dataset(val_all, benign_per_patient=benign_per_patient, seed=seed + 1)
    return train_all, val_all, small_train, small_val


def _author_all_cut(ordered: pd.DataFrame, n_raw: int, val_fraction: float) -> int:
    """The author's ``create_validation_all``: the first validation row of ``ordered`` (cleaned
    rows sorted by patient id), ``val_fraction`` of the *raw* rows from the end, moved forward
    to the next patient boundary so the patient at the cut stays in training."""
    patients = ordered["patient_id"].to_numpy()
    # val_size = 0.2 * len(raw train.csv) (33,126 -> 6,625.2) is taken before cleaning, while the
    # cut indexes the cleaned rows: Python's round, as the author's code.
    at = round(len(ordered) - n_raw * val_fraction)
    if not 0 <= at < len(ordered) - 1:
        raise ValueError(
            f"a validation of {val_fraction} x {n_raw} raw rows leaves no training or no "
            f"validation row among {len(ordered)} cleaned rows"
        )
    while at + 1 < len(ordered) and patients[at] == patients[at + 1]:
        at += 1
    if at + 1 >= len(ordered):
        raise ValueError("the patient at the author's cut runs to the last row: no validation")
    return at + 1


def _author_code_parts(
    clean: pd.DataFrame,
    author: Mapping[str, Any],
    *,
    n_raw: int,
    benign_per_patient: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The author's protocol: All validation the last ``val_fraction`` of the raw row count of
    the cleaned rows sorted by patient id, cut at a patient boundary; Small drawn from every
    cleaned row, then split by patient (``small_val_patients``)."""
    ordered = clean.sort_values(["patient_id", "image_id"], kind="stable").reset_index(drop=True)
    cut = _author_all_cut(ordered, n_raw, float(author["val_fraction"]))
    train_all, val_all = ordered.iloc[:cut], ordered.iloc[cut:]
    small = small_dataset(clean, benign_per_patient=benign_per_patient, seed=seed)
    train_p, val_p = _author_small_split(
        small, int(author["small_val_patients"]), int(author["random_state"])
    )
    small_train = small[small["patient_id"].isin(train_p)]
    small_val = small[small["patient_id"].isin(val_p)]
    return train_all, val_all, small_train, small_val


def _part_counts(frame: pd.DataFrame, prefix: str) -> dict[str, int]:
    return {
        f"{prefix}_images": len(frame),
        f"{prefix}_melanomas": int(frame["target"].sum()),
        f"{prefix}_patients": int(frame["patient_id"].nunique()),
    }


def _evaluation_set(
    protocol: str, parts: list[pd.DataFrame], val_all: pd.DataFrame
) -> tuple[list[pd.DataFrame], dict[str, Any], dict[str, dict[str, int]]]:
    """The one evaluation set of the four datasets (§5.2: "the same validation dataset was used
    for model comparison"): All validation less the rows any dataset trains on; its counts, and
    per dataset its sizes and the evaluation patients who also have training images in it.

    ``parts`` holds the train and val rows of each dataset, in :data:`DATASETS` order.
    """
    trains = {name: parts[2 * k] for k, name in enumerate(DATASETS)}
    vals = {name: parts[2 * k + 1] for k, name in enumerate(DATASETS)}
    leaks = {}
    for name, train_rows in trains.items():
        if protocol == "patient":
            # Rows of a patient with training rows (0 by construction of the patient split).
            leaks[name] = val_all["patient_id"].isin(set(train_rows["patient_id"]))
        else:  # the author: "rows used in training ... removed" (images, not patients)
            leaks[name] = val_all["image_id"].isin(set(train_rows["image_id"]))
    leak = np.logical_or.reduce([m.to_numpy() for m in leaks.values()])
    eval_rows = val_all[~leak]
    evaluation = _part_counts(eval_rows, "eval") | {"leakage_rows_removed": int(leak.sum())}
    datasets: dict[str, dict[str, int]] = {}
    for name in DATASETS:
        train_rows = trains[name]
        # Evaluation patients whose other images this dataset trains on: the author's image-level
        # removal keeps them (the same lesion can be photographed more than once).
        shared = eval_rows[eval_rows["patient_id"].isin(set(train_rows["patient_id"]))]
        datasets[name] = (
            _part_counts(train_rows, "train")
            | _part_counts(vals[name], "val")
            | _part_counts(eval_rows, "eval")
            | _part_counts(shared, "overlap")
            | {"leakage_rows_removed": int(leaks[name].sum())}
        )
    eval_parts = [_rows(name, "eval", eval_rows) for name in DATASETS]
    return eval_parts, evaluation, datasets


def _brightness_counts(brightness: pd.DataFrame, train_all: pd.DataFrame) -> dict[str, Any]:
    """The brightness threshold (median of All train's melanomas) and the melanomas below it."""
    counts: dict[str, Any] = {}
    b = brightness.set_index("image_id")["brightness"]
    mel = train_all.loc[train_all["target"] == 1, "image_id"]
    # DEVIATION: the paper (and the author's code: all 572 cleaned melanomas) takes the median over
    # every melanoma -> All train's melanomas only, so no validation or evaluation image sets it.
    counts["brightness_threshold"] = brightness_threshold(b.reindex(mel).dropna())
    counts["brightness_melanomas"] = len(mel)
    counts["melanomas_below_threshold"] = int(
        (b.reindex(mel) < counts["brightness_threshold"]).sum()
    )
    return counts


def build_datasets(
    manifest: pd.DataFrame,
    split: pd.DataFrame,
    brightness: pd.DataFrame,
    *,
    protocol: str = "patient",
    seed: int = 0,
    benign_per_patient: int = 2,
    copies: Mapping[str, int] | None = None,
    author_code: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every dataset variant of one protocol, its evaluation set, and the counts of table02.

    Parameters
    ----------
    manifest : the isic2020 manifest
    split : the ``patient_85_15`` split (``image_id, split``) (``patient`` protocol)
    brightness : :func:`~melrepro.papers.siim2020.images.prepare_images` tables (threshold)
    protocol : {"patient", "author_code"}
    seed : int
        Seeds the Small sampling (train and validation draw from their own streams).
    benign_per_patient : int
    copies : mapping
        Augmented copies per Small image: ``{"small3aug": 3, "small5aug": 5}``.
    author_code : mapping
        ``val_fraction`` (0.2 of the raw training rows), ``small_val_patients`` (300),
        ``random_state`` (42).

    Returns
    -------
    rows : DataFrame
        ``dataset, role (train/val/eval), image_id, copy, patient_id, target``; the ``eval``
        rows are the same for every dataset.
    counts : dict
        Cleaning counts, the evaluation set (``evaluation``), per-dataset sizes with leakage rows
        removed and evaluation patients that have training images (``overlap_*``), brightness
        threshold.

    Raises
    ------
    ValueError
        Unknown protocol, or (patient protocol) a patient in more than one part.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    copies = dict(copies or {"small3aug": 3, "small5aug": 5})
    author = {
        "val_fraction": 0.2,
        "small_val_patients": 300,
        "random_state": 42,
        **(author_code or {}),
    }
    clean, _, counts = clean_training(manifest)
    if protocol == "patient":
        train_all, val_all, small_train, small_val = _patient_parts(
            clean, split, benign_per_patient=benign_per_patient, seed=seed
        )
    else:
        train_all, val_all, small_train, small_val = _author_code_parts(
            clean,
            author,
            n_raw=counts["original_images"],
            benign_per_patient=benign_per_patient,
            seed=seed,
        )
    parts: list[pd.DataFrame] = []
    parts.append(_rows("all", "train", train_all))
    parts.append(_rows("all", "val", val_all))
    for name in DATASETS[1:]:
        parts.append(_rows(name, "train", small_train, copies.get(name, 0)))
        parts.append(_rows(name, "val", small_val))
    counts["protocol"] = protocol
    eval_parts, counts["evaluation"], counts["datasets"] = _evaluation_set(protocol, parts, val_all)
    parts.extend(eval_parts)
    counts |= _brightness_counts(brightness, train_all)
    rows = pd.concat(parts, ignore_index=True)
    return rows, counts


def write_datasets(
    manifest_path: str | Path,
    split_path: str | Path,
    brightness_paths: Sequence[str | Path],
    output_rows: str | Path,
    output_counts: str | Path,
    **options: Any,
) -> dict[str, Any]:
    """:func:`build_datasets` from files; writes the rows (parquet) and the counts (JSON)."""
    rows, counts = build_datasets(
        pd.read_parquet(manifest_path),
        pd.read_parquet(split_path),
        read_brightness(brightness_paths),
        **options,
    )
    Path(output_rows).parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(output_rows, index=False)
    Path(output_counts).write_text(json.dumps(counts, indent=2) + "\n", encoding="utf-8")
    logger.info("protocol %s: %s", counts["protocol"], json.dumps(counts["datasets"]))
    return counts
