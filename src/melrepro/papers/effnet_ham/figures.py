"""effnet_ham figures: fig01-fig03 from the split and a variant's outputs, fig05 and fig06 from
the Grad-CAM maps of :func:`melrepro.papers.effnet_ham.evaluate.compute_gradcam`.

fig04 is the rule graph (:mod:`melrepro.report.rulegraph` via ``workflow/rules/report.smk``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melrepro.methods import metrics
from melrepro.papers.effnet_ham.datasets import SPLITS, check_lesions_disjoint

# pytorch-grad-cam is imported inside the function that overlays a map, so that the figure jobs
# start without torch (~5 s each).

__all__ = [
    "plot_class_distribution",
    "plot_confusion",
    "plot_gradcam_examples",
    "plot_gradcam_outside",
    "plot_loss_curves",
]


def plot_class_distribution(
    manifest_path: str | Path,
    split_path: str | Path,
    output: str | Path,
    *,
    malignant_labels: Sequence[str] = ("MEL", "BCC", "AKIEC"),
) -> pd.DataFrame:
    """fig01: benign and malignant counts in train / validation / test (with percentages)."""
    from melrepro.report.figures import new_figure, save_figure

    manifest = pd.read_parquet(manifest_path)
    split = pd.read_parquet(split_path)[["image_id", "split"]]
    frame = manifest[["image_id", "label", "lesion_id"]].merge(split, on="image_id")
    frame = frame[frame["split"].isin(SPLITS) & frame["label"].notna()]
    check_lesions_disjoint(frame)
    frame["class"] = np.where(
        frame["label"].astype(str).isin(list(malignant_labels)), "malignant", "benign"
    )
    counts = (
        frame.groupby(["split", "class"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=list(SPLITS), columns=["benign", "malignant"], fill_value=0)
    )
    fig, ax = new_figure(figsize=(6, 4))
    x = np.arange(len(counts))
    for k, (cls, colour) in enumerate([("benign", "tab:blue"), ("malignant", "tab:red")]):
        bars = ax.bar(x + (k - 0.5) * 0.38, counts[cls], 0.38, label=cls, color=colour)
        share = counts[cls] / counts.sum(axis=1).replace(0, np.nan) * 100
        ax.bar_label(
            bars,
            labels=[f"{n}\n{p:.1f}%" for n, p in zip(counts[cls], share, strict=True)],
            fontsize=8,
        )
    ax.set_xticks(x, ["train", "validation", "test"])
    ax.set_ylabel("images")
    total = counts.sum()
    ax.set_title(
        f"Class distribution ({total['malignant'] / total.sum() * 100:.1f}% malignant: "
        f"{', '.join(malignant_labels)})"
    )
    ax.legend()
    ax.margins(y=0.2)
    save_figure(fig, output)
    return counts


def plot_loss_curves(history_path: str | Path, output: str | Path) -> None:
    """fig02: training and validation loss per epoch (frozen warm-up epochs shaded)."""
    from melrepro.report.figures import new_figure, save_figure

    hist = pd.read_csv(history_path)
    fig, ax = new_figure(figsize=(6, 4))
    ax.plot(hist["epoch"], hist["train_loss"], marker="o", label="train")
    ax.plot(hist["epoch"], hist["val_loss"], marker="o", label="validation")
    frozen = hist.loc[hist["frozen"].astype(bool), "epoch"]
    if len(frozen):
        ax.axvspan(frozen.min() - 0.5, frozen.max() + 0.5, color="0.9", label="frozen backbone")
    ax.set_xlabel("epoch")
    ax.set_ylabel("focal BCE loss")
    ax.set_title("Training and validation loss")
    ax.legend()
    save_figure(fig, output)


def plot_confusion(predictions_path: str | Path, output: str | Path) -> np.ndarray:
    """fig03: test confusion matrix at the Youden threshold chosen on validation."""
    from sklearn.metrics import ConfusionMatrixDisplay

    from melrepro.report.figures import new_figure, save_figure

    preds = pd.read_parquet(predictions_path)
    test = preds[preds["split"] == "test"]
    cm = metrics.confusion(test["target"].to_numpy(), test["prediction"].to_numpy())
    fig, ax = new_figure(figsize=(4.5, 4))
    ConfusionMatrixDisplay(cm, display_labels=["benign", "malignant"]).plot(
        ax=ax, cmap="Blues", colorbar=False
    )
    ax.set_title("Test confusion matrix (Youden threshold)")
    save_figure(fig, output)
    return cm


def _overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255.0, cam, use_rgb=True)


def _load_examples(maps_path: str | Path) -> tuple[dict[str, int], Any]:
    data = np.load(maps_path)
    index = {str(i): k for k, i in enumerate(data["image_ids"])}
    return index, data


def plot_gradcam_examples(
    maps_path: str | Path, table_path: str | Path, output: str | Path
) -> None:
    """fig05: Grad-CAM overlays, top row correct predictions, bottom row incorrect."""
    from melrepro.report.figures import new_figure, save_figure

    index, data = _load_examples(maps_path)
    table = pd.read_csv(table_path).set_index("image_id")
    rows = [("correct", list(data["fig05_correct"])), ("incorrect", list(data["fig05_incorrect"]))]
    n = max(1, max(len(ids) for _, ids in rows))
    fig, axes = new_figure(2, n, figsize=(2.4 * n, 5.2), squeeze=False)
    for r, (name, ids) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_axis_off()
            if c >= len(ids):
                if c == 0:
                    ax.text(0.5, 0.5, f"no {name} predictions", ha="center", va="center")
                continue
            k = index[str(ids[c])]
            ax.imshow(_overlay(data["images"][k], data["maps"][k]))
            row = table.loc[str(ids[c])]
            truth = "malignant" if row["target"] else "benign"
            ax.set_title(f"{name}\ntrue {truth}, p={row['probability']:.2f}", fontsize=8)
    fig.suptitle("Grad-CAM (red = attention)\ncorrect (top) and incorrect (bottom)", fontsize=10)
    save_figure(fig, output)


def plot_gradcam_outside(maps_path: str | Path, table_path: str | Path, output: str | Path) -> None:
    """fig06: share of saliency outside the lesion against the share of the image outside it.

    Left: one point per test image with a lesion mask; a flat (uninformative) map lies on the
    identity line, a map on the lesion below it. Right: the images furthest above the line,
    lesion outlined.
    """
    from melrepro.report.figures import new_figure, save_figure

    index, data = _load_examples(maps_path)
    table = pd.read_csv(table_path)
    measured = table[table["outside_fraction"].notna()]
    ids = [str(i) for i in data["fig06"]][:4]
    n = max(1, len(ids))
    fig, axes = new_figure(
        2,
        n + 2,
        figsize=(2.3 * (n + 2), 5.0),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.2, 1.2] + [1] * n},
    )
    gs = axes[0][0].get_gridspec()
    for ax in (axes[0][0], axes[0][1], axes[1][0], axes[1][1]):
        ax.remove()
    ax = fig.add_subplot(gs[:, :2])
    for correct, colour, name in ((True, "tab:green", "correct"), (False, "tab:red", "wrong")):
        part = measured[measured["correct"] == correct]
        ax.scatter(part["area_outside"], part["outside_fraction"], s=18, c=colour, label=name)
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, ls="--", label="flat map")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("share of the image outside the lesion")
    ax.set_ylabel("share of saliency outside the lesion")
    ax.legend(fontsize=7, loc="lower right")
    above = (measured["outside_fraction"] > measured["area_outside"]).sum()
    n_none = int((table["region"] == "none").sum())
    ax.set_title(
        f"{above} of {len(measured)} maps put more saliency outside\nthan a flat map would"
        + (f" ({n_none} images without mask)" if n_none else ""),
        fontsize=8,
    )
    rows = table.set_index("image_id")
    for c, image_id in enumerate(ids):
        k = index[image_id]
        row = rows.loc[image_id]
        for r, picture in enumerate(
            [data["images"][k], _overlay(data["images"][k], data["maps"][k])]
        ):
            a = axes[r][c + 2]
            a.imshow(picture)
            a.contour(data["regions"][k], levels=[0.5], colors="lime", linewidths=0.8)
            a.set_axis_off()
        axes[0][c + 2].set_title(
            f"{row['outside_fraction']:.0%} of saliency outside\n"
            f"({row['area_outside']:.0%} of the area)",
            fontsize=8,
        )
    for c in range(len(ids), n):
        for r in range(2):
            axes[r][c + 2].set_axis_off()
    fig.suptitle("Grad-CAM of the malignant logit outside the lesion (green outline)", fontsize=10)
    save_figure(fig, output)
