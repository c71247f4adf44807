"""Default sizes and signals of the synthetic twin, the JSON Schema of ``data.synthetic``, checks."""

from __future__ import annotations

import copy
from typing import Any

from melrepro.data.layouts import DATASETS

__all__ = ["CLASSES", "DEFAULT_SPEC", "resolve_spec", "synthetic_schema"]

#: The label vocabulary of each dataset (the ``counts`` keys; truth.csv ``label`` values).
#: isic2018_task2 ships no labels; its images are drawn from the isic2017 classes.
CLASSES: dict[str, tuple[str, ...]] = {
    "isic2017": ("melanoma", "seborrheic_keratosis", "nevus"),
    "isic_archive_melanoma": ("melanoma",),
    "isic2018_task2": ("melanoma", "seborrheic_keratosis", "nevus"),
    "isic2018_task3": ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"),
    "isic2019": ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"),
    "isic2020": ("melanoma", "benign"),
}

# Small images (longest side <= 600 px) except where a paper needs the real archive's sizes.
_COMMON: dict[str, Any] = {
    "min_height": 256,
    "max_height": 400,
    "aspect_ratios": [1.0, 1.333, 1.5],
    "height_bands": [],
    "images_per_lesion": 1.0,
    "images_per_patient": 1.0,
    "hair": 0.3,
    "ruler": 0.15,
    "vignetting": 0.4,
    "skin_tone_max": 1.0,
    "brightness_min": 0.8,
    "brightness_max": 1.1,
    "missing_metadata": 0.03,
    "jpeg_quality": 90,
    "max_render_side": 1024,
}


def _spec(counts: dict[str, dict[str, int]], **overrides: Any) -> dict[str, Any]:
    spec = copy.deepcopy(_COMMON)
    spec["counts"] = counts
    spec.update(overrides)
    return dict(sorted(spec.items()))


#: The default ``data.synthetic.<dataset>`` spec: a laptop-minutes twin whose every paper table has
#: non-empty cells (>= 10 images per class where 10-fold CV needs them, all classes in every split).
DEFAULT_SPEC: dict[str, dict[str, Any]] = {
    "isic2017": _spec(
        {
            "train": {"melanoma": 20, "seborrheic_keratosis": 14, "nevus": 26},
            "val": {"melanoma": 5, "seborrheic_keratosis": 4, "nevus": 6},
            "test": {"melanoma": 12, "seborrheic_keratosis": 9, "nevus": 15},
        },
        min_height=540,
        max_height=960,
        aspect_ratios=[1.333, 1.5],
        # gcn_mil's patch stride depends on the image height: every band of the real archive is present.
        height_bands=[
            {"min_height": 1000, "max_height": 1800, "count": 14},
            {"min_height": 2000, "max_height": 2400, "count": 6},
        ],
        # sp_graphs' default tables must not saturate (issue 12): classes overlap as real lesions do;
        # 0.12 caps the AUC of a perfect classifier of appearance at 88 % (0.3 gave 55-71 %)
        difficulty=0.12,
    ),
    "isic_archive_melanoma": _spec(
        {"train": {"melanoma": 20}},
        min_height=320,
        max_height=450,
        aspect_ratios=[1.333, 1.5],
        difficulty=0.12,
    ),
    "isic2018_task2": _spec(
        {"train": {"melanoma": 20, "seborrheic_keratosis": 10, "nevus": 30}},
        min_height=320,
        max_height=400,
        aspect_ratios=[1.333, 1.5],
    ),
    "isic2018_task3": _spec(
        {
            "train": {"MEL": 30, "NV": 70, "BCC": 12, "AKIEC": 8, "BKL": 16, "DF": 6, "VASC": 8},
            "val": {"MEL": 4, "NV": 9, "BCC": 2, "AKIEC": 1, "BKL": 2, "DF": 1, "VASC": 1},
            "test": {"MEL": 12, "NV": 28, "BCC": 5, "AKIEC": 3, "BKL": 7, "DF": 2, "VASC": 3},
        },
        min_height=300,
        max_height=450,
        aspect_ratios=[1.333],
        images_per_lesion=1.4,
        difficulty=0.0,
    ),
    "isic2019": _spec(
        {
            "train": {
                "MEL": 36,
                "NV": 56,
                "BCC": 18,
                "AK": 8,
                "BKL": 18,
                "DF": 6,
                "VASC": 6,
                "SCC": 12,
            }
        },
        min_height=256,
        max_height=400,
        images_per_lesion=1.3,
        include_task2=True,
        downsampled_fraction=0.3,
    ),
    # siim2020: ~100 training patients, 100 melanomas (so that the 15 % evaluation patients hold
    # ~15 melanomas: a TPR in [0.8, 0.9] exists and ROC-AUC moves in steps of < 0.001), darker
    # melanomas (paper §3, Fig. 2).
    "isic2020": _spec(
        {"train": {"melanoma": 100, "benign": 500}, "test": {"melanoma": 6, "benign": 54}},
        # siim2020's table01 must not saturate (issue 20): at 0 a ResNet18 at 32 px scored ROC-AUC
        # 1.000 in 11 of 16 rows; 0.15 caps the AUC of a perfect classifier of lesion appearance
        # at 0.85 (brightness, age and sex still add their share).
        difficulty=0.15,
        min_height=256,
        max_height=320,
        images_per_lesion=1.2,
        images_per_patient=6.0,
        duplicates=8,
        near_duplicate_fraction=0.5,
        melanoma_brightness=0.85,
    ),
}

