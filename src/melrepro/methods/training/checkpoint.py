"""Checkpoints of a training run and what a finished run publishes.

``last.pt`` holds everything needed to resume (:func:`_save_last`, :func:`_resume`), ``best.pt``
the best weights; both are written atomically. :func:`export_best` publishes ``best.pt`` as a
rule's model output, :func:`load_model` rebuilds a model from it, and
:func:`write_run_outputs` writes the predictions, model and metrics of a finished run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from melrepro.methods.training.models import CNNClassifier, ModelFactory, build_model
from melrepro.methods.training.options import TrainOptions

__all__ = ["TrainResult", "export_best", "load_model", "run_summary", "write_run_outputs"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train_model` returns: the best model and how it was obtained."""

    model: CNNClassifier
    history: pd.DataFrame
    best_epoch: int
    best_score: float
    device: str
    weights: str
    resumed_from_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: torch's intra-op threads the run computed with (CPU results depend on it)
    torch_threads: int = 0


@dataclass
class _Run:
    """Everything one training run mutates: model, optimiser state and bookkeeping."""

    model: CNNClassifier
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    device: torch.device
    fingerprint: str
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -float("inf")
    best_epoch: int = 0
    stale: int = 0


def _execution(device: torch.device, options: dict[str, Any]) -> dict[str, Any]:
    """What changes results without being a training option: device type, AMP, and whose
    random stream augments the images (the main process's, or per item with loader workers,
    whatever their number: see :class:`TrainLoader`).

    Stored beside the fingerprint in ``last.pt``, not in it, so that a checkpoint written on the
    CPU resumes on a GPU and back (with a warning that the rest is not bit-identical).
    """
    amp = bool(options.get("amp")) and device.type == "cuda"
    stream = "per-item seeds" if options.get("num_workers", 0) else "main process"
    return {"device": device.type, "amp": amp, "augmentation": stream}


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _resume(run: _Run, last_path: Path) -> tuple[int, bool]:
    """Load ``last_path`` into ``run`` if it belongs to this run; return (last epoch, finished).

    A checkpoint written with other options or other data is ignored (epoch 0), and so is a
    finished one whose ``best.pt`` is gone. A finished run's ``last.pt`` holds only its
    bookkeeping (see :func:`_save_last`): the weights are ``best.pt``'s.
    """
    if not last_path.exists():
        return 0, False
    ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
    if ckpt.get("fingerprint") != run.fingerprint:
        logger.warning("Ignoring %s: written with other options or data", last_path)
        return 0, False
    finished = bool(ckpt.get("finished"))
    if finished and not (last_path.parent / "best.pt").exists():
        logger.warning("Ignoring %s: the run finished but its best.pt is missing", last_path)
        return 0, False
    run.history = ckpt["history"]
    run.best_score, run.best_epoch, run.stale = (
        ckpt["best_score"],
        ckpt["best_epoch"],
        ckpt["stale"],
    )
    if finished:
        logger.info("%s: finished after epoch %d, not retrained", last_path, ckpt["epoch"])
        return ckpt["epoch"], True
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    # A CPU (or bf16) run saves a disabled GradScaler's empty state; an fp16 CUDA run keeps
    # its fresh scaler then (loading {} raises), and a disabled scaler ignores any state.
    if ckpt["scaler"] and run.scaler.is_enabled():
        run.scaler.load_state_dict(ckpt["scaler"])
    written_on = ckpt.get("execution")
    if written_on is not None and written_on != _execution(run.device, ckpt.get("options", {})):
        logger.warning(
            "Resuming %s written with %s on %s: the remaining epochs are not bit-identical to "
            "an uninterrupted run",
            last_path,
            written_on,
            _execution(run.device, ckpt.get("options", {})),
        )
    logger.info("Resuming from %s after epoch %d", last_path, ckpt["epoch"])
    return ckpt["epoch"], False


def _save_last(run: _Run, options: TrainOptions, epoch: int, finished: bool, path: Path) -> None:
    """Everything needed to resume after ``epoch`` (the checkpoint format of ``last.pt``).

    Once the run is finished only its bookkeeping is kept: a rerun loads ``best.pt`` without
    training, and the weights and optimiser state (3x the model for Adam) would only fill the
    disk (siim2020's 16 default trainings: 4.1 GB of last.pt).
    """
    state = (
        {}
        if finished
        else {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
        }
    )
    _atomic_save(
        {
            **state,
            "epoch": epoch,
            "history": run.history,
            "best_score": run.best_score,
            "best_epoch": run.best_epoch,
            "stale": run.stale,
            "finished": finished,
            "fingerprint": run.fingerprint,
            "execution": _execution(run.device, options.to_dict()),
            "options": options.to_dict(),
            "seed": options.seed,
        },
        path,
    )


def export_best(checkpoint_dir: str | Path, model_path: str | Path) -> None:
    """Publish ``checkpoint_dir/best.pt`` as ``model_path`` (a rule's output) without a second
    copy of the weights: a hard link, else (another file system) a copy.

    :func:`_atomic_save` replaces ``best.pt`` by a new file, so a later checkpoint never changes
    the linked ``model_path``.
    """
    source, target = Path(checkpoint_dir) / "best.pt", Path(model_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:  # another file system, or links not supported
        shutil.copyfile(source, target)


def load_model(
    path: str | Path, options: TrainOptions, model_factory: ModelFactory | None = None
) -> CNNClassifier:
    """Rebuild a model from a weights file written by the effnet_ham rules or ``best.pt``.

    ``model_factory`` rebuilds a model trained with ``train_model(model_factory=...)``; it is
    called with ``pretrained=False`` options.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    # The weights come from the file: never download ImageNet weights to be overwritten.
    plain = dataclasses.replace(options, pretrained=False)
    model = build_model(plain) if model_factory is None else model_factory(plain)
    model.load_state_dict(state.get("model", state))
    model.eval()
    return model


def run_summary(result: TrainResult, options: TrainOptions) -> dict[str, Any]:
    """The keys every paper's ``metrics.json`` has about its training run: ``best_epoch``,
    ``epochs_run``, ``train_seconds``, ``device``, ``torch_threads``, ``weights`` and
    ``options``."""
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": float(result.history["seconds"].sum()),
        "device": result.device,
        "torch_threads": result.torch_threads,
        "weights": result.weights,
        "options": options.to_dict(),
    }


def write_run_outputs(
    result: TrainResult,
    options: TrainOptions,
    predictions: pd.DataFrame,
    *,
    predictions_path: str | Path,
    checkpoint_dir: str | Path,
    model_path: str | Path,
    metrics_path: str | Path,
    metrics: Mapping[str, Any],
) -> dict[str, Any]:
    """Publish a finished training: predictions, model and metrics, in that order.

    Writes ``predictions`` to ``predictions_path`` (parquet, without the index; its folder is
    created), publishes ``checkpoint_dir/best.pt`` as ``model_path`` (:func:`export_best`) and
    writes ``metrics_path`` as indented JSON: ``metrics`` followed by the keys of
    :func:`run_summary` that ``metrics`` does not set (a key set in ``metrics`` keeps its value
    and its place, so a caller fixes the order of the file by listing them).

    Returns
    -------
    dict
        What was written to ``metrics_path``.
    """
    Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(predictions_path, index=False)
    export_best(checkpoint_dir, model_path)
    info = dict(metrics)
    for key, value in run_summary(result, options).items():
        info.setdefault(key, value)
    Path(metrics_path).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return info
