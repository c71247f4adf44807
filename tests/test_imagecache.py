"""The image cache: sizes per resolution, masks aligned with the images, round trip by shard."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melrepro.data.imagecache import (
    cache_images,
    load_shard,
    parse_resolution,
    read_cache,
    target_size,
)
from melrepro.data.manifests import build_manifest, check_images, index_dataset


@pytest.mark.parametrize(
    ("size", "res", "expected"),
    [
        ((1022, 767), "sq224", (224, 224)),
        ((1022, 767), "max512", (512, 384)),
        ((300, 200), "max512", (300, 200)),
        ((767, 1022), "max100", (75, 100)),
        ((1022, 767), "orig", (1022, 767)),
    ],
)
def test_target_size(size, res, expected):
    """Check each resolution form gives the documented size (max never upscales)."""
    assert target_size(*size, res) == expected


def test_bad_resolution_is_refused():
    """Check an unknown resolution names the valid forms."""
    with pytest.raises(ValueError, match=r"expected sq<N>, max<N> \(N >= 1\) or orig"):
        parse_resolution("square224")


@pytest.fixture(scope="module")
def isic2017_manifest(tiny_archives):
    root = tiny_archives / "isic2017"
    manifest, _, _ = build_manifest(
        index_dataset(root, "isic2017", n_shards=2),
        pd.concat([check_images(root, "isic2017", k, n_shards=2) for k in range(2)]),
    )
    return root, manifest


def test_cache_round_trip(isic2017_manifest, tmp_path):
    """Check two shards hold every image once, at the right size, with 0/1 masks of the same size."""
    root, manifest = isic2017_manifest
    paths = [
        cache_images(manifest, root, k, "max160", tmp_path / f"shard-{k:03d}.npz") for k in range(2)
    ]
    cached = read_cache(paths)
    assert sorted(cached) == sorted(manifest["image_id"])
    for record in manifest.itertuples():
        item = cached[record.image_id]
        width, height = target_size(record.width, record.height, "max160")
        assert item.image.shape == (height, width, 3)
        assert item.image.dtype == np.uint8
        assert item.mask.shape == (height, width)
        assert set(np.unique(item.mask)) <= {0, 1}
    assert len(load_shard(paths[0])) == (manifest["shard"] == 0).sum()


def test_cached_mask_matches_the_generator_truth(isic2017_manifest, tmp_path):
    """Check the cached Part1 mask overlaps the generator's true lesion mask (IoU > 0.9)."""
    root, manifest = isic2017_manifest
    path = cache_images(manifest, root, 0, "sq96", tmp_path / "s.npz")
    for image_id, item in load_shard(path).items():
        truth = Image.open(root / "synthetic_truth" / "masks" / f"{image_id}.png").convert("L")
        truth = np.asarray(truth.resize((96, 96), Image.Resampling.NEAREST)) > 127
        mask = item.mask.astype(bool)
        iou = (mask & truth).sum() / max(1, (mask | truth).sum())
        assert iou > 0.9, image_id


def test_cached_pixels_are_the_resized_archive_image(isic2017_manifest, tmp_path):
    """Check the cache holds the archive's JPEG resized, not something else (mean abs diff < 3)."""
    from melrepro.data.archive_io import ArchiveFolder

    root, manifest = isic2017_manifest
    path = cache_images(manifest, root, 1, "sq64", tmp_path / "s.npz")
    cached = load_shard(path)
    with ArchiveFolder(root) as archive:
        for record in manifest[manifest["shard"] == 1].itertuples():
            original = Image.open(io.BytesIO(archive.read(record.image_uri))).convert("RGB")
            reference = np.asarray(
                original.resize((64, 64), Image.Resampling.BILINEAR), dtype=float
            )
            assert np.abs(cached[record.image_id].image - reference).mean() < 3.0


def test_task2_attribute_masks_are_cached_with_the_image(tiny_archives, tmp_path):
    """Check the five attribute masks come back per image, 0/1, at the image's cached size."""
    root = tiny_archives / "isic2018_task2"
    manifest, _, _ = build_manifest(
        index_dataset(root, "isic2018_task2"), check_images(root, "isic2018_task2", 0, n_shards=1)
    )
    cached = load_shard(cache_images(manifest, root, 0, "max96", tmp_path / "t2.npz"))
    names = {"globules", "milia_like_cyst", "negative_network", "pigment_network", "streaks"}
    kept = 0
    for record in manifest.itertuples():
        item = cached[record.image_id]
        assert set(item.attributes) == names
        for name, mask in item.attributes.items():
            assert mask.shape == item.image.shape[:2]
            nonempty = getattr(record, f"attr_{name}_nonempty")
            # Downscaling may drop a 1-px dot, never invent one.
            assert nonempty or not mask.any()
            kept += bool(mask.any())
    assert kept > 0