_SPLITS = ("train", "val", "test")

# (type schema, description, minimum, maximum) of every key; defaults come from DEFAULT_SPEC.
_BAND = {
    "type": "object",
    "additionalProperties": False,
    "required": ["min_height", "max_height", "count"],
    "properties": {
        "min_height": {"type": "integer", "minimum": 16, "description": "Smallest height (px)."},
        "max_height": {"type": "integer", "minimum": 16, "description": "Largest height (px)."},
        "count": {"type": "integer", "minimum": 0, "description": "Images drawn in this band."},
    },
}
_PROPERTIES: dict[str, tuple[dict[str, Any], str, float | None, float | None]] = {
    "min_height": (
        {"type": "integer"},
        "Smallest image height (px) of the main size band.",
        16,
        8000,
    ),
    "max_height": (
        {"type": "integer"},
        "Largest image height (px) of the main size band.",
        16,
        8000,
    ),
    "aspect_ratios": (
        {
            "type": "array",
            "minItems": 1,
            "items": {"type": "number", "minimum": 0.25, "maximum": 4},
        },
        "Width/height ratios drawn uniformly per image (4:3 = 1.333, 3:2 = 1.5).",
        None,
        None,
    ),
    "height_bands": (
        {"type": "array", "items": _BAND},
        "Extra size bands: `count` images (chosen at random across splits) get a height in "
        "[min_height, max_height] instead of the main band.",
        None,
        None,
    ),
    "images_per_lesion": (
        {"type": "number"},
        "Mean number of images of one lesion (1 = every image its own lesion); views of a lesion "
        "differ in position, rotation, scale, light, hair.",
        1,
        20,
    ),
    "images_per_patient": (
        {"type": "number"},
        "Mean number of lesions' images per patient (1 = one patient per lesion).",
        1,
        100,
    ),
    "hair": ({"type": "number"}, "Fraction of images with hairs (dark curves).", 0, 1),
    "ruler": (
        {"type": "number"},
        "Fraction of images with a ruler (tick marks on one edge).",
        0,
        1,
    ),
    "vignetting": ({"type": "number"}, "Fraction of images with dark corners.", 0, 1),
    "skin_tone_max": (
        {"type": "number"},
        "Darkest skin tone (0 = lightest, 1 = darkest); tones are drawn from a Beta(1.2, 2.2) "
        "scaled to [0, skin_tone_max].",
        0,
        1,
    ),
    "brightness_min": ({"type": "number"}, "Smallest overall brightness factor.", 0.3, 2),
    "brightness_max": ({"type": "number"}, "Largest overall brightness factor.", 0.3, 2),
    "missing_metadata": (
        {"type": "number"},
        "Fraction of age, sex and site values left blank (per value).",
        0,
        1,
    ),
    "difficulty": (
        {"type": "number"},
        "How hard the twin is, the one difficulty key of every dataset that has it: the "
        "probability that a lesion is painted in the style of a class on the other side of its "
        "paper's target (ISIC 2017 and archive melanomas: a melanoma as a nevus or seborrheic "
        "keratosis, a nevus or keratosis as a melanoma; HAM10000: a malignant class as a benign "
        "one and back; ISIC 2020: a melanoma as a nevus, lentigo or seborrheic keratosis, a "
        "benign lesion as a melanoma); labels, demographics, sites and the darker brightness of "
        "ISIC 2020 melanomas keep the true class (0 = separable).",
        0,
        1,
    ),
    "jpeg_quality": ({"type": "integer"}, "JPEG quality of every image.", 50, 100),
    "max_render_side": (
        {"type": "integer"},
        "Images are painted with their longest side at most this (px) and resized up to their "
        "size; masks are drawn at full size.",
        128,
        8192,
    ),
    "include_task2": (
        {"type": "boolean"},
        "Also write every isic2018_task2 twin image into the ISIC 2019 training set (same id and "
        "pixels; melanoma -> MEL, nevus -> NV, seborrheic_keratosis -> BKL), as the real task-2 "
        "images are ISIC 2019 training images (isic2019 only; paper 004 joins them).",
        None,
        None,
    ),
    "downsampled_fraction": (
        {"type": "number"},
        "Fraction of those task-2 images stored under `<id>_downsampled`, as part of the real "
        "ISIC 2019 archive is (isic2019 only).",
        0,
        1,
    ),
    "duplicates": (
        {"type": "integer"},
        "Pairs of training images listed in ISIC_2020_Training_Duplicates.csv (isic2020 only).",
        0,
        100000,
    ),
    "melanoma_brightness": (
        {"type": "number"},
        "Factor on the overall brightness of melanoma images (isic2020 only; < 1: melanomas "
        "darker, as in paper 002 Fig. 2; the brightness ranges of the classes still overlap).",
        0.3,
        2,
    ),
    "near_duplicate_fraction": (
        {"type": "number"},
        "Fraction of duplicate pairs whose second image is a re-encoded near copy instead of a "
        "byte copy (isic2020 only).",
        0,
        1,
    ),
}


