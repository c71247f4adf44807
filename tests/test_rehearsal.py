"""The rehearsal (issue 19, data.source: rehearsal): the official CSVs linked through the same
link and checksum code as the real run, one small image drawn per official row into the official
zips, then the same verification, image checks and ingest as real archives.

The CSVs are the official ones in ``../shared/isic_metadata`` (beside the clone;
``MELREPRO_ISIC_METADATA`` points elsewhere); that folder is used as the user's
``data.archive_dir`` as it is (files under ``<dataset>/``, the task-3 ground truth as bare CSVs).
Without it every test here skips. The fast test rehearses ISIC 2017 (2,750 images) with the
library calls the rules make; the slow one runs the workflow on all six datasets and the count
tables of the papers, and checks the scorecard's verdicts.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melrepro.data.download import link_archive_file, verify_archives
from melrepro.data.layouts import layout
from melrepro.data.manifests import check_images, ingest_dataset
from melrepro.data.rehearsal import (
    REHEARSAL_LOCK,
    generated_files,
    taken_files,
    write_rehearsal_archive,
)
from melrepro.report.scorecard import verdict

REPO = Path(__file__).resolve().parents[1]
METADATA = Path(os.environ.get("MELREPRO_ISIC_METADATA", REPO.parent / "shared" / "isic_metadata"))

needs_metadata = pytest.mark.skipif(
    not (METADATA / "README.md").is_file(),
    reason=f"the official ISIC metadata CSVs are not at {METADATA} (../shared/isic_metadata "
    "beside the clone, or MELREPRO_ISIC_METADATA)",
)


def test_rehearsal_counts_are_judged_and_metrics_are_not():
    count = {"precision": 0.5}
    assert verdict("count", 374, 374.0, real_data=False, real_rows=True, **count)[0] == "agrees"
    assert verdict("count", 374, 375.0, real_data=False, real_rows=True, **count)[0] == "differs"
    metric = {"precision": 0.0005, "margin": 0.02, "interval": (0.9, 0.92)}
    judged = verdict("metric", 0.909, 0.909, real_data=False, real_rows=True, **metric)
    assert judged[0] == "not judged"
    assert "rehearsal" in judged[1]


def test_rehearsal_takes_the_csvs_and_draws_the_rest():
    """The taken files are the official CSVs; the rest of the official layout is drawn."""
    for dataset in ("isic2017", "isic2018_task3", "isic2019", "isic2020"):
        taken = taken_files(dataset, archive_dir=True)
        drawn = generated_files(dataset, archive_dir=True)
        assert taken
        assert all(name.endswith(".csv") for name in taken)
        assert sorted(taken + drawn) == layout(dataset).files()
    # Downloaded, the small task-3 ground-truth zips come from the hosts too.
    assert "ISIC2018_Task3_Test_GroundTruth.zip" in taken_files("isic2018_task3", archive_dir=False)
    assert taken_files("isic2018_task2", archive_dir=True) == []


def _rehearse(dataset: str, root: Path, lock: Path, **kwargs) -> Path:
    """Link the taken CSVs, draw the rest, verify, check and ingest: the rules' calls in order."""
    folder = root / "resources" / "archives" / dataset
    for name in taken_files(dataset, archive_dir=True):
        status = link_archive_file(
            dataset, name, folder / name, archive_dir=METADATA, checksums=lock
        )
        assert status.status in ("recorded", "verified")
    write_rehearsal_archive(
        dataset, folder, image_size=48, seed=3, archive_dir=METADATA, checksums=lock, **kwargs
    )
    files = [folder / name for name in layout(dataset).files()]
    verify_archives(dataset, files, folder / "verified.json", checksums=folder / REHEARSAL_LOCK)
    shards = []
    for shard in range(2):
        path = root / f"checks-{shard}.parquet"
        check_images(folder, dataset, shard=shard, n_shards=2).to_parquet(path)
        shards.append(path)
    manifest = root / "manifest.parquet"
    ingest_dataset(folder, dataset, shards, manifest, root / "quarantine.csv", n_shards=2)
    return manifest


