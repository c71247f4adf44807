"""Tests for melrepro.methods.transforms: crop geometry, colour constancy, normalisation, augmentation."""

import numpy as np
import pytest
import torch

from melrepro.methods import transforms


def test_center_crop_square_takes_the_middle():
    """Check a 4x8 image keeps columns 2..5 (the centred 4x4 square)."""
    img = np.tile(np.arange(8), (4, 1))[..., None].repeat(3, axis=2)
    out = transforms.center_crop_square(img)
    assert out.shape == (4, 4, 3)
    assert out[0, :, 0].tolist() == [2, 3, 4, 5]


def test_shades_of_grey_makes_a_colour_cast_grey():
    """Check a uniform coloured image becomes grey (equal channels) with the same mean."""
    img = np.zeros((8, 8, 3), np.uint8) + np.array([200, 100, 50], np.uint8)
    out = transforms.shades_of_grey(img, p=6)
    assert np.ptp(out.reshape(-1, 3).mean(0)) <= 1
    assert out.mean() == pytest.approx(img.mean(), abs=1)


def test_shades_of_grey_p1_is_grey_world():
    """Check p=1 equalises the per-channel means (grey-world) on a random image."""
    rng = np.random.default_rng(0)
    img = (rng.uniform(0, 1, (16, 16, 3)) * np.array([150, 100, 60])).astype(np.uint8)
    out = transforms.shades_of_grey(img, p=1).astype(float)
    means = out.reshape(-1, 3).mean(0)
    assert np.ptp(means) < 1.0


def test_shades_of_grey_rejects_grey_images():
    """Check a 2-D image is refused, then an RGB one works."""
    with pytest.raises(ValueError, match="H, W, 3"):
        transforms.shades_of_grey(np.zeros((4, 4), np.uint8))
    assert transforms.shades_of_grey(np.ones((4, 4, 3), np.uint8)).shape == (4, 4, 3)


def test_preprocess_image_crops_then_resizes():
    """Check 450x600 -> centre 450x450 -> 32x32; the left/right margins (red) are gone."""
    img = np.zeros((450, 600, 3), np.uint8)
    img[:, :75, 0] = 255
    img[:, -75:, 0] = 255
    out = transforms.preprocess_image(img, 32)
    assert out.shape == (32, 32, 3)
    assert out.dtype == np.uint8
    assert out[..., 0].max() == 0


def test_per_image_normalize_zero_mean_unit_variance():
    """Check every image of a batch is normalised on its own."""
    x = torch.stack([torch.full((3, 8, 8), 10.0), torch.arange(192.0).reshape(3, 8, 8)])
    x[0, 0, 0, 0] = 20.0
    out = transforms.per_image_normalize(x)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.std(dim=(1, 2, 3), unbiased=False), torch.ones(2), atol=1e-4, rtol=0
    )


def test_train_transform_shape_dtype_and_randomness():
    """Check augmentation returns a normalised float (3, S, S) tensor and varies per call."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 255, (3, 40, 40), dtype=np.uint8))
    tf = transforms.train_transform(32)
    a, b = tf(img), tf(img)
    assert a.shape == (3, 32, 32)
    assert a.dtype == torch.float32
    assert abs(float(a.mean())) < 1e-4
    assert not torch.equal(a, b)
