"""Tests of the synthetic twin: official layout, masks, structures, class signal, determinism."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from melrepro.data.layouts import ATTRIBUTES, DATASETS
from melrepro.data.synthetic import DEFAULT_SPEC, synthetic_schema, write_synthetic_archive
from melrepro.data.synthetic.draw import render, sample_lesion, sample_scene, sample_view
from melrepro.data.synthetic.spec import CLASSES, resolve_spec

ROOT = Path(__file__).resolve().parents[1]
SEED = 7


@pytest.fixture(scope="module")
def archives(tiny_archives: Path) -> dict[str, Path]:
    """The session's tiny twin (conftest.tiny_spec), one folder per dataset (read-only)."""
    return {dataset: tiny_archives / dataset for dataset in DATASETS}


@pytest.fixture(scope="module")
def task2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """isic2018_task2 with enough images per class to see structures and class signals."""
    outdir = tmp_path_factory.mktemp("task2")
    spec = {
        "counts": {"train": {"melanoma": 8, "seborrheic_keratosis": 6, "nevus": 8}},
        "min_height": 96,
        "max_height": 128,
    }
    write_synthetic_archive("isic2018_task2", outdir, spec, seed=SEED)
    return outdir


def _read_csv(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(data.decode()))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _csv_bytes(outdir: Path, file: str) -> bytes:
    if "::" in file:
        name, member = file.split("::")
        with zipfile.ZipFile(outdir / name) as z:
            return z.read(member)
    return (outdir / file).read_bytes()


def _load(source) -> Image.Image:
    """Decode an image fully (from a path or an open zip member) and close the file."""
    data = source.read_bytes() if isinstance(source, Path) else source.read()
    if not isinstance(source, Path):
        source.close()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


def _truth(outdir: Path) -> list[dict[str, str]]:
    return _read_csv((outdir / "synthetic_truth" / "truth.csv").read_bytes())[1]


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_official_file_is_written(archives: dict[str, Path], dataset: str) -> None:
    """Check each file of layouts.DATASETS[key].files() exists, plus truth.csv and truth masks."""
    outdir = archives[dataset]
    for name in DATASETS[dataset].files():
        assert (outdir / name).is_file(), name
    truth = _truth(outdir)
    assert truth
    for row in truth:
        assert (outdir / "synthetic_truth" / row["mask"]).is_file()


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_csv_headers_equal_layouts(archives: dict[str, Path], dataset: str) -> None:
    """Check every official CSV starts with the columns the layout names, in order."""
    outdir = archives[dataset]
    layout = DATASETS[dataset]
    specs = [s for i in layout.image_sets for s in (i.labels, i.metadata) if s is not None]
    for spec in [*specs, *layout.extra_csvs]:
        header, rows = _read_csv(_csv_bytes(outdir, spec.file))
        assert header[: len(spec.columns)] == list(spec.columns), spec.file
        assert rows or spec.file.endswith("Duplicates.csv") is False


@pytest.mark.parametrize("dataset", [d for d in DATASETS if not DATASETS[d].folder])
def test_zip_members_sit_in_official_folder(archives: dict[str, Path], dataset: str) -> None:
    """Check images, masks and attribute masks are in the official folder with official names."""
    outdir = archives[dataset]
    truth = _truth(outdir)
    for image_set in DATASETS[dataset].image_sets:
        ids = [r["image_id"] for r in truth if r["split"] == image_set.split]
        with zipfile.ZipFile(outdir / image_set.image_zip) as z:
            names = z.namelist()
            assert names == sorted(names)
            assert all(n.startswith(image_set.image_folder + "/") for n in names)
            jpgs = [n for n in names if n.endswith(".jpg")]
            assert jpgs == [f"{image_set.image_folder}/{i}.jpg" for i in sorted(ids)]
            assert {i.date_time for i in z.infolist()} == {
                (int(DATASETS[dataset].year), 1, 1, 0, 0, 0)
            }
        if image_set.mask_zip:
            with zipfile.ZipFile(outdir / image_set.mask_zip) as z:
                pngs = [n for n in z.namelist() if n.endswith(".png")]
            assert pngs == [
                f"{image_set.mask_folder}/{i}{image_set.mask_suffix}" for i in sorted(ids)
            ]
        if image_set.attribute_zip:
            with zipfile.ZipFile(outdir / image_set.attribute_zip) as z:
                pngs = [n for n in z.namelist() if n.endswith(".png")]
            assert len(pngs) == len(ids) * len(ATTRIBUTES)


