"""Ingest: index one dataset's official archives, check every image, write its manifest.

Three steps, so that the per-image work is sharded:

1. :func:`index_dataset` reads the CSVs and zip listings (no pixels), validates every row and
   matches labels, images and masks; it runs inside every later step, so it is cheap.
2. :func:`check_images` decodes the images of one shard (each image once), and checks mask sizes.
3. :func:`build_manifest` joins the index with the shard checks, applies the quarantine policy
   and writes ``manifest.parquet`` and ``quarantine.csv``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from melrepro.data import archive_io
from melrepro.data.archive_io import (
    URI_SEPARATOR,
    ArchiveFolder,
    IngestError,
    at_row,
    describe_error,
    first_row,
    read_checked_csv,
)
from melrepro.data.layouts import ATTRIBUTES, DatasetLayout, ImageSet, layout
from melrepro.data.pinned_ids import PinnedIdsError, check_pinned_ids

__all__ = [
    "CHECK_COLUMNS",
    "MANIFEST_COLUMNS",
    "IngestError",
    "build_manifest",
    "check_images",
    "index_dataset",
    "ingest_dataset",
    "manifest_metadata",
    "read_manifest",
    "shard_of",
    "write_check_shard",
]

logger = logging.getLogger(__name__)

#: The typed columns every manifest has (dataset-specific ``attr_*`` and ``raw_*`` columns follow).
MANIFEST_COLUMNS: dict[str, str] = {
    "image_id": "string",
    "dataset": "string",
    "official_split": "string",
    "label": "string",
    "target": "Int8",
    "patient_id": "string",
    "lesion_id": "string",
    "sex": "string",
    "age": "Float64",
    "site": "string",
    "width": "Int32",
    "height": "Int32",
    "image_uri": "string",
    "mask_uri": "string",
    "shard": "Int32",
}
#: Columns of a check shard (one row per image of the shard).
CHECK_COLUMNS = ("image_id", "width", "height", "decodable", "error")

_IMAGE_RE = re.compile(r"^(ISIC_\d+(?:_downsampled)?)\.jpe?g$", re.IGNORECASE)


def shard_of(image_id: str, n_shards: int) -> int:
    """The shard of an image: CRC-32 of its id modulo ``n_shards`` (known before ingest)."""
    return zlib.crc32(image_id.encode()) % n_shards


def _uri(file: str, member: str) -> str:
    return f"{file}{URI_SEPARATOR}{member}"


def _images_of(archive: ArchiveFolder, image_set: ImageSet) -> dict[str, str]:
    """image_id -> uri of every image of one split (other files such as superpixels are skipped)."""
    images = {}
    for member in archive.members(image_set.image_zip, image_set.image_folder):
        match = _IMAGE_RE.match(member.rsplit("/", 1)[-1])
        if match:
            images[match.group(1)] = _uri(image_set.image_zip, member)
    if not images:
        raise IngestError(
            f"{archive.path(image_set.image_zip)}: no ISIC_nnnnnnn.jpg images in folder "
            f"{image_set.image_folder!r}; expected the official layout"
        )
    return images


def _masks_of(archive: ArchiveFolder, zip_name: str, folder: str, suffix: str) -> dict[str, str]:
    # Official mask names vary in case between releases: match the suffix case-insensitively.
    masks = {}
    for member in archive.members(zip_name, folder):
        name = member.rsplit("/", 1)[-1]
        if name.lower().endswith(suffix.lower()):
            masks[name[: -len(suffix)]] = _uri(zip_name, member)
    return masks


def _match_masks(
    archive: ArchiveFolder, images: dict[str, str], masks: dict[str, str], zip_name: str
) -> None:
    where = archive.path(zip_name)
    without = sorted(set(images) - set(masks))
    if without:
        raise IngestError(
            f"{where}: no mask for {len(without)} image(s), first {without[0]!r}; expected one "
            "mask per image"
        )
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise IngestError(
            f"{where}: mask {masks[orphans[0]]!r} has no image ({len(orphans)} such mask(s))"
        )


def _match_labels(
    archive: ArchiveFolder,
    images: dict[str, str],
    ids: pd.Series,
    csv_name: str,
    image_set: ImageSet,
) -> None:
    where = archive.path(csv_name.split("::")[0])
    known = set(images)
    for position, image_id in enumerate(ids):
        if image_id not in known:
            raise IngestError(
                f"{at_row(where, position)}: label row for "
                f"{image_id!r} has no image in {archive.path(image_set.image_zip)}"
            )
    unlabelled = sorted(known - set(ids))
    if unlabelled:
        raise IngestError(
            f"{images[unlabelled[0]]}: image has no label row in {where} "
            f"({len(unlabelled)} unlabelled image(s)); expected one row per image"
        )


def _one_hot_label(frame: pd.DataFrame, columns: tuple[str, ...], where: str) -> pd.Series:
    values = frame[list(columns)].to_numpy(dtype=float)
    counts = (values == 1.0).sum(axis=1)
    bad = np.flatnonzero(counts != 1)
    if len(bad):
        row = int(bad[0])
        raise IngestError(
            f"{at_row(where, row)}: expected exactly one of "
            f"{list(columns)} to be 1.0, found {values[row].tolist()}"
        )
    return pd.Series(np.asarray(columns)[values.argmax(axis=1)], index=frame.index)


def _show(value: object) -> str:
    """A value as a message shows it: ``2``, not ``np.int64(2)``."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _raw(frame: pd.DataFrame, id_column: str) -> pd.DataFrame:
    return frame.rename(columns={c: f"raw_{c}" for c in frame.columns if c != id_column})