def _counts_schema(dataset: str) -> dict[str, Any]:
    splits = [s.split for s in DATASETS[dataset].image_sets]
    per_class = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            c: {"type": "integer", "minimum": 0, "description": f"Images of class {c}."}
            for c in CLASSES[dataset]
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "Number of images per official split and class "
        f"({', '.join(CLASSES[dataset])}).",
        "properties": {s: per_class for s in splits},
    }


def synthetic_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``config["data"]["synthetic"]``.

    ``workflow/schemas/synthetic.schema.yaml`` is this dict written as YAML (a test keeps them
    equal); its defaults are :data:`DEFAULT_SPEC`.
    """
    datasets = {}
    for dataset, spec in DEFAULT_SPEC.items():
        props: dict[str, Any] = {}
        for key in spec:
            if key == "counts":
                props[key] = _counts_schema(dataset) | {"default": spec[key]}
                continue
            kind, description, lo, hi = _PROPERTIES[key]
            prop = dict(kind) | {"description": description, "default": spec[key]}
            if lo is not None:
                prop["minimum"] = lo
            if hi is not None:
                prop["maximum"] = hi
            props[key] = prop
        datasets[dataset] = {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "description": f"Synthetic twin of {dataset}; missing keys take their defaults.",
            "properties": props,
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "Sizes and signals of the synthetic twin of each archive "
        "(melrepro.data.synthetic.DEFAULT_SPEC). The global `seed` is passed separately.",
        "type": "object",
        "additionalProperties": False,
        "properties": datasets,
    }


def resolve_spec(dataset: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    """Return the default spec of ``dataset`` updated with ``spec``, after checking it.

    Raises
    ------
    ValueError
        Unknown dataset, unknown key, unknown split or class, or a value out of range.
    """
    if dataset not in DEFAULT_SPEC:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DEFAULT_SPEC)}")
    out = copy.deepcopy(DEFAULT_SPEC[dataset])
    spec = spec or {}
    unknown = sorted(set(spec) - set(out))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in data.synthetic.{dataset}; valid keys: {', '.join(out)}"
        )
    for key, value in spec.items():
        if key == "counts":
            # A split given in the config replaces the default split entirely.
            out["counts"] = {**out["counts"], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    splits = [s.split for s in DATASETS[dataset].image_sets]
    for split, per_class in out["counts"].items():
        if split not in splits:
            raise ValueError(f"{dataset}: unknown split {split!r} in counts; valid: {splits}")
        bad = sorted(set(per_class) - set(CLASSES[dataset]))
        if bad:
            raise ValueError(
                f"{dataset}: unknown class(es) {bad} in counts.{split}; "
                f"valid: {', '.join(CLASSES[dataset])}"
            )
        if any(int(n) < 0 for n in per_class.values()):
            raise ValueError(f"{dataset}: negative count in counts.{split}: {per_class}")
    for key, (_, _, lo, hi) in _PROPERTIES.items():
        if key not in out or lo is None:
            continue
        if not lo <= out[key] <= hi:
            raise ValueError(f"{dataset}: {key}={out[key]!r} outside [{lo}, {hi}]")
    if out["min_height"] > out["max_height"]:
        raise ValueError(
            f"{dataset}: min_height > max_height ({out['min_height']} > {out['max_height']})"
        )
    if out["brightness_min"] > out["brightness_max"]:
        raise ValueError(f"{dataset}: brightness_min > brightness_max")
    for band in out["height_bands"]:
        if band["min_height"] > band["max_height"]:
            raise ValueError(f"{dataset}: height band {band} has min_height > max_height")
    return out
