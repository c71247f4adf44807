"""siim2020's names: the datasets, models and protocols, and the row labels of table01."""

from __future__ import annotations

__all__ = [
    "DATASETS",
    "DATASET_LABELS",
    "MODEL_LABELS",
    "PROTOCOLS",
    "PROTOCOL_SUFFIX",
    "row_label",
]

DATASETS = ("all", "small", "small3aug", "small5aug")
DATASET_LABELS = {
    "all": "All",
    "small": "Small",
    "small3aug": "Small 3aug",
    "small5aug": "Small 5aug",
}
MODEL_LABELS = {"base": "Base", "sex": "Sex expert", "brightness": "Brightness expert"}
PROTOCOLS = ("patient", "author_code")
PROTOCOL_SUFFIX = {"patient": "", "author_code": " [author code]"}


def row_label(model: str, dataset: str, protocol: str = "patient") -> str:
    """table01 row label: ``Base Small 3aug``, ``Sex expert All``, ``Base All [author code]``."""
    return f"{MODEL_LABELS[model]} {DATASET_LABELS[dataset]}{PROTOCOL_SUFFIX[protocol]}"