def _age(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.astype("string").str.strip(), errors="coerce").astype("Float64")


#: Values of a sex column that mean "not recorded".
_NO_SEX = ("", "unknown", "nan", "na")


def _sex(values: pd.Series, where: object = "metadata") -> pd.Series:
    """``male``/``female``, missing for blank or ``unknown``; anything else is an IngestError.

    (``M``, ``f``, ``1``... are not silently turned into missing values.)
    """
    lowered = values.astype("string").str.strip().str.lower()
    odd = lowered.notna() & ~lowered.isin(["male", "female", *_NO_SEX])
    if odd.any():
        position = first_row(odd)
        raise IngestError(
            f"{at_row(str(where), position, 'sex')}: {values.iloc[position]!r}; expected male, "
            "female, unknown or empty"
        )
    return lowered.where(lowered.isin(["male", "female"]))


#: Plausible ages in years (the official metadata gives 0 to 90, in steps of 5).
AGE_RANGE = (0.0, 120.0)


def _check_ages(frame: pd.DataFrame, dataset: str) -> None:
    """Refuse an age below 0, above 120 or infinite (``-5``, ``1e400``), naming the image."""
    if "age" not in frame.columns:
        return
    ages = pd.to_numeric(frame["age"], errors="coerce").astype("Float64")
    low, high = AGE_RANGE
    finite = ages.notna()
    bad = finite & ((ages < low) | (ages > high) | ages.isin([np.inf, -np.inf]))
    if bad.any():
        position = first_row(bad)
        raise IngestError(
            f"{dataset}: image {frame['image_id'].iloc[position]!r} has age "
            f"{float(ages.iloc[position])!r}; expected {low:g} to {high:g} years or empty"
        )


def _match_metadata(
    archive: ArchiveFolder, image_ids: pd.Series, meta_ids: pd.Series, csv_name: str
) -> None:
    """A metadata row for an image in no zip is an error; images without a row are counted.

    Every dataset is treated alike (HAM10000's metadata already raised on unknown images): a
    metadata CSV cut short at a row boundary shows up as ``images_without_metadata`` in the
    manifest's metadata and the log, instead of silently missing ages.
    """
    where = archive.path(csv_name.split("::")[0])
    unknown = ~meta_ids.isin(set(image_ids))
    if unknown.any():
        row = first_row(unknown)
        raise IngestError(
            f"{at_row(where, row)}: metadata for {meta_ids.iloc[row]!r}, which is in no image "
            "zip; expected rows for the dataset's images only"
        )
    missing = int((~image_ids.isin(set(meta_ids))).sum())
    if missing:
        archive.warn(
            "images_without_metadata",
            missing,
            f"{where}: {missing} image(s) have no metadata row (age, sex... missing)",
        )


