"""What defines a training run: :class:`TrainOptions` (built from the config with
:meth:`TrainOptions.from_dict`), its valid choices and its fingerprint (the hash that ties a
checkpoint to the options that change the result)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BACKBONES",
    "HEADS",
    "LOSSES",
    "MONITORS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "TrainOptions",
]


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
        Dense ``head_hidden`` ReLU, Dropout, Dense; see :mod:`melrepro.methods.training.models`).
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
    cpu_channels_last : bool
        Train in channels-last memory layout on the CPU too (CUDA always does). oneDNN's
        channels-last convolutions are 1.5-1.9x faster on 2 cores for VGG16, ResNet50 and
        EfficientNet-B0 (``benchmarks/bench_channels_last.py``); the same computation in another
        summation order, so the numbers differ in the last bits and the run diverges from a
        contiguous one like from another seed. Part of the fingerprint when on.
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
    cpu_channels_last: bool = False

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
        for key in ("bn_recalibration", "cpu_channels_last"):
            if not d[key]:  # the default: fingerprints of older runs stay valid
                d.pop(key)
        d.pop("compile")  # execution only; popped apart so older fingerprints stay valid
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
