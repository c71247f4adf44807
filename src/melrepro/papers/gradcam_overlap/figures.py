"""gradcam_overlap figures: fig01-fig05 (no torch: matplotlib, PIL and the archive).

fig01 :func:`plot_example_masks`, fig02 :func:`plot_saliency_example`, fig03
:func:`plot_jaccard_histograms`, fig04/fig05 :func:`plot_thresholds` (their Jaccard CSVs come
from :func:`~melrepro.papers.gradcam_overlap.tables.tabulate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.data.cellcounts import CHANNELS
from melrepro.papers.gradcam_overlap import (
    CLASSES,
    FEATURE_LABELS,
    THRESHOLDS,
    jaccard_column,
)
from melrepro.papers.gradcam_overlap.datasets import analysis_set
from melrepro.papers.gradcam_overlap.evaluate import read_overlap_tables

__all__ = [
    "plot_example_masks",
    "plot_jaccard_histograms",
    "plot_saliency_example",
    "plot_thresholds",
    "upsample_nearest",
]


def _example_record(manifest_path: str | Path, example: str) -> Any:
    manifest = pd.read_parquet(manifest_path)
    rows = manifest[manifest["image_id"].astype(str) == example]
    if rows.empty:
        raise ValueError(f"{manifest_path}: no image {example!r} (gradcam_overlap.example)")
    return rows.iloc[0]


def _read_image(archive_root: str | Path, uri: str, grey: bool = False) -> np.ndarray:
    import io

    from PIL import Image

    from melrepro.data.archive_io import ArchiveFolder

    with ArchiveFolder(archive_root) as archive, Image.open(io.BytesIO(archive.read(uri))) as im:
        return np.asarray(im.convert("L" if grey else "RGB"))


def _example_masks(
    manifest_path: str | Path, archive_root: str | Path, example: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from melrepro.data.layouts import ATTRIBUTES

    record = _example_record(manifest_path, example)
    image = _read_image(archive_root, record["image_uri"])
    masks = {"segmentation": _read_image(archive_root, record["mask_uri"], grey=True) > 127}
    union = np.zeros(image.shape[:2], bool)
    for name in ATTRIBUTES:
        m = _read_image(archive_root, record[f"attr_{name}_uri"], grey=True) > 127
        masks[name] = m
        union |= m
    masks["union"] = union
    return image, masks


def plot_example_masks(
    manifest_path: str | Path, archive_root: str | Path, example: str, output: str | Path
) -> list[str]:
    """fig01: the example image, its task-1 segmentation, its non-empty feature masks and union."""
    from melrepro.report.figures import new_figure, save_figure

    image, masks = _example_masks(manifest_path, archive_root, example)
    shown = ["segmentation"] + [k for k in CHANNELS[:-1] if masks[k].any()] + ["union"]
    fig, axes = new_figure(1, len(shown) + 1, figsize=(2.4 * (len(shown) + 1), 2.6))
    axes[0].imshow(image)
    axes[0].set_title(example, fontsize=9)
    for ax, name in zip(axes[1:], shown, strict=True):
        ax.imshow(masks[name], cmap="gray", vmin=0, vmax=1)
        ax.set_title(FEATURE_LABELS.get(name, name), fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    save_figure(fig, output)
    return shown


def _example_map(maps_paths: Sequence[str | Path], example: str) -> tuple[np.ndarray, int]:
    for path in maps_paths:
        with np.load(path) as data:
            ids = list(data["image_id"])
            if example in ids:
                i = ids.index(example)
                return data["maps"][i], int(data["classes"][i])
    raise ValueError(f"no saliency map of {example!r} in {list(maps_paths)}")


def upsample_nearest(saliency: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour upsampling with the cell convention of :mod:`melrepro.data.cellcounts`."""
    from melrepro.data.cellcounts import cell_index

    h, w = saliency.shape
    return saliency[cell_index(height, h)][:, cell_index(width, w)]


def plot_saliency_example(
    manifest_path: str | Path,
    archive_root: str | Path,
    maps: Mapping[str, Sequence[str | Path]],
    labels: Mapping[str, str],
    example: str,
    output: str | Path,
) -> None:
    """fig02: the example image, then per model its grey saliency map and JET heat map."""
    import matplotlib

    from melrepro.report.figures import new_figure, save_figure

    record = _example_record(manifest_path, example)
    image = _read_image(archive_root, record["image_uri"])
    fig, axes = new_figure(1, 1 + 2 * len(maps), figsize=(2.4 * (1 + 2 * len(maps)), 2.8))
    axes[0].imshow(image)
    axes[0].set_title(example, fontsize=9)
    jet = matplotlib.colormaps["jet"]
    for k, (key, paths) in enumerate(maps.items()):
        s, cls = _example_map(paths, example)
        up = upsample_nearest(s, *image.shape[:2])
        axes[1 + 2 * k].imshow((255 * up).astype(np.uint8), cmap="gray", vmin=0, vmax=255)
        axes[1 + 2 * k].set_title(f"{labels[key]} saliency ({CLASSES[cls]})", fontsize=9)
        axes[2 + 2 * k].imshow(jet(up)[..., :3])
        axes[2 + 2 * k].set_title(f"{labels[key]} heat map", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    save_figure(fig, output)


def plot_jaccard_histograms(
    table_paths: Sequence[str | Path], label: str, output: str | Path, threshold: float = 0.5
) -> None:
    """fig03: 2x3 histograms of the Jaccard at ``threshold`` per feature and union (one model)."""
    from melrepro.report.figures import new_figure, save_figure

    data = analysis_set(read_overlap_tables(table_paths))
    fig, axes = new_figure(2, 3, figsize=(10, 6), sharex=True)
    for ax, channel in zip(axes.ravel(), CHANNELS, strict=True):
        values = data.loc[data[f"has__{channel}"], jaccard_column(channel, threshold)].dropna()
        ax.hist(values, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
        ax.set_title(f"{FEATURE_LABELS[channel]} (n = {len(values)})", fontsize=10)
        ax.set_xlabel(f"Jaccard at {threshold:.1f}")
        ax.set_ylabel("images")
    fig.suptitle(f"{label}: Jaccard of the thresholded saliency map with each feature")
    save_figure(fig, output)


def plot_thresholds(
    manifest_path: str | Path,
    archive_root: str | Path,
    maps_paths: Sequence[str | Path],
    jaccard_csv: str | Path,
    label: str,
    example: str,
    output: str | Path,
) -> None:
    """fig04/fig05: the example's saliency thresholded at 0.0 ... 1.0, with the union Jaccard."""
    from melrepro.report.figures import new_figure, save_figure

    record = _example_record(manifest_path, example)
    s, _ = _example_map(maps_paths, example)
    up = upsample_nearest(s, int(record["height"]), int(record["width"]))
    jac = pd.read_csv(jaccard_csv)["Jaccard"].to_numpy()
    fig, axes = new_figure(1, len(THRESHOLDS), figsize=(1.6 * len(THRESHOLDS), 2.2))
    for ax, t, j in zip(axes, THRESHOLDS, jac, strict=True):
        region = (up >= t) & (t < 1.0)
        ax.imshow(region, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"t={t:.1f}\nJ={j:.3f}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{label}: {example} thresholded saliency vs union of features", fontsize=10)
    save_figure(fig, output)