def _index_isic2017(archive: ArchiveFolder, spec: DatasetLayout) -> pd.DataFrame:
    parts = []
    for image_set in spec.image_sets:
        images = _images_of(archive, image_set)
        labels = read_checked_csv(archive, image_set.labels)
        _match_labels(archive, images, labels["image_id"], image_set.labels.file, image_set)
        masks = _masks_of(archive, image_set.mask_zip, image_set.mask_folder, image_set.mask_suffix)
        _match_masks(archive, images, masks, image_set.mask_zip)
        where = str(archive.path(image_set.labels.file))
        for column in ("melanoma", "seborrheic_keratosis"):
            bad = ~labels[column].isin([0.0, 1.0])
            if bad.any():
                row = first_row(bad)
                raise IngestError(
                    f"{at_row(where, row, column)}: "
                    f"{_show(labels[column].iloc[row])}; expected 0.0 or 1.0"
                )
        both = (labels["melanoma"] == 1.0) & (labels["seborrheic_keratosis"] == 1.0)
        if both.any():
            row = first_row(both)
            raise IngestError(
                f"{at_row(where, row)}: melanoma and seborrheic_keratosis "
                "are both 1.0; expected at most one"
            )
        frame = pd.DataFrame({"image_id": labels["image_id"]})
        frame["official_split"] = image_set.split
        frame["label"] = np.where(
            labels["melanoma"] == 1.0,
            "melanoma",
            np.where(labels["seborrheic_keratosis"] == 1.0, "seborrheic_keratosis", "nevus"),
        )
        frame["target"] = (labels["melanoma"] == 1.0).astype(int)
        frame["image_uri"] = frame["image_id"].map(images)
        frame["mask_uri"] = frame["image_id"].map(masks)
        frame = frame.join(_raw(labels, "image_id").drop(columns="image_id", errors="ignore"))
        metadata = read_checked_csv(archive, image_set.metadata)
        if metadata is not None:
            _match_metadata(
                archive, frame["image_id"], metadata["image_id"], image_set.metadata.file
            )
            meta = metadata.set_index("image_id")
            frame["age"] = _age(frame["image_id"].map(meta["age_approximate"]))
            _sex(metadata["sex"], archive.path(image_set.metadata.file))  # rows named
            frame["sex"] = _sex(frame["image_id"].map(meta["sex"]))
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def _index_archive_melanoma(archive: ArchiveFolder, spec: DatasetLayout) -> pd.DataFrame:
    image_set = spec.image_sets[0]
    folder = archive.path(image_set.image_folder)
    if not folder.is_dir():
        raise IngestError(f"{folder}: folder written by `isic image download` is missing")
    images = {
        p.stem: f"{image_set.image_folder}/{p.name}"
        for p in sorted(folder.iterdir())
        if _IMAGE_RE.match(p.name)
    }
    metadata = read_checked_csv(archive, image_set.labels)
    odd = ~metadata["isic_id"].str.fullmatch(r"ISIC_\d{7}").fillna(False).astype(bool)
    if odd.any():
        row = first_row(odd)
        raise IngestError(
            f"{at_row(archive.path(image_set.labels.file), row, 'isic_id')}: "
            f"{metadata['isic_id'].iloc[row]!r}; expected an ISIC id (ISIC_ and 7 digits)"
        )
    _match_labels(archive, images, metadata["isic_id"], image_set.labels.file, image_set)
    frame = pd.DataFrame({"image_id": metadata["isic_id"]})
    frame["official_split"] = "train"
    # The query selects melanomas; a row that says otherwise is reported, not silently kept.
    for column in ("diagnosis", "diagnosis_1", "benign_malignant"):
        if column in metadata.columns:
            values = metadata[column].str.lower()
            odd = (~values.str.contains("melanoma|malignant", na=True) & values.notna()).fillna(
                False
            )
            if odd.any():
                row = first_row(odd)
                raise IngestError(
                    f"{at_row(archive.path(image_set.labels.file), row, column)}: "
                    f"{metadata[column].iloc[row]!r}; expected a melanoma"
                )
    frame["label"] = "melanoma"
    frame["target"] = 1
    frame["image_uri"] = frame["image_id"].map(images)
    if "sex" in metadata.columns:
        frame["sex"] = _sex(metadata["sex"], archive.path(image_set.labels.file))
    if "age_approx" in metadata.columns:
        frame["age"] = _age(metadata["age_approx"])
    if "anatom_site_general" in metadata.columns:
        frame["site"] = metadata["anatom_site_general"]
    return frame.join(_raw(metadata, "isic_id").drop(columns="isic_id", errors="ignore"))


