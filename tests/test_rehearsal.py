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


def test_isic2020_rows_draw_patients_and_duplicates():
    """ISIC 2020 rows carry a patient (one skin tone) and duplicate pairs (the same pixels)."""
    from melrepro.data.rehearsal import RowFacts, _Drawer

    draw = _Drawer("isic2020", 48, seed=3)
    first = RowFacts("ISIC_0000001", "train", "melanoma", "IP_1", "IL_1")
    copy = RowFacts("ISIC_0000002", "train", "melanoma", "IP_1", "IL_1", same_as="ISIC_0000001")
    other = RowFacts("ISIC_0000003", "train", "benign", "IP_2", "IL_2")
    assert (draw(first).image == draw(copy).image).all()
    assert not (draw(first).image == draw(other).image).all()


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


#: The count targets that need no training (their rules; the papers' count tables are written
#: by tabulate rules that also wait on trainings, so the tables are made below from these files).
COUNT_TARGETS = [
    "results/data/tables/class_counts.csv",  # count_classes: the data report's class counts
    "results/data/isic2017/splits/official.parquet",  # gcn_mil table01/table03
    "results/siim2020/datasets/patient/counts.json",  # siim2020 table02
    "results/siim2020/datasets/author_code/counts.json",
    "results/gradcam_overlap/join.parquet",  # gradcam_overlap table01 (rows), ISIC 2019 split
    "results/data/isic2019/splits/class_floor_80_10_10.parquet",
    "results/effnet_ham/figures/fig01.png",  # effnet_ham class distribution of its lesion split
    "results/data/isic2018_task3/splits/lesion_70_15_15.parquet",
]
#: The papers with count tables that need no training (effnet_ham and sp_graphs give no count
#: in config/paper_values/; their counts are the manifests' and the splits').
COUNT_PAPERS = ("gcn_mil", "siim2020", "gradcam_overlap")
#: The test's own overlay: the scratch lock keeps config/archive_checksums.tsv untouched, and
#: siim2020 caches ISIC 2020 at 64 px (the drawn size) instead of upscaling it to 256 px (~8.7 GB
#: of uint8 arrays; the counts do not depend on it).
USER_OVERLAY = (
    "data:\n  archive_dir: {metadata}\n  checksums: {lock}\nsiim2020:\n  cache_res: sq64\n"
)


def _rehearsal_workdir(tmp_path: Path) -> tuple[Path, Path]:
    """The checkout to run in and the user's overlay: MELREPRO_REHEARSAL_DIR (a checkout where
    the rehearsal already ran, with MELREPRO_REHEARSAL_CONFIG, the overlay it ran with: only
    what is missing is built), else a fresh copy of the repository and USER_OVERLAY.
    MELREPRO_REHEARSAL_CORES: Snakemake's --cores (default 2)."""
    reuse = os.environ.get("MELREPRO_REHEARSAL_DIR")
    if reuse:
        return Path(reuse), Path(os.environ["MELREPRO_REHEARSAL_CONFIG"])
    work = tmp_path / "work"
    shutil.copytree(
        REPO,
        work,
        ignore=shutil.ignore_patterns(
            ".git", "resources", "results", "logs", ".snakemake", ".venv", "benchmarks"
        ),
    )
    lock = tmp_path / "archive_checksums.tsv"
    shutil.copy(REPO / "config" / "archive_checksums.tsv", lock)
    user = tmp_path / "user.yaml"
    user.write_text(USER_OVERLAY.format(metadata=METADATA, lock=lock))
    return work, user


def count_tables(results: Path, tables: Path, papers: tuple[str, ...] = COUNT_PAPERS) -> None:
    """The count tables of ``papers`` from the count targets in ``results``, written under
    ``tables/<paper>/`` as their tabulate rules write them (which also wait on trainings)."""
    from melrepro.papers.gcn_mil.common import manifest_with_split
    from melrepro.papers.gcn_mil.options import BagOptions
    from melrepro.papers.gcn_mil.tables import _table01, _table03
    from melrepro.papers.siim2020.tables import tabulate_table02
    from melrepro.report.tables import write_table

    if "gcn_mil" in papers:
        gcn = manifest_with_split(
            results / "data/isic2017/manifest.parquet",
            results / "data/isic2017/splits/official.parquet",
        )
        write_table(_table01(gcn, BagOptions()), tables / "gcn_mil" / "table01.csv")
        write_table(_table03(gcn), tables / "gcn_mil" / "table03.csv")
    if "siim2020" in papers:
        tabulate_table02(
            [results / f"siim2020/datasets/{p}/counts.json" for p in ("patient", "author_code")],
            tables / "siim2020" / "table02.csv",
        )
    if "gradcam_overlap" in papers:
        # table01: only its row counts are the official rows'; the feature counts (Globules ...
        # Union) come from the drawn task-2 masks and are left out.
        join = pd.read_parquet(results / "gradcam_overlap/join.parquet")
        mel_nv = join[join["label"].isin(["MEL", "NV"])]
        row = {"Samples": len(mel_nv), **mel_nv["label"].value_counts().to_dict()}
        write_table(
            pd.DataFrame([{"Images": "MEL+NV", **row}]).set_index("Images"),
            tables / "gradcam_overlap" / "table01.csv",
        )


def count_verdicts(tables: Path, papers: tuple[str, ...] = COUNT_PAPERS) -> pd.DataFrame:
    """The scorecards of ``papers`` on data_source rehearsal over the count tables in ``tables``."""
    from melrepro.report.scorecard import score_paper

    values = REPO / "config" / "paper_values"
    cards = [
        score_paper(
            values / f"{paper}.csv",
            tables / paper,
            data_source="rehearsal",
            quantities_path=values / "quantities.csv",
            margins_path=values / "margins.csv",
        ).assign(paper=paper)
        for paper in papers
    ]
    return pd.concat(cards, ignore_index=True)


