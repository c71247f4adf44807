"""The rehearsal (``data.source: rehearsal``): the official CSVs, images drawn by the synthetic twin.

A rehearsal runs the real configuration (``config/isic.yaml``) on the real rows before ~100 GB of
images are downloaded. The official CSV files of each dataset (ground truth and metadata) are
downloaded or linked from ``data.archive_dir`` by the same code and checksum lock as for
``source: isic``; this module then draws one small image per official row with the painter of the
synthetic twin (:mod:`melrepro.data.synthetic.draw`) and writes the image, mask and attribute zips
under their official names, folders and member names (:mod:`melrepro.data.layouts`), so that the
same checks and ingest as on the real archives run on them.

Each image is drawn from its row:

- the class (ground truth) picks the painter's lesion style, so the label signal exists;
- the ``lesion_id`` (where a file gives one) seeds one drawn lesion shared by all its images;
- the ``patient_id`` seeds the skin tone shared by all the patient's images;
- the image id seeds the view and the scene: an image id appearing in two datasets (a task-2
  image is an ISIC 2019 image) is drawn with the same pixels in both;
- the second image of an ISIC 2020 duplicate pair is drawn as the first one (the same bytes).

Sex, age and site stay what the official rows say; they do not change pixels. Where the official
files give no per-image facts, the rehearsal draws them: the task-2 attribute masks and the lesion
masks are the painted regions; the ISIC 2020 test images (no labels) are melanomas with the
training prevalence; the ``data.archive_melanomas.limit`` archive melanomas of sp_graphs (no
official CSV) are the twin's own melanomas with its ids and metadata.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melrepro.data.download import _format_checksums, _write_atomically, read_checksums
from melrepro.data.layouts import ATTRIBUTES, ImageSet, layout
from melrepro.data.synthetic.draw import Lesion, render, sample_lesion, sample_scene, sample_view
from melrepro.data.synthetic.plan import _style, plan_dataset
from melrepro.data.synthetic.spec import DEFAULT_SPEC, resolve_spec
from melrepro.data.synthetic.writer import _jpeg, _png, _write_folder, _Zip

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "REHEARSAL_LOCK",
    "TASK2_IMAGE_LIST",
    "RowFacts",
    "generated_files",
    "read_rows",
    "taken_files",
    "write_rehearsal_archive",
]

logger = logging.getLogger(__name__)

#: Longest side of a rehearsal image (px); the height is three quarters of it.
DEFAULT_IMAGE_SIZE = 64
#: The per-dataset checksum lock that verify_archives checks a rehearsal folder against: the
#: official lock's entries of the files taken from it, and the drawn files recorded on first sight
#: (they never enter config/archive_checksums.tsv, which a later real run checks against).
REHEARSAL_LOCK = "rehearsal_checksums.tsv"
#: The one list of the 2,594 ISIC 2018 task-1/2 training images found (no official CSV exists):
#: the dataset-ninja statistics flattened (columns ``image``, ``split``; ``train`` rows used).
TASK2_IMAGE_LIST = "ISIC2018_Task1-2_images_DERIVED_from_dataset-ninja.csv"
#: The painter (style vocabulary and scene settings) each dataset's rows are drawn with: task-2
#: images carry ISIC 2019 classes and are drawn as their ISIC 2019 twins.
_PAINTER = {"isic2018_task2": "isic2019"}


@dataclass(frozen=True)
class RowFacts:
    """What an official row says about one image (blank where the file says nothing)."""

    image_id: str
    split: str
    label: str  # in the twin's vocabulary of the dataset (synthetic.spec.CLASSES)
    patient_id: str = ""
    lesion_id: str = ""
    same_as: str = ""  # ISIC 2020: the image this one duplicates (drawn identically)


def _key(*parts: object) -> int:
    """A stable 63-bit integer of ``parts`` (seeds that do not depend on Python's hash salt)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _plain_id(image_id: str) -> str:
    """The id without ISIC 2019's ``_downsampled`` suffix (same image, same pixels)."""
    return image_id.removesuffix("_downsampled")


def label_files(dataset: str) -> list[str]:
    """Official top-level files of ``dataset`` that hold a CSV and no image (the rows)."""
    lay = layout(dataset)
    image_zips = {s.image_zip for s in lay.image_sets}
    specs = [s for i in lay.image_sets for s in (i.labels, i.metadata) if s is not None]
    names = {s.file.split("::")[0] for s in [*specs, *lay.extra_csvs]}
    return sorted(n for n in names if n not in image_zips and not lay.folder)


def taken_files(dataset: str, *, archive_dir: bool) -> list[str]:
    """The official files a rehearsal takes through the download or link rules (the real lock).

    Linked from ``data.archive_dir``: the plain CSVs only (a user's folder may hold the task-3
    ground truth as a bare CSV, which :func:`write_rehearsal_archive` packs into its official zip).
    Downloaded: every label file, the small task-3 ground-truth zips included.
    """
    files = label_files(dataset)
    return [f for f in files if f.endswith(".csv")] if archive_dir else files


def generated_files(dataset: str, *, archive_dir: bool) -> list[str]:
    """The official files the rehearsal writes (image, mask and attribute zips; CSV-in-zip)."""
    taken = set(taken_files(dataset, archive_dir=archive_dir))
    return [f for f in layout(dataset).files() if f not in taken]


# ----------------------------------------------------------------------------- reading rows


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return [{k.strip(): (v or "").strip() for k, v in r.items()} for r in csv.DictReader(fh)]


def _read_member(path: Path, member: str) -> list[dict[str, str]]:
    with zipfile.ZipFile(path) as archive:
        text = archive.read(member).decode("utf-8-sig")
    return [
        {k.strip(): (v or "").strip() for k, v in r.items()}
        for r in csv.DictReader(io.StringIO(text))
    ]


def _one_hot(row: dict[str, str], columns: tuple[str, ...]) -> str:
    hot = [c for c in columns if float(row.get(c) or 0) >= 0.5]
    return hot[0] if hot else ""


def _rows_isic2017(folder: Path) -> list[RowFacts]:
    out = []
    for image_set in layout("isic2017").image_sets:
        for row in _read_csv(folder / image_set.labels.file):
            label = "nevus"
            if float(row["melanoma"]) >= 0.5:
                label = "melanoma"
            elif float(row["seborrheic_keratosis"]) >= 0.5:
                label = "seborrheic_keratosis"
            out.append(RowFacts(row["image_id"], image_set.split, label))
    return out


def _rows_task3(folder: Path) -> list[RowFacts]:
    lay = layout("isic2018_task3")
    ham = {r["image_id"]: r for r in _read_csv(folder / lay.extra_csvs[0].file)}
    out = []
    for image_set in lay.image_sets:
        name, member = image_set.labels.file.split("::")
        for row in _read_member(folder / name, member):
            image_id = row["image"]
            lesion = ham.get(image_id, {}).get("lesion_id", "")
            out.append(
                RowFacts(image_id, image_set.split, _one_hot(row, lay.label_columns), "", lesion)
            )
    return out


def _rows_isic2019(folder: Path) -> list[RowFacts]:
    image_set = layout("isic2019").image_sets[0]
    meta = {r["image"]: r for r in _read_csv(folder / image_set.metadata.file)}
    columns = tuple(c for c in layout("isic2019").label_columns if c != "UNK")
    return [
        RowFacts(
            row["image"],
            "train",
            _one_hot(row, columns) or "NV",
            lesion_id=meta.get(row["image"], {}).get("lesion_id", ""),
        )
        for row in _read_csv(folder / image_set.labels.file)
    ]


def _rows_isic2020(folder: Path, seed: int) -> list[RowFacts]:
    train_set, test_set = layout("isic2020").image_sets
    train = _read_csv(folder / train_set.labels.file)
    pairs = _read_csv(folder / layout("isic2020").extra_csvs[0].file)
    same_as = {p["image_name_2"]: p["image_name_1"] for p in pairs}
    out = [
        RowFacts(
            r["image_name"],
            "train",
            "melanoma" if r["target"] == "1" else "benign",
            r["patient_id"],
            r["lesion_id"],
            same_as.get(r["image_name"], ""),
        )
        for r in train
    ]
    # The test rows carry no label: melanomas drawn at the training prevalence.
    prevalence = sum(f.label == "melanoma" for f in out) / max(len(out), 1)
    for r in _read_csv(folder / test_set.metadata.file):
        draw = np.random.default_rng(_key(seed, "isic2020-test-label", r["image"])).uniform()
        label = "melanoma" if draw < prevalence else "benign"
        out.append(RowFacts(r["image"], "test", label, r["patient"]))
    return out


def read_task2_rows(image_list: Path, isic2019: Path, isic2017: Path) -> list[RowFacts]:
    """The task-2 training images of ``image_list`` (rows with ``split`` train, when it has that
    column) with the class and lesion of their ISIC 2019 row, or their ISIC 2017 row for an image
    ISIC 2019 lacks: drawn with the ISIC 2019 painter, they get the pixels of their 2019 twin."""
    listed = _read_csv(image_list)
    ids = [r["image"].removesuffix(".jpg") for r in listed if r.get("split", "train") == "train"]
    known = {_plain_id(f.image_id): f for f in _rows_isic2019(isic2019)}
    known |= {f.image_id: f for f in _rows_isic2017(isic2017) if f.image_id not in known}
    out = []
    for image_id in ids:
        row = known.get(image_id, RowFacts(image_id, "train", "NV"))
        out.append(RowFacts(image_id, "train", row.label, lesion_id=row.lesion_id))
    return out


def read_rows(dataset: str, folder: str | Path, *, seed: int = 0) -> list[RowFacts]:
    """The official rows of ``dataset`` in ``folder`` (its resources/archives folder), one per image.

    isic2018_task2 has no official CSV: use :func:`read_task2_rows`.
    """
    folder = Path(folder)
    readers = {
        "isic2017": lambda: _rows_isic2017(folder),
        "isic2018_task3": lambda: _rows_task3(folder),
        "isic2019": lambda: _rows_isic2019(folder),
        "isic2020": lambda: _rows_isic2020(folder, seed),
    }
    if dataset not in readers:
        raise ValueError(
            f"{dataset} has no official rows to read; expected one of {sorted(readers)}"
        )
    return readers[dataset]()


# ----------------------------------------------------------------------------- drawing


class _Drawer:
    """Draws the image of a row: lesion by lesion_id, skin by patient, view and scene by image id."""

    def __init__(self, dataset: str, image_size: int, seed: int) -> None:
        self.dataset, self.seed = _PAINTER.get(dataset, dataset), seed
        self.width, self.height = int(image_size), max(16, round(image_size * 3 / 4))
        # The twin's scene settings of the dataset (hair, rulers, light); its sizes are not used.
        self.spec = resolve_spec(self.dataset, {})
        self.dark_melanoma = float(self.spec.get("melanoma_brightness", 1.0))
        self._lesions: dict[str, Lesion] = {}

    def _lesion(self, facts: RowFacts) -> Lesion:
        # Images without a lesion id are their own lesion; the plain id keeps 2019's
        # `_downsampled` copies and their task-2 twins the same lesion.
        key = facts.lesion_id or _plain_id(facts.same_as or facts.image_id)
        if key not in self._lesions:
            rng = np.random.default_rng(_key(self.seed, "lesion", key, facts.label))
            style, _ = _style(self.dataset, facts.label, rng)
            self._lesions[key] = sample_lesion(style, rng)
        return self._lesions[key]

    def __call__(self, facts: RowFacts):
        """The rendered image of ``facts`` (image, mask and attribute masks)."""
        source = _plain_id(facts.same_as or facts.image_id)
        rng = np.random.default_rng(_key(self.seed, "image", source))
        view = sample_view(rng)
        scene = sample_scene(rng, self.width, self.height, self.spec)
        if facts.patient_id:  # Scene is frozen: replaced, not assigned
            tone = np.random.default_rng(_key(self.seed, "patient", facts.patient_id))
            skin = float(tone.beta(1.2, 2.2)) * self.spec["skin_tone_max"]
            scene = dataclasses.replace(scene, skin_tone=skin)
        if facts.label == "melanoma" and self.dark_melanoma != 1.0:
            scene = dataclasses.replace(scene, brightness=scene.brightness * self.dark_melanoma)
        return render(self._lesion(facts), view, scene)


def _official_csv(archive_dir: Path | None, dataset: str, name: str) -> bytes | None:
    """The bytes of ``name`` in ``archive_dir`` (under ``<dataset>/`` or flat), else None."""
    if archive_dir is None:
        return None
    for candidate in (archive_dir / dataset / name, archive_dir / name):
        if candidate.is_file():
            return candidate.read_bytes()
    return None


def _write_image_set(
    dataset: str,
    image_set: ImageSet,
    rows: list[RowFacts],
    outdir: Path,
    drawer: _Drawer,
    *,
    metadata_csv: bytes | None,
    year: int,
    wanted: set[str],
) -> list[Path]:
    """The image zip of one split (with its official metadata CSV inside, when given), its mask
    and attribute zips; members in sorted order, as the twin writes them."""
    members: dict[str, list[tuple[str, bytes, bool]]] = {}
    for name, folder in (
        (image_set.image_zip, image_set.image_folder),
        (image_set.mask_zip, image_set.mask_folder),
        (image_set.attribute_zip, image_set.attribute_folder),
    ):
        if name and name in wanted:
            members[name] = [(folder + "/", b"", False)]
    images = members[image_set.image_zip]
    if metadata_csv is not None:
        images.append((image_set.metadata.file.split("::")[1], metadata_csv, True))
    for facts in rows:
        rendered = drawer(facts)
        images.append(
            (f"{image_set.image_folder}/{facts.image_id}.jpg", _jpeg(rendered.image, 90), False)
        )
        if image_set.mask_zip in members:
            name = f"{image_set.mask_folder}/{facts.image_id}{image_set.mask_suffix}"
            members[image_set.mask_zip].append((name, _png(rendered.mask), False))
        if image_set.attribute_zip in members:
            for attribute in ATTRIBUTES:
                name = f"{image_set.attribute_folder}/{facts.image_id}_attribute_{attribute}.png"
                members[image_set.attribute_zip].append(
                    (name, _png(rendered.attributes[attribute]), False)
                )
    written = []
    for zip_name, entries in members.items():
        archive = _Zip(outdir / zip_name, year)
        for name, data, compress in sorted(entries, key=lambda e: e[0]):
            archive.add(name, data, compress=compress)
        archive.close()
        written.append(archive.path)
    return written


def _write_label_zips(
    dataset: str, outdir: Path, archive_dir: Path | None, wanted: set[str], year: int
) -> list[Path]:
    """Task 3 from a user's folder: its official ground-truth zip copied, or its bare CSV packed
    into the official zip (folder entry and member as the real zip has them)."""
    written = []
    for image_set in layout(dataset).image_sets:
        spec = image_set.labels
        if spec is None or "::" not in spec.file or spec.file.split("::")[0] not in wanted:
            continue
        name, member = spec.file.split("::")
        data = _official_csv(archive_dir, dataset, name)
        if data is None:
            data = _official_csv(archive_dir, dataset, Path(member).name)
            if data is None:
                raise FileNotFoundError(
                    f"{dataset}: neither {name} nor {Path(member).name} is in data.archive_dir "
                    f"({archive_dir}, flat or under {dataset}/)"
                )
            archive = _Zip(outdir / name, year)
            archive.add(member.split("/")[0] + "/", b"")
            archive.add(member, data, compress=True)
            archive.close()
        else:
            (outdir / name).write_bytes(data)
        written.append(outdir / name)
    return written


def _seed_lock(dataset: str, outdir: Path, checksums: Path, taken: list[str]) -> Path:
    """The dataset's rehearsal lock: the official lock's entries of the taken files only."""
    official = read_checksums(checksums)
    entries = {(d, f): v for (d, f), v in official.items() if d == dataset and f in taken}
    path = outdir / REHEARSAL_LOCK
    _write_atomically(path, _format_checksums(entries))
    return path


def write_rehearsal_archive(
    dataset: str,
    outdir: str | Path,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    archive_dir: str | Path | None = None,
    checksums: str | Path,
    rows: list[RowFacts] | None = None,
    melanoma_limit: int = 300,
) -> list[Path]:
    """Draw the images of ``dataset``'s official rows into its official zips in ``outdir``.

    Parameters
    ----------
    dataset : str
        A key of :data:`melrepro.data.layouts.DATASETS`.
    outdir : path
        ``resources/archives/<dataset>``: it already holds the official CSVs (:func:`taken_files`).
    image_size : int
        Longest side of every image (px).
    seed : int
        The global seed.
    archive_dir : path, optional
        The user's folder of official files: ISIC 2017 metadata CSVs (packed into the image zips
        as in the real ones; left out when absent, as they are optional) and the task-3 ground
        truth (zip or bare CSV).
    checksums : path
        The official lock; its entries of the taken files seed ``outdir/rehearsal_checksums.tsv``.
    rows : list of RowFacts, optional
        The rows to draw (default :func:`read_rows` of ``outdir``; task 2 needs
        :func:`read_task2_rows`).
    melanoma_limit : int
        Number of archive melanomas (``data.archive_melanomas.limit``).

    Returns
    -------
    list of Path
        The written files, the rehearsal lock last.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    archive_dir = Path(archive_dir) if archive_dir else None
    lay = layout(dataset)
    year = int(lay.year) if lay.year.isdigit() else 2024
    wanted = set(generated_files(dataset, archive_dir=archive_dir is not None))
    taken = taken_files(dataset, archive_dir=archive_dir is not None)
    written: list[Path] = []
    if lay.folder:  # the archive melanomas: the twin's own (no official CSV)
        written += _write_melanomas(outdir, image_size, seed, melanoma_limit)
    else:
        written += _write_label_zips(dataset, outdir, archive_dir, wanted, year)
        rows = read_rows(dataset, outdir, seed=seed) if rows is None else rows
        drawer = _Drawer(dataset, image_size, seed)
        for image_set in lay.image_sets:
            metadata = None
            if image_set.metadata is not None and image_set.metadata.file.startswith(
                image_set.image_zip + "::"
            ):
                member = Path(image_set.metadata.file.split("::")[1]).name
                metadata = _official_csv(archive_dir, dataset, member)
            split_rows = [r for r in rows if r.split == image_set.split]
            written += _write_image_set(
                dataset,
                image_set,
                split_rows,
                outdir,
                drawer,
                metadata_csv=metadata,
                year=year,
                wanted=wanted,
            )
        logger.info("drew %d images of %s at %d px into %s", len(rows), dataset, image_size, outdir)
    written.append(_seed_lock(dataset, outdir, Path(checksums), taken))
    return written


def _write_melanomas(outdir: Path, image_size: int, seed: int, limit: int) -> list[Path]:
    """The archive melanomas as the twin writes them (isic-cli's folder), at ``image_size``."""
    height = max(16, round(image_size * 3 / 4))
    spec = DEFAULT_SPEC["isic_archive_melanoma"] | {
        "counts": {"train": {"melanoma": int(limit)}},
        "min_height": height,
        "max_height": height,
        "aspect_ratios": [image_size / height],
    }
    plans = plan_dataset("isic_archive_melanoma", resolve_spec("isic_archive_melanoma", spec), seed)
    (outdir / "synthetic_truth" / "masks").mkdir(parents=True, exist_ok=True)
    truth: list[dict[str, Any]] = []

    def paint(plan):
        rendered = render(plan.lesion, plan.view, plan.scene)
        return rendered, _jpeg(rendered.image, 90)

    written = _write_folder(plans, outdir, paint, truth)
    shutil.rmtree(outdir / "synthetic_truth")  # the twin's truth masks: no official file
    return [p for p in written if "synthetic_truth" not in p.parts]
