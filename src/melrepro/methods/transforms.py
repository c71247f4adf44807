"""Image transforms for the CNN papers: crop/resize, colour constancy, augmentations.

Deterministic preprocessing (centre crop, resize, shades-of-grey) runs once per image when a
dataset is built; random augmentations run per sample on uint8 tensors with
``torchvision.transforms.v2``; per-image normalisation comes last.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from skimage.transform import resize
from torchvision.transforms import v2

__all__ = [
    "center_crop_square",
    "eval_transform",
    "per_image_normalize",
    "preprocess_image",
    "shades_of_grey",
    "train_transform",
]

logger = logging.getLogger(__name__)


def center_crop_square(image: np.ndarray) -> np.ndarray:
    """Crop the largest centred square out of an image.

    Parameters
    ----------
    image : (H, W[, C]) ndarray

    Returns
    -------
    (S, S[, C]) ndarray, ``S = min(H, W)``, a view of ``image``.
    """
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top : top + s, left : left + s]


def shades_of_grey(image: np.ndarray, p: float = 6.0) -> np.ndarray:
    """Shades-of-grey colour constancy (Finlayson & Trezzi 2004).

    Each channel is scaled so that its Minkowski p-norm mean equals the mean over channels,
    i.e. the estimated illuminant becomes grey.

    Parameters
    ----------
    image : (H, W, 3) uint8 ndarray
    p : float
        Minkowski norm; 1 is grey-world, infinity is max-RGB. The paper's code uses 6.

    Returns
    -------
    (H, W, 3) uint8 ndarray

    References
    ----------
    Finlayson, G. D., Trezzi, E. (2004). Shades of gray and colour constancy. CIC 12.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if p <= 0:
        raise ValueError(f"p must be positive, got {p}")
    arr = image.astype(np.float64) / 255.0
    illum = np.power(np.mean(np.power(arr, p), axis=(0, 1)), 1.0 / p)
    illum = np.maximum(illum, 1e-6)
    out = arr * (illum.mean() / illum)[None, None, :]
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def preprocess_image(
    image: np.ndarray,
    size: int,
    *,
    crop: bool = True,
    colour_constancy: str | None = None,
    sog_power: float = 6.0,
) -> np.ndarray:
    """The paper's deterministic preprocessing: centre-crop to square, resize, colour constancy.

    Parameters
    ----------
    image : (H, W, 3) uint8 ndarray
    size : int
        Output side in pixels (224 in the paper, 300 in experiment 4.3.1).
    crop : bool
        Centre-crop to a square first (§3.1 step 1).
    colour_constancy : {None, "shades_of_grey"}
        Optional colour correction (experiment 4.3.3).
    sog_power : float
        Minkowski norm of shades-of-grey.

    Returns
    -------
    (size, size, 3) uint8 ndarray
    """
    if colour_constancy not in (None, "none", "shades_of_grey"):
        raise ValueError(
            f"unknown colour_constancy {colour_constancy!r}; choose None or 'shades_of_grey'"
        )
    if crop:
        image = center_crop_square(image)
    if image.shape[:2] != (size, size):
        image = resize(
            image, (size, size), order=1, anti_aliasing=True, preserve_range=True
        ).astype(np.uint8)
    if colour_constancy == "shades_of_grey":
        image = shades_of_grey(image, p=sog_power)
    return np.ascontiguousarray(image)


def per_image_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Scale an image tensor to zero mean and unit variance over all its pixels (§3.1 step 2).

    Parameters
    ----------
    x : (..., C, H, W) tensor, any dtype
        Each leading index is normalised on its own.

    Returns
    -------
    float32 tensor of the same shape.
    """
    x = x.to(torch.float32)
    dims = tuple(range(x.ndim - 3, x.ndim))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


def train_transform(
    size: int,
    *,
    crop_scale: tuple[float, float] = (0.9, 1.0),
    rotation: float = 15.0,
    jitter: float = 0.1,
    zoom: tuple[float, float] = (1.0, 1.1),
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Training augmentations of §3.1 step 3, then per-image normalisation.

    Random resized crop (scale 0.9-1.0), horizontal and vertical flips, rotation ±15°,
    colour jitter (brightness, contrast, saturation 0.1) and random zoom.

    Parameters
    ----------
    size : int
        Output side in pixels.
    crop_scale : (float, float)
        Area range of ``RandomResizedCrop``.
    rotation : float
        Maximum rotation in degrees.
    jitter : float
        Brightness, contrast and saturation jitter.
    zoom : (float, float)
        Scale range of the random zoom (``RandomAffine(scale=...)``).

    Returns
    -------
    callable
        Maps a (3, H, W) uint8 tensor to a (3, size, size) float32 tensor.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=crop_scale, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomRotation(rotation),
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
            # DEVIATION: the paper does not say how "random zoom" is parameterised; we
            # use an affine scale of 1.0-1.1 because the crop already covers zooming out.
            v2.RandomAffine(degrees=0.0, scale=zoom),
            per_image_normalize,
        ]
    )


def eval_transform() -> Callable[[torch.Tensor], torch.Tensor]:
    """Validation/test transform: per-image normalisation only (images are preprocessed)."""
    return per_image_normalize
