"""siim2020's figures: the data figures (fig02-04, fig13) and the result figures (loss, ROC,
confusion matrices, examples)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from melrepro.papers.siim2020.datasets import clean_training
from melrepro.papers.siim2020.images import load_images, read_brightness

__all__ = [
    "plot_age_violins",
    "plot_colour_swatches",
    "plot_confusions",
    "plot_examples",
    "plot_extremes",
    "plot_loss_panels",
    "plot_roc",
]


def _clean_with_brightness(manifest_path, brightness_paths) -> pd.DataFrame:
    clean, _, _ = clean_training(pd.read_parquet(manifest_path))
    b = read_brightness(brightness_paths)
    return clean.merge(b, on="image_id", how="inner")


def plot_colour_swatches(
    manifest_path: str | Path,
    brightness_paths: Sequence[str | Path],
    output: str | Path,
    *,
    n_random: int = 2500,
    seed: int = 0,
) -> None:
    """fig02: mean colour of each image sorted by brightness, (a) all melanomas, (b) a random
    sample of ``n_random`` images (of the cleaned training set)."""
    from melrepro.report.figures import new_figure, save_figure

    frame = _clean_with_brightness(manifest_path, brightness_paths)
    mel = frame[frame["target"] == 1]
    sample = frame.sample(n=min(n_random, len(frame)), random_state=seed)
    fig, axes = new_figure(1, 2, figsize=(10, 5))
    for ax, part, title in (
        (axes[0], mel, f"(a) all melanomas (n={len(mel)})"),
        (axes[1], sample, f"(b) random sample (n={len(sample)})"),
    ):
        part = part.sort_values("brightness")
        colours = part[["mean_r", "mean_g", "mean_b"]].to_numpy() / 255.0
        side = int(np.ceil(np.sqrt(max(len(colours), 1))))
        grid = np.ones((side * side, 3))
        grid[: len(colours)] = colours
        ax.imshow(grid.reshape(side, side, 3), interpolation="nearest")
        ax.set_title(f"{title}\nmean brightness {part['brightness'].mean():.1f}", fontsize=10)
        ax.set_axis_off()
    fig.suptitle("Average colour of each image, sorted by brightness (row by row, dark first)")
    save_figure(fig, output)


def plot_extremes(
    manifest_path: str | Path,
    brightness_paths: Sequence[str | Path],
    image_paths: Sequence[str | Path],
    output: str | Path,
    *,
    target: int,
    n: int = 5,
) -> None:
    """fig03 (melanomas, ``target=1``) / fig04 (benign, ``target=0``): the ``n`` lightest and
    ``n`` darkest training images."""
    from melrepro.report.figures import new_figure, save_figure

    frame = _clean_with_brightness(manifest_path, brightness_paths)
    part = frame[frame["target"] == target].sort_values("brightness")
    dark, light = part.head(n), part.tail(n).iloc[::-1]
    images = load_images(image_paths, list(dark["image_id"]) + list(light["image_id"]))
    fig, axes = new_figure(2, n, figsize=(2.2 * n, 5), squeeze=False)
    for r, (name, rows) in enumerate((("lightest", light), ("darkest", dark))):
        for c in range(n):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(rows):
                rec = rows.iloc[c]
                ax.imshow(images[rec["image_id"]])
                ax.set_title(f"{name}\n{rec['image_id']} b={rec['brightness']:.0f}", fontsize=7)
    kind = "melanomas" if target == 1 else "benign lesions"
    fig.suptitle(f"The {n} lightest (top) and darkest (bottom) {kind}")
    save_figure(fig, output)


def plot_age_violins(manifest_path: str | Path, output: str | Path) -> None:
    """fig13: split violins of age by sex, melanoma vs benign (cleaned training set)."""
    import seaborn as sns

    from melrepro.report.figures import new_figure, save_figure

    clean, _, _ = clean_training(pd.read_parquet(manifest_path))
    frame = pd.DataFrame(
        {
            "sex": clean["sex"].astype(str),
            "age": pd.to_numeric(clean["age"]).astype(float),
            "diagnosis": np.where(clean["target"] == 1, "melanoma", "benign"),
        }
    )
    fig, ax = new_figure(figsize=(6, 4.5))
    sns.violinplot(
        data=frame,
        x="sex",
        y="age",
        hue="diagnosis",
        split=True,
        inner="quart",
        ax=ax,
        order=["female", "male"],
        hue_order=["benign", "melanoma"],
    )
    ax.set_title("Age by sex and diagnosis (cleaned training set)")
    save_figure(fig, output)


def _panel_axes(n: int = 4):
    from melrepro.report.figures import new_figure

    return new_figure(2, 2, figsize=(9, 7), squeeze=False)


def plot_loss_panels(
    history_paths: Sequence[str | Path], labels: Sequence[str], output: str | Path, *, title: str
) -> None:
    """fig08 / fig14 / fig15: training and validation loss per epoch, one panel per dataset."""
    from melrepro.report.figures import save_figure

    fig, axes = _panel_axes()
    for ax, path, label in zip(axes.ravel(), history_paths, labels, strict=True):
        hist = pd.read_csv(path)
        ax.plot(hist["epoch"], hist["train_loss"], marker="o", label="train")
        ax.plot(hist["epoch"], hist["val_loss"], marker="o", label="validation")
        best = int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
        ax.axvline(best, color="0.6", ls="--", lw=0.8, label=f"best epoch {best}")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("BCE loss")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, output)


def plot_roc(
    predictions_paths: Sequence[str | Path],
    labels: Sequence[str],
    output: str | Path,
    *,
    title: str,
) -> None:
    """fig09 / fig16 / fig17: ROC curves on the evaluation set, AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from melrepro.report.figures import new_figure, save_figure

    fig, ax = new_figure(figsize=(5.5, 5))
    for path, label in zip(predictions_paths, labels, strict=True):
        preds = pd.read_parquet(path)
        ev = preds[preds["role"] == "eval"]
        y, p = ev["target"].astype(int).to_numpy(), ev["probability"].to_numpy()
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8)
    ax.axhspan(0.8, 0.9, color="0.92", zorder=0, label="TPR band [0.8, 0.9]")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, output)