def _index_task2(archive: ArchiveFolder, spec: DatasetLayout) -> pd.DataFrame:
    image_set = spec.image_sets[0]
    images = _images_of(archive, image_set)
    masks = _masks_of(archive, image_set.mask_zip, image_set.mask_folder, image_set.mask_suffix)
    _match_masks(archive, images, masks, image_set.mask_zip)
    frame = pd.DataFrame({"image_id": sorted(images)})
    frame["official_split"] = "train"
    frame["label"] = "unlabelled"
    frame["target"] = pd.NA
    frame["image_uri"] = frame["image_id"].map(images)
    frame["mask_uri"] = frame["image_id"].map(masks)
    for name in ATTRIBUTES:
        attribute = _masks_of(
            archive,
            image_set.attribute_zip,
            image_set.attribute_folder,
            f"_attribute_{name}.png",
        )
        _match_masks(archive, images, attribute, image_set.attribute_zip)
        frame[f"attr_{name}_uri"] = frame["image_id"].map(attribute)
    return frame


def _index_one_hot(archive: ArchiveFolder, spec: DatasetLayout) -> pd.DataFrame:
    """isic2018_task3 and isic2019: one-hot ground truth, optional metadata CSVs."""
    parts = []
    for image_set in spec.image_sets:
        images = _images_of(archive, image_set)
        labels = read_checked_csv(archive, image_set.labels)
        id_column = image_set.labels.id_column
        _match_labels(archive, images, labels[id_column], image_set.labels.file, image_set)
        frame = pd.DataFrame({"image_id": labels[id_column]})
        frame["official_split"] = image_set.split
        frame["label"] = _one_hot_label(
            labels, spec.label_columns, str(archive.path(image_set.labels.file.split("::")[0]))
        )
        frame["target"] = (frame["label"] == "MEL").astype(int)
        frame["image_uri"] = frame["image_id"].map(images)
        if image_set.mask_zip:  # HAM10000 lesion segmentations (training images only)
            masks = _masks_of(
                archive, image_set.mask_zip, image_set.mask_folder, image_set.mask_suffix
            )
            _match_masks(archive, images, masks, image_set.mask_zip)
            frame["mask_uri"] = frame["image_id"].map(masks)
        frame = frame.join(_raw(labels, id_column).drop(columns=id_column, errors="ignore"))
        metadata = read_checked_csv(archive, image_set.metadata) if image_set.metadata else None
        if metadata is not None:
            _match_metadata(
                archive,
                frame["image_id"],
                metadata[image_set.metadata.id_column],
                image_set.metadata.file,
            )
            meta = metadata.set_index(image_set.metadata.id_column)
            frame["age"] = frame["image_id"].map(meta["age_approx"]).astype("Float64")
            _sex(metadata["sex"], archive.path(image_set.metadata.file))  # rows named
            frame["sex"] = _sex(frame["image_id"].map(meta["sex"]))
            frame["site"] = frame["image_id"].map(meta["anatom_site_general"])
            frame["lesion_id"] = frame["image_id"].map(meta["lesion_id"])
        parts.append(frame)
    frame = pd.concat(parts, ignore_index=True)
    # HAM10000 metadata: lesion ids for the training images, and for the test images where the
    # optional Dataverse test file is there (absent: each test image is a lesion of its own).
    for extra in spec.extra_csvs:
        ham = read_checked_csv(archive, extra)
        if ham is None:
            continue
        unknown = ~ham["image_id"].isin(frame["image_id"])
        if unknown.any():
            row = first_row(unknown)
            raise IngestError(
                f"{at_row(archive.path(extra.file), row)}: metadata for "
                f"{ham['image_id'].iloc[row]!r}, which is in no image zip"
            )
        meta = ham.set_index("image_id")
        _sex(ham["sex"], archive.path(extra.file))  # rows named
        # Each file covers its own images: what it does not name stays as an earlier file set it.
        mine = frame["image_id"].isin(meta.index)
        ids = frame.loc[mine, "image_id"]
        frame.loc[mine, "lesion_id"] = ids.map(meta["lesion_id"])
        frame["age"] = frame.get("age", pd.Series(pd.NA, index=frame.index)).astype("Float64")
        frame.loc[mine, "age"] = ids.map(meta["age"]).astype("Float64")
        frame.loc[mine, "sex"] = _sex(ids.map(meta["sex"]))
        frame.loc[mine, "site"] = ids.map(meta["localization"])
        # Every column without a typed twin is kept verbatim (dx, dx_type and, in the Dataverse
        # form of the file, `dataset`: which collection an image comes from).
        typed = {"lesion_id", "age", "sex", "localization"}
        for column in meta.columns:
            if column not in typed:
                frame.loc[mine, f"raw_{column}"] = ids.map(meta[column])
    return frame


