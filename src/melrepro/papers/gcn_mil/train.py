"""Cached DR bags -> one trained GCN-MIL head (``train_gcn_mil``), resumable per epoch.

A training epoch only runs the GCN-MIL head on the cached block features: one draw per
(image, DR angle) among its precomputed flips / quarter turns, shuffled, seeded by
``(seed, run, epoch)``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from melrepro.methods import mil
from melrepro.methods.devices import choose_device
from melrepro.papers.gcn_mil.bags import (
    BagGraphs,
    collate,
    feature_moments,
    load_bags,
    permute_training_labels,
)
from melrepro.papers.gcn_mil.common import atomic_torch_save, write_run_info
from melrepro.papers.gcn_mil.options import ModelOptions, TrainOptions, as_options

# The paper's one logger (its log lines name it, as before the package split).
logger = logging.getLogger("melrepro.papers.gcn_mil")


def _run_epoch(
    model, bags, graphs, optimizer, dev, batch_size: int, *, epoch: int, lr: float
) -> tuple[float, float]:
    """One pass over ``bags`` (in that order); raises at once on a non-finite training loss."""
    training = optimizer is not None
    model.train(training)
    total, correct, loss_sum = 0, 0, 0.0
    with torch.set_grad_enabled(training):
        for start in range(0, len(bags), batch_size):
            x, edge_index, batch, y = collate(bags[start : start + batch_size], graphs, dev)
            logits, _ = model(x, edge_index, batch)
            loss = nn.functional.cross_entropy(logits, y)
            value = float(loss.detach())
            if training and not np.isfinite(value):
                raise FloatingPointError(
                    f"training loss is {value} at epoch {epoch}, step {start // batch_size} "
                    f"(learning rate {lr:g}); the run diverged: lower train.lr / train.lr_after"
                )
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            loss_sum += value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
    return loss_sum / max(total, 1), correct / max(total, 1)


def _training_bags(
    feature_paths: Sequence[str | Path], label_shuffle_seed: int | None = None
) -> tuple[list[dict[str, Any]], list[list[int]], list[dict[str, Any]]]:
    """Training bags, their groups by (image, DR angle) and the 0° validation bags; with
    ``label_shuffle_seed``, the training labels permuted among the training images."""
    train_set = load_bags(feature_paths, splits=["train"])
    if label_shuffle_seed is not None:
        permute_training_labels(train_set, label_shuffle_seed)
    # One draw per (image, DR angle) and epoch among its precomputed flips / quarter turns.
    groups: dict[tuple[str, float], list[int]] = {}
    for i, bag in enumerate(train_set):
        groups.setdefault((bag["image_id"], bag["angle"]), []).append(i)
    members = list(groups.values())
    val_set = load_bags(feature_paths, splits=["val"], angle_zero_only=True)
    if not train_set:
        raise ValueError(f"no training bags in {list(feature_paths)}")
    return train_set, members, val_set


def _new_model(
    train_set: Sequence[Mapping[str, Any]],
    model_opts: ModelOptions,
    train_opts: TrainOptions,
    run_seed: int,
    dev: torch.device,
) -> mil.GCNMIL:
    """The head, initialised from ``run_seed``, with the training set's feature scaling."""
    torch.manual_seed(run_seed)
    net = mil.GCNMIL(
        train_set[0]["features"].shape[1],
        model_opts.hidden_channels,
        model_opts.attention_channels,
        len(mil.CLASSES),
        init=model_opts.init,
    ).to(dev)
    if train_opts.standardize_features:
        # DEVIATION: block features standardised per channel with training statistics, because
        # frozen (and random-init) ResNet18 features vary little between blocks; the paper
        # fine-tunes the backbone instead.
        mean, std = feature_moments(train_set)
        net.set_feature_scaling(mean.to(dev), std.to(dev))
    return net