def test_archive_folder_as_isic_cli_writes(archives: dict[str, Path]) -> None:
    """Check isic_archive_melanoma: images/<isic_id>.jpg and a metadata.csv of melanomas."""
    folder = archives["isic_archive_melanoma"] / "images"
    header, rows = _read_csv((folder / "metadata.csv").read_bytes())
    for col in ("isic_id", "attribution", "copyright_license", "age_approx", "anatom_site_general"):
        assert col in header
    assert {r["diagnosis"] for r in rows} == {"melanoma"}
    assert {r["benign_malignant"] for r in rows} == {"malignant"}
    assert sorted(p.stem for p in folder.glob("*.jpg")) == [r["isic_id"] for r in rows]


def test_masks_are_binary_and_image_sized(task2: Path) -> None:
    """Check lesion and attribute masks: L mode, values 0/255, the image's size, lesion non-empty."""
    outdir = task2
    image_set = DATASETS["isic2018_task2"].image_sets[0]
    with (
        zipfile.ZipFile(outdir / image_set.image_zip) as zi,
        zipfile.ZipFile(outdir / image_set.mask_zip) as zm,
        zipfile.ZipFile(outdir / image_set.attribute_zip) as za,
    ):
        for row in _truth(outdir):
            image = _load(zi.open(f"{image_set.image_folder}/{row['image_id']}.jpg"))
            assert image.size == (int(row["width"]), int(row["height"]))
            mask = _load(zm.open(f"{image_set.mask_folder}/{row['image_id']}_segmentation.png"))
            assert mask.mode == "L"
            assert mask.size == image.size
            values = set(np.unique(np.asarray(mask)))
            assert values == {0, 255}
            for name in ATTRIBUTES:
                attr = _load(
                    za.open(f"{image_set.attribute_folder}/{row['image_id']}_attribute_{name}.png")
                )
                assert attr.mode == "L"
                assert attr.size == image.size
                assert set(np.unique(np.asarray(attr))) <= {0, 255}
                assert np.asarray(attr).any() == bool(int(row[name]))


@pytest.mark.parametrize("name", ATTRIBUTES)
def test_structure_changes_pixels_only_inside_its_mask(name: str) -> None:
    """Check painting a structure changes pixels only inside its mask, and does change some."""
    rng = np.random.default_rng(3)
    spec = resolve_spec("isic2018_task2", {}) | {"hair": 0.0, "ruler": 0.0}
    found = 0
    for _ in range(40):
        style = "seborrheic_keratosis" if name == "milia_like_cyst" else "melanoma"
        lesion = sample_lesion(style, rng)
        view, scene = sample_view(rng), sample_scene(rng, 320, 240, spec)
        if lesion.structures[name] is None:
            continue
        with_it = render(lesion, view, scene)
        without = render(lesion, view, scene, omit={name})
        changed = np.any(with_it.image != without.image, axis=-1)
        mask = with_it.attributes[name]
        assert not (changed & ~mask).any()
        assert not without.attributes[name].any()
        if mask.any():
            assert changed.any()
            found += 1
    assert found >= 3


