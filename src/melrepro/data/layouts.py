"""The official ISIC archive layouts: file names, folders inside zips, CSV headers.

This is the one place that knows what the real archives look like. The synthetic twin
(:mod:`melrepro.data.synthetic`) writes exactly these files and :mod:`melrepro.data.manifests` reads them,
so the code the tests exercise is the code users run on the real archives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ARCHIVE_HOSTS",
    "ATTRIBUTES",
    "DATASETS",
    "DATAVERSE_NAMES",
    "HAM10000_SEGMENTATIONS",
    "HAM10000_TEST_METADATA",
    "CsvSpec",
    "DatasetLayout",
    "ImageSet",
    "RemoteFile",
    "layout",
]

#: The five dermoscopic structures of ISIC 2018 task 2, in the order of the official file names.
ATTRIBUTES = ("globules", "milia_like_cyst", "negative_network", "pigment_network", "streaks")

#: Current host first, then the old one as a mirror. ``{year}`` is the challenge year.
ARCHIVE_HOSTS = (
    "https://isic-archive.s3.amazonaws.com/challenges/{year}/",
    "https://isic-challenge-data.s3.amazonaws.com/{year}/",
)
#: HAM10000 metadata lives on Harvard Dataverse (doi:10.7910/DVN/DBW86T). Dataverse file ids are
#: opaque, so this is the dataset's file listing: melrepro.data.download finds the file in it by name.
DATAVERSE_HAM10000 = (
    "https://dataverse.harvard.edu/api/datasets/:persistentId/versions/:latest/files"
    "?persistentId=doi:10.7910/DVN/DBW86T"
)
#: The HAM10000 form of the task-3 test ground truth (lesion_id, dx, dx_type, age, sex,
#: localization, dataset of the 1,512 test images; Dataverse datafile 6924466, a tabular upload
#: served as its original CSV). On Dataverse it is named ``ISIC2018_Task3_Test_GroundTruth.csv``,
#: like the challenge's one-hot test ground truth, whose content differs: the archive folder keeps
#: it under this name.
HAM10000_TEST_METADATA = "HAM10000_ISIC2018_Task3_Test_GroundTruth.csv"
#: Dataverse names of files kept under another name here (looked up by that name).
DATAVERSE_NAMES = {HAM10000_TEST_METADATA: "ISIC2018_Task3_Test_GroundTruth.csv"}
_DATAVERSE_DIRECT = {
    HAM10000_TEST_METADATA: "https://dataverse.harvard.edu/api/access/datafile/6924466"
    "?format=original"
}


@dataclass(frozen=True)
class CsvSpec:
    """An official CSV file and the columns it must have.

    Parameters
    ----------
    file : str
        File name inside the dataset folder, or ``"<zip>::<member>"`` for a CSV inside a zip.
    columns : tuple of str
        Columns that must be present (by name; extra columns are kept as raw columns).
    id_column : str
        The column that names the image.
    dtypes : dict
        Expected type of each column: ``"str"``, ``"float"``, ``"int"``, ``"float?"`` (nullable).
    optional : bool
        The file may be absent (HAM10000 metadata for the validation/test images, say).
    """

    file: str
    columns: tuple[str, ...]
    id_column: str
    dtypes: dict[str, str] = field(default_factory=dict)
    optional: bool = False


@dataclass(frozen=True)
class ImageSet:
    """One official split: its image zip, the folder inside it, and its ground truth.

    ``mask_zip``/``mask_folder``/``mask_suffix`` describe a lesion-mask zip (masks named
    ``<image_id><mask_suffix>``); ``attribute_zip`` the task-2 attribute masks
    (``<image_id>_attribute_<name>.png``).
    """

    split: str
    image_zip: str
    image_folder: str
    labels: CsvSpec | None = None
    metadata: CsvSpec | None = None
    mask_zip: str | None = None
    mask_folder: str | None = None
    mask_suffix: str = "_segmentation.png"
    attribute_zip: str | None = None
    attribute_folder: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: its name under ``resources/archives/<dataset>/`` and where it lives."""

    name: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class DatasetLayout:
    """Everything about one dataset key of DESIGN.md section 1."""

    key: str
    year: str
    image_sets: tuple[ImageSet, ...]
    label_columns: tuple[str, ...] = ()
    extra_csvs: tuple[CsvSpec, ...] = ()
    #: For ``isic_archive_melanoma``: a folder written by ``isic image download`` instead of zips.
    folder: str | None = None

    def files(self) -> list[str]:
        """Every official file of the dataset (zips and top-level CSVs), sorted, no duplicates."""
        names: set[str] = set()
        for image_set in self.image_sets:
            for name in (image_set.image_zip, image_set.mask_zip, image_set.attribute_zip):
                if name:
                    names.add(name)
            for spec in (image_set.labels, image_set.metadata):
                if spec is not None:
                    names.add(spec.file.split("::")[0])
        for spec in self.extra_csvs:
            names.add(spec.file.split("::")[0])
        return sorted(names)

    def remote_files(self) -> list[RemoteFile]:
        """The files with their download addresses (current host, then mirror)."""
        remote = []
        for name in self.files():
            if name.startswith("HAM10000_"):
                direct = (_DATAVERSE_DIRECT[name],) if name in _DATAVERSE_DIRECT else ()
                remote.append(RemoteFile(name, (*direct, DATAVERSE_HAM10000)))
            else:
                remote.append(
                    RemoteFile(name, tuple(h.format(year=self.year) + name for h in ARCHIVE_HOSTS))
                )
        return remote


