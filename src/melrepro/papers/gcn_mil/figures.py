"""Cache, 0° bags and evaluations -> Figures 2-6 (``plot_gcn_mil``).

Each figure is drawn by its own helper (``_fig02``, ``_fig03``, ``_case_figure`` for fig04 and
fig05, ``_fig06``); the cases are drawn once, in a fixed order of random draws.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.methods import mil
from melrepro.papers.gcn_mil.bags import BagGraphs, load_bags
from melrepro.papers.gcn_mil.common import (
    ADJACENCY_TITLES,
    CLASS_TITLES,
    manifest_with_split,
    read_cache,
    to_working,
    working_shape,
    write_run_info,
)
from melrepro.papers.gcn_mil.options import BagOptions, as_options
from melrepro.report.figures import new_figure, save_figure


def _images(
    manifest: pd.DataFrame,
    ids: Sequence[str],
    cache_paths: Sequence[str | Path],
    scale: float,
) -> dict[str, Any]:
    """Working-resolution image and mask of a few images, reading only their shards."""
    shards = sorted({int(manifest.at[i, "shard"]) for i in ids})
    paths = [p for p in cache_paths if any(f"shard-{s:03d}" in str(p) for s in shards)]
    cache = {}
    for path in paths:  # one shard in memory at a time; keep only the images drawn
        shard = read_cache([path])
        cache.update({i: shard[i] for i in ids if i in shard})
        del shard
    out = {}
    for image_id in ids:
        row = manifest.loc[image_id]
        shape = working_shape(int(row["width"]), int(row["height"]), scale)
        item = cache[image_id]
        mask = None if item.mask is None else to_working(item.mask, shape, order=0) > 0
        out[image_id] = (to_working(item.image, shape, order=1), mask)
    return out


def _contour_panel(ax, image, truth, prediction, title: str) -> None:
    ax.imshow(image)
    if truth is not None and truth.any():
        ax.contour(truth, levels=[0.5], colors="red", linewidths=1.2)
    if prediction.any():
        ax.contour(prediction, levels=[0.5], colors="lime", linewidths=1.2)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def _pick_cases(
    manifest: pd.DataFrame, predictions: pd.DataFrame, rng: np.random.Generator, n_cases: int
) -> tuple[dict[str, str], list[str], list[str]]:
    """One training image per class (fig03) and up to ``n_cases`` test melanomas (fig04) and
    non-melanomas (fig05), drawn from ``rng`` in that order."""
    picks = {}
    for cls in mil.CLASSES:
        ids = sorted(manifest.index[(manifest["split"] == "train") & (manifest["label"] == cls)])
        if ids:
            picks[cls] = ids[int(rng.integers(len(ids)))]
    test_ids = predictions.index[predictions["split"] == "test"]
    mel = [i for i in test_ids if predictions.at[i, "label"] == "melanoma"]
    other = [i for i in test_ids if predictions.at[i, "label"] != "melanoma"]
    mel = list(rng.permutation(mel)[:n_cases]) if mel else []
    other = list(rng.permutation(other)[:n_cases]) if other else []
    return picks, mel, other


def _fig02(bag: Mapping[str, Any], image: np.ndarray, bag_opts: BagOptions, path) -> None:
    """The block grid of a training image with one block and its Eq. 1 neighbours."""
    from matplotlib.patches import Rectangle

    coords, k = bag["coords"].numpy(), bag["block_size"]
    centres = mil.block_centres(coords, k)
    edges = BagGraphs(bag_opts.adjacency_radius, bag_opts.radius_factor)(bag).numpy()
    middle = int(np.argmin(np.linalg.norm(centres - centres.mean(0), axis=1)))
    neighbours = edges[1, edges[0] == middle]
    fig, axes = new_figure(1, 2, figsize=(10, 4))
    for ax in axes:
        ax.imshow(image)
        ax.set_axis_off()
    axes[0].plot(centres[:, 1], centres[:, 0], ".", color="yellow", markersize=2)
    y, x = coords[middle]
    axes[0].add_patch(Rectangle((x, y), k, k, fill=False, edgecolor="red", linewidth=1.5))
    axes[0].set_title(
        f"{len(coords)} blocks of {k}px (stride {bag['stride']}), centres in yellow", fontsize=9
    )
    for n in neighbours:
        yy, xx = coords[n]
        axes[1].add_patch(Rectangle((xx, yy), k, k, fill=False, edgecolor="blue", linewidth=0.5))
    axes[1].add_patch(Rectangle((x, y), k, k, fill=False, edgecolor="red", linewidth=1.5))
    axes[1].set_title(
        f"{len(neighbours)} adjacent blocks, Eq. 1 radius "
        f"{ADJACENCY_TITLES[bag_opts.adjacency_radius]}",
        fontsize=9,
    )
    save_figure(fig, path)


def _fig03(picks: Mapping[str, str], images: Mapping[str, Any], path) -> None:
    """One image and its mask per class."""
    fig, axes = new_figure(len(picks), 2, figsize=(6, 3 * len(picks)), squeeze=False)
    for r, (cls, image_id) in enumerate(picks.items()):
        image, mask = images[image_id]
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(f"{CLASS_TITLES[cls]} ({image_id})", fontsize=8)
        axes[r, 1].imshow(mask if mask is not None else np.zeros(image.shape[:2]), cmap="gray")
        axes[r, 1].set_title(f"{CLASS_TITLES[cls]} segmentation mask", fontsize=8)
        for ax in axes[r]:
            ax.set_axis_off()
    save_figure(fig, path)


def _case_figure(
    ids: Sequence[str],
    bags0: Mapping[str, Mapping[str, Any]],
    scores: Mapping[str, np.ndarray],
    images: Mapping[str, Any],
    predictions: pd.DataFrame,
    eta: float,
    path,
) -> None:
    """fig04 / fig05: predicted (green) and expert (red) contours of test cases at η*."""
    n_cols = max(len(ids), 1)
    fig, axes = new_figure(1, n_cols, figsize=(3 * n_cols, 3), squeeze=False)
    for c, image_id in enumerate(ids):
        bag = bags0[image_id]
        score_map = mil.segmentation_map(
            tuple(bag["shape"]), bag["coords"].numpy(), bag["block_size"], scores[image_id]
        )
        image, mask = images[image_id]
        p = predictions.loc[image_id]
        called = mil.CLASSES[int(np.argmax([p[f"p_{c}"] for c in mil.CLASSES]))]
        _contour_panel(
            axes[0, c],
            image,
            mask,
            score_map >= eta,
            f"Case {c + 1}: {CLASS_TITLES[p['label']]}\ncalled {CLASS_TITLES[called]}, "
            f"JA={p['jaccard']:.2f}",
        )
    if not ids:
        axes[0, 0].set_axis_off()
        axes[0, 0].set_title("no test cases of this kind")
    save_figure(fig, path)


def _fig06(sweep_paths: Sequence[str | Path], eta: float, path) -> None:
    """Training-melanoma Jaccard vs η of every run, their mean, and η* marked."""
    fig, ax = new_figure(figsize=(5, 3.5))
    curves = [pd.read_csv(p) for p in sweep_paths]
    for r, curve in enumerate(curves):
        ax.plot(
            curve["eta"],
            curve["train_jaccard"],
            color="0.7",
            linewidth=0.8,
            label="runs" if r == 0 else None,
        )
    mean = np.mean([c["train_jaccard"] for c in curves], axis=0)
    ax.plot(curves[0]["eta"], mean, color="black", label="mean of runs")
    ax.axvline(eta, color="red", linestyle="--", label=f"chosen η = {eta:.2f} (run 0)")
    ax.set_xlabel("threshold η")
    ax.set_ylabel("mean Jaccard, training melanomas")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_gcn_mil(
    manifest_path: str | Path,
    split_path: str | Path,
    cache_paths: Sequence[str | Path],
    feature_paths: Sequence[str | Path],
    predictions_path: str | Path,
    scores_path: str | Path,
    sweep_paths: Sequence[str | Path],
    metrics_path: str | Path,
    figure_paths: Mapping[str, str | Path],
    *,
    bags: Mapping[str, Any] | BagOptions | None = None,
    n_cases: int = 4,
    seed: int = 0,
    run_info: Mapping[str, Any] | None = None,
) -> None:
    """Draw Figures 2–6 (``figure_paths`` maps ``fig02``… to PNG paths).

    fig02: the block grid of a training image with one block and its Eq. 1 neighbours;
    fig03: one image and its mask per class; fig04/fig05: predicted (green) and expert (red)
    contours on test melanomas / non-melanomas (run 0, η*); fig06: training-melanoma Jaccard vs
    η of every run with η* marked.
    """
    bag_opts = as_options(BagOptions, bags)
    manifest = manifest_with_split(manifest_path, split_path)
    rng = np.random.default_rng(seed)
    predictions = pd.read_csv(predictions_path, index_col="image_id")
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    eta = float(metrics["eta"])
    bags0 = {b["image_id"]: b for b in load_bags(feature_paths, angle_zero_only=True)}
    picks, mel, other = _pick_cases(manifest, predictions, rng, n_cases)
    # fig02 uses the largest-grid training image of the picks (the most blocks to show).
    sample = max(picks.values(), key=lambda i: len(bags0[i]["coords"]) if i in bags0 else -1)
    images = _images(manifest, sorted({*picks.values(), *mel, *other}), cache_paths, bag_opts.scale)

    _fig02(bags0[sample], images[sample][0], bag_opts, figure_paths["fig02"])
    _fig03(picks, images, figure_paths["fig03"])
    with np.load(scores_path) as npz:
        scores = {
            key.split("__", 1)[1]: npz[key] for key in npz.files if key.startswith("scores__")
        }
    for fig_id, ids in (("fig04", mel), ("fig05", other)):
        _case_figure(ids, bags0, scores, images, predictions, eta, figure_paths[fig_id])
    _fig06(sweep_paths, eta, figure_paths["fig06"])
    write_run_info(
        Path(figure_paths["fig02"]).parent,
        run_info,
        config={"bags": asdict(bag_opts), "n_cases": n_cases},
        eta=eta,
        sample_image=sample,
        fig04_cases=mel,
        fig05_cases=other,
    )