def plot_confusions(
    predictions_paths: Sequence[str | Path],
    metrics_paths: Sequence[str | Path],
    labels: Sequence[str],
    output: str | Path,
) -> list[np.ndarray]:
    """fig10: evaluation-set confusion matrices at each model's threshold (2x2 panels)."""
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    from melrepro.report.figures import save_figure

    fig, axes = _panel_axes()
    out = []
    for ax, path, mpath, label in zip(
        axes.ravel(), predictions_paths, metrics_paths, labels, strict=True
    ):
        preds = pd.read_parquet(path)
        ev = preds[preds["role"] == "eval"]
        cm = confusion_matrix(ev["target"].astype(int), ev["prediction"], labels=[0, 1])
        out.append(cm)
        threshold = json.loads(Path(mpath).read_text(encoding="utf-8"))["threshold"]
        ConfusionMatrixDisplay(cm, display_labels=["benign", "melanoma"]).plot(
            ax=ax, cmap="Blues", colorbar=False
        )
        ax.set_title(f"{label} (threshold {threshold:.3f})", fontsize=10)
    fig.suptitle("Confusion matrices at the optimised thresholds (evaluation set)")
    save_figure(fig, output)
    return out


def plot_examples(
    predictions_path: str | Path,
    image_paths: Sequence[str | Path],
    output: str | Path,
    *,
    kind: str,
    n: int = 6,
) -> None:
    """fig11 (``kind="tp"``) / fig12 (``"fn"``): Base Small evaluation images, most confident
    true positives or least detected false negatives."""
    from melrepro.report.figures import new_figure, save_figure

    preds = pd.read_parquet(predictions_path)
    ev = preds[(preds["role"] == "eval") & (preds["target"] == 1)]
    if kind == "tp":
        rows = ev[ev["prediction"] == 1].sort_values("probability", ascending=False).head(n)
        title = "True positives (Base Small)"
    elif kind == "fn":
        rows = ev[ev["prediction"] == 0].sort_values("probability").head(n)
        title = "False negatives (Base Small)"
    else:
        raise ValueError(f"kind must be 'tp' or 'fn', got {kind!r}")
    images = load_images(image_paths, list(rows["image_id"]))
    cols = 3
    fig, axes = new_figure(2, cols, figsize=(7.5, 5.5), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k < len(rows):
            rec = rows.iloc[k]
            ax.imshow(images[rec["image_id"]])
            ax.set_title(f"{rec['image_id']}\np={rec['probability']:.3f}", fontsize=8)
        elif k == 0:
            ax.text(0.5, 0.5, "none at this threshold", ha="center", va="center")
    fig.suptitle(f"{title}: {len(rows)} of {int((ev['prediction'] == (kind == 'tp')).sum())}")
    save_figure(fig, output)
