"""Ingest: the synthetic twin parses with the same code as the real archives; bad input is named."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from melrepro.data.archive_io import ArchiveFolder, IngestError, read_checked_csv
from melrepro.data.layouts import DATASETS
from melrepro.data.manifests import (
    MANIFEST_COLUMNS,
    build_manifest,
    check_images,
    index_dataset,
    ingest_dataset,
    manifest_metadata,
)


def _rewrite_zip(path: Path, transform=None, extra: dict[str, bytes] | None = None) -> None:
    """Rewrite a zip: ``transform(name, data)`` returns new bytes, or None to drop the member."""
    with zipfile.ZipFile(path) as source:
        members = [(info.filename, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w") as target:
        for name, data in members:
            data = transform(name, data) if transform else data
            if data is not None:
                target.writestr(name, data)
        for name, data in (extra or {}).items():
            target.writestr(name, data)


def _full_manifest(root: Path, dataset: str) -> pd.DataFrame:
    checks = check_images(root, dataset, 0, n_shards=1)
    manifest, _, _ = build_manifest(index_dataset(root, dataset), checks)
    return manifest


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_synthetic_twin_ingests_like_the_real_layout(tiny_archives, dataset):
    """Check every dataset's twin ingests, with typed columns and the generator's labels and sizes."""
    root = tiny_archives / dataset
    manifest = _full_manifest(root, dataset)
    truth = pd.read_csv(root / "synthetic_truth" / "truth.csv", dtype={"image_id": str})
    assert sorted(manifest["image_id"]) == sorted(truth["image_id"])
    for column, dtype in MANIFEST_COLUMNS.items():
        assert str(manifest[column].dtype) == dtype, column
    merged = manifest.merge(truth, on="image_id", suffixes=("", "_truth"))
    assert (merged["width"] == merged["width_truth"]).all()
    assert (merged["height"] == merged["height_truth"]).all()
    assert (merged["official_split"] == merged["split"]).all()
    if dataset != "isic2018_task2":  # task 2 ships no labels
        labelled = merged[merged["target"].notna()]  # challenge test sets ship none either
        assert len(labelled) > 0
        assert (labelled["label"] == labelled["label_truth"]).all()
    assert manifest["image_uri"].notna().all()


def test_isic2017_has_masks_targets_and_height_bands(tiny_archives):
    """Check Part1 masks are attached, melanoma is the binary target, and heights span the bands."""
    manifest = _full_manifest(tiny_archives / "isic2017", "isic2017")
    assert manifest["mask_uri"].str.endswith("_segmentation.png").all()
    assert ((manifest["label"] == "melanoma") == (manifest["target"] == 1)).all()
    heights = manifest["height"].astype(int)
    assert (heights < 1000).any()
    assert heights.between(1000, 2000).any()
    assert (heights > 2000).any()
    assert set(manifest["official_split"]) == {"train", "val", "test"}


def test_task2_attribute_masks(tiny_archives):
    """Check all five attribute masks are attached and non-emptiness is read from the pixels."""
    manifest = _full_manifest(tiny_archives / "isic2018_task2", "isic2018_task2")
    for name in ("globules", "milia_like_cyst", "negative_network", "pigment_network", "streaks"):
        assert manifest[f"attr_{name}_uri"].notna().all()
        assert manifest[f"attr_{name}_nonempty"].dtype == bool
    assert manifest[[c for c in manifest if c.endswith("_nonempty")]].to_numpy().any()


def test_groups_and_duplicates(tiny_archives):
    """Check lesion/patient groups reach the manifest and 2020 duplicates point to their first image."""
    task3 = index_dataset(tiny_archives / "isic2018_task3", "isic2018_task3")
    train = task3[task3["official_split"] == "train"]
    assert train["lesion_id"].notna().all()
    assert train["lesion_id"].str.startswith("HAM_").all()
    isic2020 = index_dataset(tiny_archives / "isic2020", "isic2020")
    assert isic2020.loc[isic2020["official_split"] == "train", "patient_id"].notna().all()
    assert isic2020["duplicate_of"].notna().sum() == 2
    assert isic2020.loc[isic2020["official_split"] == "test", "target"].isna().all()


def test_shards_partition_the_images(tiny_archives):
    """Check three shards cover every image exactly once."""
    root = tiny_archives / "isic2020"
    index = index_dataset(root, "isic2020", n_shards=3)
    checks = pd.concat([check_images(root, "isic2020", k, n_shards=3) for k in range(3)])
    assert sorted(checks["image_id"]) == sorted(index["image_id"])
    assert checks["decodable"].all()


# ---- bad input: each error names the file (and row/column) and what was expected ----


def test_renamed_column(archive_copy):
    """Check a renamed CSV column is reported with file, missing name and the name found."""
    root = archive_copy("isic2017")
    path = root / "ISIC-2017_Training_Part3_GroundTruth.csv"
    path.write_text(path.read_text().replace("seborrheic_keratosis", "sk", 1))
    with pytest.raises(
        IngestError,
        match=r"Training_Part3_GroundTruth\.csv: missing column\(s\) 'seborrheic_keratosis'",
    ):
        index_dataset(root, "isic2017")


def test_wrong_type_names_row_and_column(archive_copy):
    """Check a non-numeric label is reported with its row and column."""
    root = archive_copy("isic2017")
    path = root / "ISIC-2017_Test_v2_Part3_GroundTruth.csv"
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[1] = "yes"
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        IngestError, match=r"row 2 \(line 3\), column 'melanoma': 'yes' is not a number"
    ):
        index_dataset(root, "isic2017")


def test_label_row_without_image(archive_copy):
    """Check a label row whose image is absent names the CSV, the row and the zip."""
    root = archive_copy("isic2019")
    path = root / "ISIC_2019_Training_GroundTruth.csv"
    header, *rows = path.read_text().splitlines()
    rows.append("ISIC_9999999," + ",".join(["1.0"] + ["0.0"] * 8))
    path.write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(IngestError, match=rf"row {len(rows)} .*'ISIC_9999999' has no image"):
        index_dataset(root, "isic2019")


def test_image_without_label(archive_copy):
    """Check an image with no label row is named."""
    root = archive_copy("isic2019")
    path = root / "ISIC_2019_Training_GroundTruth.csv"
    header, first, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *rows]) + "\n")
    missing = first.split(",")[0]
    with pytest.raises(IngestError, match=rf"{missing}\.jpg: image has no label row"):
        index_dataset(root, "isic2019")


def test_mask_of_wrong_size(archive_copy):
    """Check a mask whose size differs from its image's names the mask and both sizes."""
    root = archive_copy("isic2017")
    zip_path = root / "ISIC-2017_Training_Part1_GroundTruth.zip"
    state = {}

    def shrink(name, data):
        if name.endswith(".png") and "done" not in state:
            state["done"] = name
            buffer = io.BytesIO()
            Image.new("L", (17, 13)).save(buffer, format="PNG")
            return buffer.getvalue()
        return data

    _rewrite_zip(zip_path, shrink)
    with pytest.raises(IngestError, match=r"mask is 17x13 px; expected the size of its image"):
        check_images(root, "isic2017", 0, n_shards=1)


