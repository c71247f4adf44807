"""siim2020's working images: the JPEG quality-60 round trip of the cache, brightness, and the
seeded augmented copies of the Small 3aug / 5aug training sets."""

from __future__ import annotations

import functools
import hashlib
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "augment_copy",
    "jpeg_round_trip",
    "load_images",
    "prepare_images",
    "read_brightness",
]

logger = logging.getLogger(__name__)


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode ``image`` (H, W, 3 uint8) as JPEG at ``quality`` and decode it again."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))


def prepare_images(
    cache_paths: Sequence[str | Path],
    output_images: str | Path,
    output_table: str | Path,
    *,
    jpeg_quality: int = 60,
) -> pd.DataFrame:
    """The paper's working images of one cache shard and their brightness.

    Writes ``output_images`` (``.npz``, one uint8 (S, S, 3) array per image id) and
    ``output_table`` (parquet: ``image_id, brightness, mean_r, mean_g, mean_b``); brightness
    is the mean over pixels and channels on the 0-255 scale.
    """
    from melrepro.data.imagecache import read_cache

    cache = read_cache(cache_paths)
    arrays: dict[str, np.ndarray] = {}
    rows = []
    for image_id in sorted(cache):
        image = jpeg_round_trip(cache[image_id].image, jpeg_quality)
        arrays[image_id] = image
        r, g, b = image.reshape(-1, 3).mean(axis=0)
        rows.append(
            {
                "image_id": image_id,
                "brightness": float(image.mean()),
                "mean_r": float(r),
                "mean_g": float(g),
                "mean_b": float(b),
            }
        )
    Path(output_images).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(output_images).with_name(Path(output_images).stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(output_images)
    table = pd.DataFrame(rows, columns=["image_id", "brightness", "mean_r", "mean_g", "mean_b"])
    table.to_parquet(output_table, index=False)
    logger.info("prepared %d images (JPEG quality %d)", len(table), jpeg_quality)
    return table


def load_images(paths: Sequence[str | Path], ids: Sequence[str] | None = None) -> dict:
    """Images written by :func:`prepare_images` (only ``ids`` when given).

    Raises
    ------
    ValueError
        If a wanted image is in no shard.
    """
    wanted = None if ids is None else set(ids)
    images: dict[str, np.ndarray] = {}
    for path in paths:
        with np.load(path) as data:
            for key in data.files:
                if wanted is None or key in wanted:
                    images[key] = data[key]
    if wanted is not None:
        missing = sorted(wanted - set(images))
        if missing:
            raise ValueError(f"{len(missing)} images are in no prepared shard, e.g. {missing[:5]}")
    return images


def read_brightness(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The brightness tables of every shard, concatenated."""
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def _aug_seed(seed: int, image_id: str, copy: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{image_id}:{copy}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


_AUGMENT_DEFAULTS = {
    "flip_p": 0.5,
    "shift_limit": 0.0625,
    "scale_limit": 0.1,
    "rotate_limit": 45.0,
    "ssr_p": 0.5,
    "brightness_limit": 0.1,
    "contrast_limit": 0.1,
}


@functools.lru_cache(maxsize=8)
def _augment_transform(height: int, width: int, items: tuple[tuple[str, float], ...]):
    """The torchvision pipeline of :func:`augment_copy` for one image size and parameter set,
    built once per job (its randomness comes from the torch seed set per copy)."""
    from torchvision.transforms import v2

    p = dict(items)
    side = height
    pad = side // 2
    flips = v2.RandomChoice(
        [
            v2.RandomHorizontalFlip(1.0),
            v2.RandomVerticalFlip(1.0),
            v2.Compose([v2.RandomHorizontalFlip(1.0), v2.RandomVerticalFlip(1.0)]),
        ]
    )
    # Reflect padding then a centre crop: torchvision's affine only fills with a constant, the
    # author's ShiftScaleRotate reflects (reflect-101, which is torch's "reflect").
    ssr = v2.Compose(
        [
            v2.Pad(pad, padding_mode="reflect"),
            v2.RandomAffine(
                degrees=float(p["rotate_limit"]),
                translate=(p["shift_limit"] * side / (side + 2 * pad),) * 2,
                scale=(1 - p["scale_limit"], 1 + p["scale_limit"]),
                interpolation=v2.InterpolationMode.BILINEAR,
            ),
            v2.CenterCrop((height, width)),
        ]
    )
    # DEVIATION: ColorJitter scales brightness multiplicatively; albumentations'
    # RandomBrightnessContrast adds brightness_limit x max. Same range of factors.
    return v2.Compose(
        [
            v2.RandomApply([flips], p=p["flip_p"]),
            v2.RandomApply([ssr], p=p["ssr_p"]),
            v2.ColorJitter(brightness=p["brightness_limit"], contrast=p["contrast_limit"]),
        ]
    )


def augment_copy(
    image: np.ndarray,
    *,
    seed: int,
    image_id: str,
    copy: int,
    params: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Augmented copy ``copy`` of one image, deterministic per ``(seed, image_id, copy)``.

    Copy 0 is the image itself. Otherwise, as the author's albumentations pipeline (§5.1):
    ``Flip`` (horizontal, vertical or both) with ``flip_p``; shift-scale-rotate (shift
    ``shift_limit`` of the side, scale 1 +- ``scale_limit``, rotation +- ``rotate_limit``
    degrees) with ``ssr_p``, reflect-101 borders; brightness and contrast +- ``brightness_limit``
    / ``contrast_limit`` always. Built from ``torchvision.transforms.v2``.
    """
    if copy == 0:
        return image
    import torch

    p = {**_AUGMENT_DEFAULTS, **(params or {})}
    transform = _augment_transform(image.shape[0], image.shape[1], tuple(sorted(p.items())))
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_aug_seed(seed, image_id, copy))
        out = transform(x)
    return out.permute(1, 2, 0).contiguous().numpy()
