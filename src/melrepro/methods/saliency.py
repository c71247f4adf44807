"""Grad-CAM saliency through ``pytorch-grad-cam``, thresholding, and overlap measures.

The maps come from the maintained library (Selvaraju et al. 2017 via ``pytorch_grad_cam``);
this module only chooses targets, normalises each map to [0, 1] at the input's size, and
measures how a map relates to a region (Jaccard of a thresholded map, or the share of saliency
falling outside a lesion or inside the image border).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputTarget,
)
from torch import nn

__all__ = [
    "LayerGradCAM",
    "backward_stops_at",
    "border_mask",
    "cell_jaccard",
    "cell_oracle_jaccard",
    "cell_white_jaccard",
    "gradcam_layer_maps",
    "gradcam_maps",
    "jaccard",
    "normalize_map",
    "outside_fraction",
    "threshold_map",
]

logger = logging.getLogger(__name__)


def _check_batch(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")


def predicted_classes(
    model: nn.Module, images: torch.Tensor, *, batch_size: int, binary: bool
) -> list[int]:
    """The class each image is predicted as (one logit: logit >= 0), in eval mode, batch by batch."""
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = torch.cat(
            [
                model(images[i : i + batch_size].to(device)).cpu()
                for i in range(0, len(images), batch_size)
            ]
        )
    return (logits.squeeze(-1) >= 0).long().tolist() if binary else logits.argmax(1).tolist()


@contextmanager
def backward_stops_at(model: nn.Module, target_layer: nn.Module) -> Iterator[None]:
    """Let a backward pass run from the output down to ``target_layer`` only.

    Grad-CAM needs the gradient at the target layer's output, not below it, and no weight
    gradient at all; with the weights trainable, ``loss.backward()`` also runs through every
    layer under the target and computes every weight's gradient (for VGG16's last convolution,
    about half of the Grad-CAM time). Inside this context the parameters are frozen and the
    layer's output is detached and made to require gradients, so the backward stops there. The
    gradient at the layer is the same computation, so the maps are unchanged. Register before
    the CAM object: its hooks must see the new output. Parameters are restored on exit.
    """
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)

    def new_leaf(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        # clone: a non-leaf copy, so that an in-place op after the layer stays legal
        return output.detach().requires_grad_(True).clone()

    handle = target_layer.register_forward_hook(new_leaf)
    try:
        yield
    finally:
        handle.remove()
        for p in frozen:
            p.requires_grad_(True)


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
    _check_batch(images)
    model.eval()
    device = next(model.parameters()).device
    if classes is None:
        classes = predicted_classes(model, images, batch_size=batch_size, binary=binary)
    if len(classes) != len(images):
        raise ValueError(f"{len(classes)} classes for {len(images)} images")
    target_cls = BinaryClassifierOutputTarget if binary else ClassifierOutputTarget
    maps = []
    with (
        backward_stops_at(model, target_layer),
        GradCAM(model=model, target_layers=[target_layer]) as cam,
    ):
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size].to(device)
            targets = [target_cls(int(c)) for c in classes[i : i + batch_size]]
            maps.append(cam(input_tensor=batch, targets=targets))
    # The library scales each map by its maximum and resizes bilinearly; re-normalise so that
    # every map spans exactly [0, 1] (or is all zero) whatever the library version does.
    return np.stack([normalize_map(m) for m in np.concatenate(maps)])


class LayerGradCAM(GradCAM):
    """``pytorch_grad_cam.GradCAM`` that returns maps at the target layer's own resolution.

    The library resizes every map to the input size; paper 004 keeps the layer's grid (28x28 for
    VGG16 at 450 px, 8x8 for ResNet50 at 227 px) and upsamples by nearest neighbour to the
    original image later. Returning no target size keeps the library's ReLU and per-map scaling
    but skips the resize.
    """

    def get_target_width_height(self, input_tensor: torch.Tensor) -> None:  # type: ignore[override]
        return None


def gradcam_layer_maps(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: nn.Module,
    *,
    classes: Sequence[int] | None = None,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM of a multi-class model at layer resolution, for the predicted class by default.

    The gradient is that of the pre-softmax logit of the class (``ClassifierOutputTarget``).

    Returns
    -------
    maps : (B, h, w) float32 in [0, 1], min-max normalised per image (constant maps are zero)
    classes : (B,) int, the explained class of each image
    constant : (B,) bool, maps that were constant before normalisation
    """
    _check_batch(images)
    model.eval()
    device = next(model.parameters()).device
    if classes is not None:
        classes = [int(c) for c in classes]
        if len(classes) != len(images):
            raise ValueError(f"{len(classes)} classes for {len(images)} images")
    explained: list[int] = []
    raw = []
    with (
        backward_stops_at(model, target_layer),
        LayerGradCAM(model=model, target_layers=[target_layer]) as cam,
    ):
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size].to(device)
            if classes is None:
                # the library explains the arg-max logit of the same forward pass: the
                # predicted class, without a second forward pass to find it
                raw.append(cam(input_tensor=batch, targets=None))
                explained.extend(cam.outputs.detach().argmax(1).cpu().tolist())
            else:
                targets = [ClassifierOutputTarget(c) for c in classes[i : i + batch_size]]
                raw.append(cam(input_tensor=batch, targets=targets))
    classes = classes if classes is not None else explained
    raw_maps = np.concatenate(raw)
    constant = np.array([float(m.max() - m.min()) <= 1e-6 for m in raw_maps])
    maps = np.stack(
        [
            normalize_map(m) if not c else np.zeros_like(m)
            for m, c in zip(raw_maps, constant, strict=True)
        ]
    )
    return maps.astype(np.float32), np.asarray(classes), constant