def test_structures_visible_in_archive(task2: Path) -> None:
    """Check globules are darker and milia-like cysts brighter inside their masks than the rest of
    the lesion, on the written JPEGs."""
    outdir = task2
    image_set = DATASETS["isic2018_task2"].image_sets[0]
    diffs: dict[str, list[float]] = {"globules": [], "milia_like_cyst": []}
    with (
        zipfile.ZipFile(outdir / image_set.image_zip) as zi,
        zipfile.ZipFile(outdir / image_set.attribute_zip) as za,
    ):
        for row in _truth(outdir):
            grey = np.asarray(
                _load(zi.open(f"{image_set.image_folder}/{row['image_id']}.jpg")).convert("L"),
                float,
            )
            lesion = np.asarray(_load(outdir / "synthetic_truth" / row["mask"])) > 0
            for name in diffs:
                m = (
                    np.asarray(
                        _load(
                            za.open(
                                f"{image_set.attribute_folder}/{row['image_id']}_attribute_{name}.png"
                            )
                        )
                    )
                    > 0
                )
                if m.sum() > 10 and (lesion & ~m).sum() > 10:
                    diffs[name].append(grey[m].mean() - grey[lesion & ~m].mean())
    assert diffs["globules"]
    assert np.mean(diffs["globules"]) < -5
    assert diffs["milia_like_cyst"]
    assert np.mean(diffs["milia_like_cyst"]) > 5


def test_melanomas_larger_and_darker_than_nevi(task2: Path) -> None:
    """Check the class signal: melanomas cover more of the image and are darker than nevi."""
    outdir = task2
    image_set = DATASETS["isic2018_task2"].image_sets[0]
    area: dict[str, list[float]] = {"melanoma": [], "nevus": [], "seborrheic_keratosis": []}
    dark: dict[str, list[float]] = {"melanoma": [], "nevus": [], "seborrheic_keratosis": []}
    with zipfile.ZipFile(outdir / image_set.image_zip) as zi:
        for row in _truth(outdir):
            grey = np.asarray(
                _load(zi.open(f"{image_set.image_folder}/{row['image_id']}.jpg")).convert("L"),
                float,
            )
            mask = np.asarray(_load(outdir / "synthetic_truth" / row["mask"])) > 0
            area[row["label"]].append(mask.mean())
            dark[row["label"]].append(grey[~mask].mean() - grey[mask].mean())
    assert np.mean(area["melanoma"]) > 1.5 * np.mean(area["nevus"])
    assert np.mean(dark["melanoma"]) > np.mean(dark["nevus"])


def test_demographics_correlate_with_label(archives: dict[str, Path]) -> None:
    """Check melanoma patients are older on average than benign ones (default 2020 population)."""
    from melrepro.data.synthetic.plan import plan_dataset

    plans = plan_dataset("isic2020", resolve_spec("isic2020", {}), 0)
    mel = [p.age for p in plans if p.label == "melanoma"]
    ben = [p.age for p in plans if p.label == "benign"]
    # ages are drawn per patient from the patient's worst lesion: with one melanoma in six images
    # (the default twin since issue 20) many benign images share a melanoma patient's age
    assert np.mean(mel) > np.mean(ben) + 2
    # several images per patient and per lesion, melanoma prevalence ~1/6 (100 of 600 training)
    patients = [p.patient_id for p in plans]
    assert len(set(patients)) < len(patients) / 3
    train = [p for p in plans if p.split == "train"]
    assert 0.15 <= np.mean([p.label == "melanoma" for p in train]) <= 0.18


def test_isic2020_duplicates_are_copies(archives: dict[str, Path]) -> None:
    """Check each listed duplicate pair: same label and patient, second image a (near) copy."""
    outdir = archives["isic2020"]
    _, pairs = _read_csv((outdir / "ISIC_2020_Training_Duplicates.csv").read_bytes())
    _, gt = _read_csv((outdir / "ISIC_2020_Training_GroundTruth_v2.csv").read_bytes())
    by_id = {r["image_name"]: r for r in gt}
    assert len(pairs) == 2
    with zipfile.ZipFile(outdir / "ISIC_2020_Training_JPEG.zip") as z:
        for pair in pairs:
            a, b = by_id[pair["image_name_1"]], by_id[pair["image_name_2"]]
            assert (a["target"], a["patient_id"]) == (b["target"], b["patient_id"])
            ia = np.asarray(_load(z.open(f"train/{a['image_name']}.jpg")), float)
            ib = np.asarray(_load(z.open(f"train/{b['image_name']}.jpg")), float)
            assert np.abs(ia - ib).mean() < 8


