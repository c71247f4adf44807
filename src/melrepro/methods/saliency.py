"""Grad-CAM saliency through ``pytorch-grad-cam``, thresholding, and overlap measures.

The maps come from the maintained library (Selvaraju et al. 2017 via ``pytorch_grad_cam``);
this module only chooses targets, normalises each map to [0, 1] at the input's size, and
measures how a map relates to a region (Jaccard of a thresholded map, or the share of saliency
falling outside a lesion or inside the image border).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputTarget,
)
from torch import nn

__all__ = [
    "border_mask",
    "gradcam_maps",
    "jaccard",
    "normalize_map",
    "outside_fraction",
    "threshold_map",
]

logger = logging.getLogger(__name__)


def normalize_map(saliency: np.ndarray) -> np.ndarray:
    """Min-max scale one map to [0, 1]; a constant map becomes all zeros.

    Parameters
    ----------
    saliency : (H, W) float ndarray

    Returns
    -------
    (H, W) float32 ndarray in [0, 1]
    """
    s = np.asarray(saliency, dtype=np.float64)
    lo, hi = s.min(), s.max()
    if hi - lo <= 1e-12:
        return np.zeros_like(s, dtype=np.float32)
    return ((s - lo) / (hi - lo)).astype(np.float32)


def gradcam_maps(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: nn.Module,
    *,
    classes: Sequence[int] | None = None,
    binary: bool = True,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM maps for a batch of images, one per image, normalised to [0, 1].

    Parameters
    ----------
    model : nn.Module
        Called as ``model(images)``; returns (B, 1) logits when ``binary`` else (B, C).
    images : (B, 3, H, W) float tensor
        Model-ready input (already normalised).
    target_layer : nn.Module
        Layer whose activations and gradients make the map (e.g.
        :func:`melrepro.methods.training.gradcam_target_layer`).
    classes : sequence of int, optional
        Class explained for each image. Binary: 1 explains the positive logit, 0 its
        negative. Default: the predicted class.
    binary : bool
        One-logit model (``BinaryClassifierOutputTarget``) or multi-class
        (``ClassifierOutputTarget``).
    batch_size : int

    Returns
    -------
    (B, H, W) float32 ndarray in [0, 1]
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    model.eval()
    device = next(model.parameters()).device
    if classes is None:
        with torch.no_grad():
            out = torch.cat(
                [
                    model(images[i : i + batch_size].to(device)).cpu()
                    for i in range(0, len(images), batch_size)
                ]
            )
        classes = (out.squeeze(-1) >= 0).long().tolist() if binary else out.argmax(1).tolist()
    if len(classes) != len(images):
        raise ValueError(f"{len(classes)} classes for {len(images)} images")
    target_cls = BinaryClassifierOutputTarget if binary else ClassifierOutputTarget
    maps = []
    with GradCAM(model=model, target_layers=[target_layer]) as cam:
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size].to(device)
            targets = [target_cls(int(c)) for c in classes[i : i + batch_size]]
            maps.append(cam(input_tensor=batch, targets=targets))
    # The library scales each map by its maximum and resizes bilinearly; re-normalise so that
    # every map spans exactly [0, 1] (or is all zero) whatever the library version does.
    return np.stack([normalize_map(m) for m in np.concatenate(maps)])


def threshold_map(saliency: np.ndarray, threshold: float) -> np.ndarray:
    """Binary region ``saliency >= threshold`` (threshold in [0, 1])."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return np.asarray(saliency) >= threshold


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard index |a ∩ b| / |a ∪ b| of two boolean masks; 1.0 when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def border_mask(shape: tuple[int, int], width: float = 0.15) -> np.ndarray:
    """Boolean frame covering the outer ``width`` fraction of each side of an image.

    Used where no lesion mask exists (real ISIC 2018 task 3): saliency concentrated in this
    frame is on corners and edges, not on the (centred) lesion.
    """
    if not 0.0 < width < 0.5:
        raise ValueError(f"width must be in (0, 0.5), got {width}")
    h, w = shape
    bh, bw = max(1, round(h * width)), max(1, round(w * width))
    frame = np.ones((h, w), dtype=bool)
    frame[bh : h - bh, bw : w - bw] = False
    return frame


def outside_fraction(saliency: np.ndarray, region: np.ndarray) -> float:
    """Share of the total saliency that falls outside ``region``.

    Parameters
    ----------
    saliency : (H, W) float ndarray, non-negative
    region : (H, W) boolean ndarray (the lesion)

    Returns
    -------
    float in [0, 1]; NaN for an all-zero map.
    """
    s = np.asarray(saliency, dtype=np.float64)
    region = np.asarray(region, dtype=bool)
    if s.shape != region.shape:
        raise ValueError(f"saliency {s.shape} and region {region.shape} differ in shape")
    total = s.sum()
    if total <= 0:
        return float("nan")
    return float(s[~region].sum() / total)
