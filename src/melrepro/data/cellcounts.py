"""Per-cell pixel counts of the task-2 feature masks, for exact Jaccard of upsampled saliency.

Paper 004 upsamples each h x w Grad-CAM map by nearest neighbour to the original image and
thresholds it. A thresholded, upsampled map is a union of cells, so its Jaccard with a mask needs
only, per cell, the number of original pixels and of mask pixels in it. One shard file holds, for
every image of a manifest shard at one grid ``g<h>x<w>``:

``rows__<id>`` (h,) pixels per cell row, ``cols__<id>`` (w,) pixels per cell column, and
``masks__<id>`` (6, h, w) mask pixels per cell of the five ISIC 2018 task-2 attributes (in
:data:`~melrepro.data.layouts.ATTRIBUTES` order) and of their union.

Nearest-neighbour convention: original row ``y`` of an image of height ``H`` shows saliency row
``(y * h) // H`` (integer arithmetic, as ``torch.nn.functional.interpolate(mode="nearest")``
except for float rounding at exact cell borders); columns alike.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from melrepro.data.archive_io import ArchiveFolder
from melrepro.data.layouts import ATTRIBUTES

__all__ = [
    "CHANNELS",
    "cell_index",
    "cell_sizes",
    "count_cells",
    "mask_cell_counts",
    "parse_grid",
    "read_cell_counts",
]

logger = logging.getLogger(__name__)

#: The channels of ``masks__<id>``: the five attributes, then their union.
CHANNELS = (*ATTRIBUTES, "union")
_GRID_RE = re.compile(r"^g(\d+)x(\d+)$")


def parse_grid(grid: str) -> tuple[int, int]:
    """``"g28x28"`` -> ``(28, 28)``."""
    match = _GRID_RE.match(grid)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"grid {grid!r}; expected g<h>x<w> with h, w >= 1")
    return int(match[1]), int(match[2])


def cell_index(n_pixels: int, n_cells: int) -> np.ndarray:
    """Cell of every pixel along one axis: ``(y * n_cells) // n_pixels``."""
    return (np.arange(n_pixels, dtype=np.int64) * n_cells) // n_pixels


def cell_sizes(n_pixels: int, n_cells: int) -> np.ndarray:
    """Pixels of every cell along one axis (all >= 1 when ``n_pixels >= n_cells``)."""
    return np.bincount(cell_index(n_pixels, n_cells), minlength=n_cells)


def mask_cell_counts(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Mask pixels per cell, (H, W) bool -> (h, w) int32."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    h, w = grid
    if height < h or width < w:
        raise ValueError(f"image {height}x{width} is smaller than the grid {h}x{w}")
    rows = np.searchsorted(cell_index(height, h), np.arange(h))
    cols = np.searchsorted(cell_index(width, w), np.arange(w))
    per_row = np.add.reduceat(mask.astype(np.int32), rows, axis=0)
    return np.add.reduceat(per_row, cols, axis=1).astype(np.int32)


def _read_mask(archive: ArchiveFolder, uri: str, where: str) -> np.ndarray:
    with Image.open(io.BytesIO(archive.read(uri))) as image:
        return np.asarray(image.convert("L")) > 127


def count_cells(
    manifest: pd.DataFrame | str | Path,
    archive_root: str | Path,
    shard: int,
    grid: str,
    output: str | Path,
) -> Path:
    """Write the cell-count shard of ``grid`` for the images of manifest shard ``shard``.

    Raises
    ------
    ValueError
        The manifest has no task-2 attribute columns, or a mask's size differs from its image's
        (file and image named).
    """
    if not isinstance(manifest, pd.DataFrame):
        manifest = pd.read_parquet(manifest)
    columns = [f"attr_{name}_uri" for name in ATTRIBUTES]
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(
            f"manifest has no attribute column(s) {missing}: not an ISIC 2018 task-2 manifest"
        )
    h, w = parse_grid(grid)
    rows = manifest[manifest["shard"] == shard]
    arrays: dict[str, np.ndarray] = {}
    with ArchiveFolder(archive_root) as archive:
        for record in tqdm(
            rows.itertuples(index=False), total=len(rows), desc=f"cells {grid}", disable=None
        ):
            height, width = int(record.height), int(record.width)
            counts = np.zeros((len(CHANNELS), h, w), np.int32)
            union = np.zeros((height, width), bool)
            for k, column in enumerate(columns):
                uri = getattr(record, column)
                if not isinstance(uri, str):
                    continue
                mask = _read_mask(archive, uri, column)
                if mask.shape != (height, width):
                    raise ValueError(
                        f"{uri}: mask is {mask.shape[1]}x{mask.shape[0]}, image "
                        f"{record.image_id} is {width}x{height}"
                    )
                counts[k] = mask_cell_counts(mask, (h, w))
                union |= mask
            counts[-1] = mask_cell_counts(union, (h, w))
            arrays[f"rows__{record.image_id}"] = cell_sizes(height, h).astype(np.int32)
            arrays[f"cols__{record.image_id}"] = cell_sizes(width, w).astype(np.int32)
            arrays[f"masks__{record.image_id}"] = counts
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(output)
    logger.info("wrote %s: %d images on a %dx%d grid", output, len(rows), h, w)
    return output


def read_cell_counts(paths: list[str | Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{image_id: (cell_pixels (h, w), masks (6, h, w))}`` from cell-count shards."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in paths:
        with np.load(path) as data:
            for key in data.files:
                if key.startswith("masks__"):
                    image_id = key.split("__", 1)[1]
                    rows, cols = data[f"rows__{image_id}"], data[f"cols__{image_id}"]
                    out[image_id] = (np.outer(rows, cols).astype(np.int64), data[key])
    return out