def test_ids_unique_across_datasets_and_increasing(archives: dict[str, Path]) -> None:
    """Check image ids are ISIC_%07d, unique across the twin, increasing within a dataset.

    Exception, as in the real archives: every isic2018_task2 image is also an isic2019 image (same
    id, some stored as ``<id>_downsampled``).
    """
    seen: set[str] = set()
    task2 = {r["image_id"] for r in _truth(archives["isic2018_task2"])}
    for dataset, outdir in archives.items():
        ids = [r["image_id"].removesuffix("_downsampled") for r in _truth(outdir)]
        assert all(len(i) == 12 and i.startswith("ISIC_") and i[5:].isdigit() for i in ids)
        assert ids == sorted(ids)
        if dataset == "isic2019":
            assert task2 <= set(ids)
            ids = [i for i in ids if i not in task2]
        assert not seen & set(ids)
        seen |= set(ids)


def test_same_seed_identical_bytes_other_seed_differs(tmp_path: Path) -> None:
    """Check the same (spec, seed) writes byte-identical files and another seed does not."""
    spec = {
        "counts": {"train": {"melanoma": 1, "benign": 3}, "test": {"benign": 1}},
        "min_height": 64,
        "max_height": 96,
        "duplicates": 1,
    }

    def files(path: Path, seed: int) -> dict[str, bytes]:
        write_synthetic_archive("isic2020", path, spec, seed=seed)
        return {
            str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
        }

    a, b, c = files(tmp_path / "a", 5), files(tmp_path / "b", 5), files(tmp_path / "c", 6)
    assert a == b
    assert len(a) == len(c)
    assert a["ISIC_2020_Training_JPEG.zip"] != c["ISIC_2020_Training_JPEG.zip"]


def test_isic2017_height_bands(tmp_path: Path) -> None:
    """Check isic2017 gets heights below 1000, 1000-2000 and above 2000 px when asked, and the
    masks of big images have their size."""
    spec = {
        "counts": {
            "train": {"melanoma": 1, "seborrheic_keratosis": 1, "nevus": 1},
            "val": {},
            "test": {},
        },
        "min_height": 120,
        "max_height": 160,
        "max_render_side": 256,
        "height_bands": [
            {"min_height": 1000, "max_height": 1100, "count": 1},
            {"min_height": 2001, "max_height": 2050, "count": 1},
        ],
    }
    write_synthetic_archive("isic2017", tmp_path, spec, seed=1)
    heights = sorted(int(r["height"]) for r in _truth(tmp_path))
    assert heights[0] < 1000 <= heights[1] <= 2000 < heights[2]
    row = max(_truth(tmp_path), key=lambda r: int(r["height"]))
    mask = _load(tmp_path / "synthetic_truth" / row["mask"])
    assert mask.size == (int(row["width"]), int(row["height"]))


def test_bad_spec_raises_then_valid_call() -> None:
    """Check unknown keys and classes fail with the valid names, then a valid spec resolves."""
    with pytest.raises(ValueError, match="valid keys"):
        resolve_spec("isic2017", {"n_images": 3})
    with pytest.raises(ValueError, match="seborrheic_keratosis"):
        resolve_spec("isic2017", {"counts": {"train": {"MEL": 3}}})
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_spec("isic2016", {})
    assert resolve_spec("isic2017", {})["counts"] == DEFAULT_SPEC["isic2017"]["counts"]


def test_schema_file_matches_defaults() -> None:
    """Check workflow/schemas/synthetic.schema.yaml equals synthetic_schema() and accepts the defaults."""
    jsonschema = pytest.importorskip("jsonschema")
    on_disk = yaml.safe_load((ROOT / "workflow" / "schemas" / "synthetic.schema.yaml").read_text())
    assert on_disk == synthetic_schema()
    jsonschema.Draft202012Validator.check_schema(on_disk)
    jsonschema.Draft202012Validator(on_disk).validate(DEFAULT_SPEC)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(on_disk).validate({"isic2017": {"hair": 2}})


