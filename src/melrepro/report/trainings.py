"""Trainings you can compare (issue 22): one table row per training of every paper, and one
learning-curve figure per paper.

Reads only the files a training leaves beside its model; the history file is the key:

* the CNN papers (``effnet_ham``, ``siim2020``, ``gradcam_overlap``, training core):
  ``results/<paper>/models/<...>/history.csv`` (1-based ``epoch``, ``train_loss``, ``val_loss``,
  ``seconds``...), with ``metrics.json`` (``best_epoch``, ``epochs_run``, ``train_seconds``,
  ``device``, ``torch_threads``, ``options``, the paper's validation metric, training-set size)
  and ``run_info.json`` beside it;
* ``gcn_mil`` (its own loop): ``results/gcn_mil/models/<adjacency>/run-<R>_history.tsv``
  (0-based ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``, ``seconds``), with the
  folder's ``run_info.json`` (device, seed, train settings) when present, and
  ``run-<R>_metrics.json`` (the core's keys: ``epochs_run``, ``train_seconds``, ``device``,
  ``torch_threads``; ``n_train`` = bags one epoch trains on, one view per image and DR angle).
  A run trained before it wrote that file has empty threads and training-set cells.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "COLUMNS",
    "Training",
    "draw_learning_curves",
    "plot_learning_curves",
    "read_training",
    "training_table",
]

#: The table's columns, in order.
COLUMNS = [
    "paper",
    "training",
    "model",
    "data set",
    "variant",
    "device",
    "torch threads",
    "seed",
    "epochs run",
    "epochs planned",
    "best epoch",
    "wall time (s)",
    "training images",
    "images/s",
    "best epoch chosen by",
    "validation metric",
    "validation value",
    "final val loss",
]

#: The data set each paper trains on (the folders under models/ name only the variant).
PAPER_DATA_SETS = {
    "effnet_ham": "isic2018_task3",
    "siim2020": "isic2020",
    "gradcam_overlap": "isic2019",
    "gcn_mil": "isic2017",
}

_GCN_MIL_HISTORY = re.compile(r"run-(\d+)_history\.tsv")


@dataclass
class Training:
    """One training: where it sits, what it is, and the files it left."""

    paper: str
    name: str
    model: str
    variant: str
    history: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    #: the best (kept) epoch, 1-based
    best_epoch: int | None = None
    validation_metric: str = ""
    validation_value: float = math.nan
    #: images one epoch trains on
    training_images: int | None = None
    seed: int | None = None
    epochs_planned: int | None = None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


#: The folder of a model's further seed (``seed-<i>``, i >= 1), under the model's own folder.
_SEED_FOLDER = re.compile(r"seed-[1-9]\d*")


def _paper_and_parts(history_path: Path) -> tuple[str, list[str]]:
    """The paper (the folder above ``models``) and the folders between ``models`` and the file."""
    parts = history_path.parts
    if "models" not in parts[:-1]:
        raise ValueError(f"{history_path} is not under results/<paper>/models/")
    at = len(parts) - 1 - parts[::-1].index("models")
    if at == 0:
        raise ValueError(f"{history_path} names no paper above models/")
    return parts[at - 1], list(parts[at + 1 : -1])


def _cnn_training(paper: str, folders: list[str], history_path: Path) -> Training:
    """A training of the shared training core: metrics.json and run_info.json beside the history."""
    metrics = _read_json(history_path.with_name("metrics.json"))
    if not metrics:
        raise FileNotFoundError(f"no metrics.json beside {history_path}")
    options = metrics.get("options", {})
    backbone = options.get("backbone", "")
    n_images = metrics.get("n_images", {})
    # a further seed of a model (n_seeds > 1) lies in seed-<i>/ under the model's folder
    seed_folder = folders[-1] if folders and _SEED_FOLDER.fullmatch(folders[-1]) else None
    model_folders = folders[:-1] if seed_folder else folders
    name = "/".join(folders)
    folders = model_folders
    if paper == "effnet_ham":
        model, variant = backbone, folders[0]
        metric, value = "val AUROC", metrics.get("val", {}).get("auroc", math.nan)
    elif paper == "siim2020":
        protocol, kind, dataset = folders
        model, variant = f"{kind} ({backbone})", f"{dataset}, {protocol} protocol"
        metric, value = "val AUROC", metrics.get("val_auroc", math.nan)
    elif paper == "gradcam_overlap":
        # the folder is the config's model key (vgg16 may run as vgg16_bn): both are shown
        model, variant = f"{folders[0]} ({backbone})", ""
        metric, value = "val accuracy", metrics.get("best_val_accuracy", math.nan)
    else:
        raise ValueError(f"{history_path}: no reader for paper {paper!r}")
    if seed_folder:
        variant = f"{variant}, {seed_folder}" if variant else seed_folder
    return Training(
        paper=paper,
        name=name,
        model=model,
        variant=variant,
        history=pd.read_csv(history_path),
        metrics=metrics,
        run_info=_read_json(history_path.with_name("run_info.json")),
        best_epoch=metrics.get("best_epoch"),
        validation_metric=metric,
        validation_value=float(value),
        # siim2020 counts its training rows itself; the others by split
        training_images=metrics.get("n_train", n_images.get("train")),
        seed=options.get("seed"),
        epochs_planned=options.get("epochs"),
    )


def _gcn_mil_training(folders: list[str], history_path: Path) -> Training:
    """A gcn_mil run: its history TSV and the adjacency folder's run_info.json."""
    match = _GCN_MIL_HISTORY.fullmatch(history_path.name)
    if match is None or len(folders) != 1:
        raise ValueError(f"{history_path} is not models/<adjacency>/run-<R>_history.tsv")
    run = int(match.group(1))
    history = pd.read_csv(history_path, sep="\t")
    # gcn_mil counts epochs from 0, the training core from 1: shifted so both read alike.
    history["epoch"] = history["epoch"] + 1
    run_info = _read_json(history_path.with_name("run_info.json"))
    metrics = _read_json(history_path.with_name(f"run-{run}_metrics.json"))
    base_seed = run_info.get("seed")
    return Training(
        paper="gcn_mil",
        name=f"{folders[0]}/run-{run}",
        model="GCN-MIL head",
        variant=f"{folders[0]} radius, run {run}",
        history=history,
        metrics=metrics,
        run_info=run_info,
        training_images=metrics.get("n_train"),
        # No selection: the model after the last epoch is the one evaluated.
        best_epoch=int(history["epoch"].iloc[-1]) if len(history) else None,
        validation_metric="val accuracy",
        validation_value=float(history["val_accuracy"].iloc[-1]) if len(history) else math.nan,
        # the run's torch seed is the config seed plus the run index
        seed=None if base_seed is None else int(base_seed) + run,
        epochs_planned=run_info.get("config", {}).get("train", {}).get("epochs"),
    )


