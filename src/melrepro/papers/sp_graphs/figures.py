"""Figures of the sp_graphs paper: examples (figures 1-3) and CV results (figures 5 and 6).

Figure 4 is the workflow's rule graph (:mod:`melrepro.report.rulegraph` via
``workflow/rules/report.smk``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.methods.classical import CLASSIFIERS
from melrepro.methods.superpixels import (
    SIGNAL_NAMES,
    PixelMaps,
    node_signals,
    pixel_maps,
    superpixel_ensemble,
    superpixel_hierarchy,
)
from melrepro.papers.sp_graphs.features import ExtractionSettings, edge_weights, lesion_box
from melrepro.papers.sp_graphs.variants import SIGNAL_TITLE, SIGNALS, TABLES, WEIGHTING_TITLE

__all__ = ["plot_examples", "plot_results"]


def plot_results(
    cv_metrics: Mapping[str, str | Path],
    cv_selection: Mapping[str, str | Path],
    fig05: str | Path,
    fig06: str | Path,
) -> None:
    """Figure 5 (AUC bars with a mean-AUC line) and figure 6 (selected-feature composition)."""
    from melrepro.report.figures import new_figure, save_figure

    panels = [(w, s) for w in ("gaussian", "learned") for s in SIGNALS]

    def source(w: str, s: str) -> str:
        return next(t for t, v in TABLES.items() if v == ("seg", w, s))

    fig, axes = new_figure(2, 3, figsize=(15, 8), sharey=True)
    for ax, (w, s), letter in zip(axes.ravel(), panels, "abcdef", strict=True):
        m = pd.read_parquet(cv_metrics[source(w, s)])
        auc = m.groupby(["feature_set", "classifier"], sort=False)["AUC"].mean().unstack()
        auc = auc.reindex(index=list(dict.fromkeys(m["feature_set"])),
                          columns=[c for c in CLASSIFIERS if c in auc.columns])  # fmt: skip
        xs = np.arange(len(auc.index))
        width = 0.8 / max(len(auc.columns), 1)
        for j, clf in enumerate(auc.columns):
            ax.bar(xs + (j - len(auc.columns) / 2 + 0.5) * width, auc[clf], width, label=clf)
        ax.plot(xs, auc.mean(axis=1), "k-o", label="mean AUC")
        ax.set_xticks(xs, [str(i) for i in auc.index])
        ax.set_title(f"({letter}) {SIGNAL_TITLE[s]}, {WEIGHTING_TITLE[w].lower()} weights")
        ax.set_ylabel("AUC (%)")
        ax.set_ylim(max(0.0, float(np.nanmin(auc.to_numpy())) - 5), 100.5)
    axes.ravel()[0].legend(fontsize=7, ncol=2)
    save_figure(fig, fig05)

    fig, axes = new_figure(2, 3, figsize=(15, 9))
    for ax, (w, s), letter in zip(axes.ravel(), panels, "abcdef", strict=True):
        sel = pd.read_parquet(cv_selection[source(w, s)])
        sel = sel[sel["feature_set"] == "fused"]
        group = sel["feature"].str.extract(r"^n(\d+):")[0]
        group = np.where(group.isna(), "conventional", "n=" + group.fillna(""))
        share = sel.groupby(group)["count"].sum()
        order = ["conventional"] + sorted((g for g in share.index if g != "conventional"),
                                          key=lambda g: int(g[2:]))  # fmt: skip
        share = share.reindex([g for g in order if g in share.index])
        ax.pie(share.to_numpy(), labels=list(share.index), autopct="%1.0f%%", startangle=90)
        ax.set_title(f"({letter}) {SIGNAL_TITLE[s]}, {WEIGHTING_TITLE[w].lower()} weights")
    save_figure(fig, fig06)


def _draw_graph(ax: Any, image: np.ndarray, labels: np.ndarray, w: np.ndarray, title: str) -> None:
    import matplotlib as mpl

    n = w.shape[0]
    rows, cols = np.indices(labels.shape)
    counts = np.bincount(labels.ravel(), minlength=n)
    cy = np.bincount(labels.ravel(), rows.ravel(), minlength=n) / counts
    cx = np.bincount(labels.ravel(), cols.ravel(), minlength=n) / counts
    ax.imshow(image, alpha=0.6)
    iu, ju = np.triu_indices(n, k=1)
    carry = w[iu, ju] > 0  # a learned graph is sparse: draw only the edges that carry weight
    iu, ju = iu[carry], ju[carry]
    vals = w[iu, ju]
    norm = mpl.colors.Normalize(vmin=float(vals.min()), vmax=float(vals.max()))
    cmap = mpl.colormaps["coolwarm"]
    for k in np.argsort(vals):
        ax.plot([cx[iu[k]], cx[ju[k]]], [cy[iu[k]], cy[ju[k]]], color=cmap(norm(vals[k])),
                lw=0.3 + 1.5 * norm(vals[k]), alpha=0.15 + 0.85 * norm(vals[k]))  # fmt: skip
    ax.scatter(cx, cy, s=12, c="k")
    ax.set_title(title)
    ax.axis("off")
    ax.figure.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.6,
                       label="edge weight")  # fmt: skip


def plot_examples(
    shards: Sequence[str | Path],
    manifest: str | Path,
    fig01: str | Path,
    fig02: str | Path,
    fig03: str | Path,
    *,
    settings: Mapping[str, Any] | None = None,
    fig02_level: int = 20,
    seed: int = 0,
) -> None:
    """Figures 1–3: sample images, one image's colour graph signal and graphs, superpixel maps."""
    from melrepro.data.imagecache import read_cache

    s = ExtractionSettings.from_config(settings or {})
    man = pd.read_parquet(manifest)
    man = man[man["target"].notna()]
    cache = read_cache(shards)
    man = man[man["image_id"].isin(list(cache))].sort_values("image_id")
    rng = np.random.default_rng(seed)
    mel = man[man["target"] == 1]["image_id"].tolist()
    ben = man[man["target"] == 0]["image_id"].tolist()
    if not mel or not ben:
        raise ValueError(f"{shards}: need melanoma and benign images for figures 1-3")
    picks = [*rng.choice(mel, min(2, len(mel)), replace=False),
             *rng.choice(ben, min(2, len(ben)), replace=False)]  # fmt: skip
    _plot_samples(cache, picks, mel, fig01)

    image = cache[picks[0]].image
    if s.crop_to_lesion:
        image = image[lesion_box(image, margin=s.crop_margin)]
    maps = pixel_maps(image)
    seg = superpixel_ensemble(image, tuple(s.seg_levels), lab=maps.slic_lab, compactness=s.compactness,
                              sigma=s.sigma, oversample=s.slic_oversample)  # fmt: skip
    _plot_graph_signal(image, maps, seg, s, fig02_level, fig02)
    _plot_superpixel_levels(image, maps, seg, s, fig03)