def test_undecodable_jpeg_fails_or_is_dropped(archive_copy, tmp_path):
    """Check an undecodable image fails the run by default, or is dropped and counted."""
    root = archive_copy("isic2020")
    zip_path = root / "ISIC_2020_Training_JPEG.zip"
    state = {}

    def corrupt(name, data):
        if name.endswith(".jpg") and "done" not in state:
            state["done"] = name
            return data[:200]
        return data

    _rewrite_zip(zip_path, corrupt)
    bad_id = Path(state["done"]).stem
    checks = tmp_path / "checks.parquet"
    check_images(root, "isic2020", 0, n_shards=1).to_parquet(checks)
    with pytest.raises(IngestError, match=r"1 image\(s\) cannot be decoded .*listed in .*q\.csv"):
        ingest_dataset(
            root, "isic2020", [checks], tmp_path / "m.parquet", tmp_path / "q.csv", n_shards=1
        )
    assert not (tmp_path / "m.parquet").exists()
    assert bad_id in (tmp_path / "q.csv").read_text()
    manifest = ingest_dataset(
        root,
        "isic2020",
        [checks],
        tmp_path / "m.parquet",
        tmp_path / "q.csv",
        n_shards=1,
        on_undecodable="drop",
    )
    assert bad_id not in set(manifest["image_id"])
    assert manifest_metadata(tmp_path / "m.parquet")["dropped_undecodable"] == 1
    quarantine = pd.read_csv(tmp_path / "q.csv")
    assert list(quarantine["image_id"]) == [bad_id]


def test_zip_slip_member_is_refused(archive_copy):
    """Check a member that would unpack outside the archive root is refused, naming zip and member."""
    root = archive_copy("isic2019")
    _rewrite_zip(root / "ISIC_2019_Training_Input.zip", extra={"../../evil.jpg": b"x"})
    with pytest.raises(
        IngestError,
        match=r"ISIC_2019_Training_Input\.zip: member '\.\./\.\./evil\.jpg' points outside",
    ):
        index_dataset(root, "isic2019")


def test_truncated_zip(archive_copy):
    """Check a truncated zip is reported as such, naming the file."""
    root = archive_copy("isic2019")
    path = root / "ISIC_2019_Training_Input.zip"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        IngestError, match=r"ISIC_2019_Training_Input\.zip: not a readable zip .*truncated"
    ):
        index_dataset(root, "isic2019")


def test_missing_archive_file(archive_copy):
    """Check a missing official file is named."""
    root = archive_copy("isic2018_task3")
    (root / "ISIC2018_Task3_Validation_Input.zip").unlink()
    with pytest.raises(
        IngestError, match=r"ISIC2018_Task3_Validation_Input\.zip: archive file is missing"
    ):
        index_dataset(root, "isic2018_task3")