def _fingerprint(
    model_opts: ModelOptions,
    train_opts: TrainOptions,
    adjacency: str,
    radius_factor: float,
    feature_paths: Sequence[str | Path],
    shuffle_labels: bool = False,
) -> str:
    """What a checkpoint must match to be resumed: the same settings on the same features."""
    return json.dumps(
        {
            "shuffle_labels": shuffle_labels,
            "model": asdict(model_opts),
            # More epochs continue a run; any other change starts afresh.
            "train": {k: v for k, v in asdict(train_opts).items() if k != "epochs"},
            "graph": [adjacency, float(radius_factor)],
            "features": [
                (str(p), Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in feature_paths
            ],
        },
        sort_keys=True,
    )


def _resume(
    checkpoint_path: Path,
    net: mil.GCNMIL,
    optimizer,
    scheduler,
    *,
    seed: int,
    run: int,
    fingerprint: str,
    epochs: int,
) -> tuple[int, list[dict[str, float]]]:
    """Load a matching checkpoint into the model, optimizer and scheduler: (next epoch, history).

    ``(0, [])`` when there is none, or it belongs to another run or is past ``epochs``.
    """
    if not checkpoint_path.exists():
        return 0, []
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    same = (
        state.get("seed") == seed
        and state.get("run") == run
        and state.get("fingerprint") == fingerprint
    )
    if same and int(state["epoch"]) + 1 > epochs:
        logger.warning(
            "ignoring %s: it is at epoch %d, past the %d epochs asked for; retraining",
            checkpoint_path,
            int(state["epoch"]) + 1,
            epochs,
        )
    elif same:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        history = list(state.get("history", []))
        logger.info("resumed run %d from %s at epoch %d", run, checkpoint_path, start_epoch)
        return start_epoch, history
    else:
        logger.warning(
            "ignoring %s: it belongs to another seed, run, settings or features",
            checkpoint_path,
        )
    return 0, []


def _epoch_bags(
    train_set: Sequence[Mapping[str, Any]], members: Sequence[Sequence[int]], generator
) -> list[Mapping[str, Any]]:
    """This epoch's view of every (image, DR angle), in this epoch's order."""
    # 2520 is divisible by every view count 1..8, so the modulo below is uniform.
    picks = torch.randint(0, 2520, (len(members),), generator=generator)
    epoch_set = [train_set[m[int(p) % len(m)]] for m, p in zip(members, picks, strict=True)]
    order = torch.randperm(len(epoch_set), generator=generator).tolist()
    return [epoch_set[i] for i in order]


def _train_epoch(
    net,
    train_set,
    members,
    val_set,
    graphs,
    optimizer,
    scheduler,
    dev,
    opts: TrainOptions,
    *,
    run_seed: int,
    epoch: int,
) -> dict[str, float]:
    """One training epoch and its validation pass: the history row, also logged."""
    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(run_seed * 100_003 + epoch)
    epoch_set = _epoch_bags(train_set, members, generator)
    lr = optimizer.param_groups[0]["lr"]
    train_loss, train_acc = _run_epoch(
        net, epoch_set, graphs, optimizer, dev, opts.batch_size, epoch=epoch, lr=lr
    )
    scheduler.step()
    val_loss, val_acc = (
        _run_epoch(net, val_set, graphs, None, dev, opts.batch_size, epoch=epoch, lr=lr)
        if val_set
        else (float("nan"), float("nan"))
    )
    row = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "seconds": time.perf_counter() - t0,
    }
    logger.info(
        "epoch=%03d lr=%.1e loss=%.4f acc=%.3f val_loss=%.4f val_acc=%.3f",
        epoch,
        lr,
        train_loss,
        train_acc,
        val_loss,
        val_acc,
    )
    return row