def read_training(history_path: str | Path) -> Training:
    """The training whose history file is ``history_path`` (see the module docstring)."""
    history_path = Path(history_path)
    paper, folders = _paper_and_parts(history_path)
    if paper == "gcn_mil":
        return _gcn_mil_training(folders, history_path)
    return _cnn_training(paper, folders, history_path)


def _device(training: Training) -> str:
    """``cpu`` or ``cuda``, with the claimed GPU's name when run_info.json has one."""
    device = training.metrics.get("device") or training.run_info.get("device") or ""
    gpus = (training.run_info.get("gpu") or {}).get("devices") or []
    names = [str(g.get("name")) for g in gpus if isinstance(g, Mapping) and g.get("name")]
    return f"{device} ({', '.join(names)})" if names else str(device)


def _optional_int(value: Any) -> Any:
    return pd.NA if value is None else int(value)


def _row(training: Training) -> dict[str, Any]:
    history = training.history
    epochs_run = int(training.metrics.get("epochs_run", len(history)))
    seconds = float(training.metrics.get("train_seconds", history["seconds"].sum()))
    images = training.training_images
    # whole epochs (training and validation pass) over their wall time
    per_second = images * epochs_run / seconds if images and seconds > 0 else math.nan
    monitor = training.metrics.get("options", {}).get("monitor", "last epoch (no selection)")
    return {
        "paper": training.paper,
        "training": training.name,
        "model": training.model,
        "data set": PAPER_DATA_SETS.get(training.paper, ""),
        "variant": training.variant,
        "device": _device(training),
        "torch threads": _optional_int(training.metrics.get("torch_threads")),
        "seed": _optional_int(training.seed),
        "epochs run": epochs_run,
        "epochs planned": _optional_int(training.epochs_planned),
        "best epoch": _optional_int(training.best_epoch),
        "wall time (s)": seconds,
        "training images": _optional_int(images),
        "images/s": per_second,
        "best epoch chosen by": monitor,
        "validation metric": training.validation_metric,
        "validation value": training.validation_value,
        "final val loss": float(history["val_loss"].iloc[-1]) if len(history) else math.nan,
    }


def training_table(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per training, in the order of ``paths`` (each a training's history file).

    Columns: :data:`COLUMNS`. ``images/s`` is training images x epochs run / wall time, where
    the wall time is the sum of the epochs' seconds (training and validation pass, as the
    history records them; resumed epochs count once each).
    """
    rows = [_row(read_training(p)) for p in paths]
    return pd.DataFrame(rows, columns=COLUMNS)


def draw_learning_curves(histories: Sequence[str | Path], *, columns: int = 4) -> Any:
    """One figure for one paper's trainings: small multiples, one panel per training with its
    training and validation loss per epoch and the best (kept) epoch marked (dotted line).

    Returns the matplotlib figure; panels beyond the trainings are hidden.
    """
    from melrepro.report.figures import new_figure

    trainings = [read_training(p) for p in histories]
    if not trainings:
        raise ValueError("no training histories to plot")
    papers = sorted({t.paper for t in trainings})
    if len(papers) != 1:
        raise ValueError(f"one paper per figure, got {papers}")
    ncols = min(columns, len(trainings))
    nrows = math.ceil(len(trainings) / ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows + 0.8), squeeze=False)
    for ax, training in zip(axes.flat, trainings, strict=False):
        h = training.history
        ax.plot(h["epoch"], h["train_loss"], "o-", ms=3, color="tab:blue", label="training loss")
        ax.plot(h["epoch"], h["val_loss"], "s--", ms=3, color="tab:orange", label="validation loss")
        if training.best_epoch is not None:
            ax.axvline(training.best_epoch, color="k", ls=":", lw=1.2, label="best (kept) epoch")
        ax.set_title(f"{training.model}\n{training.variant}".strip(), fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(trainings) :]:
        ax.set_visible(False)
    fig.supylabel("loss")
    fig.suptitle(
        f"{papers[0]}: training and validation loss per epoch ({len(trainings)} trainings)"
    )
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    return fig


def plot_learning_curves(
    histories: Sequence[str | Path], output: str | Path, *, columns: int = 4
) -> Path:
    """:func:`draw_learning_curves` of one paper's history files, saved as ``output`` (PNG) and
    the same figure as PDF beside it."""
    from melrepro.report.figures import save_figure

    return save_figure(draw_learning_curves(histories, columns=columns), output)
