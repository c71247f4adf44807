"""siim2020's names: the datasets, models and protocols, and the row labels of table01."""

from __future__ import annotations

__all__ = [
    "CONTROL_MODEL",
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
MODEL_LABELS = {
    "base": "Base",
    "sex": "Sex expert",
    "brightness": "Brightness expert",
    "base_shuffled": "Base",
}
#: The label-shuffled control (config ``siim2020.label_shuffled_control``): the base model trained
#: exactly like Base All but on permuted training labels; not a row of the paper.
CONTROL_MODEL = "base_shuffled"
PROTOCOLS = ("patient", "author_code")
PROTOCOL_SUFFIX = {"patient": "", "author_code": " [author code]"}


def row_label(model: str, dataset: str, protocol: str = "patient") -> str:
    """table01 row label: ``Base Small 3aug``, ``Sex expert All``, ``Base All [author code]``,
    ``Base All (label-shuffled control)``."""
    control = " (label-shuffled control)" if model == CONTROL_MODEL else ""
    return f"{MODEL_LABELS[model]} {DATASET_LABELS[dataset]}{PROTOCOL_SUFFIX[protocol]}{control}"