def _fit(
    net: mil.GCNMIL,
    optimizer,
    scheduler,
    data: tuple,
    graphs: BagGraphs,
    dev: torch.device,
    opts: TrainOptions,
    *,
    run_seed: int,
    start_epoch: int,
    history: list[dict[str, float]],
    checkpoint_path: Path,
    stamp: Mapping[str, Any],
) -> None:
    """Epochs ``start_epoch`` to the last, each appended to ``history`` and checkpointed.

    ``data`` is ``(train_set, members, val_set)`` of :func:`_training_bags`; ``stamp`` the
    ``seed``, ``run`` and ``fingerprint`` every checkpoint records.
    """
    logger.info(
        "start training: %d epochs on %s, lr %g -> x%g at epoch %d (%s reading)",
        opts.epochs,
        dev,
        opts.lr,
        opts.lr_gamma,
        opts.lr_milestone,
        opts.lr_reading,
    )
    started = time.perf_counter()
    for epoch in range(start_epoch, opts.epochs):
        row = _train_epoch(
            net, *data, graphs, optimizer, scheduler, dev, opts, run_seed=run_seed, epoch=epoch
        )
        history.append(row)
        checkpoint = {
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            **stamp,
            "history": history,
        }
        atomic_torch_save(checkpoint, checkpoint_path)
    logger.info("training done in %.1fs", time.perf_counter() - started)


def _write_outputs(
    net: mil.GCNMIL,
    model_opts: ModelOptions,
    train_opts: TrainOptions,
    graph: Mapping[str, Any],
    history: Sequence[Mapping[str, float]],
    model_path: str | Path,
    history_path: str | Path,
    *,
    run: int,
    seed: int,
    dev: torch.device,
    run_info: Mapping[str, Any] | None,
    metrics_path: str | Path,
    counts: Mapping[str, Any],
    shuffle_labels: bool = False,
) -> Path:
    """The final model, the history TSV, the run's metrics JSON and the model folder's run info.

    The metrics JSON has the keys of the training core's ``metrics.json``
    (:func:`melrepro.methods.training.checkpoint.run_summary`) that the trainings report reads,
    plus ``counts`` (``n_train``: the bags one epoch trains on, one view per image and DR angle;
    ``n_images``: distinct training and validation images).
    """
    model_path = Path(model_path)
    atomic_torch_save(
        {
            "model": net.state_dict(),
            "model_options": asdict(model_opts),
            "graph": graph,
            "run": run,
            "seed": seed,
            "shuffle_labels": shuffle_labels,
        },
        model_path,
    )
    history_path = Path(history_path)
    history_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(history).to_csv(history_path, sep="\t", index=False)
    metrics = {
        # No selection: the model after the last epoch is kept (1-based, as the training core).
        "best_epoch": len(history),
        "epochs_run": len(history),
        "train_seconds": float(sum(row["seconds"] for row in history)),
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "weights": "GCN-MIL head trained on cached frozen-backbone features",
        **counts,
        "options": {
            "seed": seed + run,
            "epochs": train_opts.epochs,
            "model": asdict(model_opts),
            "train": asdict(train_opts),
            "graph": dict(graph),
        },
    }
    Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_run_info(
        model_path.parent,
        run_info,
        config={
            "model": asdict(model_opts),
            "train": asdict(train_opts),
            "graph": graph,
            "run": run,
            "shuffle_labels": shuffle_labels,
        },
        device=str(dev),
        weights="GCN-MIL head trained on cached frozen-backbone features",
    )
    return model_path


