"""The archive writer of the synthetic twin: plans the images of a dataset (classes, lesions,
patients, metadata, sizes), paints them with :mod:`melrepro.synthetic.draw` and writes the official
files of :mod:`melrepro.layouts`, plus the generator's ground truth in ``synthetic_truth/``.

Byte-identical for the same spec and seed: every random draw comes from a generator seeded by
``(seed, dataset)``, zip members are written in a fixed order with a fixed timestamp, and JPEG/PNG
encoding is deterministic.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from melrepro.layouts import ATTRIBUTES, DatasetLayout, layout
from melrepro.synthetic.draw import Lesion, render, sample_lesion, sample_scene, sample_view
from melrepro.synthetic.spec import CLASSES, resolve_spec

__all__ = ["ID_OFFSETS", "STYLE_OF", "write_synthetic_archive"]

logger = logging.getLogger(__name__)

#: First image number of each dataset, so ids are unique across the whole twin.
ID_OFFSETS = {
    "isic2017": 0,
    "isic_archive_melanoma": 100_000,
    "isic2018_task2": 200_000,
    "isic2018_task3": 300_000,
    "isic2019": 400_000,
    "isic2020": 500_000,
}
_SEED_OFFSETS = {name: k for k, name in enumerate(ID_OFFSETS)}

#: Which painter style draws each class of each dataset.
STYLE_OF: dict[str, str] = {
    "melanoma": "melanoma",
    "seborrheic_keratosis": "seborrheic_keratosis",
    "nevus": "nevus",
    "MEL": "melanoma",
    "NV": "nevus",
    "BCC": "bcc",
    "AKIEC": "actinic_keratosis",
    "AK": "actinic_keratosis",
    "BKL": "bkl",
    "DF": "dermatofibroma",
    "VASC": "vascular",
    "SCC": "scc",
}
# isic2020 benign lesions: (style, diagnosis as the 2020 ground truth spells it, probability).
_BENIGN_2020 = (
    ("nevus", "nevus", 0.55),
    ("nevus", "unknown", 0.25),
    ("seborrheic_keratosis", "seborrheic keratosis", 0.1),
    ("lentigo", "lentigo NOS", 0.1),
)
_HAM_DX = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"}
_SITES_2020 = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "oral/genital")
_SITES_HAM = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "foot", "scalp", "neck")
_DATE = (2020, 1, 1, 0, 0, 0)


@dataclass
class _Patient:
    patient_id: str
    sex: str
    age: float
    site_bias: int
    # Planning bookkeeping: images this patient can still take, and its split.
    extra_images: int = 0
    split: str = ""
    melanoma: bool = False


@dataclass
class _Plan:
    """One image to paint."""

    image_id: str
    split: str
    label: str
    style: str
    diagnosis: str
    lesion_key: int
    lesion_id: str
    patient: _Patient
    site: str
    width: int
    height: int
    metadata_missing: bool
    duplicate_of: str = ""
    near_copy: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _patient(rng: np.random.Generator, number: int, melanoma: bool, prefix: str) -> _Patient:
    # Melanoma patients are older and more often male (papers 002 and 003 describe this skew).
    if melanoma:
        sex = "male" if rng.uniform() < 0.62 else "female"
        age = float(np.clip(rng.normal(62, 12), 20, 90))
    else:
        sex = "male" if rng.uniform() < 0.48 else "female"
        age = float(np.clip(rng.normal(44, 15), 5, 90))
    return _Patient(f"{prefix}{number:07d}", sex, round(age / 5) * 5.0, int(rng.integers(0, 3)))


def _site(rng: np.random.Generator, patient: _Patient, sites: tuple[str, ...]) -> str:
    # Site depends on sex: torso/back more often for men, lower extremity for women.
    weights = np.ones(len(sites))
    weights[0 if patient.sex == "male" else 1] += 3.0
    weights[patient.site_bias] += 1.0
    return str(rng.choice(sites, p=weights / weights.sum()))


def _size(rng: np.random.Generator, spec: dict[str, Any], band: dict | None) -> tuple[int, int]:
    low, high = (band["min_height"], band["max_height"]) if band else (spec["min_height"], spec["max_height"])
    height = int(rng.integers(low, high + 1))
    aspect = float(rng.choice(spec["aspect_ratios"]))
    return max(8, round(height * aspect)), height


def _plan(dataset: str, spec: dict[str, Any], rng: np.random.Generator) -> tuple[list[_Plan], dict[int, Lesion]]:
    lesions: dict[int, Lesion] = {}
    plans: list[_Plan] = []
    patients: list[_Patient] = []
    ham = dataset == "isic2018_task3"
    sites = _SITES_HAM if ham else _SITES_2020
    entries: list[tuple[str, str]] = []
    for split in [s.split for s in layout(dataset).image_sets]:
        for label in CLASSES[dataset]:
            entries += [(split, label)] * int(spec["counts"].get(split, {}).get(label, 0))
    # Lesions with several images: consecutive entries of one split and class share a lesion.
    groups: list[list[tuple[str, str]]] = []
    position = 0
    while position < len(entries):
        split, label = entries[position]
        size = 1 + int(rng.poisson(max(0.0, spec["images_per_lesion"] - 1.0)))
        group = [entries[position]]
        position += 1
        while len(group) < size and position < len(entries) and entries[position] == (split, label):
            group.append(entries[position])
            position += 1
        groups.append(group)
    order = rng.permutation(len(groups))
    per_patient = max(1.0, spec["images_per_patient"])
    for lesion_key, g in enumerate(order):
        split, label = groups[g][0]
        style = STYLE_OF.get(label, label)
        diagnosis = label
        if dataset == "isic2020" and label == "benign":
            options = _BENIGN_2020
            choice = rng.choice(len(options), p=[o[2] for o in options])
            style, diagnosis = options[choice][0], options[choice][1]
        elif dataset == "isic2018_task2":
            diagnosis = label
        lesions[lesion_key] = sample_lesion(style, rng)
        melanoma = style == "melanoma"
        # A patient is reused while it has images to spare (images_per_patient on average).
        # Melanoma lesions go to melanoma patients, so age and sex keep their skew per image.
        reuse = [
            p
            for p in patients
            if p.extra_images > 0 and p.split == split and p.melanoma == melanoma
        ] if per_patient > 1 else []
        if reuse:
            patient = reuse[int(rng.integers(0, len(reuse)))]
        else:
            patient = _patient(rng, len(patients), melanoma, "IP_")
            patient.extra_images = int(rng.poisson(per_patient - 1)) if per_patient > 1 else 0
            patient.split = split
            patient.melanoma = melanoma
            patients.append(patient)
        patient.extra_images -= len(groups[g]) - (0 if reuse else 1)
        site = _site(rng, patient, sites)
        for _ in groups[g]:
            plans.append(
                _Plan(
                    image_id="",
                    split=split,
                    label=label,
                    style=style,
                    diagnosis=diagnosis,
                    lesion_key=lesion_key,
                    lesion_id="",
                    patient=patient,
                    site=site,
                    width=0,
                    height=0,
                    metadata_missing=bool(rng.uniform() < spec["missing_metadata"]),
                )
            )
    # Image sizes: the height bands get their counts, the rest the default range.
    banded: list[dict | None] = [None] * len(plans)
    free = list(rng.permutation(len(plans)))
    for band in spec["height_bands"]:
        for _ in range(min(int(band["count"]), len(free))):
            banded[free.pop()] = band
    for plan, band in zip(plans, banded, strict=True):
        plan.width, plan.height = _size(rng, spec, band)
    # Ids: increasing within a split in a shuffled order, so ids do not reveal the class.
    by_split: dict[str, list[_Plan]] = {}
    for plan in plans:
        by_split.setdefault(plan.split, []).append(plan)
    number = ID_OFFSETS[dataset]
    ordered: list[_Plan] = []
    for split in [s.split for s in layout(dataset).image_sets]:
        group = by_split.get(split, [])
        for k in rng.permutation(len(group)):
            group[k].image_id = f"ISIC_{number:07d}"
            number += 1
            ordered.append(group[k])
    prefix = {"isic2018_task3": "HAM_", "isic2019": "BCN_", "isic2020": "IL_"}.get(dataset, "L_")
    for plan in ordered:
        plan.lesion_id = f"{prefix}{ID_OFFSETS[dataset] + plan.lesion_key:07d}"
    if spec.get("duplicates", 0):
        train = [p for p in ordered if p.split == "train"]
        picks = rng.choice(len(train), size=min(int(spec["duplicates"]), len(train)), replace=False)
        for pick in sorted(picks):
            original = train[pick]
            copy = _Plan(**{**original.__dict__, "extra": {}})
            copy.image_id = f"ISIC_{number:07d}"
            number += 1
            copy.duplicate_of = original.image_id
            copy.near_copy = bool(rng.uniform() < spec.get("near_duplicate_fraction", 0.0))
            ordered.append(copy)
    return ordered, lesions


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, optimize=False)
    return buffer.getvalue()


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


class _ZipWriter:
    """Collects members and writes a zip with fixed timestamps, in the order members were added."""

    def __init__(self) -> None:
        self.members: list[tuple[str, bytes]] = []

    def add(self, name: str, data: bytes) -> None:
        self.members.append((name, data))

    def write(self, path: Path) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in self.members:
                info = zipfile.ZipInfo(name, date_time=_DATE)
                info.external_attr = 0o644 << 16
                stored = name.endswith((".jpg", ".png"))
                info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                archive.writestr(info, data)


def _float(flag: bool) -> str:
    return "1.0" if flag else "0.0"


def _age(plan: _Plan) -> str:
    return "" if plan.metadata_missing else f"{plan.patient.age:.0f}"


def _sex(plan: _Plan) -> str:
    return "" if plan.metadata_missing else plan.patient.sex


def _render_all(
    plans: list[_Plan], lesions: dict[int, Lesion], spec: dict[str, Any], rng: np.random.Generator, dataset: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for plan in tqdm(plans, desc=f"paint {dataset}", disable=None):
        if plan.duplicate_of:
            original = out[plan.duplicate_of]
            if plan.near_copy:
                # A near copy: the same picture re-encoded at another quality.
                image = np.asarray(Image.open(io.BytesIO(original["jpeg"])).convert("RGB"))
                jpeg = _jpeg(image, max(50, int(spec["jpeg_quality"]) - 15))
            else:
                jpeg = original["jpeg"]
            out[plan.image_id] = {**original, "jpeg": jpeg}
            continue
        view = sample_view(rng)
        scene = sample_scene(rng, plan.width, plan.height, spec)
        painted = render(lesions[plan.lesion_key], view, scene)
        out[plan.image_id] = {
            "jpeg": _jpeg(painted.image, int(spec["jpeg_quality"])),
            "mask": painted.mask,
            "attributes": painted.attributes,
            "scene": scene,
            "radius_px": painted.radius_px,
        }
    return out


def _write_truth(outdir: Path, plans: list[_Plan], painted: dict[str, Any]) -> list[Path]:
    truth_dir = outdir / "synthetic_truth"
    (truth_dir / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for plan in plans:
        item = painted[plan.image_id]
        scene = item["scene"]
        structures = [a for a in ATTRIBUTES if a in item["attributes"] and item["attributes"][a].any()]
        rows.append(
            [
                plan.image_id,
                plan.split,
                plan.label,
                plan.style,
                plan.diagnosis,
                plan.lesion_id,
                plan.patient.patient_id,
                plan.patient.sex,
                f"{plan.patient.age:.0f}",
                plan.site,
                plan.width,
                plan.height,
                f"{item['radius_px']:.2f}",
                f"{scene.skin_tone:.4f}",
                f"{scene.brightness:.4f}",
                f"{scene.vignetting:.4f}",
                scene.hair,
                scene.ruler,
                ";".join(structures),
                int(item["mask"].sum()),
                plan.duplicate_of,
            ]
        )
        (truth_dir / "masks" / f"{plan.image_id}.png").write_bytes(_png(item["mask"]))
    header = [
        "image_id", "split", "label", "style", "diagnosis", "lesion_id", "patient_id", "sex", "age",
        "site", "width", "height", "radius_px", "skin_tone", "brightness", "vignetting", "hair",
        "ruler", "structures", "lesion_area_px", "duplicate_of",
    ]
    path = truth_dir / "truth.csv"
    path.write_bytes(_csv(header, rows))
    return [path]


def _write_isic2017(outdir: Path, spec: DatasetLayout, plans: list[_Plan], painted: dict) -> list[Path]:
    written = []
    for image_set in spec.image_sets:
        members = [p for p in plans if p.split == image_set.split]
        images, masks = _ZipWriter(), _ZipWriter()
        for plan in members:
            images.add(f"{image_set.image_folder}/{plan.image_id}.jpg", painted[plan.image_id]["jpeg"])
            masks.add(f"{image_set.mask_folder}/{plan.image_id}_segmentation.png", _png(painted[plan.image_id]["mask"]))
        meta_member = image_set.metadata.file.split("::", 1)[1]
        images.add(
            meta_member,
            _csv(
                ["image_id", "age_approximate", "sex"],
                [[p.image_id, _age(p) or "unknown", _sex(p) or "unknown"] for p in members],
            ),
        )
        images.write(outdir / image_set.image_zip)
        masks.write(outdir / image_set.mask_zip)
        (outdir / image_set.labels.file).write_bytes(
            _csv(
                list(image_set.labels.columns),
                [
                    [p.image_id, _float(p.label == "melanoma"), _float(p.label == "seborrheic_keratosis")]
                    for p in members
                ],
            )
        )
        written += [outdir / image_set.image_zip, outdir / image_set.mask_zip, outdir / image_set.labels.file]
    return written


def _write_archive_melanoma(outdir: Path, spec: DatasetLayout, plans: list[_Plan], painted: dict) -> list[Path]:
    folder = outdir / spec.image_sets[0].image_folder
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for plan in plans:
        (folder / f"{plan.image_id}.jpg").write_bytes(painted[plan.image_id]["jpeg"])
        rows.append(
            [plan.image_id, "Synthetic twin (melanoma-repro)", "CC-0", _age(plan), plan.site, "malignant",
             "Malignant::Malignant melanocytic proliferations (Melanoma)::Melanoma Invasive", _sex(plan)]
        )
    header = ["isic_id", "attribution", "copyright_license", "age_approx", "anatom_site_general",
              "benign_malignant", "diagnosis", "sex"]
    path = outdir / spec.image_sets[0].labels.file
    path.write_bytes(_csv(header, rows))
    return [path]


def _write_task2(outdir: Path, spec: DatasetLayout, plans: list[_Plan], painted: dict) -> list[Path]:
    image_set = spec.image_sets[0]
    images, masks, attributes = _ZipWriter(), _ZipWriter(), _ZipWriter()
    for plan in plans:
        item = painted[plan.image_id]
        images.add(f"{image_set.image_folder}/{plan.image_id}.jpg", item["jpeg"])
        masks.add(f"{image_set.mask_folder}/{plan.image_id}_segmentation.png", _png(item["mask"]))
        for name in ATTRIBUTES:
            mask = item["attributes"].get(name)
            if mask is None:
                mask = np.zeros_like(item["mask"])
            attributes.add(f"{image_set.attribute_folder}/{plan.image_id}_attribute_{name}.png", _png(mask))
    images.add(f"{image_set.image_folder}/ATTRIBUTION.txt", b"Synthetic twin written by melanoma-repro.\n")
    images.add(f"{image_set.image_folder}/LICENSE.txt", b"CC-0\n")
    images.write(outdir / image_set.image_zip)
    masks.write(outdir / image_set.mask_zip)
    attributes.write(outdir / image_set.attribute_zip)
    return [outdir / image_set.image_zip, outdir / image_set.mask_zip, outdir / image_set.attribute_zip]


def _write_one_hot(outdir: Path, spec: DatasetLayout, plans: list[_Plan], painted: dict, dataset: str) -> list[Path]:
    written = []
    rng = np.random.default_rng([len(plans), 7])
    for image_set in spec.image_sets:
        members = [p for p in plans if p.split == image_set.split]
        images = _ZipWriter()
        for plan in members:
            images.add(f"{image_set.image_folder}/{plan.image_id}.jpg", painted[plan.image_id]["jpeg"])
        images.write(outdir / image_set.image_zip)
        written.append(outdir / image_set.image_zip)
        columns = list(image_set.labels.columns)
        label_rows = [[p.image_id] + [_float(p.label == c) for c in columns[1:]] for p in members]
        labels = _csv(columns, label_rows)
        if "::" in image_set.labels.file:
            zip_name, member = image_set.labels.file.split("::", 1)
            truth_zip = _ZipWriter()
            truth_zip.add(member, labels)
            truth_zip.write(outdir / zip_name)
            written.append(outdir / zip_name)
        else:
            (outdir / image_set.labels.file).write_bytes(labels)
            written.append(outdir / image_set.labels.file)
        if image_set.metadata is not None:  # isic2019
            rows = [[p.image_id, _age(p), "" if p.metadata_missing else p.site, p.lesion_id, _sex(p)] for p in members]
            (outdir / image_set.metadata.file).write_bytes(_csv(list(image_set.metadata.columns), rows))
            written.append(outdir / image_set.metadata.file)
    if dataset == "isic2018_task3":
        # HAM10000 metadata covers the training images only, as the real file.
        rows = []
        for plan in [p for p in plans if p.split == "train"]:
            dx_type = "histo" if plan.label == "MEL" else str(rng.choice(["histo", "follow_up", "consensus"]))
            rows.append(
                [plan.lesion_id, plan.image_id, _HAM_DX[plan.label], dx_type, _age(plan),
                 _sex(plan) or "unknown", plan.site, "vidir_modern"]
            )
        header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]
        path = outdir / spec.extra_csvs[0].file
        path.write_bytes(_csv(header, rows))
        written.append(path)
    return written


def _write_isic2020(outdir: Path, spec: DatasetLayout, plans: list[_Plan], painted: dict) -> list[Path]:
    train_set, test_set = spec.image_sets
    written = []
    for image_set in (train_set, test_set):
        images = _ZipWriter()
        for plan in [p for p in plans if p.split == image_set.split]:
            images.add(f"{image_set.image_folder}/{plan.image_id}.jpg", painted[plan.image_id]["jpeg"])
        images.write(outdir / image_set.image_zip)
        written.append(outdir / image_set.image_zip)
    rows = []
    for plan in [p for p in plans if p.split == "train"]:
        melanoma = plan.label == "melanoma"
        rows.append(
            [plan.image_id, plan.patient.patient_id, plan.lesion_id, _sex(plan), _age(plan),
             "" if plan.metadata_missing else plan.site, "melanoma" if melanoma else plan.diagnosis,
             "malignant" if melanoma else "benign", int(melanoma)]
        )
    (outdir / train_set.labels.file).write_bytes(_csv(list(train_set.labels.columns), rows))
    rows = [
        [p.image_id, p.patient.patient_id, _sex(p), _age(p), "" if p.metadata_missing else p.site]
        for p in plans
        if p.split == "test"
    ]
    (outdir / test_set.metadata.file).write_bytes(_csv(list(test_set.metadata.columns), rows))
    duplicates = [[p.duplicate_of, p.image_id] for p in plans if p.duplicate_of]
    (outdir / spec.extra_csvs[0].file).write_bytes(_csv(["image_name_1", "image_name_2"], duplicates))
    written += [outdir / train_set.labels.file, outdir / test_set.metadata.file, outdir / spec.extra_csvs[0].file]
    return written


def write_synthetic_archive(dataset: str, outdir: str | Path, spec: dict | None, *, seed: int) -> list[Path]:
    """Write the official files of ``dataset`` into ``outdir`` plus ``outdir/synthetic_truth/``.

    Parameters
    ----------
    dataset : str
        A key of :data:`melrepro.layouts.DATASETS`.
    outdir : path
        ``resources/archives/<dataset>``.
    spec : dict or None
        ``config["data"]["synthetic"][dataset]``: overrides of
        :data:`melrepro.synthetic.spec.DEFAULT_SPEC` (counts, sizes, signals).
    seed : int
        The workflow's seed; each dataset draws from its own stream.

    Returns
    -------
    list of pathlib.Path
        The files written (official files first, then ``synthetic_truth/truth.csv``).
    """
    spec = resolve_spec(dataset, spec)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, _SEED_OFFSETS[dataset]])
    plans, lesions = _plan(dataset, spec, rng)
    painted = _render_all(plans, lesions, spec, rng, dataset)
    writers = {
        "isic2017": _write_isic2017,
        "isic_archive_melanoma": _write_archive_melanoma,
        "isic2018_task2": _write_task2,
        "isic2019": lambda o, s, p, d: _write_one_hot(o, s, p, d, "isic2019"),
        "isic2018_task3": lambda o, s, p, d: _write_one_hot(o, s, p, d, "isic2018_task3"),
        "isic2020": _write_isic2020,
    }
    written = writers[dataset](outdir, layout(dataset), plans, painted)
    written += _write_truth(outdir, plans, painted)
    logger.info("wrote the synthetic %s: %d images, %d files", dataset, len(plans), len(written))
    return written
