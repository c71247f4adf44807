"""The pieces of an optimiser step: losses (BCE, focal BCE with
``torchvision.ops.sigmoid_focal_loss``, cross-entropy with Keras class weights), mixup,
AdamW/Adam/SGD, cosine annealing or Keras' inverse-time decay, and the mixed-precision dtype."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from melrepro.methods.training.options import TrainOptions

__all__ = ["make_loss", "mixup_batch"]


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


def _inverse_time_lr(optimizer: torch.optim.Optimizer, options: TrainOptions) -> None:
    """Keras' ``decay``: lr = lr0 / (1 + decay k) before update k; k lives in the param group
    (saved in the optimiser's state dict, so a resumed run continues the schedule)."""
    for group in optimizer.param_groups:
        k = group.get("decay_step", 0)
        group["lr"] = options.lr / (1.0 + options.lr_decay * k)
        group["decay_step"] = k + 1


def _amp_dtype(options: TrainOptions, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 where the GPU supports it, else fp16 (with a GradScaler); None off
    CUDA or without ``amp``."""
    if not options.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