def _index_isic2020(archive: ArchiveFolder, spec: DatasetLayout) -> pd.DataFrame:
    train_set, test_set = spec.image_sets
    images = _images_of(archive, train_set)
    labels = read_checked_csv(archive, train_set.labels)
    _match_labels(archive, images, labels["image_name"], train_set.labels.file, train_set)
    bad = ~labels["target"].isin([0, 1])
    if bad.any():
        row = first_row(bad)
        raise IngestError(
            f"{at_row(archive.path(train_set.labels.file), row, 'target')}: "
            f"{_show(labels['target'].iloc[row])}; expected 0 or 1"
        )
    train = pd.DataFrame({"image_id": labels["image_name"]})
    train["official_split"] = "train"
    train["target"] = labels["target"].astype(int)
    train["label"] = np.where(train["target"] == 1, "melanoma", "benign")
    train["patient_id"] = labels["patient_id"]
    train["lesion_id"] = labels["lesion_id"]
    train["sex"] = _sex(labels["sex"], archive.path(train_set.labels.file))
    train["age"] = labels["age_approx"]
    train["site"] = labels["anatom_site_general_challenge"]
    train["image_uri"] = train["image_id"].map(images)
    train = train.join(_raw(labels, "image_name").drop(columns="image_name", errors="ignore"))

    test_images = _images_of(archive, test_set)
    metadata = read_checked_csv(archive, test_set.metadata)
    _match_labels(archive, test_images, metadata["image"], test_set.metadata.file, test_set)
    test = pd.DataFrame({"image_id": metadata["image"]})
    test["official_split"] = "test"
    test["label"] = "unknown"
    test["target"] = pd.NA
    test["patient_id"] = metadata["patient"]
    test["sex"] = _sex(metadata["sex"], archive.path(test_set.metadata.file))
    test["age"] = metadata["age_approx"]
    test["site"] = metadata["anatom_site_general"]
    test["image_uri"] = test["image_id"].map(test_images)
    frame = pd.concat([train, test], ignore_index=True)

    duplicates = read_checked_csv(archive, spec.extra_csvs[0])
    known = set(train["image_id"])
    for column in ("image_name_1", "image_name_2"):
        unknown = ~duplicates[column].isin(known)
        if unknown.any():
            row = first_row(unknown)
            raise IngestError(
                f"{at_row(archive.path(spec.extra_csvs[0].file), row, column)}: "
                f"{duplicates[column].iloc[row]!r} is not a training image"
            )
    frame["duplicate_of"] = frame["image_id"].map(
        duplicates.set_index("image_name_2")["image_name_1"]
    )
    return frame


_INDEXERS = {
    "isic2017": _index_isic2017,
    "isic_archive_melanoma": _index_archive_melanoma,
    "isic2018_task2": _index_task2,
    "isic2018_task3": _index_one_hot,
    "isic2019": _index_one_hot,
    "isic2020": _index_isic2020,
}


