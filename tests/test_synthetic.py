"""The synthetic twin: official files and layouts, exact truth, class signals, determinism."""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import tiny_spec
from melrepro.layouts import ATTRIBUTES, DATASETS
from melrepro.synthetic import synthetic_schema, write_synthetic_archive
from melrepro.synthetic.draw import render, sample_lesion, sample_scene, sample_view
from melrepro.synthetic.spec import DEFAULT_SPEC, resolve_spec


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_official_file_is_written_in_its_folder(tiny_archives, dataset):
    """Check each official file exists, zip members sit in the official folder, CSV headers match."""
    spec = DATASETS[dataset]
    root = tiny_archives / dataset
    for name in spec.files():
        assert (root / name).exists(), name
    for image_set in spec.image_sets:
        if image_set.image_zip:
            with zipfile.ZipFile(root / image_set.image_zip) as archive:
                names = archive.namelist()
            assert all(n.startswith(image_set.image_folder + "/") for n in names)
            assert any(n.endswith(".jpg") for n in names)
        for csv_spec in (image_set.labels, image_set.metadata):
            if csv_spec is None:
                continue
            if "::" in csv_spec.file:
                zip_name, member = csv_spec.file.split("::", 1)
                with zipfile.ZipFile(root / zip_name) as archive:
                    text = archive.read(member).decode()
            else:
                text = (root / csv_spec.file).read_text()
            header = next(csv.reader(io.StringIO(text)))
            assert tuple(header[: len(csv_spec.columns)]) == csv_spec.columns or set(csv_spec.columns) <= set(header)


def test_masks_are_binary_and_sized_like_their_images(tiny_archives):
    """Check Part1 masks are 0/255 L-mode PNGs of the image's size."""
    root = tiny_archives / "isic2017"
    image_set = DATASETS["isic2017"].image_sets[0]
    with zipfile.ZipFile(root / image_set.image_zip) as images, zipfile.ZipFile(root / image_set.mask_zip) as masks:
        for name in masks.namelist():
            mask = Image.open(io.BytesIO(masks.read(name)))
            image_id = name.rsplit("/", 1)[1].removesuffix("_segmentation.png")
            image = Image.open(io.BytesIO(images.read(f"{image_set.image_folder}/{image_id}.jpg")))
            assert mask.mode == "L"
            assert mask.size == image.size
            assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_structures_change_pixels_only_inside_their_masks():
    """Check each task-2 structure is painted exactly where its mask says: omitting it changes only masked pixels."""
    rng = np.random.default_rng(4)
    spec = resolve_spec("isic2018_task2", None)
    checked = 0
    for _ in range(6):
        lesion = sample_lesion("melanoma", rng)
        view, scene = sample_view(rng), sample_scene(rng, 300, 240, spec)
        full = render(lesion, view, scene)
        for name in ATTRIBUTES:
            mask = full.attributes.get(name)
            if mask is None or not mask.any():
                continue
            without = render(lesion, view, scene, omit={name})
            changed = np.abs(full.image.astype(int) - without.image.astype(int)).max(axis=2) > 2
            assert changed.any(), name
            assert not (changed & ~mask).any(), name
            checked += 1
    assert checked >= 5


def test_melanomas_are_larger_and_more_irregular_than_nevi(tiny_archives):
    """Check the class signal exists in the truth: melanoma lesions cover more of the image than nevi."""
    truth = pd.read_csv(tiny_archives / "isic2017" / "synthetic_truth" / "truth.csv")
    truth["area_fraction"] = truth["lesion_area_px"] / (truth["width"] * truth["height"])
    means = truth.groupby("label")["area_fraction"].mean()
    assert means["melanoma"] > 1.3 * means["nevus"]


def test_isic2017_covers_the_three_height_bands(tiny_archives):
    """Check heights below 1000, 1000-2000 and above 2000 px are all present."""
    truth = pd.read_csv(tiny_archives / "isic2017" / "synthetic_truth" / "truth.csv")
    assert (truth["height"] < 1000).any()
    assert truth["height"].between(1000, 2000).any()
    assert (truth["height"] > 2000).any()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    """Check the twin is byte-identical for one seed and differs for another."""
    spec = tiny_spec("isic2019")
    a = write_synthetic_archive("isic2019", tmp_path / "a", spec, seed=5)
    b = write_synthetic_archive("isic2019", tmp_path / "b", spec, seed=5)
    c = write_synthetic_archive("isic2019", tmp_path / "c", spec, seed=6)
    for pa, pb, pc in zip(a, b, c, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    assert any(pa.read_bytes() != pc.read_bytes() for pa, pc in zip(a, c, strict=True))


def test_groups_metadata_and_duplicates(tiny_archives):
    """Check several images per patient (2020), duplicates that are copies, and metadata that tracks the label."""
    root = tiny_archives / "isic2020"
    truth = pd.read_csv(root / "synthetic_truth" / "truth.csv")
    assert truth.groupby("patient_id").size().max() > 1
    duplicates = pd.read_csv(root / "ISIC_2020_Training_Duplicates.csv")
    assert len(duplicates) == 2
    with zipfile.ZipFile(root / "ISIC_2020_Training_JPEG.zip") as archive:
        for pair in duplicates.itertuples():
            first = np.asarray(Image.open(io.BytesIO(archive.read(f"train/{pair.image_name_1}.jpg"))), dtype=float)
            second = np.asarray(Image.open(io.BytesIO(archive.read(f"train/{pair.image_name_2}.jpg"))), dtype=float)
            assert np.abs(first - second).mean() < 3.0


def test_metadata_correlates_with_melanoma():
    """Check melanoma patients are older on average in a default-size twin plan (the papers' skew)."""
    from melrepro.synthetic.archive import _plan

    spec = resolve_spec("isic2020", {"counts": {"train": {"melanoma": 60, "benign": 200}, "test": {}}})
    plans, _ = _plan("isic2020", spec, np.random.default_rng(0))
    ages = pd.DataFrame({"label": [p.label for p in plans], "age": [p.patient.age for p in plans]})
    means = ages.groupby("label")["age"].mean()
    assert means["melanoma"] > means["benign"] + 5


def test_schema_file_matches_the_code():
    """Check workflow/schemas/synthetic.schema.yaml is synthetic_schema() and its defaults DEFAULT_SPEC."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "synthetic.schema.yaml"
    assert yaml.safe_load(path.read_text()) == synthetic_schema()
    assert set(synthetic_schema()["properties"]) == set(DEFAULT_SPEC)


def test_bad_spec_is_refused():
    """Check an unknown key or class names the dataset and the valid choices."""
    with pytest.raises(ValueError, match="unknown key"):
        resolve_spec("isic2017", {"colour": 1})
    with pytest.raises(ValueError, match="unknown class"):
        resolve_spec("isic2017", {"counts": {"train": {"MEL": 3}}})
