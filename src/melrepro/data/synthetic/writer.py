"""Write the official files of one dataset (zips, CSVs, folders) from a plan, deterministically.

Besides the official files, ``<outdir>/synthetic_truth/`` holds the generator's ground truth:

``masks/<image_id>.png``
    The true lesion mask of every image (0/255, L mode, the image's size), also for datasets
    whose archive ships no masks.
``truth.csv``, one row per image (:data:`TRUTH_COLUMNS`):
    ``image_id``, ``split`` (train/val/test); ``label`` in the dataset's vocabulary
    (:data:`melrepro.data.synthetic.spec.CLASSES`); ``diagnosis`` (HAM ``dx``, the 2020 diagnosis);
    ``style`` (the painter's lesion kind, :data:`melrepro.data.synthetic.draw.STYLES`);
    ``patient_id``, ``lesion_id``; true ``sex``, ``age``, ``site`` (also where the official CSVs
    leave them blank); ``width``, ``height``; ``skin_tone`` (0 light .. 1 dark), ``brightness``,
    ``vignetting`` (0 = none), ``hair`` (number of hairs), ``ruler`` (edge or empty);
    ``center_x``, ``center_y`` (mask centroid, px), ``radius`` (mean lesion radius, px),
    ``lesion_area`` (fraction of the image); one 0/1 column per task-2 structure (painted and
    visible: its region is non-empty); ``n_colours``, ``asymmetry`` and ``irregularity`` (sums of
    the border's harmonic amplitudes 1-3 and 4-24); ``duplicate_of`` (isic2020: the image this one
    copies); ``mask`` (path of the truth mask, relative to ``synthetic_truth/``); isic2020 adds
    ``image_brightness`` (mean of the written JPEG over pixels and channels, 0-255).

Zip members are written in sorted order (folder entry first) with a fixed timestamp (1 January of
the challenge year) and fixed permissions; JPEG quality and PNG compression are fixed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from melrepro.data.layouts import ATTRIBUTES, DATASETS, HAM10000_TEST_METADATA, ImageSet
from melrepro.data.synthetic.draw import Rendered, render
from melrepro.data.synthetic.plan import ImagePlan, plan_dataset
from melrepro.data.synthetic.spec import resolve_spec

__all__ = ["ISIC2020_TRUTH_COLUMNS", "TRUTH_COLUMNS", "write_synthetic_archive"]

logger = logging.getLogger(__name__)

#: Columns of ``synthetic_truth/truth.csv``.
TRUTH_COLUMNS = (
    "image_id",
    "split",
    "label",
    "diagnosis",
    "style",
    "patient_id",
    "lesion_id",
    "sex",
    "age",
    "site",
    "width",
    "height",
    "skin_tone",
    "brightness",
    "vignetting",
    "hair",
    "ruler",
    "center_x",
    "center_y",
    "radius",
    "lesion_area",
    *ATTRIBUTES,
    "n_colours",
    "asymmetry",
    "irregularity",
    "duplicate_of",
    "mask",
)
#: Extra truth columns of isic2020: ``image_brightness``, the mean over pixels and channels of the
#: written JPEG (0-255), the quantity siim2020's brightness expert routes on.
ISIC2020_TRUTH_COLUMNS = ("image_brightness",)
_SITE_2020 = {"posterior torso": "torso", "anterior torso": "torso", "lateral torso": "torso"}


class _Zip:
    """A zip with fixed timestamps and permissions whose members must arrive in sorted order."""

    def __init__(self, path: Path, year: int) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path, "w")
        self._date = (year, 1, 1, 0, 0, 0)
        self._last = ""

    def add(self, name: str, data: bytes, *, compress: bool = False) -> None:
        if name <= self._last:
            raise RuntimeError(f"{self.path.name}: member {name} after {self._last} (not sorted)")
        self._last = name
        info = zipfile.ZipInfo(name, date_time=self._date)
        info.create_system = 3
        info.external_attr = (0o40755 << 16 | 0x10) if name.endswith("/") else 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        self._zip.writestr(info, data, compresslevel=9 if compress else None)

    def close(self) -> None:
        self._zip.close()


def _csv(columns: tuple[str, ...] | list[str], rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(
        buf, "JPEG", quality=int(quality), optimize=False, progressive=False
    )
    return buf.getvalue()


def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _float(x: bool) -> str:
    return "1.0" if x else "0.0"


def _meta(p: ImagePlan, key: str, blank: str = "") -> str:
    """Sex, age (``"55.0"``) or site of an image as the official CSVs write it (blank when missing)."""
    if key in p.missing:
        return blank
    if key == "age":
        return f"{p.age:.1f}"
    return str(getattr(p, key))


def _label_rows(dataset: str, plans: list[ImagePlan]) -> list[dict[str, Any]]:
    columns = DATASETS[dataset].label_columns
    if dataset == "isic2017":
        return [
            {
                "image_id": p.image_id,
                "melanoma": _float(p.label == "melanoma"),
                "seborrheic_keratosis": _float(p.label == "seborrheic_keratosis"),
            }
            for p in plans
        ]
    return [{"image": p.image_id} | {c: _float(p.label == c) for c in columns} for p in plans]


class _Painter:
    """Renders plans in id order, remembering the images that later duplicates copy."""

    def __init__(self, plans: list[ImagePlan], quality: int) -> None:
        self.quality = quality
        self._sources = {p.duplicate_of for p in plans if p.duplicate_of}
        self._cache: dict[str, tuple[Rendered, bytes]] = {}

    def __call__(self, p: ImagePlan) -> tuple[Rendered, bytes]:
        if p.duplicate_of:
            rendered, data = self._cache[p.duplicate_of]
            if p.near_duplicate:  # a re-encoded, slightly darker copy
                darker = (rendered.image.astype(np.float32) * 0.97).astype(np.uint8)
                data = _jpeg(darker, max(50, self.quality - 8))
            return rendered, data
        rendered = render(p.lesion, p.view, p.scene)
        data = _jpeg(rendered.image, self.quality)
        if p.image_id in self._sources:
            self._cache[p.image_id] = (rendered, data)
        return rendered, data


def _truth_row(p: ImagePlan, r: Rendered) -> dict[str, Any]:
    ys, xs = np.nonzero(r.mask)
    row = {
        "image_id": p.image_id,
        "split": p.split,
        "label": p.label,
        "diagnosis": p.diagnosis,
        "style": p.style,
        "patient_id": p.patient_id,
        "lesion_id": p.lesion_id,
        "sex": p.sex,
        "age": f"{p.age:.1f}",
        "site": p.site,
        "width": p.scene.width,
        "height": p.scene.height,
        "skin_tone": f"{p.scene.skin_tone:.4f}",
        "brightness": f"{p.scene.brightness:.4f}",
        "vignetting": f"{p.scene.vignetting:.4f}",
        "hair": p.scene.hair,
        "ruler": p.scene.ruler,
        "center_x": f"{xs.mean():.2f}" if len(xs) else "",
        "center_y": f"{ys.mean():.2f}" if len(ys) else "",
        "radius": f"{r.radius_px:.2f}",
        "lesion_area": f"{r.mask.mean():.5f}",
        "n_colours": len(p.lesion.colours),
        "asymmetry": f"{float(np.abs(p.lesion.harmonics[:3, 0]).sum()):.4f}",
        "irregularity": f"{float(np.abs(p.lesion.harmonics[3:, 0]).sum()):.4f}",
        "duplicate_of": p.duplicate_of,
        "mask": f"masks/{p.image_id}.png",
    }
    for name in ATTRIBUTES:
        row[name] = int(bool(r.attributes[name].any()))
    return row


def _write_zip_set(
    dataset: str,
    image_set: ImageSet,
    plans: list[ImagePlan],
    outdir: Path,
    painter: _Painter,
    truth: list[dict[str, Any]],
    year: int,
) -> list[Path]:
    written = []
    images = _Zip(outdir / image_set.image_zip, year)
    images.add(image_set.image_folder + "/", b"")
    if image_set.metadata is not None and "::" in image_set.metadata.file:
        # isic2017: the metadata CSV sits in the image zip and sorts before the images
        member = image_set.metadata.file.split("::")[1]
        rows = [
            {
                "image_id": p.image_id,
                "age_approximate": _meta(p, "age", "unknown").split(".")[0],
                "sex": _meta(p, "sex", "unknown"),
            }
            for p in plans
        ]
        images.add(member, _csv(image_set.metadata.columns, rows), compress=True)
    masks = attributes = None
    if image_set.mask_zip:
        masks = _Zip(outdir / image_set.mask_zip, year)
        masks.add(image_set.mask_folder + "/", b"")
    if image_set.attribute_zip:
        attributes = _Zip(outdir / image_set.attribute_zip, year)
        attributes.add(image_set.attribute_folder + "/", b"")
    for p in plans:
        rendered, data = painter(p)
        images.add(f"{image_set.image_folder}/{p.image_id}.jpg", data)
        mask_png = _png(rendered.mask)
        if masks is not None:
            masks.add(f"{image_set.mask_folder}/{p.image_id}{image_set.mask_suffix}", mask_png)
        if attributes is not None:
            for name in ATTRIBUTES:
                attributes.add(
                    f"{image_set.attribute_folder}/{p.image_id}_attribute_{name}.png",
                    _png(rendered.attributes[name]),
                )
        path = outdir / "synthetic_truth" / "masks" / f"{p.image_id}.png"
        path.write_bytes(mask_png)
        written.append(path)
        row = _truth_row(p, rendered)
        if dataset == "isic2020":  # siim2020 routes on the image's mean intensity
            with Image.open(io.BytesIO(data)) as written_image:
                pixels = np.asarray(written_image.convert("RGB"), dtype=np.float64)
            row["image_brightness"] = f"{pixels.mean():.3f}"
        truth.append(row)
    for z in (images, masks, attributes):
        if z is not None:
            z.close()
            written.append(z.path)
    return written


def _write_labels(
    dataset: str, image_set: ImageSet, plans: list[ImagePlan], outdir: Path, year: int
) -> list[Path]:
    """Label and metadata CSVs of one split that are not inside the image zip."""
    written = []
    for spec in (image_set.labels, image_set.metadata):
        if spec is None or spec.file.startswith(image_set.image_zip + "::"):
            continue
        if dataset == "isic2020" and spec is image_set.labels:
            rows = [
                {
                    "image_name": p.image_id,
                    "patient_id": p.patient_id,
                    "lesion_id": p.lesion_id,
                    "sex": _meta(p, "sex"),
                    "age_approx": _meta(p, "age"),
                    "anatom_site_general_challenge": _SITE_2020.get(
                        _meta(p, "site"), _meta(p, "site")
                    ),
                    "diagnosis": p.diagnosis,
                    "benign_malignant": "malignant" if p.label == "melanoma" else "benign",
                    "target": int(p.label == "melanoma"),
                }
                for p in plans
            ]
        elif dataset == "isic2020":  # test metadata, no labels
            rows = [
                {
                    "image": p.image_id,
                    "patient": p.patient_id,
                    "sex": _meta(p, "sex"),
                    "age_approx": _meta(p, "age"),
                    "anatom_site_general": _SITE_2020.get(_meta(p, "site"), _meta(p, "site")),
                }
                for p in plans
            ]
        elif spec is image_set.metadata:  # isic2019
            rows = [
                {
                    "image": p.image_id,
                    "age_approx": _meta(p, "age"),
                    "anatom_site_general": _meta(p, "site"),
                    "lesion_id": p.lesion_id,
                    "sex": _meta(p, "sex"),
                }
                for p in plans
            ]
        else:
            rows = _label_rows(dataset, plans)
        data = _csv(spec.columns, rows)
        if "::" in spec.file:  # task3 ground truth: a CSV inside its own zip
            name, member = spec.file.split("::")
            z = _Zip(outdir / name, year)
            z.add(member.split("/")[0] + "/", b"")
            z.add(member, data, compress=True)
            z.close()
            written.append(outdir / name)
        else:
            path = outdir / spec.file
            path.write_bytes(data)
            written.append(path)
    return written


_ARCHIVE_COLUMNS = (
    "isic_id",
    "attribution",
    "copyright_license",
    "age_approx",
    "anatom_site_general",
    "benign_malignant",
    "diagnosis",
    "diagnosis_1",
    "image_type",
    "lesion_id",
    "melanocytic",
    "sex",
)


def _write_folder(
    plans: list[ImagePlan], outdir: Path, painter: _Painter, truth: list[dict[str, Any]]
) -> list[Path]:
    """isic_archive_melanoma: ``images/<isic_id>.jpg`` and ``images/metadata.csv`` as isic-cli writes."""
    folder = outdir / DATASETS["isic_archive_melanoma"].folder
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    rows = []
    for p in plans:
        rendered, data = painter(p)
        (folder / f"{p.image_id}.jpg").write_bytes(data)
        mask_path = outdir / "synthetic_truth" / "masks" / f"{p.image_id}.png"
        mask_path.write_bytes(_png(rendered.mask))
        written += [folder / f"{p.image_id}.jpg", mask_path]
        truth.append(_truth_row(p, rendered))
        rows.append(
            {
                "isic_id": p.image_id,
                "attribution": "melanoma-repro synthetic twin",
                "copyright_license": "CC-0",
                "age_approx": _meta(p, "age").split(".")[0],
                "anatom_site_general": _meta(p, "site"),
                "benign_malignant": "malignant",
                "diagnosis": "melanoma",
                "diagnosis_1": "Malignant",
                "image_type": "dermoscopic",
                "lesion_id": p.lesion_id,
                "melanocytic": "True",
                "sex": _meta(p, "sex"),
            }
        )
    path = folder / "metadata.csv"
    path.write_bytes(_csv(_ARCHIVE_COLUMNS, rows))
    written.append(path)
    return written


def _write_ham(plans: list[ImagePlan], outdir: Path, split: str = "train") -> Path:
    """HAM10000_metadata.csv (the training images, as the real file) or, for ``split="test"``,
    its Dataverse twin for the test images (:data:`HAM10000_TEST_METADATA`)."""
    columns = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset")
    rows = [
        {
            "lesion_id": p.lesion_id,
            "image_id": p.image_id,
            "dx": p.diagnosis,
            "dx_type": p.extra["dx_type"],
            "age": _meta(p, "age"),
            "sex": _meta(p, "sex", "unknown"),
            "localization": "unknown" if "site" in p.missing else p.extra["localization"],
            "dataset": "vidir_modern",
        }
        for p in sorted(
            (p for p in plans if p.split == split), key=lambda p: (p.lesion_id, p.image_id)
        )
    ]
    path = outdir / ("HAM10000_metadata.csv" if split == "train" else HAM10000_TEST_METADATA)
    path.write_bytes(_csv(columns, rows))
    return path


#: ISIC 2019 class of each task-2 twin class (the real task-2 images carry these 2019 labels).
TASK2_TO_2019 = {"melanoma": "MEL", "nevus": "NV", "seborrheic_keratosis": "BKL"}


def task2_plans_for_2019(
    task2_spec: dict | None, seed: int, downsampled_fraction: float
) -> list[ImagePlan]:
    """The isic2018_task2 twin's plans as ISIC 2019 training images (same pixels, 2019 labels).

    A seeded ``downsampled_fraction`` of them (at least one when the fraction is positive) get the id ``<id>_downsampled`` (as in the real
    2019 archive); the pixels are those of the task-2 image of the same plain id.
    """
    plans = plan_dataset("isic2018_task2", resolve_spec("isic2018_task2", task2_spec), seed)
    rng = np.random.default_rng(seed + 19_218)
    n_down = max(1, round(downsampled_fraction * len(plans))) if downsampled_fraction > 0 else 0
    down = set(rng.permutation(len(plans))[:n_down].tolist())
    out = []
    for i, p in enumerate(plans):
        label = TASK2_TO_2019[p.label]
        suffix = "_downsampled" if i in down else ""
        out.append(
            dataclasses.replace(
                p, image_id=p.image_id + suffix, label=label, diagnosis=label, split="train"
            )
        )
    return out


def write_synthetic_archive(
    dataset: str, outdir: str | Path, spec: dict, *, seed: int, task2_spec: dict | None = None
) -> list[Path]:
    """Write the official files of ``dataset`` into ``outdir``, plus ``outdir/synthetic_truth/``.

    Parameters
    ----------
    dataset : str
        A key of :data:`melrepro.data.layouts.DATASETS`.
    outdir : str or Path
        Folder that receives the files (created if needed).
    spec : dict
        ``config["data"]["synthetic"][dataset]``; missing keys take :data:`DEFAULT_SPEC` values.
    seed : int
        The global seed (>= 0); each dataset adds its own offset.
    task2_spec : dict, optional
        ``config["data"]["synthetic"]["isic2018_task2"]``: with ``include_task2`` (isic2019), the
        task-2 twin's images are added to the ISIC 2019 training set (see
        :func:`task2_plans_for_2019`).

    Returns
    -------
    list of Path
        Every written file (official files, images of the archive folder, truth masks, truth.csv),
        sorted. The same ``(spec, seed)`` gives byte-identical files.

    Raises
    ------
    ValueError
        Unknown dataset, invalid spec, negative seed.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    spec = resolve_spec(dataset, spec)
    layout = DATASETS[dataset]
    outdir = Path(outdir)
    (outdir / "synthetic_truth" / "masks").mkdir(parents=True, exist_ok=True)
    plans = plan_dataset(dataset, spec, seed)
    if spec.get("include_task2"):
        plans = task2_plans_for_2019(task2_spec, seed, spec["downsampled_fraction"]) + plans
    painter = _Painter(plans, spec["jpeg_quality"])
    year = int(layout.year) if layout.year.isdigit() else 2024
    truth: list[dict[str, Any]] = []
    written: list[Path] = []
    if layout.folder:
        written += _write_folder(plans, outdir, painter, truth)
    else:
        for image_set in layout.image_sets:
            split_plans = [p for p in plans if p.split == image_set.split]
            written += _write_zip_set(dataset, image_set, split_plans, outdir, painter, truth, year)
            written += _write_labels(dataset, image_set, split_plans, outdir, year)
    if dataset == "isic2018_task3":
        written.append(_write_ham(plans, outdir))
        written.append(_write_ham(plans, outdir, "test"))
    if dataset == "isic2020":
        rows = [
            {"image_name_1": p.duplicate_of, "image_name_2": p.image_id}
            for p in plans
            if p.duplicate_of
        ]
        path = outdir / layout.extra_csvs[0].file
        path.write_bytes(_csv(layout.extra_csvs[0].columns, rows))
        written.append(path)
    path = outdir / "synthetic_truth" / "truth.csv"
    columns = (*TRUTH_COLUMNS, *ISIC2020_TRUTH_COLUMNS) if dataset == "isic2020" else TRUTH_COLUMNS
    path.write_bytes(_csv(columns, truth))
    written.append(path)
    logger.info("wrote %d images of %s to %s", len(plans), dataset, outdir)
    return sorted(set(written))