def index_dataset(archive_root: str | Path, dataset: str, *, n_shards: int = 1) -> pd.DataFrame:
    """Validate one dataset's archives and list its images, labels, groups and mask locations.

    Parameters
    ----------
    archive_root : path
        ``resources/archives/<dataset>``.
    dataset : str
        A key of :data:`melrepro.data.layouts.DATASETS`.
    n_shards : int
        Number of shards; fills the ``shard`` column (:func:`shard_of`).

    Returns
    -------
    pandas.DataFrame
        One row per image with the columns of :data:`MANIFEST_COLUMNS` except ``width`` and
        ``height`` (filled by :func:`build_manifest`), sorted by ``image_id``.

    Raises
    ------
    IngestError
        Any mismatch with the official layout, naming the file, row and column.
    """
    spec = layout(dataset)
    with ArchiveFolder(archive_root) as archive:
        frame = _INDEXERS[dataset](archive, spec)
        warnings = dict(archive.warnings)
    _check_ages(frame, dataset)
    duplicated = frame["image_id"].duplicated()
    if duplicated.any():
        raise IngestError(
            f"{archive_root}: image {frame['image_id'][duplicated].iloc[0]!r} appears in two "
            "splits; expected each image once"
        )
    frame["dataset"] = dataset
    frame["shard"] = [shard_of(i, n_shards) for i in frame["image_id"]]
    for column, dtype in MANIFEST_COLUMNS.items():
        if column not in frame.columns:
            frame[column] = pd.NA
        if column not in ("width", "height"):
            frame[column] = frame[column].astype(dtype)
    ordered = [c for c in MANIFEST_COLUMNS if c not in ("width", "height")]
    rest = sorted(c for c in frame.columns if c not in MANIFEST_COLUMNS)
    frame = frame[
        ordered
        + [c for c in rest if not c.startswith("raw_")]
        + [c for c in rest if c.startswith("raw_")]
    ]
    frame = frame.sort_values("image_id", ignore_index=True)
    # Counted warnings travel to build_manifest, which records them in the manifest's metadata.
    if warnings:  # (only then: a frame without attrs is written exactly as before)
        frame.attrs["ingest_warnings"] = warnings
    return frame


def _check_mask(
    where: str, data: bytes, expected: tuple[int, int], image_uri: str, *, nonempty: bool
) -> bool | None:
    """Decode one mask and check its size; return whether it has any pixel set (``nonempty``).

    Every failure is an :class:`IngestError` naming the archive member and what was expected.
    """
    wanted = f"a PNG mask of {expected[0]}x{expected[1]} px, the size of its image {image_uri}"
    try:
        with Image.open(io.BytesIO(data)) as mask:
            size = mask.size
            if size[0] * size[1] > archive_io.MAX_IMAGE_PIXELS:
                raise IngestError(
                    f"{where}: mask is {size[0]}x{size[1]} px, more than the "
                    f"{archive_io.MAX_IMAGE_PIXELS} px of the largest official image; expected "
                    f"{wanted}"
                )
            if size != expected:
                raise IngestError(
                    f"{where}: mask is {size[0]}x{size[1]} px; expected the size of its image "
                    f"{image_uri} ({expected[0]}x{expected[1]} px)"
                )
            mask.load()  # a truncated mask fails here, not in a later cache job
            return bool(np.asarray(mask).any()) if nonempty else None
    except IngestError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure, named
        raise IngestError(
            f"{where}: mask cannot be decoded ({describe_error(error)}); expected {wanted}"
        ) from None


