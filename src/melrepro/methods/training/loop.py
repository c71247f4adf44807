"""The training loop: setup, one epoch from its own seed, validation with precise BN and the
best checkpoint, early stopping, resume, and :func:`train_model` over all of it; evaluation and
prediction in eval mode.

Randomness is derived from ``(seed, epoch)`` at the start of every epoch, which makes a resumed
run bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from melrepro.methods import metrics
from melrepro.methods.devices import choose_device
from melrepro.methods.training.checkpoint import (
    TrainResult,
    _atomic_save,
    _resume,
    _Run,
    _save_last,
)
from melrepro.methods.training.data import (
    ArrayDataset,
    RawImages,
    TrainLoader,
    _data_fingerprint,
    _eval_loader,
    _to_device,
    augment_on_device,
)
from melrepro.methods.training.models import (
    CNNClassifier,
    ModelFactory,
    _factory_fingerprint,
    build_model,
)
from melrepro.methods.training.optim import (
    _amp_dtype,
    _inverse_time_lr,
    _make_optimizer,
    _make_scheduler,
    make_loss,
    mixup_batch,
)
from melrepro.methods.training.options import TrainOptions

__all__ = ["evaluate", "predict", "recalibrate_batchnorm", "train_model"]

logger = logging.getLogger(__name__)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    # Third-party code may draw from the legacy global NumPy RNG.
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 10_007 + epoch


def _forward(model: nn.Module, x: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    z = model(x, meta if meta.shape[-1] > 0 else None)
    return z.squeeze(-1) if z.shape[-1] == 1 else z


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if logits.ndim == 1 else torch.softmax(logits, dim=1)


def _set_frozen(model: CNNClassifier, frozen: bool) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    options: TrainOptions,
    device: torch.device,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    loader: DataLoader | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Run the model over a dataset in eval mode.

    ``loader`` is a loader of ``dataset`` built once and reused (validation every epoch);
    by default one is built for this call.

    Returns
    -------
    loss : float
        Mean loss over the dataset (NaN when ``loss_fn`` is None).
    probabilities : (N,) or (N, C) ndarray
    labels : (N,) int ndarray
    """
    model.eval()
    if loader is None:
        loader = _eval_loader(dataset, options.eval_batch_size, options)
    logits_all, labels_all = [], []
    with torch.inference_mode():
        for x, y, meta in loader:
            x, y_dev, meta = _to_device(x, y, meta, device)
            logits_all.append(_forward(model, x, meta).float().cpu())
            labels_all.append(y)
    logits = torch.cat(logits_all)
    labels = torch.cat(labels_all)
    if len(labels) != len(dataset):
        logger.warning("evaluated %d samples, dataset has %d", len(labels), len(dataset))
    loss = float(loss_fn(logits, labels)) if loss_fn is not None else float("nan")
    # float64 so that large logits do not saturate to tied probabilities of exactly 0 or 1.
    return loss, _probabilities(logits.double()).numpy(), labels.numpy()


