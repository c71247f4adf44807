"""siim2020: a patient-aware small dataset, ResNet18 + metadata, sex and brightness experts.

Paper 002 (SIIM-ISIC 2020 melanoma classification under a small compute budget), read with the
author's public code (GitHub ``phil-mira/AMLSII_24-25``); the notes are in
``shared/specs/siim2020.md``. Path-level functions called by ``workflow/rules/siim2020.smk``:

1. :func:`prepare_images` (per cache shard): the 256x256 image (cache ``sq256``) after one JPEG
   quality-60 round trip (the paper's "downsampled to 60 %" is the JPEG quality in the author's
   code), and its brightness (mean over pixels and channels, 0-255) and mean colour.
2. :func:`build_datasets` (per protocol): cleaning (duplicates, missing metadata), the split
   (``patient``: the shared ``patient_85_15`` split; ``author_code``: the author's 80:20 cut of
   rows sorted by patient id, 300 validation patients for Small, image-level leakage removal),
   the datasets All / Small / Small 3aug / Small 5aug and the evaluation set, and every count of
   table02.
3. :func:`train_model_on` (per protocol, model and dataset): the base model or an expert model
   (:mod:`melrepro.methods.metadata_models`) trained with the shared training core; the
   threshold rule of §6 on the evaluation set; predictions for the test set.
4. :func:`tabulate_table01`, :func:`tabulate_table02`, the figures and :func:`write_submission`.

Artifact index (id: function that writes it):

    table01          tabulate_table01 (metrics.json of every training)
    table02          tabulate_table02 (counts.json of each protocol)
    fig02            plot_colour_swatches
    fig03, fig04     plot_extremes (melanomas, benign)
    fig08, 14, 15    plot_loss_panels (base, sex, brightness model)
    fig09, 16, 17    plot_roc (base, brightness, sex model)
    fig10            plot_confusions
    fig11, fig12     plot_examples (true positives, false negatives of Base Small)
    fig13            plot_age_violins
    submission       write_submission (Base Small, Kaggle format)

Figures 1, 5, 6 and 7 of the paper are drawings (ResNet block, CNN, perceptron, architecture).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DATASETS",
    "DATASET_LABELS",
    "MODEL_LABELS",
    "PROTOCOLS",
    "augment_copy",
    "brightness_threshold",
    "build_datasets",
    "choose_threshold",
    "clean_training",
    "jpeg_round_trip",
    "plot_age_violins",
    "plot_colour_swatches",
    "plot_confusions",
    "plot_examples",
    "plot_extremes",
    "plot_loss_panels",
    "plot_roc",
    "prepare_images",
    "row_label",
    "small_dataset",
    "tabulate_table01",
    "tabulate_table02",
    "train_model_on",
    "write_submission",
]

logger = logging.getLogger(__name__)

DATASETS = ("all", "small", "small3aug", "small5aug")
DATASET_LABELS = {
    "all": "All",
    "small": "Small",
    "small3aug": "Small 3aug",
    "small5aug": "Small 5aug",
}
MODEL_LABELS = {"base": "Base", "sex": "Sex expert", "brightness": "Brightness expert"}
PROTOCOLS = ("patient", "author_code")
PROTOCOL_SUFFIX = {"patient": "", "author_code": " [author code]"}
_META = ("sex", "age", "site")


def row_label(model: str, dataset: str, protocol: str = "patient") -> str:
    """table01 row label: ``Base Small 3aug``, ``Sex expert All``, ``Base All [author code]``."""
    return f"{MODEL_LABELS[model]} {DATASET_LABELS[dataset]}{PROTOCOL_SUFFIX[protocol]}"


# ---------------------------------------------------------------- images


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode ``image`` (H, W, 3 uint8) as JPEG at ``quality`` and decode it again."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))


def prepare_images(
    cache_paths: Sequence[str | Path],
    output_images: str | Path,
    output_table: str | Path,
    *,
    jpeg_quality: int = 60,
) -> pd.DataFrame:
    """The paper's working images of one cache shard and their brightness.

    Writes ``output_images`` (``.npz``, one uint8 (S, S, 3) array per image id) and
    ``output_table`` (parquet: ``image_id, brightness, mean_r, mean_g, mean_b``); brightness
    is the mean over pixels and channels on the 0-255 scale.
    """
    from melrepro.data.imagecache import read_cache

    cache = read_cache(cache_paths)
    arrays: dict[str, np.ndarray] = {}
    rows = []
    for image_id in sorted(cache):
        image = jpeg_round_trip(cache[image_id].image, jpeg_quality)
        arrays[image_id] = image
        r, g, b = image.reshape(-1, 3).mean(axis=0)
        rows.append(
            {
                "image_id": image_id,
                "brightness": float(image.mean()),
                "mean_r": float(r),
                "mean_g": float(g),
                "mean_b": float(b),
            }
        )
    Path(output_images).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(output_images).with_name(Path(output_images).stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(output_images)
    table = pd.DataFrame(rows, columns=["image_id", "brightness", "mean_r", "mean_g", "mean_b"])
    table.to_parquet(output_table, index=False)
    logger.info("prepared %d images (JPEG quality %d)", len(table), jpeg_quality)
    return table


def load_images(paths: Sequence[str | Path], ids: Sequence[str] | None = None) -> dict:
    """Images written by :func:`prepare_images` (only ``ids`` when given).

    Raises
    ------
    ValueError
        If a wanted image is in no shard.
    """
    wanted = None if ids is None else set(ids)
    images: dict[str, np.ndarray] = {}
    for path in paths:
        with np.load(path) as data:
            for key in data.files:
                if wanted is None or key in wanted:
                    images[key] = data[key]
    if wanted is not None:
        missing = sorted(wanted - set(images))
        if missing:
            raise ValueError(f"{len(missing)} images are in no prepared shard, e.g. {missing[:5]}")
    return images


def read_brightness(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The brightness tables of every shard, concatenated."""
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def _aug_seed(seed: int, image_id: str, copy: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{image_id}:{copy}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


_AUGMENT_DEFAULTS = {
    "flip_p": 0.5,
    "shift_limit": 0.0625,
    "scale_limit": 0.1,
    "rotate_limit": 45.0,
    "ssr_p": 0.5,
    "brightness_limit": 0.1,
    "contrast_limit": 0.1,
}


@functools.lru_cache(maxsize=8)
def _augment_transform(height: int, width: int, items: tuple[tuple[str, float], ...]):
    """The torchvision pipeline of :func:`augment_copy` for one image size and parameter set,
    built once per job (its randomness comes from the torch seed set per copy)."""
    from torchvision.transforms import v2

    p = dict(items)
    side = height
    pad = side // 2
    flips = v2.RandomChoice(
        [
            v2.RandomHorizontalFlip(1.0),
            v2.RandomVerticalFlip(1.0),
            v2.Compose([v2.RandomHorizontalFlip(1.0), v2.RandomVerticalFlip(1.0)]),
        ]
    )
    # Reflect padding then a centre crop: torchvision's affine only fills with a constant, the
    # author's ShiftScaleRotate reflects (reflect-101, which is torch's "reflect").
    ssr = v2.Compose(
        [
            v2.Pad(pad, padding_mode="reflect"),
            v2.RandomAffine(
                degrees=float(p["rotate_limit"]),
                translate=(p["shift_limit"] * side / (side + 2 * pad),) * 2,
                scale=(1 - p["scale_limit"], 1 + p["scale_limit"]),
                interpolation=v2.InterpolationMode.BILINEAR,
            ),
            v2.CenterCrop((height, width)),
        ]
    )
    # DEVIATION: ColorJitter scales brightness multiplicatively; albumentations'
    # RandomBrightnessContrast adds brightness_limit x max. Same range of factors.
    return v2.Compose(
        [
            v2.RandomApply([flips], p=p["flip_p"]),
            v2.RandomApply([ssr], p=p["ssr_p"]),
            v2.ColorJitter(brightness=p["brightness_limit"], contrast=p["contrast_limit"]),
        ]
    )


def augment_copy(
    image: np.ndarray,
    *,
    seed: int,
    image_id: str,
    copy: int,
    params: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Augmented copy ``copy`` of one image, deterministic per ``(seed, image_id, copy)``.

    Copy 0 is the image itself. Otherwise, as the author's albumentations pipeline (§5.1):
    ``Flip`` (horizontal, vertical or both) with ``flip_p``; shift-scale-rotate (shift
    ``shift_limit`` of the side, scale 1 +- ``scale_limit``, rotation +- ``rotate_limit``
    degrees) with ``ssr_p``, reflect-101 borders; brightness and contrast +- ``brightness_limit``
    / ``contrast_limit`` always. Built from ``torchvision.transforms.v2``.
    """
    if copy == 0:
        return image
    import torch

    p = {**_AUGMENT_DEFAULTS, **(params or {})}
    transform = _augment_transform(image.shape[0], image.shape[1], tuple(sorted(p.items())))
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_aug_seed(seed, image_id, copy))
        out = transform(x)
    return out.permute(1, 2, 0).contiguous().numpy()


# ---------------------------------------------------------------- data


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
    brightness : :func:`prepare_images` tables (for the threshold)
    protocol : {"patient", "author_code"}
    seed : int
        Seeds the Small sampling (train and validation draw from their own streams).
    benign_per_patient : int
    copies : mapping
        Augmented copies per Small image: ``{"small3aug": 3, "small5aug": 5}``.
    author_code : mapping
        ``val_fraction`` (0.2), ``small_val_patients`` (300), ``random_state`` (42).

    Returns
    -------
    rows : DataFrame
        ``dataset, role (train/val/eval), image_id, copy, patient_id, target``.
    counts : dict
        Cleaning counts, per-dataset sizes, leakage rows removed, brightness threshold.

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
    parts: list[pd.DataFrame] = []
    if protocol == "patient":
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
    else:
        ordered = clean.sort_values(["patient_id", "image_id"], kind="stable").reset_index(
            drop=True
        )
        n_train = int(round(len(ordered) * (1 - float(author["val_fraction"]))))
        train_all, val_all = ordered.iloc[:n_train], ordered.iloc[n_train:]
        small = small_dataset(clean, benign_per_patient=benign_per_patient, seed=seed)
        train_p, val_p = _author_small_split(
            small, int(author["small_val_patients"]), int(author["random_state"])
        )
        small_train = small[small["patient_id"].isin(train_p)]
        small_val = small[small["patient_id"].isin(val_p)]
    parts.append(_rows("all", "train", train_all))
    parts.append(_rows("all", "val", val_all))
    for name in DATASETS[1:]:
        parts.append(_rows(name, "train", small_train, copies.get(name, 0)))
        parts.append(_rows(name, "val", small_val))
    counts["protocol"] = protocol
    datasets: dict[str, dict[str, int]] = {}
    for name in DATASETS:
        train_rows = parts[2 * DATASETS.index(name)]
        val_rows = parts[2 * DATASETS.index(name) + 1]
        if protocol == "patient":
            # Leakage: evaluation rows of a patient with training rows (0 by construction).
            leak = val_all["patient_id"].isin(set(train_rows["patient_id"]))
        else:  # the author's code: remove evaluation rows that are training images
            leak = val_all["image_id"].isin(set(train_rows["image_id"]))
        eval_rows = val_all[~leak]
        parts.append(_rows(name, "eval", eval_rows))
        datasets[name] = {
            "train_images": len(train_rows),
            "train_melanomas": int(train_rows["target"].sum()),
            "train_patients": int(train_rows["patient_id"].nunique()),
            "val_images": len(val_rows),
            "val_melanomas": int(val_rows["target"].sum()),
            "val_patients": int(val_rows["patient_id"].nunique()),
            "eval_images": len(eval_rows),
            "eval_melanomas": int(eval_rows["target"].sum()),
            "eval_patients": int(eval_rows["patient_id"].nunique()),
            "leakage_rows_removed": int(leak.sum()),
        }
    counts["datasets"] = datasets
    b = brightness.set_index("image_id")["brightness"]
    mel = train_all.loc[train_all["target"] == 1, "image_id"]
    counts["brightness_threshold"] = brightness_threshold(b.reindex(mel).dropna())
    counts["brightness_melanomas"] = len(mel)
    counts["melanomas_below_threshold"] = int(
        (b.reindex(mel) < counts["brightness_threshold"]).sum()
    )
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


# ---------------------------------------------------------------- threshold and metrics


def choose_threshold(
    y_true: np.ndarray, y_score: np.ndarray, tpr_range: tuple[float, float] = (0.8, 0.9)
) -> tuple[float, str]:
    """The paper's rule (§6): the threshold maximising F1 with TPR in ``tpr_range``.

    When no ROC point lies in the band (few positives), the threshold of the smallest TPR
    >= the band's lower end is taken instead.

    Returns
    -------
    threshold : float
        Predict melanoma when ``score >= threshold``.
    rule : str
        ``"F1-max, TPR in [0.8, 0.9]"`` or ``"smallest TPR >= 0.8 (none in band)"``.
    """
    from sklearn.metrics import roc_curve

    from melrepro.methods.metrics import f1_optimal_threshold

    low, high = tpr_range
    try:
        return f1_optimal_threshold(y_true, y_score, tpr_range=tpr_range), (
            f"F1-max, TPR in [{low:g}, {high:g}]"
        )
    except ValueError:
        pass
    _, tpr, thr = roc_curve(y_true, y_score, drop_intermediate=False)
    ok = np.isfinite(thr) & (tpr >= low)
    k = np.flatnonzero(ok)[np.argmin(tpr[ok])]
    # Of the thresholds that give this TPR, the largest (fewest false positives).
    same = np.flatnonzero(ok & (tpr == tpr[k]))
    return float(thr[same].max()), f"smallest TPR >= {low:g} (none in band)"


def evaluate_at(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict[str, Any]:
    """F1 of the melanoma class, ROC-AUC, recall, precision and the confusion counts."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

    from melrepro.methods.metrics import auroc

    y_pred = (np.asarray(y_score) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "f1": float(f1_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "auroc": float(auroc(y_true, y_score)),
        "recall": float(recall_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "precision": float(precision_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
    }


# ---------------------------------------------------------------- training


def _metadata(frame: pd.DataFrame, model: str, sites: Sequence[str]) -> np.ndarray:
    from melrepro.methods.metadata_models import encode_metadata

    return encode_metadata(
        frame, sites=sites, include_sex=model != "sex", route_female=model == "sex"
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

    Parameters
    ----------
    manifest_path, rows_path, counts_path, image_paths
        The isic2020 manifest, :func:`write_datasets` outputs, :func:`prepare_images` shards.
    protocol, model, dataset : str
        ``patient``/``author_code``; ``base``/``sex``/``brightness``; one of :data:`DATASETS`.
    train : mapping
        :class:`~melrepro.methods.training.TrainOptions` keys (BCE, Adam, cosine...).
    head : mapping
        ``hidden`` ([512, 128]), ``metadata_dropout`` (0.3), ``dropout`` (0.5).
    augment : mapping
        :func:`augment_copy` parameters.
    sites : sequence of str
        Site vocabulary of the metadata one-hots.
    tpr_range : (low, high)
    checkpoint_dir, model_path, history_path, predictions_path, metrics_path : path
    run_info : mapping
        ``data_source``, ``seed``, ``pretrained``, ``device``.
    threads : int
    """
    import torch

    from melrepro.methods import training
    from melrepro.methods.metadata_models import ModelSpec

    # The job's threads from the start: the augmented copies below are built before the training
    # core sets them, and torch's default (every core) contends with the other jobs of the run.
    torch.set_num_threads(max(1, int(threads)))
    seed = int(run_info["seed"])
    options = training.TrainOptions.from_dict(
        dict(train),
        seed=seed,
        pretrained=bool(run_info["pretrained"]),
        device=str(run_info["device"]),
        threads=threads,
    )
    counts = json.loads(Path(counts_path).read_text(encoding="utf-8"))
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
    threshold_b = float(counts["brightness_threshold"])
    spec = ModelSpec(
        kind=model,
        n_metadata=test_meta.shape[1] - (1 if model == "sex" else 0),
        brightness_threshold=threshold_b,
        hidden=tuple(head.get("hidden", (512, 128))),
        metadata_dropout=float(head.get("metadata_dropout", 0.3)),
        dropout=float(head.get("dropout", 0.5)),
    )
    logger.info(
        "%s / %s / %s: %d train, %d val, %d eval, %d test images; %s",
        protocol,
        model,
        dataset,
        len(train_ds),
        len(val_ds),
        len(eval_ds),
        len(test_ds),
        spec,
    )
    result = training.train_model(
        train_ds,
        val_ds,
        options,
        checkpoint_dir=checkpoint_dir,
        history_path=history_path,
        model_factory=spec,
    )
    device = torch.device(result.device)
    p_val = training.predict(result.model, val_ds, options=options, device=device)
    p_eval = training.predict(result.model, eval_ds, options=options, device=device)
    p_test = training.predict(result.model, test_ds, options=options, device=device)
    y_eval = eval_rows["target"].to_numpy()
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

    y_val = val_rows["target"].to_numpy()
    val_auroc = float(auroc(y_val, p_val)) if len(np.unique(y_val)) == 2 else float("nan")
    routing = {}
    if model != "base":
        net = result.model.eval()
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
    preds = pd.concat(
        [
            eval_rows[["image_id", "patient_id", "target"]].assign(role="eval", probability=p_eval),
            test[["image_id", "patient_id"]].assign(target=pd.NA, role="test", probability=p_test),
        ],
        ignore_index=True,
    )
    preds["prediction"] = (preds["probability"] >= threshold).astype(int)
    Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
    preds.to_parquet(predictions_path, index=False)
    training.export_best(checkpoint_dir, model_path)
    info = {
        "protocol": protocol,
        "model": model,
        "dataset": dataset,
        "label": row_label(model, dataset, protocol),
        "threshold": threshold,
        "threshold_rule": rule,
        **scores,
        "val_auroc": val_auroc,
        "n_train": len(train_ds),
        "n_val": len(val_ds),
        "n_eval": len(eval_ds),
        "n_eval_melanomas": int(y_eval.sum()),
        "brightness_threshold": threshold_b,
        "routing_eval": routing,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": float(result.history["seconds"].sum()),
        "image_size": int(next(iter(images.values())).shape[0]),
        "device": result.device,
        "weights": result.weights,
        "options": options.to_dict(),
        "head": dict(head),
    }
    Path(metrics_path).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    logger.info("%s: threshold %.4f (%s) %s", info["label"], threshold, rule, scores)

    from melrepro.report.runinfo import write_run_info

    write_run_info(
        Path(metrics_path).parent,
        data_source=run_info["data_source"],
        config={"train": dict(train), "head": dict(head), "augment": dict(augment)},
        seed=seed,
        weights=result.weights,
        device=result.device,
        resumed_from_epoch=result.resumed_from_epoch,
    )
    return info


# ---------------------------------------------------------------- tables


def tabulate_table01(
    metrics_paths: Sequence[str | Path], output: str | Path, *, run_info: Mapping | None = None
) -> pd.DataFrame:
    """table01: threshold, F1, ROC-AUC and recall of every training (base rows first)."""
    from melrepro.report.tables import write_table

    infos = [json.loads(Path(p).read_text(encoding="utf-8")) for p in metrics_paths]
    order = {
        (m, d, p): k
        for k, (p, m, d) in enumerate(
            (p, m, d) for p in PROTOCOLS for m in MODEL_LABELS for d in DATASETS
        )
    }
    infos.sort(key=lambda i: order[(i["model"], i["dataset"], i["protocol"])])
    rows = []
    for i in infos:
        rows.append(
            {
                "Model": i["label"],
                "Threshold": round(i["threshold"], 4),
                "F1-Score": round(i["f1"], 4),
                "ROC-AUC": round(i["auroc"], 4),
                "Recall": round(i["recall"], 4),
                "Threshold rule": i["threshold_rule"],
                "Protocol": i["protocol"],
                "Evaluation images": i["n_eval"],
                "Evaluation melanomas": i["n_eval_melanomas"],
                "Evaluation prevalence %": round(
                    100 * i["n_eval_melanomas"] / max(i["n_eval"], 1), 2
                ),
                "Validation ROC-AUC": round(i["val_auroc"], 4),
                "Training images": i["n_train"],
                "Epochs": i["epochs_run"],
                "Weights": i["weights"],
            }
        )
    table = pd.DataFrame(rows).set_index("Model")
    write_table(
        table,
        output,
        title="Table 1. Base (and expert, author-protocol) models at the F1-optimal threshold "
        "with TPR in [0.8, 0.9] on the evaluation set",
    )
    if run_info is not None:
        from melrepro.report.runinfo import write_run_info

        write_run_info(
            Path(output).parent,
            data_source=run_info["data_source"],
            config={"trainings": [i["label"] for i in infos]},
            seed=run_info.get("seed"),
            weights=sorted({i["weights"] for i in infos}),
            device=sorted({i["device"] for i in infos}),
        )
    return table


def tabulate_table02(counts_paths: Sequence[str | Path], output: str | Path) -> pd.DataFrame:
    """table02: every count of the dataset construction, for each protocol."""
    from melrepro.report.tables import write_table

    rows = []

    def add(label: str, images=None, melanomas=None, patients=None, value=None, **extra):
        share = None
        if images:
            share = round(100 * melanomas / images, 2) if melanomas is not None else None
        rows.append(
            {
                "Row": label,
                "Images": images,
                "Melanomas": melanomas,
                "Patients": patients,
                "Melanoma %": share,
                "Value": value,
                **extra,
            }
        )

    for path in counts_paths:
        c = json.loads(Path(path).read_text(encoding="utf-8"))
        sfx = PROTOCOL_SUFFIX[c["protocol"]]
        if c["protocol"] == "patient":
            add(
                "Original training",
                c["original_images"],
                c["original_melanomas"],
                c["original_patients"],
                **{
                    "Male %": round(100 * c["original_male_share"], 2),
                    "Mean age": round(c["original_mean_age"], 2),
                    "Max images per patient": c["original_max_images_per_patient"],
                },
            )
            add("Test", c["test_images"], value=c["test_rows_with_missing_metadata"])
            add("Duplicates removed", c["duplicates_removed"], c["duplicate_melanomas_removed"])
            add("Missing values removed", c["missing_removed"], c["missing_melanomas_removed"])
            add(
                "Cleaned training",
                c["cleaned_images"],
                c["cleaned_melanomas"],
                c["cleaned_patients"],
                **{"Max images per patient": c["cleaned_max_images_per_patient"]},
            )
            add("Female palms/soles", melanomas=c["female_palms_soles_melanomas"])
            add("Male oral/genital", melanomas=c["male_oral_genital_melanomas"])
        d = c["datasets"]
        for name in DATASETS:
            label = DATASET_LABELS[name]
            add(
                f"{label} train{sfx}",
                d[name]["train_images"],
                d[name]["train_melanomas"],
                d[name]["train_patients"],
            )
            if name in ("all", "small"):
                add(
                    f"{label} validation{sfx}",
                    d[name]["val_images"],
                    d[name]["val_melanomas"],
                    d[name]["val_patients"],
                )
            add(
                f"Evaluation set ({label}){sfx}",
                d[name]["eval_images"],
                d[name]["eval_melanomas"],
                d[name]["eval_patients"],
                value=d[name]["leakage_rows_removed"],
            )
        add(
            f"Brightness threshold{sfx}",
            melanomas=c["brightness_melanomas"],
            value=round(c["brightness_threshold"], 3),
        )
    table = pd.DataFrame(rows).set_index("Row")
    write_table(
        table,
        output,
        title="Table 2. Dataset construction (Value: test rows with missing metadata; leakage "
        "rows removed from the evaluation set; brightness threshold 0-255)",
    )
    return table


# ---------------------------------------------------------------- figures


def _clean_with_brightness(manifest_path, brightness_paths) -> pd.DataFrame:
    clean, _, _ = clean_training(pd.read_parquet(manifest_path))
    b = read_brightness(brightness_paths)
    return clean.merge(b, on="image_id", how="inner")


def plot_colour_swatches(
    manifest_path: str | Path,
    brightness_paths: Sequence[str | Path],
    output: str | Path,
    *,
    n_random: int = 2500,
    seed: int = 0,
) -> None:
    """fig02: mean colour of each image sorted by brightness, (a) all melanomas, (b) a random
    sample of ``n_random`` images (of the cleaned training set)."""
    from melrepro.report.figures import new_figure, save_figure

    frame = _clean_with_brightness(manifest_path, brightness_paths)
    mel = frame[frame["target"] == 1]
    sample = frame.sample(n=min(n_random, len(frame)), random_state=seed)
    fig, axes = new_figure(1, 2, figsize=(10, 5))
    for ax, part, title in (
        (axes[0], mel, f"(a) all melanomas (n={len(mel)})"),
        (axes[1], sample, f"(b) random sample (n={len(sample)})"),
    ):
        part = part.sort_values("brightness")
        colours = part[["mean_r", "mean_g", "mean_b"]].to_numpy() / 255.0
        side = int(np.ceil(np.sqrt(max(len(colours), 1))))
        grid = np.ones((side * side, 3))
        grid[: len(colours)] = colours
        ax.imshow(grid.reshape(side, side, 3), interpolation="nearest")
        ax.set_title(f"{title}\nmean brightness {part['brightness'].mean():.1f}", fontsize=10)
        ax.set_axis_off()
    fig.suptitle("Average colour of each image, sorted by brightness (row by row, dark first)")
    save_figure(fig, output)


def plot_extremes(
    manifest_path: str | Path,
    brightness_paths: Sequence[str | Path],
    image_paths: Sequence[str | Path],
    output: str | Path,
    *,
    target: int,
    n: int = 5,
) -> None:
    """fig03 (melanomas, ``target=1``) / fig04 (benign, ``target=0``): the ``n`` lightest and
    ``n`` darkest training images."""
    from melrepro.report.figures import new_figure, save_figure

    frame = _clean_with_brightness(manifest_path, brightness_paths)
    part = frame[frame["target"] == target].sort_values("brightness")
    dark, light = part.head(n), part.tail(n).iloc[::-1]
    images = load_images(image_paths, list(dark["image_id"]) + list(light["image_id"]))
    fig, axes = new_figure(2, n, figsize=(2.2 * n, 5), squeeze=False)
    for r, (name, rows) in enumerate((("lightest", light), ("darkest", dark))):
        for c in range(n):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(rows):
                rec = rows.iloc[c]
                ax.imshow(images[rec["image_id"]])
                ax.set_title(f"{name}\n{rec['image_id']} b={rec['brightness']:.0f}", fontsize=7)
    kind = "melanomas" if target == 1 else "benign lesions"
    fig.suptitle(f"The {n} lightest (top) and darkest (bottom) {kind}")
    save_figure(fig, output)


def plot_age_violins(manifest_path: str | Path, output: str | Path) -> None:
    """fig13: split violins of age by sex, melanoma vs benign (cleaned training set)."""
    import seaborn as sns

    from melrepro.report.figures import new_figure, save_figure

    clean, _, _ = clean_training(pd.read_parquet(manifest_path))
    frame = pd.DataFrame(
        {
            "sex": clean["sex"].astype(str),
            "age": pd.to_numeric(clean["age"]).astype(float),
            "diagnosis": np.where(clean["target"] == 1, "melanoma", "benign"),
        }
    )
    fig, ax = new_figure(figsize=(6, 4.5))
    sns.violinplot(
        data=frame,
        x="sex",
        y="age",
        hue="diagnosis",
        split=True,
        inner="quart",
        ax=ax,
        order=["female", "male"],
        hue_order=["benign", "melanoma"],
    )
    ax.set_title("Age by sex and diagnosis (cleaned training set)")
    save_figure(fig, output)


def _panel_axes(n: int = 4):
    from melrepro.report.figures import new_figure

    return new_figure(2, 2, figsize=(9, 7), squeeze=False)


def plot_loss_panels(
    history_paths: Sequence[str | Path], labels: Sequence[str], output: str | Path, *, title: str
) -> None:
    """fig08 / fig14 / fig15: training and validation loss per epoch, one panel per dataset."""
    from melrepro.report.figures import save_figure

    fig, axes = _panel_axes()
    for ax, path, label in zip(axes.ravel(), history_paths, labels, strict=True):
        hist = pd.read_csv(path)
        ax.plot(hist["epoch"], hist["train_loss"], marker="o", label="train")
        ax.plot(hist["epoch"], hist["val_loss"], marker="o", label="validation")
        best = int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
        ax.axvline(best, color="0.6", ls="--", lw=0.8, label=f"best epoch {best}")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("BCE loss")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, output)


def plot_roc(
    predictions_paths: Sequence[str | Path],
    labels: Sequence[str],
    output: str | Path,
    *,
    title: str,
) -> None:
    """fig09 / fig16 / fig17: ROC curves on the evaluation set, AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from melrepro.report.figures import new_figure, save_figure

    fig, ax = new_figure(figsize=(5.5, 5))
    for path, label in zip(predictions_paths, labels, strict=True):
        preds = pd.read_parquet(path)
        ev = preds[preds["role"] == "eval"]
        y, p = ev["target"].astype(int).to_numpy(), ev["probability"].to_numpy()
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8)
    ax.axhspan(0.8, 0.9, color="0.92", zorder=0, label="TPR band [0.8, 0.9]")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, output)


def plot_confusions(
    predictions_paths: Sequence[str | Path],
    metrics_paths: Sequence[str | Path],
    labels: Sequence[str],
    output: str | Path,
) -> list[np.ndarray]:
    """fig10: evaluation-set confusion matrices at each model's threshold (2x2 panels)."""
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    from melrepro.report.figures import save_figure

    fig, axes = _panel_axes()
    out = []
    for ax, path, mpath, label in zip(
        axes.ravel(), predictions_paths, metrics_paths, labels, strict=True
    ):
        preds = pd.read_parquet(path)
        ev = preds[preds["role"] == "eval"]
        cm = confusion_matrix(ev["target"].astype(int), ev["prediction"], labels=[0, 1])
        out.append(cm)
        threshold = json.loads(Path(mpath).read_text(encoding="utf-8"))["threshold"]
        ConfusionMatrixDisplay(cm, display_labels=["benign", "melanoma"]).plot(
            ax=ax, cmap="Blues", colorbar=False
        )
        ax.set_title(f"{label} (threshold {threshold:.3f})", fontsize=10)
    fig.suptitle("Confusion matrices at the optimised thresholds (evaluation set)")
    save_figure(fig, output)
    return out


def plot_examples(
    predictions_path: str | Path,
    image_paths: Sequence[str | Path],
    output: str | Path,
    *,
    kind: str,
    n: int = 6,
) -> None:
    """fig11 (``kind="tp"``) / fig12 (``"fn"``): Base Small evaluation images, most confident
    true positives or least detected false negatives."""
    from melrepro.report.figures import new_figure, save_figure

    preds = pd.read_parquet(predictions_path)
    ev = preds[(preds["role"] == "eval") & (preds["target"] == 1)]
    if kind == "tp":
        rows = ev[ev["prediction"] == 1].sort_values("probability", ascending=False).head(n)
        title = "True positives (Base Small)"
    elif kind == "fn":
        rows = ev[ev["prediction"] == 0].sort_values("probability").head(n)
        title = "False negatives (Base Small)"
    else:
        raise ValueError(f"kind must be 'tp' or 'fn', got {kind!r}")
    images = load_images(image_paths, list(rows["image_id"]))
    cols = 3
    fig, axes = new_figure(2, cols, figsize=(7.5, 5.5), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k < len(rows):
            rec = rows.iloc[k]
            ax.imshow(images[rec["image_id"]])
            ax.set_title(f"{rec['image_id']}\np={rec['probability']:.3f}", fontsize=8)
        elif k == 0:
            ax.text(0.5, 0.5, "none at this threshold", ha="center", va="center")
    fig.suptitle(f"{title}: {len(rows)} of {int((ev['prediction'] == (kind == 'tp')).sum())}")
    save_figure(fig, output)


# ---------------------------------------------------------------- submission


def write_submission(
    predictions_path: str | Path, test_metadata_csv: str | Path, output: str | Path
) -> pd.DataFrame:
    """Kaggle ``image_name,target``: one row per test image, in test-metadata order.

    Raises
    ------
    ValueError
        If a test image has no prediction (or a prediction has no test row).
    """
    preds = pd.read_parquet(predictions_path)
    test = preds[preds["role"] == "test"].set_index("image_id")["probability"]
    order = pd.read_csv(test_metadata_csv, dtype=str, keep_default_na=False)["image"]
    missing = sorted(set(order) - set(test.index))
    extra = sorted(set(test.index) - set(order))
    if missing or extra:
        raise ValueError(
            f"{test_metadata_csv}: {len(missing)} test images without prediction "
            f"(e.g. {missing[:3]}), {len(extra)} predictions without test row (e.g. {extra[:3]})"
        )
    sub = pd.DataFrame({"image_name": order.to_numpy(), "target": test.reindex(order).to_numpy()})
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(output).with_name(Path(output).name + ".tmp")
    sub.to_csv(tmp, index=False)
    tmp.replace(output)
    return sub