def _plot_samples(
    cache: Mapping[str, Any], picks: list[str], mel: list[str], fig01: str | Path
) -> None:
    """Figure 1: the picked sample images, melanomas first."""
    from melrepro.report.figures import new_figure, save_figure

    fig, axes = new_figure(1, len(picks), figsize=(3.5 * len(picks), 3.6))
    for ax, image_id, letter in zip(axes, picks, "abcd", strict=False):
        ax.imshow(cache[image_id].image)
        kind = "melanoma" if image_id in mel else "benign"
        ax.set_title(f"({letter}) {kind}: {image_id}", fontsize=9)
        ax.axis("off")
    save_figure(fig, fig01)


def _plot_graph_signal(
    image: np.ndarray,
    maps: PixelMaps,
    seg: dict[int, np.ndarray],
    s: ExtractionSettings,
    fig02_level: int,
    fig02: str | Path,
) -> None:
    """Figure 2: one SEG level's colour graph signal and its Gaussian and learned graphs."""
    from melrepro.report.figures import new_figure, save_figure

    level = fig02_level if fig02_level in seg else min(seg)
    labels = seg[level]
    x = node_signals(maps, labels)["color"]
    signal = x[:, SIGNAL_NAMES["color"].index(s.gft_signal["color"])]
    fig, axes = new_figure(1, 3, figsize=(16, 4.8))
    axes[0].bar(np.arange(level), signal, color=np.clip(x[:, :3], 0, 1))
    axes[0].set_xlabel("superpixel")
    axes[0].set_ylabel(f"colour signal ({s.gft_signal['color']})")
    axes[0].set_title(f"(a) colour graph signal, n={level}")
    _draw_graph(
        axes[1], image, labels, edge_weights(x, "gaussian", s), "(b) Gaussian-kernel weights"
    )
    _draw_graph(axes[2], image, labels, edge_weights(x, "learned", s), "(c) MM-learned weights")
    save_figure(fig, fig02)


def _plot_superpixel_levels(
    image: np.ndarray,
    maps: PixelMaps,
    seg: dict[int, np.ndarray],
    s: ExtractionSettings,
    fig03: str | Path,
) -> None:
    """Figure 3: the superpixel maps of every SEG level (top row) and SHG level (bottom row)."""
    from skimage.segmentation import mark_boundaries

    from melrepro.report.figures import new_figure, save_figure

    shg = superpixel_hierarchy(
        image, tuple(s.shg_levels), lab=maps.slic_lab, finest=seg.get(max(s.shg_levels)),
        compactness=s.compactness, sigma=s.sigma, oversample=s.slic_oversample,
    )  # fmt: skip
    ncol = max(len(seg), len(shg.labels))
    fig, axes = new_figure(2, ncol, figsize=(3.2 * ncol, 6.2))
    for row, (name, level_maps) in enumerate((("(a) ensemble (SEG)", seg),
                                              ("(b) hierarchy (SHG)", shg.labels))):  # fmt: skip
        for ax, (n, lab_map) in zip(axes[row], sorted(level_maps.items()), strict=False):
            ax.imshow(mark_boundaries(image, lab_map, color=(1, 1, 0)))
            ax.set_title(f"{name}: n={n}" if n == min(level_maps) else f"n={n}", fontsize=9)
            ax.axis("off")
        for ax in axes[row][len(level_maps) :]:
            ax.axis("off")
    save_figure(fig, fig03)