def _check_image(data: bytes) -> tuple[int, int]:
    """Decode one image; its size. Raises (to be quarantined) on any failure or a huge image."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width * height > archive_io.MAX_IMAGE_PIXELS:
            raise ValueError(
                f"{width}x{height} px, more than the {archive_io.MAX_IMAGE_PIXELS} px of the "
                "largest official image"
            )
        image.load()
    return width, height


def check_images(
    archive_root: str | Path, dataset: str, shard: int, *, n_shards: int
) -> pd.DataFrame:
    """Decode every image of one shard once; check that masks have the image's size.

    Returns
    -------
    pandas.DataFrame
        ``image_id, width, height, decodable, error`` and, for task 2, ``attr_<name>_nonempty``.

    Raises
    ------
    IngestError
        A mask (lesion or attribute) whose size differs from its image's.
    """
    index = index_dataset(archive_root, dataset, n_shards=n_shards)
    index = index[index["shard"] == shard]
    rows = []
    attribute_columns = [c for c in index.columns if c.startswith("attr_") and c.endswith("_uri")]
    with ArchiveFolder(archive_root) as archive:
        for record in tqdm(
            index.itertuples(index=False),
            total=len(index),
            desc=f"check {dataset} shard {shard}",
            disable=None,
        ):
            row = {"image_id": record.image_id, "width": pd.NA, "height": pd.NA}
            try:
                row["width"], row["height"] = _check_image(archive.read(record.image_uri))
                row["decodable"], row["error"] = True, ""
            except IngestError:
                raise
            except Exception as error:  # noqa: BLE001 - any decoder failure is quarantined
                row["decodable"], row["error"] = False, describe_error(error)
                rows.append(row)
                continue
            expected = (row["width"], row["height"])
            mask_uris = [("mask", record.mask_uri)] + [
                (c, getattr(record, c)) for c in attribute_columns
            ]
            for column, uri in mask_uris:
                if uri is None or uri is pd.NA or (isinstance(uri, float) and np.isnan(uri)):
                    continue
                nonempty = _check_mask(
                    f"{archive_root}/{uri}",
                    archive.read(uri),
                    expected,
                    record.image_uri,
                    nonempty=column != "mask",
                )
                if column != "mask":
                    row[f"{column.removesuffix('_uri')}_nonempty"] = nonempty
            rows.append(row)
    columns = list(CHECK_COLUMNS) + [c.replace("_uri", "_nonempty") for c in attribute_columns]
    checks = pd.DataFrame(rows, columns=columns)
    checks["width"] = checks["width"].astype("Int32")
    checks["height"] = checks["height"].astype("Int32")
    checks["decodable"] = checks["decodable"].astype("boolean")
    checks["error"] = checks["error"].astype("string")
    return checks


def write_check_shard(
    archive_root: str | Path, dataset: str, shard: int, output: str | Path, *, n_shards: int
) -> Path:
    """:func:`check_images` for one shard, written atomically to ``output`` (parquet)."""
    checks = check_images(archive_root, dataset, shard, n_shards=n_shards)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    checks.to_parquet(tmp, index=False)
    tmp.replace(output)
    bad = int((~checks["decodable"]).sum())
    logger.info(
        "checked %d images of %s shard %d: %d undecodable", len(checks), dataset, shard, bad
    )
    return output


def build_manifest(
    index: pd.DataFrame, checks: pd.DataFrame, *, on_undecodable: str = "fail"
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Join the index with the image checks and apply the quarantine policy.

    Returns
    -------
    manifest, quarantine, metadata
        The manifest rows (undecodable images dropped when ``on_undecodable="drop"``), the
        ``image_id, image_uri, error`` rows of undecodable images, and the counts recorded in
        the manifest's parquet metadata.

    Raises
    ------
    IngestError
        Undecodable images with ``on_undecodable="fail"`` (the message lists the first ones), or
        images that no check shard covered.
    """
    if on_undecodable not in ("fail", "drop"):
        raise ValueError(f"on_undecodable={on_undecodable!r}; expected 'fail' or 'drop'")
    merged = index.merge(checks, on="image_id", how="left", validate="one_to_one")
    unchecked = merged["decodable"].isna()
    if unchecked.any():
        raise IngestError(
            f"image {merged['image_id'][unchecked].iloc[0]!r} is in no check shard; the shard "
            "count changed since the checks ran: rerun them"
        )
    bad = ~merged["decodable"].astype(bool)
    quarantine = merged.loc[bad, ["image_id", "image_uri", "error"]].reset_index(drop=True)
    if bad.any() and on_undecodable == "fail":
        first = "; ".join(f"{r.image_uri}: {r.error}" for r in quarantine.head(3).itertuples())
        raise IngestError(
            f"{len(quarantine)} image(s) cannot be decoded ({first}). Re-download the "
            "archive, or set data.on_undecodable: drop."
        )
    manifest = merged.loc[~bad].drop(columns=["decodable", "error"]).reset_index(drop=True)
    for column, dtype in MANIFEST_COLUMNS.items():
        manifest[column] = manifest[column].astype(dtype)
    ordered = list(MANIFEST_COLUMNS)
    manifest = manifest[ordered + [c for c in manifest.columns if c not in ordered]]
    metadata = {
        "dataset": str(index["dataset"].iloc[0]) if len(index) else None,
        "images": len(manifest),
        "dropped_undecodable": int(bad.sum()),
        "on_undecodable": on_undecodable,
    }
    warnings = index.attrs.get("ingest_warnings") or {}
    manifest.attrs = {}  # pyarrow would store attrs in the parquet file: they go to `metadata`
    if warnings:  # only when there is something to say: good input keeps its metadata
        metadata["warnings"] = dict(sorted(warnings.items()))
    return manifest, quarantine, metadata