_P3 = ("image_id", "melanoma", "seborrheic_keratosis")
_P3_TYPES = {"image_id": "str", "melanoma": "float", "seborrheic_keratosis": "float"}
_META17 = ("image_id", "age_approximate", "sex")


def _isic2017_set(split: str, stem: str) -> ImageSet:
    return ImageSet(
        split=split,
        image_zip=f"ISIC-2017_{stem}_Data.zip",
        image_folder=f"ISIC-2017_{stem}_Data",
        labels=CsvSpec(f"ISIC-2017_{stem}_Part3_GroundTruth.csv", _P3, "image_id", _P3_TYPES),
        # The official image zips carry a metadata CSV inside them (age and sex).
        metadata=CsvSpec(
            f"ISIC-2017_{stem}_Data.zip::ISIC-2017_{stem}_Data/ISIC-2017_{stem}_Data_metadata.csv",
            _META17,
            "image_id",
            {"image_id": "str", "age_approximate": "str", "sex": "str"},
            optional=True,
        ),
        mask_zip=f"ISIC-2017_{stem}_Part1_GroundTruth.zip",
        mask_folder=f"ISIC-2017_{stem}_Part1_GroundTruth",
    )


_T3 = ("image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
_HAM = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")


#: HAM10000 lesion segmentations (Tschandl et al. 2020), published with the dataset on Harvard
#: Dataverse (datafile 3838943 of doi:10.7910/DVN/DBW86T): one ``ISIC_nnnnnnn_segmentation.png``
#: per training image (10,015); the task-3 validation and test images have none.
HAM10000_SEGMENTATIONS = "HAM10000_segmentations_lesion_tschandl.zip"


def _task3_set(split: str, stem: str) -> ImageSet:
    masks = (
        {"mask_zip": HAM10000_SEGMENTATIONS, "mask_folder": HAM10000_SEGMENTATIONS[:-4]}
        if split == "train"
        else {}
    )
    return ImageSet(
        split=split,
        image_zip=f"ISIC2018_Task3_{stem}_Input.zip",
        image_folder=f"ISIC2018_Task3_{stem}_Input",
        labels=CsvSpec(
            f"ISIC2018_Task3_{stem}_GroundTruth.zip::ISIC2018_Task3_{stem}_GroundTruth/"
            f"ISIC2018_Task3_{stem}_GroundTruth.csv",
            _T3,
            "image",
            {"image": "str"} | {c: "float" for c in _T3[1:]},
        ),
        **masks,
    )


_G19 = ("image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
_M19 = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")
_G20 = (
    "image_name",
    "patient_id",
    "lesion_id",
    "sex",
    "age_approx",
    "anatom_site_general_challenge",
    "diagnosis",
    "benign_malignant",
    "target",
)
_T20 = ("image", "patient", "sex", "age_approx", "anatom_site_general")

DATASETS: dict[str, DatasetLayout] = {
    "isic2017": DatasetLayout(
        key="isic2017",
        year="2017",
        image_sets=(
            _isic2017_set("train", "Training"),
            _isic2017_set("val", "Validation"),
            _isic2017_set("test", "Test_v2"),
        ),
        label_columns=("melanoma", "seborrheic_keratosis"),
    ),
    "isic_archive_melanoma": DatasetLayout(
        key="isic_archive_melanoma",
        year="archive",
        folder="images",
        image_sets=(
            ImageSet(
                split="train",
                image_zip="",
                image_folder="images",
                labels=CsvSpec(
                    "images/metadata.csv",
                    ("isic_id",),
                    "isic_id",
                    {"isic_id": "str"},
                ),
            ),
        ),
    ),
    "isic2018_task2": DatasetLayout(
        key="isic2018_task2",
        year="2018",
        image_sets=(
            ImageSet(
                split="train",
                image_zip="ISIC2018_Task1-2_Training_Input.zip",
                image_folder="ISIC2018_Task1-2_Training_Input",
                mask_zip="ISIC2018_Task1_Training_GroundTruth.zip",
                mask_folder="ISIC2018_Task1_Training_GroundTruth",
                attribute_zip="ISIC2018_Task2_Training_GroundTruth_v3.zip",
                attribute_folder="ISIC2018_Task2_Training_GroundTruth_v3",
            ),
        ),
    ),
    "isic2018_task3": DatasetLayout(
        key="isic2018_task3",
        year="2018",
        image_sets=(
            _task3_set("train", "Training"),
            _task3_set("val", "Validation"),
            _task3_set("test", "Test"),
        ),
        label_columns=_T3[1:],
        extra_csvs=(
            CsvSpec(
                "HAM10000_metadata.csv",
                _HAM,
                "image_id",
                {c: "str" for c in _HAM} | {"age": "float?"},
            ),
            # Lesion ids of the test images (without it each test image is a lesion of its own).
            CsvSpec(
                HAM10000_TEST_METADATA,
                _HAM,
                "image_id",
                {c: "str" for c in _HAM} | {"age": "float?"},
                optional=True,
            ),
        ),
    ),
    "isic2019": DatasetLayout(
        key="isic2019",
        year="2019",
        image_sets=(
            ImageSet(
                split="train",
                image_zip="ISIC_2019_Training_Input.zip",
                image_folder="ISIC_2019_Training_Input",
                labels=CsvSpec(
                    "ISIC_2019_Training_GroundTruth.csv",
                    _G19,
                    "image",
                    {"image": "str"} | {c: "float" for c in _G19[1:]},
                ),
                metadata=CsvSpec(
                    "ISIC_2019_Training_Metadata.csv",
                    _M19,
                    "image",
                    {c: "str" for c in _M19} | {"age_approx": "float?"},
                ),
            ),
        ),
        label_columns=_G19[1:],
    ),
    "isic2020": DatasetLayout(
        key="isic2020",
        year="2020",
        image_sets=(
            ImageSet(
                split="train",
                image_zip="ISIC_2020_Training_JPEG.zip",
                image_folder="train",
                labels=CsvSpec(
                    "ISIC_2020_Training_GroundTruth_v2.csv",
                    _G20,
                    "image_name",
                    {c: "str" for c in _G20} | {"age_approx": "float?", "target": "int"},
                ),
            ),
            ImageSet(
                split="test",
                image_zip="ISIC_2020_Test_JPEG.zip",
                image_folder="ISIC_2020_Test_Input",
                metadata=CsvSpec(
                    "ISIC_2020_Test_Metadata.csv",
                    _T20,
                    "image",
                    {c: "str" for c in _T20} | {"age_approx": "float?"},
                ),
            ),
        ),
        extra_csvs=(
            CsvSpec(
                "ISIC_2020_Training_Duplicates.csv",
                ("image_name_1", "image_name_2"),
                "image_name_1",
                {"image_name_1": "str", "image_name_2": "str"},
            ),
        ),
    ),
}


def layout(dataset: str) -> DatasetLayout:
    """Return the layout of ``dataset``.

    Raises
    ------
    ValueError
        If ``dataset`` is not one of the known keys (the message lists them).
    """
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(
            f"unknown dataset {dataset!r}; expected one of {', '.join(sorted(DATASETS))}"
        ) from None
