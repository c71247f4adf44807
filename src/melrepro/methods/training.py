"""One training and evaluation loop for every CNN paper (effnet_ham, siim2020, gradcam_overlap).

The loop is configured by :class:`TrainOptions` (built from the config with
:meth:`TrainOptions.from_dict`), takes torch datasets and writes a checkpoint every epoch to a
folder Snakemake does not own, so a killed job resumes where it stopped. Randomness is derived
from ``(seed, epoch)`` at the start of every epoch, which makes a resumed run bit-identical to
an uninterrupted one on CPU.

Pieces: torchvision backbones by name with an optional metadata branch (:class:`CNNClassifier`),
losses (BCE, focal BCE with ``torchvision.ops.sigmoid_focal_loss``, cross-entropy), a weighted
sampler to a target class mix, mixup, gradient accumulation, mixed precision on CUDA, a frozen
backbone warm-up, AdamW/Adam/SGD, cosine annealing, early stopping, and the best checkpoint by a
validation metric.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler
from torchvision.ops import sigmoid_focal_loss

from melrepro.methods import metrics
from melrepro.methods.devices import choose_device

__all__ = [
    "ArrayDataset",
    "CNNClassifier",
    "RawImages",
    "SeededItems",
    "TrainLoader",
    "TrainOptions",
    "TrainResult",
    "augment_on_device",
    "augments_on_device",
    "build_model",
    "evaluate",
    "export_best",
    "gradcam_target_layer",
    "load_model",
    "make_class_sampler",
    "make_loss",
    "make_sampler",
    "ModelFactory",
    "mixup_batch",
    "predict",
    "recalibrate_batchnorm",
    "train_model",
]

logger = logging.getLogger(__name__)

#: vgg16_bn: VGG16 with a batch norm after every convolution (gradcam_overlap's default).
BACKBONES = ("efficientnet_b0", "resnet18", "resnet50", "vgg16", "vgg16_bn")
LOSSES = ("bce", "focal", "ce")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "none", "inverse_time")
MONITORS = ("val_auroc", "val_loss", "val_balanced_accuracy", "last_epoch", "val_accuracy")
HEADS = ("linear", "flatten_mlp")


@dataclass
class TrainOptions:
    """Everything that defines one training run; defaults are effnet_ham's Baseline 2.

    Attributes
    ----------
    backbone : str
        torchvision model name, one of ``BACKBONES``.
    pretrained : bool
        Load torchvision's ImageNet weights (needs them cached or a network); never silently
        replaced by random weights.
    n_classes : int
        1 for a binary problem with one logit, otherwise the number of classes (softmax).
    n_metadata : int
        Width of the tabular metadata vector fed to the head (0: image only).
    metadata_hidden : int
        Hidden width of the metadata MLP.
    dropout : float
        Dropout before the final linear layer.
    loss : str
        ``"bce"``, ``"focal"`` (binary) or ``"ce"`` (multi-class).
    focal_alpha, focal_gamma : float
        Focal BCE parameters, ``torchvision.ops.sigmoid_focal_loss`` semantics: alpha weights
        the positive class, ``1 - alpha`` the negative (paper: 0.6 and 2).
    sampler_positive_fraction : float or None
        Weighted sampling with replacement so that this fraction of drawn samples is positive
        (paper: 0.4, i.e. 60/40 benign/malignant); None shuffles without weighting.
    mixup_alpha : float
        Beta(alpha, alpha) mixup of images and losses; 0 disables it.
    batch_size, eval_batch_size : int
    accumulation_steps : int
        Batches whose gradients are summed before an optimiser step (paper: 2).
    amp : bool
        Mixed precision; only used on CUDA.
    freeze_epochs : int
        Epochs at the start during which only the head (and metadata branch) train.
    optimizer : str
        ``"adamw"``, ``"adam"`` or ``"sgd"``.
    lr, weight_decay, momentum : float
    scheduler : str
        ``"cosine"`` (annealed per epoch) or ``"none"``.
    cosine_t_max : int or None
        Period of the cosine schedule in epochs; None uses ``epochs``.
    epochs : int
    early_stopping_patience : int or None
        Stop after this many epochs without improvement of ``monitor``; None never stops early.
    monitor : str
        Validation metric that picks the best checkpoint: ``"val_auroc"``, ``"val_loss"`` or
        ``"val_balanced_accuracy"``; ``"last_epoch"`` keeps the last epoch (no selection).
    seed : int
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    num_workers : int
        DataLoader worker processes (0: load in the main process).
    threads : int or None
        ``torch.set_num_threads``; None leaves torch's default.
    deterministic : bool
        ``torch.use_deterministic_algorithms`` and no cuDNN benchmarking.
    head : str
        ``"linear"`` (pooled features, dropout, linear) or ``"flatten_mlp"`` (Keras-style, paper
        004 / TIML: the trunk without its pooling, Flatten, Dense ``head_hidden`` ReLU, Dropout,
        Dense ``head_hidden`` ReLU, Dropout, Dense; see :mod:`melrepro.methods.cnn_heads`).
    head_hidden : int
        Width of the two hidden layers of ``flatten_mlp`` (paper 004: 2048).
    image_size : int or None
        Square input side; ``flatten_mlp`` needs it for the width of its first layer.
    nesterov : bool
        Nesterov momentum for SGD.
    lr_decay : float
        With ``scheduler="inverse_time"``: Keras' ``decay``, lr = lr0 / (1 + lr_decay k) before
        optimiser update k (k = 0, 1, ...; per step, not per epoch).
    class_weights : list of float or None
        Per-class weights of ``"ce"`` with Keras ``class_weight`` semantics: the batch loss is
        ``mean(w_y * CE)`` (not torch's ``weight=``, which divides by the sum of the weights).
    sampler_class_balanced : bool
        Sample with replacement so that every class is drawn equally often (K classes).
    bn_recalibration : int
        Before every validation, recompute the BatchNorm running statistics of the current
        weights from this many training batches ("precise BN", :func:`recalibrate_batchnorm`);
        0 keeps PyTorch's running averages. Not in any paper: with few optimiser steps the
        running averages lag the weights and eval-mode outputs collapse to a constant.
    compile : bool
        ``torch.compile`` the model (in place, same weights and checkpoints); an execution
        detail like ``device``, not part of the fingerprint.
    """

    backbone: str = "efficientnet_b0"
    pretrained: bool = False
    n_classes: int = 1
    n_metadata: int = 0
    metadata_hidden: int = 64
    dropout: float = 0.2
    loss: str = "focal"
    focal_alpha: float = 0.6
    focal_gamma: float = 2.0
    sampler_positive_fraction: float | None = 0.4
    mixup_alpha: float = 0.0
    batch_size: int = 32
    eval_batch_size: int = 64
    accumulation_steps: int = 2
    amp: bool = True
    freeze_epochs: int = 3
    optimizer: str = "adamw"
    lr: float = 3e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"
    cosine_t_max: int | None = None
    epochs: int = 20
    early_stopping_patience: int | None = None
    monitor: str = "val_auroc"
    seed: int = 42
    device: str = "auto"
    num_workers: int = 0
    threads: int | None = None
    deterministic: bool = True
    head: str = "linear"
    head_hidden: int = 2048
    image_size: int | None = None
    nesterov: bool = False
    lr_decay: float = 0.0
    class_weights: list[float] | None = None
    sampler_class_balanced: bool = False
    bn_recalibration: int = 0
    compile: bool = False

    def __post_init__(self) -> None:
        choices = {
            "backbone": BACKBONES,
            "loss": LOSSES,
            "optimizer": OPTIMIZERS,
            "scheduler": SCHEDULERS,
            "monitor": MONITORS,
            "head": HEADS,
            "device": ("auto", "cpu", "cuda"),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {list(valid)}")
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {self.n_classes}")
        if self.loss == "ce" and self.n_classes < 2:
            raise ValueError("loss 'ce' needs n_classes >= 2; use 'bce' or 'focal' for one logit")
        if self.loss in ("bce", "focal") and self.n_classes != 1:
            raise ValueError(f"loss {self.loss!r} is binary: set n_classes=1")
        f = self.sampler_positive_fraction
        if f is not None and not 0.0 < f < 1.0:
            raise ValueError(f"sampler_positive_fraction must be in (0, 1) or None, got {f}")
        if self.accumulation_steps < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("accumulation_steps, epochs and batch_size must be >= 1")
        if self.head == "flatten_mlp" and not self.image_size:
            raise ValueError("head 'flatten_mlp' needs image_size (the width of its first layer)")
        if self.class_weights is not None and (
            self.loss != "ce" or len(self.class_weights) != self.n_classes
        ):
            raise ValueError(
                f"class_weights need loss 'ce' and one weight per class ({self.n_classes}), "
                f"got {self.class_weights}"
            )
        if self.sampler_class_balanced and self.sampler_positive_fraction is not None:
            raise ValueError("choose sampler_class_balanced or sampler_positive_fraction, not both")
        if self.bn_recalibration < 0:
            raise ValueError(f"bn_recalibration must be >= 0, got {self.bn_recalibration}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> TrainOptions:
        """Build options from a config mapping; unknown keys raise with the valid names."""
        merged = {**values, **overrides}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - names)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; valid: {sorted(names)}")
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the options that change the result (not device, workers, threads)."""
        d = self.to_dict()
        for k in ("device", "num_workers", "threads"):
            d.pop(k)
        if not d["bn_recalibration"]:  # the default: fingerprints of older runs stay valid
            d.pop("bn_recalibration")
        d.pop("compile")  # execution only; popped apart so older fingerprints stay valid
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class ArrayDataset(Dataset):
    """In-memory images (decoded once) with labels and optional metadata.

    Parameters
    ----------
    images : (N, H, W, 3) uint8 ndarray or sequence of (H, W, 3) uint8 arrays
    labels : (N,) int array
    transform : callable, optional
        Maps a (3, H, W) uint8 tensor to a float tensor (augmentation + normalisation).
    metadata : (N, M) float array, optional

    Items are ``(image, label, metadata)``; ``metadata`` is an empty tensor when absent.
    """

    def __init__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        labels: np.ndarray,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        metadata: np.ndarray | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if metadata is not None and len(metadata) != len(labels):
            raise ValueError(f"{len(metadata)} metadata rows but {len(labels)} labels")
        self.images = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images]
        self.labels = np.asarray(labels).astype(np.int64)
        self.transform = transform
        self.metadata = (
            torch.zeros((len(labels), 0))
            if metadata is None
            else torch.as_tensor(np.asarray(metadata, dtype=np.float32))
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        x = self.images[i]
        x = self.transform(x) if self.transform is not None else x.to(torch.float32) / 255.0
        return x, int(self.labels[i]), self.metadata[i]


class CNNClassifier(nn.Module):
    r"""A torchvision backbone, an optional metadata MLP, and a linear head.

    .. math:: z = W [\mathrm{pool}(f(x)) \,\|\, g(m)] + b

    where :math:`f` is the backbone up to its pooled features and :math:`g` a two-layer MLP
    on the metadata :math:`m` (absent when ``n_metadata == 0``).

    Parameters
    ----------
    backbone : str
        One of ``BACKBONES``.
    n_outputs : int
        Logits per image (1 for binary).
    n_metadata : int
        Metadata width (0: none).
    metadata_hidden : int
    dropout : float
    pretrained : bool
        Load torchvision's default ImageNet weights for the backbone.

    Shapes
    ------
    x: (B, 3, H, W), meta: (B, n_metadata) -> (B, n_outputs)
    """

    def __init__(
        self,
        backbone: str,
        n_outputs: int,
        *,
        n_metadata: int = 0,
        metadata_hidden: int = 64,
        dropout: float = 0.2,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {list(BACKBONES)}")
        self.backbone_name = backbone
        self.weights_name = "random_init"
        weights = None
        if pretrained:
            weights = torchvision.models.get_model_weights(backbone).DEFAULT
            self.weights_name = f"torchvision:{backbone}:{weights.name}"
        net = torchvision.models.get_model(backbone, weights=weights)
        if backbone.startswith("efficientnet"):
            n_features = net.classifier[1].in_features
            net.classifier = nn.Identity()
        elif backbone.startswith("resnet"):
            n_features = net.fc.in_features
            net.fc = nn.Identity()
        else:  # vgg: keep the two hidden FC layers, replace the 1000-way output
            n_features = net.classifier[6].in_features
            net.classifier[6] = nn.Identity()
        self.backbone = net
        self.n_metadata = n_metadata
        self.meta = None
        n_meta_out = 0
        if n_metadata > 0:
            self.meta = nn.Sequential(
                nn.Linear(n_metadata, metadata_hidden),
                nn.BatchNorm1d(metadata_hidden),
                nn.ReLU(),
                nn.Linear(metadata_hidden, metadata_hidden),
                nn.ReLU(),
            )
            n_meta_out = metadata_hidden
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(n_features + n_meta_out, n_outputs)
        )

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        features = self.backbone(x)
        if self.meta is not None:
            if meta is None or meta.shape[-1] != self.n_metadata:
                raise ValueError(f"this model needs metadata of width {self.n_metadata}")
            features = torch.cat([features, self.meta(meta)], dim=1)
        return self.head(features)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained during the frozen-backbone warm-up."""
        params = list(self.head.parameters())
        if self.meta is not None:
            params += list(self.meta.parameters())
        return params

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backbone={self.backbone_name}, weights={self.weights_name}, "
            f"n_metadata={self.n_metadata}, head={self.head})"
        )


def build_model(options: TrainOptions) -> CNNClassifier:
    """Create the classifier described by ``options`` (seeded with ``options.seed``)."""
    torch.manual_seed(options.seed)
    model = CNNClassifier(
        options.backbone,
        options.n_classes,
        n_metadata=options.n_metadata,
        metadata_hidden=options.metadata_hidden,
        dropout=options.dropout,
        pretrained=options.pretrained,
    )
    if options.head == "flatten_mlp":
        from melrepro.methods.cnn_heads import use_flatten_mlp_head

        use_flatten_mlp_head(model, options)
    return model


def gradcam_target_layer(model: CNNClassifier) -> nn.Module:
    """The last convolutional block of the backbone, where Grad-CAM is usually taken."""
    net = model.backbone
    if model.backbone_name.startswith("efficientnet"):
        return net.features[-1]
    if model.backbone_name.startswith("resnet"):
        return net.layer4[-1]
    # vgg16: the ReLU after the last convolution (before the final max-pool)
    return net.features[-2]


def make_loss(options: TrainOptions) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss of ``options.loss`` as ``loss(logits, targets) -> scalar`` (batch mean).

    Binary losses take logits of shape (B,) and targets in [0, 1]; ``"ce"`` takes (B, C) logits
    and integer targets.
    """
    if options.loss == "bce":
        return lambda z, y: nn.functional.binary_cross_entropy_with_logits(z, y.float())
    if options.loss == "focal":
        alpha, gamma = options.focal_alpha, options.focal_gamma
        return lambda z, y: sigmoid_focal_loss(
            z, y.float(), alpha=alpha, gamma=gamma, reduction="mean"
        )
    if options.class_weights is not None:
        weights = torch.as_tensor(options.class_weights, dtype=torch.float32)

        def weighted_ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # Keras class_weight: mean over the batch of w_y * CE (no division by sum w_y).
            ce = nn.functional.cross_entropy(z, y.long(), reduction="none")
            return (weights.to(z.device)[y.long()] * ce).mean()

        return weighted_ce
    return lambda z, y: nn.functional.cross_entropy(z, y.long())


def make_class_sampler(
    labels: np.ndarray,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """Sample with replacement so that each of the K classes present is drawn equally often.

    Weights are ``1 / (K n_c)`` for an image of class c (probabilities sum to 1).
    """
    labels = np.asarray(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    w = 1.0 / (len(classes) * counts[inverse])
    return WeightedRandomSampler(
        torch.as_tensor(w, dtype=torch.double),
        num_samples=len(labels) if num_samples is None else num_samples,
        replacement=True,
        generator=generator,
    )


def make_sampler(
    labels: np.ndarray,
    positive_fraction: float,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """Sample with replacement so that ``positive_fraction`` of the draws are label 1.

    Weights are ``f / p`` for positives and ``(1 - f) / (1 - p)`` for negatives, with ``p``
    the positive share of ``labels`` (as the paper's code does for its 60/40 mix).

    Parameters
    ----------
    labels : (N,) array of {0, 1}
    positive_fraction : float in (0, 1)
    num_samples : int, optional
        Draws per epoch (default ``N``).
    generator : torch.Generator, optional
    """
    labels = np.asarray(labels)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"make_sampler is binary (labels 0/1), got labels {sorted(set(labels.tolist()))[:10]}; "
            "use make_class_sampler for K classes"
        )
    p = labels.mean()
    if p in (0.0, 1.0):
        raise ValueError("weighted sampling needs both classes in the training labels")
    w = np.where(labels == 1, positive_fraction / p, (1 - positive_fraction) / (1 - p))
    return WeightedRandomSampler(
        torch.as_tensor(w, dtype=torch.double),
        num_samples=len(labels) if num_samples is None else num_samples,
        replacement=True,
        generator=generator,
    )


def mixup_batch(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018): blend each sample with a random partner of the batch.

    Returns
    -------
    mixed : tensor, ``lam * x + (1 - lam) * x[perm]``
    y_a, y_b : the two label sets
    lam : float drawn from Beta(alpha, alpha); the loss is ``lam L(y_a) + (1 - lam) L(y_b)``.
    """
    if alpha <= 0:
        return x, y, y, 1.0
    # Beta sampling is not generator-aware in torch; it uses the global RNG, which
    # train_model re-seeds every epoch, so it is reproducible all the same.
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm.to(y.device)], lam


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


def _make_optimizer(model: nn.Module, options: TrainOptions) -> torch.optim.Optimizer:
    params = model.parameters()
    if options.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    if options.optimizer == "adam":
        return torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)
    return torch.optim.SGD(
        params,
        lr=options.lr,
        momentum=options.momentum,
        weight_decay=options.weight_decay,
        nesterov=options.nesterov,
    )


def _make_scheduler(
    optimizer: torch.optim.Optimizer, options: TrainOptions
) -> torch.optim.lr_scheduler.LRScheduler:
    if options.scheduler == "cosine":
        t_max = options.cosine_t_max or options.epochs
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _index_sampler(
    dataset: Dataset, labels: np.ndarray | None, options: TrainOptions, generator: torch.Generator
) -> Sampler:
    """The training order: a target class mix, K balanced classes, or a plain shuffle."""
    if options.sampler_positive_fraction is not None:
        return make_sampler(labels, options.sampler_positive_fraction, generator=generator)
    if options.sampler_class_balanced:
        return make_class_sampler(labels, generator=generator)
    return RandomSampler(dataset, generator=generator)


class SeededItems(Dataset):
    """``dataset`` indexed by ``(item_seed, index)``: the item's random augmentation is drawn
    from its own seed, so a batch comes out the same whichever worker loads it and however
    many epochs that worker has lived (persistent workers)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, torch.Tensor]:
        item_seed, index = key
        # fork_rng: a main-process caller's global stream is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            return self.dataset[index]


class _ItemSeeds(Sampler):
    """Tags every index of ``sampler`` with the seed of its position in the epoch."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for position, index in enumerate(self.sampler):
            yield (self.epoch_seed * 1_000_003 + position) % 2**63, int(index)


class TrainLoader:
    """The training loader of a whole run, built once; ``loader.epoch(seed)`` iterates one epoch.

    In the main process (``num_workers=0``) the loader's one generator is re-seeded before every
    epoch, which draws exactly what a loader built per epoch from that seed drew before (the
    default runs did not move). With workers, the workers live for the whole run
    (``persistent_workers``), the sampler draws from its own generator, re-seeded per epoch, and
    every item is augmented from its own seed (:class:`SeededItems`): the result does not depend
    on the number of workers, and a resumed run replays an uninterrupted one.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        options: TrainOptions,
        labels: np.ndarray | None = None,
    ) -> None:
        self.generator = torch.Generator()
        workers = options.num_workers
        sampler = _index_sampler(dataset, labels, options, self.generator)
        self.item_seeds: _ItemSeeds | None = None
        if workers and getattr(dataset, "transform", None) is not None:
            self.item_seeds = _ItemSeeds(sampler)
            sampler, dataset = self.item_seeds, SeededItems(dataset)
        n = len(dataset)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            # Workers' base seeds come from the loader's generator: keep them off the sampler's
            # stream, which a persistent loader does not redraw every epoch.
            generator=torch.Generator() if workers else self.generator,
            num_workers=workers,
            persistent_workers=workers > 0,
            # BatchNorm cannot train on a last batch of one sample.
            drop_last=n > batch_size,
            pin_memory=_pin_memory(options),
            worker_init_fn=_one_thread if workers else None,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, seed: int):
        """An iterator over one epoch drawn from ``seed``."""
        self.generator.manual_seed(seed)
        if self.item_seeds is not None:
            self.item_seeds.epoch_seed = seed
        return iter(self.loader)


