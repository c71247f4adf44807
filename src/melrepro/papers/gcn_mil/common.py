"""Helpers every ``gcn_mil`` step shares: manifest and split, working resolution, cache, files.

Also the names the tables and figures print for the classes and the two readings of Eq. 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from melrepro.methods import mil
from melrepro.papers.gcn_mil.options import DEVIATIONS

#: How Table 5 names the two readings of Eq. 1's radius.
ADJACENCY_TITLES = {"block": "√2·k (k = block side, literal)", "stride": "√2·s (s = stride)"}
CLASS_TITLES = {
    "melanoma": "Melanoma",
    "seborrheic_keratosis": "Seborrheic Keratosis",
    "nevus": "Nevus",
}


def manifest_with_split(manifest_path: str | Path, split_path: str | Path) -> pd.DataFrame:
    manifest = pd.read_parquet(manifest_path).set_index("image_id")
    split = pd.read_parquet(split_path).set_index("image_id")["split"]
    manifest["split"] = split.reindex(manifest.index)
    unknown = set(manifest["label"].dropna()) - set(mil.CLASSES)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not ISIC 2017 classes {mil.CLASSES}")
    return manifest


def to_working(array: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """Resize an image (order 1) or mask (order 0) to the working shape, keeping its dtype."""
    if array.shape[:2] == tuple(shape):
        return array
    from skimage.transform import resize

    out = resize(
        array, shape, order=order, preserve_range=True, anti_aliasing=order > 0, mode="edge"
    )
    return np.rint(out).astype(array.dtype)


def working_shape(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_cache(paths: Sequence[str | Path]) -> dict[str, Any]:
    from melrepro.data.imagecache import read_cache as read_image_cache

    return read_image_cache([str(p) for p in paths])


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def write_run_info(directory: Path, run_info: Mapping[str, Any] | None, **extra: Any) -> None:
    from melrepro.report.runinfo import write_run_info as write_report_run_info

    info = dict(run_info or {})
    write_report_run_info(
        directory,
        data_source=info.pop("data_source", "unknown"),
        seed=info.pop("seed", None),
        device=extra.pop("device", info.pop("device", None)),
        weights=extra.pop("weights", None),
        deviations=DEVIATIONS,
        **{**info, **extra},
    )


def write_run_info_file(path: Path, run_info: Mapping[str, Any] | None, **extra: Any) -> None:
    """Like :func:`write_run_info`, into a named JSON file (one per shard, not per folder)."""
    from melrepro.report.runinfo import run_info as make_run_info

    info = dict(run_info or {})
    record = make_run_info(
        data_source=info.pop("data_source", "unknown"),
        seed=info.pop("seed", None),
        device=extra.pop("device", info.pop("device", None)),
        weights=extra.pop("weights", None),
        deviations=DEVIATIONS,
        **{**info, **extra},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