def train_gcn_mil(
    feature_paths: Sequence[str | Path],
    model_path: str | Path,
    history_path: str | Path,
    checkpoint_dir: str | Path,
    *,
    run: int = 0,
    seed: int = 0,
    adjacency: str = "block",
    radius_factor: float = float(np.sqrt(2)),
    model: Mapping[str, Any] | ModelOptions | None = None,
    train: Mapping[str, Any] | TrainOptions | None = None,
    shuffle_labels: bool = False,
    device: str = "auto",
    threads: int = 1,
    run_info: Mapping[str, Any] | None = None,
    metrics_path: str | Path | None = None,
) -> Path:
    """Train one GCN-MIL run on the cached DR bags, resuming from a checkpoint when present.

    A checkpoint dict (model, optimizer, scheduler, epoch, seed, run) is written to
    ``checkpoint_dir/checkpoint.pt`` after every epoch; the shuffling of epoch ``e`` is seeded
    by ``(seed, run, e)``, so a resumed run follows the same path as an uninterrupted one. A
    checkpoint past the requested ``epochs`` is not used (the run is retrained from scratch).
    (Why this long: its parameters and this docstring only; the steps are the helpers above.)

    Parameters
    ----------
    feature_paths : sequence of path
        Outputs of :func:`melrepro.papers.gcn_mil.features.extract_gcn_mil_features`.
    model_path : path
        Final ``{"model": state_dict, "model_options": ..., "adjacency": ..., "run": ...}``.
    history_path : path
        TSV, one row per epoch: ``epoch, lr, train_loss, train_accuracy, val_loss,
        val_accuracy, seconds``.
    checkpoint_dir : path
        Not a Snakemake output, so an interrupted job keeps it.
    run, seed : int
        Run index (0..4 for the paper's five runs); the torch seed is ``seed + run``.
    adjacency : {"block", "stride"}
        Reading of Eq. 1's radius (:func:`melrepro.methods.mil.adjacency_unit`).
    radius_factor : float
        √2 in the paper.
    model, train : options or mappings, optional
    shuffle_labels : bool
        The label-shuffled control: the training images' labels are permuted (seeded by
        ``seed + run``; :func:`~melrepro.papers.gcn_mil.bags.permute_training_labels`), the
        validation labels are not; everything else as the model trained on true labels.
    device : {"auto", "cpu", "cuda"}
    threads : int
    run_info : mapping, optional
    metrics_path : path, optional
        JSON of the run (epochs, wall time, device, torch threads, training-set size, options);
        default ``run-<R>_metrics.json`` beside ``history_path``.

    Raises
    ------
    FloatingPointError
        As soon as a training loss is not finite (epoch, step and learning rate named).
    """
    model_opts = as_options(ModelOptions, model)
    train_opts = as_options(TrainOptions, train)
    gamma = train_opts.lr_gamma
    torch.set_num_threads(max(1, threads))
    dev = choose_device(device)
    run_seed = seed + run
    graphs = BagGraphs(adjacency, radius_factor)
    data = _training_bags(feature_paths, run_seed if shuffle_labels else None)
    train_set, members, val_set = data
    logger.info(
        "run %d: %d training bags (DR) in %d views, %d validation bags; adjacency %s "
        "(mean degree %.1f)",
        run,
        len(members),
        len(train_set),
        len(val_set),
        adjacency,
        graphs.mean_degree([train_set[m[0]] for m in members]),
    )
    net = _new_model(train_set, model_opts, train_opts, run_seed, dev)
    optimizer = torch.optim.SGD(net.parameters(), lr=train_opts.lr, momentum=train_opts.momentum)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[train_opts.lr_milestone], gamma=gamma
    )
    checkpoint_path = Path(checkpoint_dir) / "checkpoint.pt"
    # A checkpoint is resumed only by the same run of the same settings on the same features.
    fingerprint = _fingerprint(
        model_opts, train_opts, adjacency, radius_factor, feature_paths, shuffle_labels
    )
    stamp = {"seed": seed, "run": run, "fingerprint": fingerprint}
    start_epoch, history = _resume(
        checkpoint_path, net, optimizer, scheduler, **stamp, epochs=train_opts.epochs
    )
    _fit(
        net, optimizer, scheduler, data, graphs, dev, train_opts,
        run_seed=run_seed, start_epoch=start_epoch, history=history,
        checkpoint_path=checkpoint_path, stamp=stamp,
    )  # fmt: skip
    graph = {"adjacency": adjacency, "radius_factor": float(radius_factor)}
    counts = {
        "n_train": len(members),
        "n_images": {
            "train": len({bag["image_id"] for bag in train_set}),
            "val": len({bag["image_id"] for bag in val_set}),
        },
    }
    if metrics_path is None:
        metrics_path = Path(history_path).with_name(f"run-{run}_metrics.json")
    return _write_outputs(
        net, model_opts, train_opts, graph, history, model_path, history_path,
        run=run, seed=seed, dev=dev, run_info=run_info, metrics_path=metrics_path, counts=counts,
        shuffle_labels=shuffle_labels,
    )  # fmt: skip