def test_mask_without_image(archive_copy):
    """Check an orphan mask is named."""
    root = archive_copy("isic2017")
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    _rewrite_zip(
        root / "ISIC-2017_Validation_Part1_GroundTruth.zip",
        extra={
            "ISIC-2017_Validation_Part1_GroundTruth/ISIC_0999999_segmentation.png": buffer.getvalue()
        },
    )
    with pytest.raises(IngestError, match=r"ISIC_0999999_segmentation\.png' has no image"):
        index_dataset(root, "isic2017")


def test_mask_suffix_matches_case_insensitively(archive_copy):
    """Check masks named *_Segmentation.PNG (other releases) still match their images."""
    root = archive_copy("isic2017")
    with zipfile.ZipFile(root / "ISIC-2017_Test_v2_Part1_GroundTruth.zip") as source:
        members = [(i.filename, source.read(i)) for i in source.infolist()]
    with zipfile.ZipFile(root / "ISIC-2017_Test_v2_Part1_GroundTruth.zip", "w") as target:
        for name, data in members:
            target.writestr(name.replace("_segmentation.png", "_Segmentation.PNG"), data)
    index = index_dataset(root, "isic2017")
    assert index["mask_uri"].notna().all()


def test_ingest_is_deterministic(tiny_archives, tmp_path):
    """Check two ingests of the same archives give identical manifests."""
    root = tiny_archives / "isic2018_task3"
    checks = tmp_path / "c.parquet"
    check_images(root, "isic2018_task3", 0, n_shards=1).to_parquet(checks)
    a = ingest_dataset(
        root, "isic2018_task3", [checks], tmp_path / "a.parquet", tmp_path / "qa.csv", n_shards=1
    )
    b = ingest_dataset(
        root, "isic2018_task3", [checks], tmp_path / "b.parquet", tmp_path / "qb.csv", n_shards=1
    )
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


# ---- blank CSV fields are missing values, in every text column of every dataset ----


def _csv_specs(dataset: str):
    spec = DATASETS[dataset]
    specs = [s for image_set in spec.image_sets for s in (image_set.labels, image_set.metadata)]
    # The duplicates file holds references to images, which cannot be blank.
    return [s for s in [*specs, *spec.extra_csvs] if s is not None and "Duplicates" not in s.file]


def _blank_first_row(root: Path, csv_spec) -> list[str]:
    """Blank every text (non-id) field of the first data row of one CSV; the blanked columns."""
    blanked: list[str] = []

    def rewrite(data: bytes) -> bytes:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        for column in frame.columns:
            kind = csv_spec.dtypes.get(column, "str")
            if column != csv_spec.id_column and kind == "str":
                frame.loc[0, column] = " " if len(blanked) % 2 else ""
                blanked.append(column)
        return frame.to_csv(index=False).encode()

    if "::" in csv_spec.file:
        zip_name, member = csv_spec.file.split("::")
        _rewrite_zip(root / zip_name, lambda name, data: rewrite(data) if name == member else data)
    else:
        path = root / csv_spec.file
        path.write_bytes(rewrite(path.read_bytes()))
    return blanked


#: Manifest columns that come from a CSV text column, per dataset (checked to be missing).
_BLANKED_MANIFEST_COLUMNS = {
    "isic2017": ["sex", "age"],
    "isic_archive_melanoma": [],
    "isic2018_task3": ["lesion_id", "sex", "site"],
    "isic2019": ["lesion_id", "site", "sex"],
    "isic2020": ["patient_id", "lesion_id", "sex", "site"],
}


@pytest.mark.parametrize("dataset", [d for d in DATASETS if _csv_specs(d)])
def test_blank_text_fields_are_missing_values(archive_copy, dataset):
    """Check a blank text field of any CSV reaches the index as a missing value, never as ''."""
    root = archive_copy(dataset)
    if dataset == "isic_archive_melanoma":  # its metadata.csv has free text columns to blank
        path = root / "images" / "metadata.csv"
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame["notes"] = "x"
        frame.to_csv(path, index=False)
    blanked = {}
    first_ids = {}
    for csv_spec in _csv_specs(dataset):
        blanked[csv_spec.file] = _blank_first_row(root, csv_spec)
        with ArchiveFolder(root) as archive:
            first_ids[csv_spec.file] = str(
                read_checked_csv(archive, csv_spec)[csv_spec.id_column][0]
            )
    assert any(blanked.values()), "nothing was blanked: the test would not test anything"
    index = index_dataset(root, dataset)
    text = [c for c in index.columns if str(index[c].dtype) in ("string", "object")]
    for column in text:
        values = index[column].dropna().astype(str)
        assert not (values.str.strip() == "").any(), f"{column} holds blank strings"
    for csv_spec in _csv_specs(dataset):
        row = index.set_index("image_id").loc[first_ids[csv_spec.file]]
        for column in blanked[csv_spec.file]:
            if f"raw_{column}" in index.columns:
                assert pd.isna(row[f"raw_{column}"]), (csv_spec.file, column)
    row = index.set_index("image_id").loc[first_ids[_csv_specs(dataset)[-1].file]]
    for column in _BLANKED_MANIFEST_COLUMNS[dataset]:
        assert pd.isna(row[column]), column