def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    options: TrainOptions,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Probabilities for every item of ``dataset`` (positive class for a binary model)."""
    _, probs, _ = evaluate(model, dataset, options=options, device=torch.device(device))
    return probs


def recalibrate_batchnorm(
    model: nn.Module,
    dataset: ArrayDataset,
    *,
    options: TrainOptions,
    device: torch.device,
    n_batches: int,
    seed: int = 0,
    loader: TrainLoader | None = None,
    device_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Recompute every BatchNorm layer's running mean and variance for the current weights.

    The statistics are reset and re-estimated as an exact average (``momentum=None``) over
    ``n_batches`` training batches (the training loader: sampler and augmentation), with the
    rest of the network in eval mode (no dropout or stochastic depth), as in "precise BN"
    (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"). Parameters are not touched.

    ``loader`` is the run's training loader (reused; by default one is built over ``dataset``),
    and ``device_transform`` the augmentation run on the device when that loader yields
    uint8 images (:class:`RawImages`), so the statistics are those of the training inputs.

    Returns
    -------
    int
        Number of images used.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or n_batches <= 0:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    if loader is None:
        loader = TrainLoader(dataset, options.batch_size, options=options, labels=dataset.labels)
    seen = 0
    with torch.no_grad():
        for i, (x, y, meta) in enumerate(loader.epoch(seed)):
            if i >= n_batches:
                break
            x, _, meta = _to_device(x, y, meta, device)
            if device_transform is not None:
                x = augment_on_device(x, device_transform)
            _forward(model, x, meta)
            seen += len(x)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return seen


def _val_score(monitor: str, loss: float, probs: np.ndarray, labels: np.ndarray) -> float:
    """The monitored value, oriented so that larger is better."""
    if monitor == "val_loss":
        return -loss
    if monitor == "val_auroc":
        if probs.ndim == 2:
            return float(metrics.skm.roc_auc_score(labels, probs, multi_class="ovr"))
        return metrics.auroc(labels, probs)
    if monitor == "val_accuracy":
        pred = probs.argmax(1) if probs.ndim == 2 else (probs >= 0.5).astype(int)
        return float(np.mean(pred == labels))
    pred = probs.argmax(1) if probs.ndim == 2 else (probs >= 0.5).astype(int)
    return metrics.balanced_accuracy(labels, pred)


def _train_one_epoch(
    model: CNNClassifier,
    loader: Iterator,
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    options: TrainOptions,
    device: torch.device,
    generator: torch.Generator,
    device_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    model.train()
    amp_dtype = _amp_dtype(options, device)
    use_amp = amp_dtype is not None
    total, count = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    n_batches = len(loader)  # a DataLoader iterator knows its length
    for i, (x, y, meta) in enumerate(loader):
        x, y, meta = _to_device(x, y, meta, device)
        if device_transform is not None:
            x = augment_on_device(x, device_transform)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            if options.mixup_alpha > 0:
                x, y_a, y_b, lam = mixup_batch(x, y, options.mixup_alpha, generator)
                z = _forward(model, x, meta)
                loss = lam * loss_fn(z.float(), y_a) + (1 - lam) * loss_fn(z.float(), y_b)
            else:
                z = _forward(model, x, meta)
                loss = loss_fn(z.float(), y)
        scaler.scale(loss / options.accumulation_steps).backward()
        if (i + 1) % options.accumulation_steps == 0 or i + 1 == n_batches:
            if options.scheduler == "inverse_time":
                _inverse_time_lr(optimizer, options)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        total += float(loss.detach()) * len(y)
        count += len(y)
    return total / max(count, 1)


def _setup(
    options: TrainOptions, fingerprint: str, model_factory: ModelFactory | None = None
) -> _Run:
    """Threads, determinism, device; then model, optimiser, schedule, scaler and loss."""
    if options.threads:
        # The rule's threads cover torch and the loader workers (each worker runs 1 thread).
        torch.set_num_threads(max(1, options.threads - options.num_workers))
    if options.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    device = choose_device(options.device)
    logger.info("torch threads %d, loader workers %d", torch.get_num_threads(), options.num_workers)
    logger.info(
        "Creating model %s (pretrained=%s) on %s", options.backbone, options.pretrained, device
    )
    if model_factory is None:
        model = build_model(options).to(device)
    else:
        torch.manual_seed(options.seed)
        model = model_factory(options).to(device)
    if device.type == "cuda" or options.cpu_channels_last:
        # Faster convolutions (tensor cores; oneDNN on the CPU). CPU runs keep the default layout
        # unless asked: the layout changes the summation order, hence the numbers.
        model = model.to(memory_format=torch.channels_last)
    if options.compile:
        model.compile()  # nn.Module.compile: in place, state_dict keys unchanged
    optimizer = _make_optimizer(model, options)
    return _Run(
        model=model,
        optimizer=optimizer,
        scheduler=_make_scheduler(optimizer, options),
        scaler=torch.amp.GradScaler(
            device.type, enabled=_amp_dtype(options, device) is torch.float16
        ),
        loss_fn=make_loss(options),
        device=device,
        fingerprint=fingerprint,
    )


@dataclass
class _Loaders:
    """The loaders of one run, built once (workers persist across epochs)."""

    train_dataset: Dataset
    val_dataset: Dataset
    train: TrainLoader
    val: DataLoader
    device_transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def build(
        cls,
        train_dataset: ArrayDataset,
        val_dataset: Dataset,
        options: TrainOptions,
        device_transform: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> _Loaders:
        train = TrainLoader(
            train_dataset if device_transform is None else RawImages(train_dataset),
            options.batch_size,
            options=options,
            labels=train_dataset.labels,
        )
        val = _eval_loader(val_dataset, options.eval_batch_size, options)
        return cls(train_dataset, val_dataset, train, val, device_transform)


def _validate(
    run: _Run, loaders: _Loaders, options: TrainOptions, epoch: int, best_path: Path
) -> tuple[float, float, bool]:
    """Validation loss and monitored score; saves ``best_path`` when the score improves."""
    if options.bn_recalibration and isinstance(loaders.train_dataset, ArrayDataset):
        recalibrate_batchnorm(
            run.model,
            loaders.train_dataset,
            options=options,
            device=run.device,
            n_batches=options.bn_recalibration,
            seed=_epoch_seed(options.seed, epoch) + 2,
            loader=loaders.train,
            device_transform=loaders.device_transform,
        )
    val_loss, probs, labels = evaluate(
        run.model,
        loaders.val_dataset,
        options=options,
        device=run.device,
        loss_fn=run.loss_fn,
        loader=loaders.val,
    )
    score = (
        float(epoch)
        if options.monitor == "last_epoch"
        else _val_score(options.monitor, val_loss, probs, labels)
    )
    # A NaN score (e.g. AUROC of a one-class validation set) never improves, but the
    # first epoch is always kept so that a best checkpoint exists.
    improved = bool(score > run.best_score) or run.best_epoch == 0
    if improved:
        run.best_score, run.best_epoch, run.stale = score, epoch, 0
        _atomic_save({"model": run.model.state_dict(), "epoch": epoch}, best_path)
    else:
        run.stale += 1
    return val_loss, score, improved


def _run_epoch(
    run: _Run, loaders: _Loaders, options: TrainOptions, epoch: int, best_path: Path
) -> dict[str, float]:
    """One epoch from its own seed: train, step the schedule, validate; the history row."""
    t0 = time.perf_counter()
    seed = _epoch_seed(options.seed, epoch)
    _seed_everything(seed)
    frozen = epoch <= options.freeze_epochs
    _set_frozen(run.model, frozen)
    lr = run.optimizer.param_groups[0]["lr"]
    train_loss = _train_one_epoch(
        run.model,
        loaders.train.epoch(seed),
        optimizer=run.optimizer,
        scaler=run.scaler,
        loss_fn=run.loss_fn,
        options=options,
        device=run.device,
        generator=torch.Generator().manual_seed(seed + 1),
        device_transform=loaders.device_transform,
    )
    run.scheduler.step()
    val_loss, score, improved = _validate(run, loaders, options, epoch, best_path)
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        options.monitor: score if options.monitor != "val_loss" else val_loss,
        "lr": lr,
        "frozen": frozen,
        "seconds": time.perf_counter() - t0,
    }
    run.history.append(row)
    logger.info(
        "epoch=%03d train_loss=%.4f val_loss=%.4f %s=%.4f lr=%.2e frozen=%s%s",
        epoch,
        train_loss,
        val_loss,
        options.monitor,
        row[options.monitor],
        lr,
        frozen,
        " *" if improved else "",
    )
    return row


def train_model(
    train_dataset: ArrayDataset,
    val_dataset: Dataset,
    options: TrainOptions,
    *,
    checkpoint_dir: str | Path,
    history_path: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    model_factory: ModelFactory | None = None,
    device_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TrainResult:
    """Train a classifier, checkpointing every epoch, and return the best one.

    Parameters
    ----------
    train_dataset : ArrayDataset
        Training data with augmentations in its transform; its ``labels`` drive the sampler.
    val_dataset : Dataset
        Validation data (no augmentation), used for the loss curve, the monitored metric,
        early stopping and the best checkpoint.
    options : TrainOptions
    checkpoint_dir : path
        Holds ``last.pt`` (everything needed to resume) and ``best.pt`` (best weights). Keep it
        outside Snakemake's declared outputs so a killed job's checkpoints survive. A
        ``last.pt`` written with other options or other data is ignored (and overwritten).
    history_path : path, optional
        CSV of per-epoch ``epoch, train_loss, val_loss, val_score, lr, frozen, seconds``,
        rewritten after every epoch (a running job's progress can be followed there).
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, row)`` after the checkpoint of each epoch is written
        (used by tests to kill a run).
    model_factory : callable, optional
        Builds the model from ``options`` instead of :func:`build_model` (siim2020's metadata
        head and experts, :mod:`melrepro.methods.metadata_models`); see :data:`ModelFactory`.
    device_transform : callable, optional
        Training augmentation run on the device, per image of each uint8 batch (for example
        :func:`melrepro.methods.transforms.train_transform`); the training set's own transform
        is then skipped and the loader only collates cached uint8 images.

    Returns
    -------
    TrainResult
        The model holds the best weights (by ``options.monitor``) and is on ``device``.

    Notes
    -----
    Every epoch re-seeds Python, NumPy and torch from ``(seed, epoch)`` and draws its order
    from a generator seeded the same way, so resuming from epoch ``k`` replays exactly what an
    uninterrupted run does from epoch ``k + 1`` (on CPU with ``deterministic=True``). The
    training and validation loaders are built once per run; loader workers persist across
    epochs and augment every item from its own seed (:class:`TrainLoader`), so the result is
    the same with any number of workers (but differs from main-process loading).
    """
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _run_fingerprint(options, train_dataset, val_dataset, model_factory)
    run = _setup(options, fingerprint, model_factory)
    last_path, best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    resumed_from, was_finished = _resume(run, last_path)
    start_epoch = options.epochs + 1 if was_finished else resumed_from + 1
    _train_epochs(
        run,
        train_dataset,
        val_dataset,
        options,
        start_epoch=start_epoch,
        last_path=last_path,
        best_path=best_path,
        history_path=history_path,
        on_epoch_end=on_epoch_end,
        device_transform=device_transform,
    )
    return _best_result(run, best_path, history_path, resumed_from)


def _run_fingerprint(
    options: TrainOptions,
    train_dataset: Dataset,
    val_dataset: Dataset,
    model_factory: ModelFactory | None,
) -> str:
    """What a checkpoint must match to be resumed: the options, the data and the factory."""
    # A checkpoint belongs to these options *and* this data: Snakemake reruns the job when an
    # input changes, and the old checkpoints must not be resumed then.
    fingerprint = f"{options.fingerprint()}-{_data_fingerprint(train_dataset, val_dataset)}"
    if model_factory is not None:
        fingerprint += (
            "-" + hashlib.sha256(_factory_fingerprint(model_factory).encode()).hexdigest()[:16]
        )
    return fingerprint


def _train_epochs(
    run: _Run,
    train_dataset: ArrayDataset,
    val_dataset: Dataset,
    options: TrainOptions,
    *,
    start_epoch: int,
    last_path: Path,
    best_path: Path,
    history_path: str | Path | None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
    device_transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> None:
    """Epochs ``start_epoch`` .. ``options.epochs`` (or until early stopping), each followed by
    its ``last.pt`` and the history so far; nothing (no loaders either) when the run already
    finished."""
    logger.info(
        "Start training: %d epochs, %d train / %d val images",
        options.epochs,
        len(train_dataset),
        len(val_dataset),
    )
    t_start = time.perf_counter()
    epoch = start_epoch
    finished = start_epoch > options.epochs
    loaders = (
        None if finished else _Loaders.build(train_dataset, val_dataset, options, device_transform)
    )
    while not finished:
        row = _run_epoch(run, loaders, options, epoch, best_path)
        patience = options.early_stopping_patience
        finished = epoch >= options.epochs or (patience is not None and run.stale >= patience)
        if finished and epoch < options.epochs:
            logger.info("Early stopping after epoch %d (best epoch %d)", epoch, run.best_epoch)
        _save_last(run, options, epoch, finished, last_path)
        _write_history(run.history, history_path)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        epoch += 1
    logger.info(
        "Training done in %.1f s; best epoch %d (%s=%.4f)",
        time.perf_counter() - t_start,
        run.best_epoch,
        options.monitor,
        run.best_score,
    )


def _write_history(history: list[dict[str, Any]], path: str | Path | None) -> pd.DataFrame:
    """The history as a frame, written to ``path`` (when given) through a temporary file, so a
    reader never sees half a file."""
    frame = pd.DataFrame(history)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(path)
    return frame


def _best_result(
    run: _Run, best_path: Path, history_path: str | Path | None, resumed_from: int
) -> TrainResult:
    """The run's model with ``best.pt``'s weights, its history (written to ``history_path``
    when given) and how it was obtained."""
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    run.model.load_state_dict(best["model"])
    hist = _write_history(run.history, history_path)
    return TrainResult(
        model=run.model,
        history=hist,
        best_epoch=run.best_epoch,
        best_score=run.best_score,
        device=str(run.device),
        weights=run.model.weights_name,
        resumed_from_epoch=resumed_from,
        torch_threads=torch.get_num_threads(),
    )