def cell_jaccard(
    saliency: np.ndarray,
    cell_pixels: np.ndarray,
    cell_mask: np.ndarray,
    thresholds: Sequence[float],
) -> np.ndarray:
    """Jaccard of ``{s >= t}`` (nearest-upsampled) with a mask, exactly, from per-cell counts.

    Parameters
    ----------
    saliency : (h, w) map in [0, 1] at layer resolution
    cell_pixels : (h, w) int, original-resolution pixels of each saliency cell
    cell_mask : (..., h, w) int, mask pixels of each cell (leading axes: several masks)
    thresholds : sequence of float
        ``t >= 1.0`` gives the empty region (paper 004, Fig. 4: 1.0 is all black).

    Returns
    -------
    (..., len(thresholds)) float64; NaN where the mask is empty (Jaccard of two empty sets).
    """
    s = np.asarray(saliency, dtype=np.float64)
    n = np.asarray(cell_pixels, dtype=np.int64)
    m = np.asarray(cell_mask, dtype=np.int64)
    if s.shape != n.shape or m.shape[-2:] != s.shape:
        raise ValueError(f"shapes differ: saliency {s.shape}, pixels {n.shape}, mask {m.shape}")
    region = np.stack([(s >= t) & (t < 1.0) for t in thresholds])  # (T, h, w)
    area = (region * n).sum(axis=(-2, -1))  # (T,)
    inter = np.einsum("thw,...hw->...t", region.astype(np.int64), m)
    total = m.sum(axis=(-2, -1))[..., None]
    union = area + total - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inter / np.maximum(union, 1), np.nan)


def cell_oracle_jaccard(cell_pixels: np.ndarray, cell_mask: np.ndarray) -> np.ndarray:
    """The best Jaccard with a mask that any nearest-upsampled, thresholded map at this grid
    can reach: the maximum over every non-empty union of cells, exactly, from per-cell counts.

    With ``m`` mask pixels and ``n`` pixels per cell, J(S) = sum_S m / (M + sum_S (n - m)); the
    best S is a prefix of the cells sorted by mask density m / n (adding a denser cell never
    lowers the best ratio reachable, Dinkelbach's argument), so the maximum over the prefixes is
    the maximum over all 2^(h w) - 1 unions. The ceiling of :func:`cell_jaccard` at every
    threshold of every map of this grid (paper 004's Tables 2-5 at this resolution).

    Parameters
    ----------
    cell_pixels : (h, w) int, original-resolution pixels of each cell
    cell_mask : (..., h, w) int, mask pixels of each cell (leading axes: several masks)

    Returns
    -------
    (...) float64; NaN where the mask is empty.
    """
    n = np.asarray(cell_pixels, dtype=np.int64).ravel()
    m = np.asarray(cell_mask, dtype=np.int64)
    if m.shape[-2:] != np.shape(cell_pixels):
        raise ValueError(f"shapes differ: pixels {np.shape(cell_pixels)}, mask {m.shape}")
    m = m.reshape(*m.shape[:-2], n.size)
    if np.any(m > n) or np.any(m < 0):
        raise ValueError("a cell has more mask pixels than pixels (or fewer than 0)")
    density = m / np.maximum(n, 1)
    order = np.argsort(-density, axis=-1, kind="stable")
    inter = np.cumsum(np.take_along_axis(m, order, axis=-1), axis=-1)
    area = np.cumsum(n[order], axis=-1)
    total = m.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        best = (inter / np.maximum(area + total - inter, 1)).max(axis=-1)
    return np.where(total[..., 0] > 0, best, np.nan)


def cell_white_jaccard(cell_pixels: np.ndarray, cell_mask: np.ndarray) -> np.ndarray:
    """Jaccard of the all-white map (every pixel salient) with a mask: mask share of the image.

    The trivial baseline of paper 004's Jaccard tables (any map at threshold 0.0 gives it).
    (..., h, w) counts -> (...) float64; NaN where the mask is empty.
    """
    total = np.asarray(cell_mask, dtype=np.int64).sum(axis=(-2, -1))
    pixels = int(np.asarray(cell_pixels, dtype=np.int64).sum())
    return np.where(total > 0, total / max(pixels, 1), np.nan)


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