def test_default_spec_gives_every_class_enough_images() -> None:
    """Check the defaults: 3 classes in every isic2017 split, >= 10 per class for 10-fold CV."""
    counts = DEFAULT_SPEC["isic2017"]["counts"]
    for split in ("train", "val", "test"):
        assert all(counts[split][c] > 0 for c in CLASSES["isic2017"])
    for c in CLASSES["isic2017"]:
        assert counts["train"][c] >= 10


def test_task3_difficulty_swaps_styles_across_malignancy_only() -> None:
    """Check task-3 difficulty repaints that share of lesions in the other group's style.

    0 must leave the plan as it was; 0.3 repaints about 30 % of lesions, each in a style of the
    other malignancy group (MEL/BCC/AKIEC vs the rest), with labels, ids, patients, sex and age
    those of difficulty 0 (the one difficulty key means the same for every dataset).
    """
    from melrepro.data.synthetic.plan import _STYLE, plan_dataset

    counts = {"train": {"MEL": 60, "NV": 120, "BCC": 20, "BKL": 20}}
    base = resolve_spec("isic2018_task3", {"counts": counts, "images_per_lesion": 1.0})
    assert base["difficulty"] == 0.0
    plain = plan_dataset("isic2018_task3", base, 7)
    mixed = plan_dataset("isic2018_task3", {**base, "difficulty": 0.3}, 7)

    def facts(plans):
        return [(p.image_id, p.label, p.patient_id, p.sex, p.age) for p in plans]

    assert facts(mixed) == facts(plain)
    malignant_styles = {_STYLE["MEL"], _STYLE["BCC"], "actinic_keratosis", "scc"}
    swapped = [(p.style in malignant_styles) != (p.label in ("MEL", "BCC", "AKIEC")) for p in mixed]
    assert sum(swapped) / len(mixed) == pytest.approx(0.3, abs=0.08)
    assert not any(
        (p.style in malignant_styles) != (p.label in ("MEL", "BCC", "AKIEC")) for p in plain
    )
    with pytest.raises(ValueError, match="only defined for"):
        plan_dataset("isic2019", {**resolve_spec("isic2019", None), "difficulty": 0.1}, 7)


def test_isic2020_difficulty_swaps_melanoma_and_benign_styles() -> None:
    """Check isic2020 difficulty repaints that share of lesions across melanoma vs benign, with
    ids, labels, patients, sex, age and the darker melanoma brightness of difficulty 0."""
    from melrepro.data.synthetic.plan import plan_dataset

    counts = {"train": {"melanoma": 80, "benign": 240}, "test": {"melanoma": 0, "benign": 0}}
    base = resolve_spec(
        "isic2020",
        {"counts": counts, "images_per_lesion": 1.0, "duplicates": 0, "difficulty": 0.0},
    )
    plain = plan_dataset("isic2020", base, 7)
    mixed = plan_dataset("isic2020", {**base, "difficulty": 0.3}, 7)

    def facts(plans):
        return [(p.image_id, p.label, p.patient_id, p.sex, p.age, p.scene) for p in plans]

    assert facts(mixed) == facts(plain)
    assert not any((p.style == "melanoma") != (p.label == "melanoma") for p in plain)
    swapped = [(p.style == "melanoma") != (p.label == "melanoma") for p in mixed]
    assert sum(swapped) / len(mixed) == pytest.approx(0.3, abs=0.08)
    melanomas = [p for p in mixed if p.label == "melanoma"]
    assert {p.style for p in melanomas if p.style != "melanoma"} <= {
        "nevus",
        "lentigo",
        "seborrheic_keratosis",
    }