def _write_parquet(frame: pd.DataFrame, path: Path, metadata: dict) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema_metadata = dict(table.schema.metadata or {})
    schema_metadata[b"melrepro"] = json.dumps(metadata).encode()
    table = table.replace_schema_metadata(schema_metadata)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def ingest_dataset(
    archive_root: str | Path,
    dataset: str,
    check_paths: list[str | Path],
    manifest_path: str | Path,
    quarantine_path: str | Path,
    *,
    n_shards: int,
    on_undecodable: str = "fail",
    failed_listing: str | Path | None = None,
    pinned_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Index, join the checks, write ``manifest.parquet`` and ``quarantine.csv`` (both or neither).

    With ``pinned_ids`` (the archive melanomas' pinned list) the images must be exactly those: an
    :class:`IngestError` names the pinned ids that are missing and the images that are not pinned.

    When undecodable images fail the run, their list is written to ``failed_listing`` (default
    ``quarantine_path``), which the rule puts outside its outputs (``logs/``): Snakemake deletes
    the outputs of a failed job, and the message points at the file that survives.
    """
    index = index_dataset(archive_root, dataset, n_shards=n_shards)
    if pinned_ids is not None:
        try:
            check_pinned_ids(index["image_id"], pinned_ids, where=f"{archive_root} ({dataset})")
        except PinnedIdsError as error:
            raise IngestError(str(error)) from None
    checks = pd.concat([pd.read_parquet(p) for p in check_paths], ignore_index=True)
    manifest_path, quarantine_path = Path(manifest_path), Path(quarantine_path)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        manifest, quarantine, metadata = build_manifest(
            index, checks, on_undecodable=on_undecodable
        )
    except IngestError as error:
        # The quarantine list is what the user needs to act on: write it even when failing.
        # (Snakemake removes the outputs of a failed job, so the list also goes to the log.)
        bad = checks[~checks["decodable"].astype(bool)]
        listing = bad.merge(index[["image_id", "image_uri"]], on="image_id")[
            ["image_id", "image_uri", "error"]
        ]
        target = Path(failed_listing) if failed_listing else quarantine_path
        target.parent.mkdir(parents=True, exist_ok=True)
        listing.to_csv(target, index=False)
        logger.error("quarantined images:\n%s", listing.to_csv(index=False))
        if listing.empty:
            raise
        raise IngestError(f"{error} The undecodable images are listed in {target}.") from None
    tmp = quarantine_path.with_name(quarantine_path.name + ".tmp")
    quarantine.to_csv(tmp, index=False)
    _write_parquet(manifest, manifest_path, metadata)
    tmp.replace(quarantine_path)
    logger.info(
        "%s: %d images in the manifest, %d dropped as undecodable",
        dataset,
        metadata["images"],
        metadata["dropped_undecodable"],
    )
    return manifest


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by :func:`ingest_dataset`."""
    return pd.read_parquet(path)


def manifest_metadata(path: str | Path) -> dict:
    """The counts recorded in a manifest's parquet metadata (images, dropped_undecodable...)."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(b"melrepro", b"{}"))