#: The paper's count cells that are official-row counts, and the verdict the official rows give.
#: gcn_mil's Table 3 validation row (72 / 27 / 200) is no split of ISIC 2017's 150 validation
#: images (30 / 42 / 78): the rehearsal finds it, as the real run would.
EXPECTED_COUNT_VERDICTS = {
    ("gcn_mil", "table01", "Training Dataset", "Melanoma"): "agrees",
    ("gcn_mil", "table01", "Training Dataset", "Seborrheic Keratosis"): "agrees",
    ("gcn_mil", "table01", "Training Dataset", "Nevus"): "agrees",
    ("gcn_mil", "table01", "DR", "Melanoma"): "agrees",
    ("gcn_mil", "table01", "DR", "Seborrheic Keratosis"): "agrees",
    ("gcn_mil", "table01", "DR", "Nevus"): "agrees",
    ("gcn_mil", "table03", "Validation", "Melanoma"): "differs",
    ("gcn_mil", "table03", "Validation", "Seborrheic Keratosis"): "differs",
    ("gcn_mil", "table03", "Validation", "Nevus"): "differs",
    ("gcn_mil", "table03", "Test", "Melanoma"): "agrees",
    ("gcn_mil", "table03", "Test", "Seborrheic Keratosis"): "agrees",
    ("gcn_mil", "table03", "Test", "Nevus"): "agrees",
    ("siim2020", "table02", "Original training", "Images"): "agrees",
    ("siim2020", "table02", "Original training", "Melanoma %"): "agrees",
    ("siim2020", "table02", "Test", "Images"): "agrees",
    ("siim2020", "table02", "Original training", "Max images per patient"): "agrees",
    ("siim2020", "table02", "Small train [author code]", "Images"): "agrees",
    # The paper's 85:15 patient split is one fold of seven here (a DEVIATION): 4,008, not 3,987.
    ("siim2020", "table02", "Small train", "Images"): "differs",
    ("siim2020", "table02", "Female palms/soles", "Melanomas"): "agrees",
    ("siim2020", "table02", "Male oral/genital", "Melanomas"): "agrees",
    ("gradcam_overlap", "table01", "MEL+NV", "Samples"): "agrees",
    ("gradcam_overlap", "table01", "MEL+NV", "MEL"): "agrees",
    ("gradcam_overlap", "table01", "MEL+NV", "NV"): "agrees",
}


@needs_metadata
@pytest.mark.slow
def test_six_dataset_rehearsal_counts(tmp_path):
    """The workflow on all six datasets (config/isic.yaml + config/rehearsal.yaml + the user's
    archive_dir): every manifest at the real counts, the count targets built without a training,
    the papers' count tables made from them, and the scorecard's count verdicts on
    data_source rehearsal (metrics never judged)."""
    work, user = _rehearsal_workdir(tmp_path)
    manifests = [f"results/data/{d}/manifest.parquet" for d in REAL_COUNTS]
    command = [
        *(
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            os.environ.get("MELREPRO_REHEARSAL_CORES", "2"),
        ),
        *("--configfile", "config/isic.yaml", "config/rehearsal.yaml", str(user)),
        *("--", *manifests, *COUNT_TARGETS),
    ]
    subprocess.run(command, cwd=work, check=True)
    for dataset, count in REAL_COUNTS.items():
        manifest = pd.read_parquet(work / f"results/data/{dataset}/manifest.parquet")
        assert len(manifest) == count, dataset
    # sp_graphs' dataset (its section 3): ISIC 2017 training + test, 2,600 images, 491 melanomas.
    isic2017 = pd.read_parquet(work / "results/data/isic2017/manifest.parquet")
    used = isic2017[isic2017["official_split"].isin(["train", "test"])]
    assert (len(used), int((used["label"] == "melanoma").sum())) == (2600, 491)
    # gradcam_overlap trains on ISIC 2019's 80/10/10 split: the paper's 20,273 / 2,529 / 2,529.
    split19 = pd.read_parquet(work / "results/data/isic2019/splits/class_floor_80_10_10.parquet")
    assert split19["split"].value_counts().to_dict() == {"train": 20273, "val": 2529, "test": 2529}

    tables = tmp_path / "tables"
    count_tables(work / "results", tables)
    siim = pd.read_csv(tables / "siim2020" / "table02.csv").set_index("Row")
    assert siim.loc["Original training", "Images"] == 33126
    # The authors' code's datasets (no paper-value cell; the author_code protocol's counts).
    assert siim.loc["Cleaned training", ["Patients", "Melanomas"]].tolist() == [2051, 572]
    author = [f"Small {d}train [author code]" for d in ("", "3aug ", "5aug ")]
    assert siim.loc[author, "Images"].tolist() == [3987, 15948, 23922]
    assert siim.loc["Small validation [author code]", "Images"] == 685
    card = count_verdicts(tables)
    # No metric is judged on drawn images, whatever the table holds.
    judged = card[card["verdict"].isin(["agrees", "differs", "inconclusive"])]
    assert set(judged["quantity"]) <= {"count", "setting"}
    verdicts = {
        (r.paper, r.artifact, r.row, r.column): r.verdict for r in card.itertuples(index=False)
    }
    for key, expected in EXPECTED_COUNT_VERDICTS.items():
        assert verdicts[key] == expected, key