def test_difficulty_repaints_a_share_of_lesions_and_changes_nothing_else() -> None:
    """Check class overlap: isic2017 at difficulty 0.3 paints ~30 % of lesions in a confusable
    style and keeps the ids, labels, splits and scenes of difficulty 0."""
    from melrepro.data.synthetic.plan import plan_dataset

    spec = resolve_spec("isic2017", {"counts": {"train": {"melanoma": 150, "nevus": 150}},
                                     "difficulty": 0.3})  # fmt: skip
    assert 0 < DEFAULT_SPEC["isic2017"]["difficulty"] < 0.3
    hard = plan_dataset("isic2017", spec, seed=0)
    easy = plan_dataset("isic2017", {**spec, "difficulty": 0.0}, seed=0)
    assert [(p.image_id, p.label, p.split, p.scene) for p in hard] == [
        (p.image_id, p.label, p.split, p.scene) for p in easy
    ]
    assert all(p.style == p.label for p in easy)  # isic2017 classes are painted as themselves
    swapped = np.array([p.style != p.label for p in hard])
    assert 0.2 < swapped.mean() < 0.4
    assert {p.style for p in hard if p.label == "nevus" and p.style != "nevus"} == {"melanoma"}


def test_isic2020_default_population_for_siim2020() -> None:
    """Check the default 2020 plan: ~100 training patients, a melanoma among the duplicates,
    missing metadata in training and at least one missing value in test (no pixels drawn)."""
    from melrepro.data.synthetic.plan import plan_dataset

    plans = plan_dataset("isic2020", resolve_spec("isic2020", {}), 2024)
    train = [p for p in plans if p.split == "train"]
    test = [p for p in plans if p.split == "test"]
    assert (len(train), len(test)) == (600, 60)
    assert 80 <= len({p.patient_id for p in train}) <= 120
    assert any(p.duplicate_of and p.label == "melanoma" for p in train)
    assert sum(bool(p.duplicate_of) for p in train) == DEFAULT_SPEC["isic2020"]["duplicates"]
    assert 0 < sum(bool(p.missing) for p in train) < len(train) / 5
    assert any(p.missing for p in test)
    # darker melanomas: the brightness factor is scaled, benign images keep theirs
    bright = resolve_spec("isic2020", {"melanoma_brightness": 1.0})
    plain = {p.image_id: p.scene.brightness for p in plan_dataset("isic2020", bright, 2024)}
    for p in plans:
        expected = plain[p.image_id] * (0.85 if p.label == "melanoma" else 1.0)
        assert p.scene.brightness == pytest.approx(expected)


def test_isic2020_truth_records_image_brightness(tmp_path: Path) -> None:
    """Check truth.csv's image_brightness is the mean of the written JPEG and melanomas are
    darker on average while both classes straddle the melanomas' median."""
    spec = {
        "counts": {"train": {"melanoma": 10, "benign": 20}, "test": {"benign": 2}},
        "min_height": 64,
        "max_height": 80,
        "duplicates": 2,
    }
    write_synthetic_archive("isic2020", tmp_path, spec, seed=SEED)
    truth = {r["image_id"]: r for r in _truth(tmp_path)}
    with zipfile.ZipFile(tmp_path / "ISIC_2020_Training_JPEG.zip") as z:
        for name in z.namelist()[1:6]:
            image_id = name.rsplit("/", 1)[-1].removesuffix(".jpg")
            mean = np.asarray(_load(z.open(name)).convert("RGB"), float).mean()
            assert float(truth[image_id]["image_brightness"]) == pytest.approx(mean, abs=1e-3)
    train = [r for r in truth.values() if r["split"] == "train"]
    mel = np.array([float(r["image_brightness"]) for r in train if r["label"] == "melanoma"])
    ben = np.array([float(r["image_brightness"]) for r in train if r["label"] == "benign"])
    assert mel.mean() < ben.mean()
    threshold = np.median(mel)
    assert (ben < threshold).any()
    assert (ben > threshold).any()
    assert any(r["duplicate_of"] and r["label"] == "melanoma" for r in train)
