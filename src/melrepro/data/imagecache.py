"""The image cache: every image (and mask) decoded once per working resolution, per shard.

A shard is one ``.npz`` with keys ``image__<id>`` (uint8 H×W×3), ``mask__<id>`` (uint8 H×W, 0/1)
and ``attr_<name>__<id>`` (task-2 attribute masks, 0/1). Resolutions: ``sq<N>`` (N×N, whole image),
``max<N>`` (longest side N, aspect kept, never upscaled) and ``orig``.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from melrepro.data.archive_io import ArchiveFolder, IngestError, describe_error

__all__ = [
    "CachedImage",
    "cache_images",
    "load_shard",
    "parse_resolution",
    "read_cache",
    "resize_image",
    "target_size",
]

logger = logging.getLogger(__name__)

_RES_RE = re.compile(r"^(sq|max)(\d+)$|^orig$")


@dataclass
class CachedImage:
    """One cached image with its lesion mask and attribute masks, when the dataset has them."""

    image: np.ndarray
    mask: np.ndarray | None = None
    attributes: dict[str, np.ndarray] = field(default_factory=dict)


def parse_resolution(res: str) -> tuple[str, int | None]:
    """``"sq224"`` -> ``("sq", 224)``, ``"max512"`` -> ``("max", 512)``, ``"orig"`` -> ``("orig", None)``.

    Raises
    ------
    ValueError
        For anything else (the message lists the valid forms).
    """
    match = _RES_RE.match(res)
    if not match or (match.group(2) is not None and int(match.group(2)) < 1):
        raise ValueError(f"resolution {res!r}; expected sq<N>, max<N> (N >= 1) or orig")
    if res == "orig":
        return "orig", None
    return match.group(1), int(match.group(2))


def target_size(width: int, height: int, res: str) -> tuple[int, int]:
    """The (width, height) an image of ``width``×``height`` takes at resolution ``res``."""
    kind, n = parse_resolution(res)
    if kind == "orig":
        return width, height
    if kind == "sq":
        return n, n
    scale = min(1.0, n / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_image(image: Image.Image, size: tuple[int, int], *, is_mask: bool = False) -> np.ndarray:
    """Resize to ``size`` (antialiased for images, nearest-neighbour for masks) as a uint8 array."""
    if image.size != size:
        method = Image.Resampling.NEAREST if is_mask else Image.Resampling.BILINEAR
        image = image.resize(size, method, reducing_gap=None if is_mask else 2.0)
    return np.asarray(image)


def _decode(data: bytes, size_hint: tuple[int, int] | None = None) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    if size_hint is not None and image.format == "JPEG":
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: much faster for small caches.
        image.draft("RGB", size_hint)
    return image.convert("RGB")


def _mask(data: bytes, size: tuple[int, int]) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as mask:
        array = resize_image(mask.convert("L"), size, is_mask=True)
    return (array > 127).astype(np.uint8)


def _decoded(archive: ArchiveFolder, uri: str, decode, size: tuple[int, int], what: str):
    """``decode(bytes, size)`` of one member; a failure is an IngestError naming the member."""
    try:
        return decode(archive.read(uri), size)
    except IngestError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure, named
        raise IngestError(
            f"{archive.root}/{uri}: cannot be decoded ({describe_error(error)}); expected {what} "
            "(ingest decoded it: has the archive changed since?)"
        ) from None


def cache_images(
    manifest: pd.DataFrame | str | Path,
    archive_root: str | Path,
    shard: int,
    res: str,
    output: str | Path,
) -> Path:
    """Decode the images of one shard, resize them to ``res`` and write the shard ``.npz``.

    Masks (``mask_uri``, ``attr_*_uri``) are resized with nearest neighbour to the image's
    cached size and stored as 0/1. The file is written under a temporary name and renamed.
    """
    if not isinstance(manifest, pd.DataFrame):
        manifest = pd.read_parquet(manifest)
    parse_resolution(res)
    rows = manifest[manifest["shard"] == shard]
    attribute_columns = [c for c in rows.columns if c.startswith("attr_") and c.endswith("_uri")]
    arrays: dict[str, np.ndarray] = {}
    with ArchiveFolder(archive_root) as archive:
        for done, record in enumerate(
            tqdm(rows.itertuples(index=False), total=len(rows), desc=f"cache {res}", disable=None)
        ):
            size = target_size(int(record.width), int(record.height), res)
            image = _decoded(archive, record.image_uri, _decode, size, "an image")
            arrays[f"image__{record.image_id}"] = resize_image(image, size)
            if isinstance(record.mask_uri, str):
                arrays[f"mask__{record.image_id}"] = _decoded(
                    archive, record.mask_uri, _mask, size, "a PNG mask"
                )
            for column in attribute_columns:
                uri = getattr(record, column)
                if isinstance(uri, str):
                    name = column.removesuffix("_uri")
                    arrays[f"{name}__{record.image_id}"] = _decoded(
                        archive, uri, _mask, size, "a PNG mask"
                    )
            if (done + 1) % 100 == 0:
                logger.info("cached %d/%d images", done + 1, len(rows))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(output)
    logger.info("wrote %s: %d images at %s", output, len(rows), res)
    return output


def load_shard(path: str | Path) -> dict[str, CachedImage]:
    """Read one cache shard: ``{image_id: CachedImage}``."""
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    images = {
        key.split("__", 1)[1]: CachedImage(image=array)
        for key, array in arrays.items()
        if key.startswith("image__")
    }
    for key, array in arrays.items():
        kind, image_id = key.split("__", 1)
        if kind == "mask":
            images[image_id].mask = array
        elif kind.startswith("attr_"):
            images[image_id].attributes[kind.removeprefix("attr_")] = array
    return images


def read_cache(paths: Iterable[str | Path]) -> dict[str, CachedImage]:
    """Read several shards into one ``{image_id: CachedImage}`` dict."""
    images: dict[str, CachedImage] = {}
    for path in paths:
        images.update(load_shard(path))
    return images
