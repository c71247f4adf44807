"""The population of a synthetic archive: which images, of which lesions and patients, with which
labels, metadata, sizes and drawing parameters. No pixels here (see :mod:`.draw`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from melrepro.data.layouts import DATASETS
from melrepro.data.synthetic.draw import (
    Lesion,
    Scene,
    View,
    sample_lesion,
    sample_scene,
    sample_view,
)
from melrepro.data.synthetic.spec import CLASSES

__all__ = ["ID_BASE", "SEED_OFFSET", "ImagePlan", "plan_dataset"]

#: First image number of each dataset: ids are unique across the twin and increasing within a dataset.
ID_BASE = {
    "isic2017": 0,
    "isic_archive_melanoma": 1_000_000,
    "isic2018_task2": 2_000_000,
    "isic2018_task3": 3_000_000,
    "isic2019": 4_000_000,
    "isic2020": 5_000_000,
}
#: Added to the global seed so that each dataset draws from its own stream.
SEED_OFFSET = {
    "isic2017": 17_001,
    "isic_archive_melanoma": 17_501,
    "isic2018_task2": 18_002,
    "isic2018_task3": 18_003,
    "isic2019": 19_001,
    "isic2020": 20_001,
}

# Diagnoses of the benign images of ISIC 2020 (the real archive's vocabulary), with their
# frequencies among the benign images, and the style each is drawn with.
_BENIGN_2020 = {
    "unknown": (0.62, None),
    "nevus": (0.28, "nevus"),
    "seborrheic keratosis": (0.03, "seborrheic_keratosis"),
    "lentigo NOS": (0.025, "lentigo"),
    "lichenoid keratosis": (0.015, "bkl"),
    "solar lentigo": (0.01, "lentigo"),
    "atypical melanocytic proliferation": (0.01, "nevus"),
    "cafe-au-lait macule": (0.01, "lentigo"),
}
_HAM_DX = {
    "MEL": "mel",
    "NV": "nv",
    "BCC": "bcc",
    "AKIEC": "akiec",
    "BKL": "bkl",
    "DF": "df",
    "VASC": "vasc",
}
_STYLE = {
    "melanoma": "melanoma",
    "MEL": "melanoma",
    "nevus": "nevus",
    "NV": "nevus",
    "seborrheic_keratosis": "seborrheic_keratosis",
    "BCC": "bcc",
    "AK": "actinic_keratosis",
    "SCC": "scc",
    "DF": "dermatofibroma",
    "VASC": "vascular",
}

# Age (mean, sd) and probability of male sex by style: melanoma patients are older and more
# often male than nevus patients, keratinocyte cancers older still.
_AGE = {
    "melanoma": (60, 14),
    "nevus": (40, 14),
    "seborrheic_keratosis": (62, 12),
    "bkl": (60, 13),
    "lentigo": (55, 12),
    "bcc": (66, 12),
    "actinic_keratosis": (68, 10),
    "scc": (70, 10),
    "dermatofibroma": (40, 14),
    "vascular": (45, 20),
}
_MALE = {
    "melanoma": 0.6,
    "nevus": 0.45,
    "seborrheic_keratosis": 0.5,
    "bkl": 0.52,
    "lentigo": 0.45,
    "bcc": 0.58,
    "actinic_keratosis": 0.65,
    "scc": 0.65,
    "dermatofibroma": 0.4,
    "vascular": 0.5,
}
_SEVERITY = ["melanoma", "scc", "bcc", "actinic_keratosis"]  # a patient's "worst" lesion
#: ``difficulty`` (every dataset that has it): the probability that a lesion is painted in the
#: style of a class on the other side of its paper's target, chosen at random among these styles.
#: Labels, demographics and sites keep the true class. ISIC 2017 and the archive melanomas:
#: melanoma vs nevus / seborrheic keratosis; HAM10000 (task 3): malignant vs benign classes;
#: ISIC 2020: melanoma vs the benign styles (the darker brightness of melanoma images, a label
#: signal of paper 002, stays with the label).
_MELANOMA_VS_REST = {
    "melanoma": ("nevus", "seborrheic_keratosis"),
    "nevus": ("melanoma",),
    "seborrheic_keratosis": ("melanoma",),
}
_MELANOMA_VS_BENIGN_2020 = {
    "melanoma": ("nevus", "lentigo", "seborrheic_keratosis"),
    "nevus": ("melanoma",),
    "lentigo": ("melanoma",),
    "seborrheic_keratosis": ("melanoma",),
    "bkl": ("melanoma",),
}
_MALIGNANT_STYLES = ("melanoma", "bcc", "actinic_keratosis", "scc")
_BENIGN_STYLES = ("nevus", "bkl", "lentigo", "dermatofibroma", "vascular")
_CONFUSABLE = {
    "isic2017": _MELANOMA_VS_REST,
    "isic_archive_melanoma": _MELANOMA_VS_REST,
    "isic2020": _MELANOMA_VS_BENIGN_2020,
    "isic2018_task3": {s: _BENIGN_STYLES for s in _MALIGNANT_STYLES}
    | {s: _MALIGNANT_STYLES for s in _BENIGN_STYLES},
}

_SITES = (
    "posterior torso",
    "anterior torso",
    "lateral torso",
    "upper extremity",
    "lower extremity",
    "head/neck",
    "palms/soles",
    "oral/genital",
)
# Site varies by sex (men: back and head; women: legs), and by kind of lesion.
_SITE_WEIGHTS = {
    "male": np.array([0.30, 0.17, 0.03, 0.14, 0.14, 0.18, 0.02, 0.02]),
    "female": np.array([0.20, 0.14, 0.03, 0.17, 0.32, 0.10, 0.02, 0.02]),
}
_SITE_FACTOR = {
    "bcc": np.array([1, 1, 1, 1, 0.5, 4, 0.2, 0.2]),
    "actinic_keratosis": np.array([0.5, 0.5, 1, 2, 0.5, 5, 0.2, 0.2]),
    "scc": np.array([0.5, 0.5, 1, 2, 1, 4, 0.3, 0.3]),
    "nevus": np.array([1.3, 1.2, 1, 1, 1, 0.6, 1, 1]),
}
_HAM_SITES = {
    "posterior torso": ["back"],
    "anterior torso": ["chest", "abdomen", "trunk"],
    "lateral torso": ["trunk"],
    "upper extremity": ["upper extremity"] * 8 + ["hand"],
    "lower extremity": ["lower extremity"] * 8 + ["foot"],
    "head/neck": ["face", "face", "neck", "scalp", "ear"],
    "palms/soles": ["acral"],
    "oral/genital": ["genital"],
}


@dataclass
class ImagePlan:
    """Everything about one synthetic image except its pixels."""

    image_id: str
    split: str
    label: str
    diagnosis: str
    style: str
    patient_id: str
    lesion_id: str
    sex: str  # true value; blanked in the official CSVs when ``missing`` says so
    age: float
    site: str  # canonical site (see ``_SITES``), mapped to each archive's vocabulary on writing
    lesion: Lesion
    view: View
    scene: Scene
    missing: frozenset[str] = frozenset()
    duplicate_of: str = ""
    near_duplicate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _style(dataset: str, label: str, rng: np.random.Generator) -> tuple[str, str]:
    """(style, diagnosis) of an image of class ``label``."""
    if dataset == "isic2020":
        if label == "melanoma":
            return "melanoma", "melanoma"
        names = list(_BENIGN_2020)
        p = np.array([_BENIGN_2020[n][0] for n in names])
        diagnosis = str(rng.choice(names, p=p / p.sum()))
        style = _BENIGN_2020[diagnosis][1]
        if style is None:  # "unknown" benign lesions: mostly nevi
            style = str(rng.choice(["nevus", "lentigo", "seborrheic_keratosis"], p=[0.7, 0.2, 0.1]))
        return style, diagnosis
    if label in ("AKIEC",):  # actinic keratoses and intraepithelial carcinoma
        return ("scc" if rng.uniform() < 0.3 else "actinic_keratosis"), _HAM_DX[label]
    if (
        label == "BKL"
    ):  # benign keratoses: seborrheic keratoses, solar lentigines, lichen planus-like
        return ("lentigo" if rng.uniform() < 0.3 else "bkl"), _HAM_DX.get(label, label)
    diagnosis = _HAM_DX[label] if dataset == "isic2018_task3" else label
    return _STYLE[label], diagnosis


def _group_sizes(n: int, mean: float, rng: np.random.Generator) -> list[int]:
    """Split ``n`` images into groups of 1 + Poisson(mean - 1) images."""
    sizes = []
    while n > 0:
        k = min(n, 1 + int(rng.poisson(max(mean - 1, 0))))
        sizes.append(k)
        n -= k
    return sizes


def _heights(n: int, spec: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    heights = rng.integers(spec["min_height"], spec["max_height"] + 1, n)
    order = rng.permutation(n)
    start = 0
    for band in spec["height_bands"]:
        chosen = order[start : start + int(band["count"])]
        heights[chosen] = rng.integers(band["min_height"], band["max_height"] + 1, len(chosen))
        start += len(chosen)
    return heights


def _patients(lesions: list[dict[str, Any]], mean: float, rng: np.random.Generator) -> list[int]:
    """Patient index of each lesion of one split: melanomas spread over distinct patients."""
    n_images = sum(les["n"] for les in lesions)
    if mean <= 1:
        return list(range(len(lesions)))
    n_patients = max(1, min(len(lesions), round(n_images / mean)))
    weights = rng.gamma(2.0, 1.0, n_patients)
    weights /= weights.sum()
    out = [0] * len(lesions)
    mel = [i for i, les in enumerate(lesions) if les["style"] == "melanoma"]
    free = list(rng.permutation(n_patients))
    for i in mel:
        out[i] = int(free.pop()) if free else int(rng.choice(n_patients, p=weights))
    for i, les in enumerate(lesions):
        if les["style"] != "melanoma":
            out[i] = int(rng.choice(n_patients, p=weights))
    return out


def plan_dataset(dataset: str, spec: dict[str, Any], seed: int) -> list[ImagePlan]:
    """Draw the population of ``dataset`` (``spec`` already resolved): one plan per image, in
    id order (official splits in layout order, classes shuffled within a split)."""
    rng = np.random.default_rng(seed + SEED_OFFSET[dataset])
    # difficulty draws come from their own stream: difficulty 0 leaves every other draw as is
    difficulty = float(spec.get("difficulty", 0.0))
    difficulty_rng = np.random.default_rng([seed + SEED_OFFSET[dataset], 12])
    if difficulty > 0 and dataset not in _CONFUSABLE:
        raise ValueError(f"difficulty is only defined for {sorted(_CONFUSABLE)}, not {dataset}")
    confusable = _CONFUSABLE.get(dataset, {})
    layout = DATASETS[dataset]
    # 1. lesions of every split, each with its class, style and number of images
    by_split: dict[str, list[dict[str, Any]]] = {}
    for image_set in layout.image_sets:
        lesions = []
        for label in CLASSES[dataset]:
            n = int(spec["counts"].get(image_set.split, {}).get(label, 0))
            for k in _group_sizes(n, spec["images_per_lesion"], rng):
                style, diagnosis = _style(dataset, label, rng)
                lesions.append({"label": label, "style": style, "diagnosis": diagnosis, "n": k})
        by_split[image_set.split] = [lesions[i] for i in rng.permutation(len(lesions))]

    # 2. patients (disjoint between splits), their sex and age from their worst lesion
    patient_counter = 0
    lesion_counter = 0
    records = []
    for split, lesions in by_split.items():
        owner = _patients(lesions, spec["images_per_patient"], rng)
        n_patients = max(owner) + 1 if owner else 0
        patients = []
        for p in range(n_patients):
            styles = [les["style"] for les, o in zip(lesions, owner, strict=True) if o == p]
            worst = next((s for s in _SEVERITY if s in styles), styles[0] if styles else "nevus")
            mean_age, sd_age = _AGE[worst]
            sex = "male" if rng.uniform() < _MALE[worst] else "female"
            age = float(np.clip(5 * round(rng.normal(mean_age, sd_age) / 5), 5, 90))
            patients.append((patient_counter + p, sex, age))
        patient_counter += n_patients
        for les, o in zip(lesions, owner, strict=True):
            pid, sex, age = patients[o]
            weights = _SITE_WEIGHTS[sex] * _SITE_FACTOR.get(les["style"], 1)
            site = str(rng.choice(_SITES, p=weights / weights.sum()))
            painted = les["style"]
            if difficulty > 0 and painted in confusable and difficulty_rng.uniform() < difficulty:
                painted = str(difficulty_rng.choice(confusable[painted]))
            les["painted"] = painted
            lesion = sample_lesion(painted, np.random.default_rng(int(rng.integers(2**62))))
            extra = {}
            if dataset == "isic2018_task3":
                extra = {
                    "localization": ham_site(site, rng),
                    "dx_type": _dx_type(les["label"], rng),
                }
            for _ in range(les["n"]):
                records.append((split, les, lesion, lesion_counter, pid, sex, age, site, extra))
            lesion_counter += 1
    # 3. shuffle images within each split (views of one lesion are not neighbours), sizes, ids
    order = []
    for split in by_split:
        idx = [i for i, r in enumerate(records) if r[0] == split]
        order += [idx[i] for i in rng.permutation(len(idx))]
    records = [records[i] for i in order]
    heights = _heights(len(records), spec, rng)
    numbers = ID_BASE[dataset] + np.cumsum(rng.integers(1, 4, len(records))) - 1
    lesion_ids = rng.permutation(1_000_000)[: max(lesion_counter, 1)] + 1
    patient_ids = rng.permutation(1_000_000)[: max(patient_counter, 1)] + 1
    plans = []
    for (split, les, lesion, lnum, pnum, sex, age, site, extra), height, number in zip(
        records, heights, numbers, strict=True
    ):
        ratio = float(rng.choice(spec["aspect_ratios"]))
        width = max(16, round(int(height) * ratio))
        missing = frozenset(
            k for k in ("sex", "age", "site") if rng.uniform() < spec["missing_metadata"]
        )
        plans.append(
            ImagePlan(
                image_id=f"ISIC_{number:07d}",
                split=split,
                label=les["label"],
                diagnosis=les["diagnosis"],
                style=les.get("painted", les["style"]),
                patient_id=f"IP_{patient_ids[pnum]:07d}",
                lesion_id=_lesion_id(dataset, int(lesion_ids[lnum])),
                sex=sex,
                age=age,
                site=site,
                lesion=lesion,
                view=sample_view(rng),
                scene=sample_scene(rng, width, int(height), spec),
                missing=missing,
                extra=dict(extra),
            )
        )
    if dataset == "isic2020":
        _darken_melanomas(plans, float(spec.get("melanoma_brightness", 1.0)))
        _ensure_missing_test_value(plans, spec)
        _add_duplicates(plans, spec, rng)
    return plans


def _darken_melanomas(plans: list[ImagePlan], factor: float) -> None:
    """Scale the overall brightness of every melanoma image (no random draws)."""
    if factor == 1.0:
        return
    for p in plans:
        if p.label == "melanoma":
            p.scene = dataclasses.replace(p.scene, brightness=p.scene.brightness * factor)


def _ensure_missing_test_value(plans: list[ImagePlan], spec: dict[str, Any]) -> None:
    """With missing metadata on, at least one test image has a blank site (the real test set
    has some, and siim2020 must keep such rows); no random draws."""
    test = [p for p in plans if p.split == "test"]
    if spec["missing_metadata"] > 0 and test and not any(p.missing for p in test):
        test[0].missing = frozenset({"site"})


def _dx_type(label: str, rng: np.random.Generator) -> str:
    """How HAM10000 confirmed the diagnosis: malignant ones by histopathology."""
    if label in ("MEL", "BCC", "AKIEC"):
        return "histo"
    if label == "NV":
        return str(
            rng.choice(["follow_up", "histo", "consensus", "confocal"], p=[0.5, 0.4, 0.08, 0.02])
        )
    return str(rng.choice(["histo", "consensus", "confocal"], p=[0.5, 0.45, 0.05]))


def _lesion_id(dataset: str, number: int) -> str:
    prefix = {"isic2018_task3": "HAM", "isic2019": "BCN"}.get(dataset, "IL")
    return f"{prefix}_{number:07d}"


def _add_duplicates(plans: list[ImagePlan], spec: dict[str, Any], rng: np.random.Generator) -> None:
    """Turn ``spec["duplicates"]`` training images into copies of an earlier image of their class."""
    train = [i for i, p in enumerate(plans) if p.split == "train"]
    used: set[int] = set()
    n = int(spec["duplicates"])
    order = [int(j) for j in rng.permutation(train)]
    # A melanoma among the duplicates (the real file has some): the first melanoma that has an
    # earlier melanoma to copy is tried first.
    first_mel = next(
        (
            j
            for j in order
            if plans[j].label == "melanoma"
            and any(i < j and plans[i].label == "melanoma" for i in train)
        ),
        None,
    )
    if first_mel is not None:
        order.remove(first_mel)
        order.insert(0, first_mel)
    for j in order:
        if n == 0:
            break
        candidates = [
            i
            for i in train
            if i < j
            and i not in used
            and j not in used
            and plans[i].label == plans[j].label
            and not plans[i].duplicate_of
        ]
        if not candidates:
            continue
        i = int(rng.choice(candidates))
        src = plans[i]
        dst = plans[j]
        plans[j] = ImagePlan(
            image_id=dst.image_id,
            split=dst.split,
            label=src.label,
            diagnosis=src.diagnosis,
            style=src.style,
            patient_id=src.patient_id,
            lesion_id=src.lesion_id,
            sex=src.sex,
            age=src.age,
            site=src.site,
            lesion=src.lesion,
            view=src.view,
            scene=src.scene,
            missing=src.missing,
            extra=dict(src.extra),
            duplicate_of=src.image_id,
            near_duplicate=bool(rng.uniform() < spec["near_duplicate_fraction"]),
        )
        used.update((i, int(j)))
        n -= 1


def ham_site(site: str, rng: np.random.Generator) -> str:
    """HAM10000 ``localization`` of a canonical site."""
    return str(rng.choice(_HAM_SITES[site]))