def _pin_memory(options: TrainOptions) -> bool:
    return options.device != "cpu" and torch.cuda.is_available()


def _eval_loader(dataset: Dataset, batch_size: int, options: TrainOptions) -> DataLoader:
    """In order, every image; workers persist when the loader is reused (validation)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=options.num_workers,
        persistent_workers=options.num_workers > 0,
        pin_memory=_pin_memory(options),
        worker_init_fn=_one_thread if options.num_workers else None,
    )


def _one_thread(_worker_id: int) -> None:
    """Loader workers run one torch thread each (the rule's threads are shared out)."""
    torch.set_num_threads(1)


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


def _inverse_time_lr(optimizer: torch.optim.Optimizer, options: TrainOptions) -> None:
    """Keras' ``decay``: lr = lr0 / (1 + decay k) before update k; k lives in the param group
    (saved in the optimiser's state dict, so a resumed run continues the schedule)."""
    for group in optimizer.param_groups:
        k = group.get("decay_step", 0)
        group["lr"] = options.lr / (1.0 + options.lr_decay * k)
        group["decay_step"] = k + 1


def _to_device(
    x: torch.Tensor, y: torch.Tensor, meta: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch to ``device``: asynchronous copies from pinned memory and channels_last on CUDA."""
    if device.type != "cuda":
        return x.to(device), y.to(device), meta.to(device)
    x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True), meta.to(device, non_blocking=True)


def augment_on_device(
    x: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Apply a per-image ``transform`` (``torchvision.transforms.v2`` on tensors) to a uint8
    batch already on its device: each image gets its own random draw, as in a loader worker,
    but the pixel work runs on the GPU and the CPU only launches it."""
    out = torch.stack([transform(image) for image in x])
    return out.contiguous(memory_format=torch.channels_last) if x.is_cuda else out


def augments_on_device(augment_on: str, device: str) -> bool:
    """Whether a recipe's per-image augmentation runs on the training device.

    ``augment_on``: ``"loader"`` (CPU, in the loader), ``"device"`` (on the device from uint8
    batches, :func:`augment_on_device`), or ``"auto"``: on the device when it is a GPU, where the
    loader's CPU cost per image would otherwise starve it (benchmarks/bench_training.py).
    """
    if augment_on not in ("auto", "loader", "device"):
        raise ValueError(f"augment_on={augment_on!r} is not one of ['auto', 'loader', 'device']")
    if augment_on == "auto":
        return choose_device(device).type == "cuda"
    return augment_on == "device"


class RawImages(Dataset):
    """An :class:`ArrayDataset` seen without its transform: ``(uint8 image, label, metadata)``,
    for augmentation on the device (the loader then only collates uint8 tensors)."""

    def __init__(self, dataset: ArrayDataset) -> None:
        self.dataset = dataset
        self.labels = dataset.labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        return self.dataset.images[i], int(self.labels[i]), self.dataset.metadata[i]


def _data_fingerprint(*datasets: Dataset) -> str:
    """Hash of the training and validation data, so a checkpoint is never reused on new data.

    ArrayDatasets are hashed fully (labels, metadata, every image's bytes); other datasets only
    by length, which is logged as a warning.
    """
    h = hashlib.blake2b(digest_size=8)
    for ds in datasets:
        if isinstance(ds, ArrayDataset):
            h.update(ds.labels.tobytes())
            h.update(ds.metadata.numpy().tobytes())
            for image in ds.images:
                h.update(image.contiguous().numpy().tobytes())
        else:
            logger.warning("%s is not an ArrayDataset: only its length identifies it", type(ds))
            h.update(str(len(ds)).encode())
    return h.hexdigest()


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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


#: A model factory (``train_model(model_factory=...)``): builds the model from the options instead
#: of :func:`build_model`. It may define ``fingerprint() -> str`` so that checkpoints written with
#: another factory configuration are not resumed; the model needs a ``backbone`` module (frozen
#: during warm-up epochs) and a ``weights_name``.
ModelFactory = Callable[[TrainOptions], nn.Module]


def _factory_fingerprint(model_factory: ModelFactory | None) -> str:
    """What identifies a factory in the checkpoint fingerprint ('' for :func:`build_model`)."""
    if model_factory is None:
        return ""
    own = getattr(model_factory, "fingerprint", None)
    return str(own()) if callable(own) else getattr(model_factory, "__qualname__", "factory")


def _amp_dtype(options: TrainOptions, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 where the GPU supports it, else fp16 (with a GradScaler); None off
    CUDA or without ``amp``."""
    if not options.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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
    if device.type == "cuda":
        # Faster convolutions on tensor cores; CPU runs keep the default layout (same numbers).
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
        CSV of per-epoch ``epoch, train_loss, val_loss, val_score, lr, frozen, seconds``.
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
    # A checkpoint belongs to these options *and* this data: Snakemake reruns the job when an
    # input changes, and the old checkpoints must not be resumed then.
    fingerprint = f"{options.fingerprint()}-{_data_fingerprint(train_dataset, val_dataset)}"
    if model_factory is not None:
        fingerprint += (
            "-" + hashlib.sha256(_factory_fingerprint(model_factory).encode()).hexdigest()[:16]
        )
    run = _setup(options, fingerprint, model_factory)
    last_path, best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    resumed_from, was_finished = _resume(run, last_path)
    start_epoch = options.epochs + 1 if was_finished else resumed_from + 1

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

    best = torch.load(best_path, map_location="cpu", weights_only=True)
    run.model.load_state_dict(best["model"])
    hist = pd.DataFrame(run.history)
    if history_path is not None:
        Path(history_path).parent.mkdir(parents=True, exist_ok=True)
        hist.to_csv(history_path, index=False)
    return TrainResult(
        model=run.model,
        history=hist,
        best_epoch=run.best_epoch,
        best_score=run.best_score,
        device=str(run.device),
        weights=run.model.weights_name,
        resumed_from_epoch=resumed_from,
    )


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