@needs_metadata
def test_isic2017_rehearsal_at_the_real_counts(tmp_path):
    lock = tmp_path / "archive_checksums.tsv"
    shutil.copy(REPO / "config" / "archive_checksums.tsv", lock)
    manifest = pd.read_parquet(_rehearse("isic2017", tmp_path, lock))

    # The official rows, one image each: ids, labels and counts per split.
    official = []
    for split, stem in (("train", "Training"), ("val", "Validation"), ("test", "Test_v2")):
        frame = pd.read_csv(METADATA / "isic2017" / f"ISIC-2017_{stem}_Part3_GroundTruth.csv")
        official.append(frame.assign(split=split))
    official = pd.concat(official).set_index("image_id")
    assert len(manifest) == 2750
    assert manifest["official_split"].value_counts().to_dict() == {
        "train": 2000,
        "test": 600,
        "val": 150,
    }
    manifest = manifest.set_index("image_id").loc[official.index]
    assert (manifest["official_split"] == official["split"]).all()
    expected = np.where(
        official["melanoma"] == 1,
        "melanoma",
        np.where(official["seborrheic_keratosis"] == 1, "seborrheic_keratosis", "nevus"),
    )
    assert (manifest["label"].to_numpy() == expected).all()
    # Age and sex come from the official metadata CSVs, packed into the image zips as in the real ones.
    meta = pd.read_csv(METADATA / "isic2017" / "ISIC-2017_Training_Data_metadata.csv")
    male = meta.loc[meta["sex"] == "male", "image_id"]
    assert (manifest.loc[male, "sex"] == "male").all()
    assert len(male) == 900

    # The drawn images carry the row's class: melanomas are darker than nevi inside the lesion.
    folder = tmp_path / "resources" / "archives" / "isic2017"
    darkness = {}
    with (
        zipfile.ZipFile(folder / "ISIC-2017_Training_Data.zip") as images,
        zipfile.ZipFile(folder / "ISIC-2017_Training_Part1_GroundTruth.zip") as masks,
    ):
        for image_id in official.index[official["split"] == "train"][:600]:
            image = np.asarray(
                Image.open(io.BytesIO(images.read(f"ISIC-2017_Training_Data/{image_id}.jpg")))
            )
            mask = np.asarray(
                Image.open(
                    io.BytesIO(
                        masks.read(
                            f"ISIC-2017_Training_Part1_GroundTruth/{image_id}_segmentation.png"
                        )
                    )
                )
            )
            assert image.shape[:2] == (36, 48)
            assert mask.shape == (36, 48)
            inside = mask > 0
            darkness[image_id] = 255 - image[inside].mean() if inside.any() else np.nan
    darkness = pd.Series(darkness)
    labels = manifest.loc[darkness.index, "label"]
    mel = darkness[labels == "melanoma"].dropna()
    nevus = darkness[labels == "nevus"].dropna()
    # AUC of "darker lesion = melanoma" (Mann-Whitney): far from chance.
    auc = (mel.to_numpy()[:, None] > nevus.to_numpy()[None, :]).mean()
    assert auc > 0.7, auc
    # Only the CSVs taken from the user entered the official lock; the drawn zips did not.
    official_lock = lock.read_text()
    assert "ISIC-2017_Training_Part3_GroundTruth.csv" in official_lock
    assert ".zip" not in official_lock


REAL_COUNTS = {
    "isic2017": 2750,
    "isic_archive_melanoma": 300,
    "isic2018_task2": 2594,
    "isic2018_task3": 11720,
    "isic2019": 25331,
    "isic2020": 44108,
}


@needs_metadata
@pytest.mark.slow
def test_six_dataset_rehearsal_manifests(tmp_path):
    """The workflow on all six datasets (config/isic.yaml + config/rehearsal.yaml + the user's
    archive_dir): every manifest at the real counts. (The papers' count tables and their
    scorecard verdicts on rehearsal data are not checked here yet.)"""
    work = tmp_path / "work"
    shutil.copytree(
        REPO,
        work,
        ignore=shutil.ignore_patterns(
            ".git", "resources", "results", "logs", ".snakemake", ".venv"
        ),
    )
    user = work / "user.yaml"
    user.write_text(f"data:\n  archive_dir: {METADATA}\n")
    manifests = [f"results/data/{d}/manifest.parquet" for d in REAL_COUNTS]
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--configfile",
        "config/isic.yaml",
        "config/rehearsal.yaml",
        str(user),
        "--",
        *manifests,
    ]
    subprocess.run(command, cwd=work, check=True)
    for dataset, count in REAL_COUNTS.items():
        manifest = pd.read_parquet(work / f"results/data/{dataset}/manifest.parquet")
        assert len(manifest) == count, dataset
