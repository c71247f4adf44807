"""Tests of melrepro.methods.superpixels: exact region counts, hierarchy, SLIC equivalence, node signals."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, segmentation, transform

from melrepro.methods.superpixels import (
    COLOR_SIGNALS,
    GEOMETRIC_SIGNALS,
    TEXTURE_SIGNALS,
    _slic,
    exact_superpixels,
    merge_pairs,
    merge_to,
    node_signals,
    pixel_maps,
    region_adjacency,
    region_sums,
    slic_lab,
    superpixel_ensemble,
    superpixel_hierarchy,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A natural RGB image (astronaut) at 96x128."""
    return (transform.resize(data.astronaut(), (96, 128)) * 255).astype(np.uint8)


@pytest.fixture
def quadrants() -> np.ndarray:
    """Four flat-coloured quadrants plus seeded noise."""
    rng = np.random.default_rng(0)
    img = np.zeros((40, 40, 3))
    img[:20, :20] = (1, 0, 0)
    img[:20, 20:] = (0, 1, 0)
    img[20:, :20] = (0, 0, 1)
    img[20:, 20:] = (1, 1, 0)
    img += rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def test_slic_on_precomputed_lab_equals_skimage_slic(photo):
    """Check the shared L*a*b* conversion gives exactly skimage's SLIC labels."""
    expected = segmentation.slic(photo, n_segments=40, start_label=0)
    got = _slic(photo, 40, 10.0, 0.0, 10, slic_lab(photo))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("levels", [(20, 40, 60, 80, 100), (3, 7, 150)])
def test_superpixel_ensemble_has_exactly_n_regions_per_level(photo, levels):
    """Check every SEG level holds exactly n labelled regions 0..n-1."""
    maps = superpixel_ensemble(photo, levels)
    for n, labels in maps.items():
        assert labels.shape == photo.shape[:2]
        np.testing.assert_array_equal(np.unique(labels), np.arange(n))


def test_exact_superpixels_splits_when_slic_returns_too_few(photo):
    """Check the split branch: with oversample=1 and n=150 SLIC gives fewer, yet n are returned."""
    raw = segmentation.slic(photo, n_segments=150, start_label=0)
    assert raw.max() + 1 < 150  # the situation the split branch exists for
    labels = exact_superpixels(photo, 150, oversample=1.0)
    assert labels.max() + 1 == 150


def test_superpixel_hierarchy_counts_and_unique_parents(photo):
    """Check SHG levels have exact counts and every fine region lies in exactly one parent."""
    h = superpixel_hierarchy(photo, (5, 10, 20, 40, 80))
    assert sorted(h.labels) == [5, 10, 20, 40, 80]
    for n, labels in h.labels.items():
        assert labels.max() + 1 == n
        assert len(np.unique(labels)) == n
    for fine, coarse in ((80, 40), (40, 20), (20, 10), (10, 5)):
        parent = h.parents[fine]
        assert parent.shape == (fine,)
        for region in range(fine):
            under = np.unique(h.labels[coarse][h.labels[fine] == region])
            assert under.tolist() == [parent[region]]
        assert set(parent.tolist()) == set(range(coarse))  # every coarse region has children


@pytest.fixture(scope="module")
def twin_lesion() -> np.ndarray:
    """A twin melanoma (the synthetic archive's painter) at 192x256."""
    from melrepro.data.synthetic import draw

    rng = np.random.default_rng(100)
    spec = {"skin_tone_max": 1.0, "brightness_min": 0.8, "brightness_max": 1.1, "vignetting": 0.4,
            "hair": 0.3, "ruler": 0.0, "max_render_side": 256}  # fmt: skip
    lesion = draw.sample_lesion("melanoma", rng)
    return draw.render(lesion, draw.sample_view(rng), draw.sample_scene(rng, 256, 192, spec)).image


@pytest.mark.parametrize("image", ["photo", "twin_lesion"])
def test_superpixel_hierarchy_merges_pairs_level_by_level(image, request):
    """Check the children-count distribution: halving a level gives mostly two children, never
    more than three (merging the globally closest pair gave 1-24 children, 5-30 % with two)."""
    img = request.getfixturevalue(image)
    h = superpixel_hierarchy(img, (5, 10, 20, 40, 80))
    children = np.concatenate([np.bincount(h.parents[f]) for f in (80, 40, 20, 10)])
    assert children.min() >= 1
    assert children.max() <= 3
    assert (children == 2).mean() >= 0.55
    first = np.bincount(h.parents[80])  # the first halving is the most regular
    assert (first == 2).mean() >= 0.6


def test_merge_pairs_merges_each_region_at_most_once_per_pass():
    """Check four stripes L* = 10, 11, 13, 40 halve to {10, 11} + {13, 40} (one matching), where
    repeated closest-pair merging gives {10, 11, 13} + {40}."""
    lab = np.zeros((4, 8, 3))
    labels = np.zeros((4, 8), dtype=np.int64)
    for k, light in enumerate((10.0, 11.0, 13.0, 40.0)):
        lab[:, 2 * k : 2 * k + 2, 0] = light
        labels[:, 2 * k : 2 * k + 2] = k
    merged, parent = merge_pairs(labels, lab, 2)
    assert parent.tolist() == [0, 0, 1, 1]
    assert merged.max() + 1 == 2
    _, greedy = merge_to(labels, lab, 2)
    assert greedy.tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="cannot merge"):
        merge_pairs(labels, lab, 5)


def test_superpixel_hierarchy_reuses_the_given_finest_map(photo):
    """Check SHG starts from the SEG map it is given (shared SLIC run)."""
    seg = superpixel_ensemble(photo, (40,))
    h = superpixel_hierarchy(photo, (10, 40), finest=seg[40])
    np.testing.assert_array_equal(h.labels[40], seg[40])
    with pytest.raises(ValueError, match="expected 80"):
        superpixel_hierarchy(photo, (10, 80), finest=seg[40])


def test_merge_to_merges_the_two_most_similar_adjacent_regions():
    """Check closest-pair merging: of three stripes, the two near-identical ones merge."""
    labels = np.repeat(np.arange(3), 4)[None, :].repeat(6, axis=0)
    lab = np.zeros((6, 12, 3))
    lab[:, :4] = (50, 0, 0)
    lab[:, 4:8] = (51, 0, 0)  # nearly the colour of stripe 0
    lab[:, 8:] = (90, 40, 0)
    merged, parent = merge_to(labels, lab, 2)
    assert parent.tolist() == [0, 0, 1]
    assert (merged[:, :8] == 0).all()
    assert (merged[:, 8:] == 1).all()


def test_merge_to_refuses_to_grow_the_number_of_regions():
    """Check the error names the counts."""
    with pytest.raises(ValueError, match="cannot merge 2 regions up to 3"):
        merge_to(np.array([[0, 1]]), np.zeros((1, 2, 3)), 3)


def test_exact_superpixels_rejects_impossible_counts(quadrants):
    """Check n above the pixel count is refused, then a valid call works."""
    with pytest.raises(ValueError, match="impossible"):
        exact_superpixels(quadrants, 40 * 40 + 1)
    assert exact_superpixels(quadrants, 4).max() == 3


def test_four_quadrants_give_four_quadrant_superpixels(quadrants):
    """Check 4 superpixels of a four-quadrant image are the quadrants."""
    labels = exact_superpixels(quadrants, 4)
    for rows, cols in ((slice(0, 20), slice(0, 20)), (slice(0, 20), slice(20, 40)),
                       (slice(20, 40), slice(0, 20)), (slice(20, 40), slice(20, 40))):  # fmt: skip
        assert len(np.unique(labels[rows, cols])) == 1
    assert len(np.unique(labels)) == 4


def test_region_adjacency_of_a_hand_drawn_grid():
    """Check 4-connected adjacency of a 2x2 block grid: no diagonal edges."""
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    adj = region_adjacency(labels)
    expected = {(0, 1), (0, 2), (1, 3), (2, 3)}
    got = {(i, j) for i, j in zip(*np.nonzero(np.triu(adj)), strict=True)}
    assert got == expected
    np.testing.assert_array_equal(adj, adj.T)


def test_node_signals_known_answers_on_two_halves():
    """Check areas, centroids, colours and shapes of a left (red) / right (blue) split."""
    img = np.zeros((10, 20, 3), dtype=np.uint8)
    img[:, :10] = (255, 0, 0)
    img[:, 10:] = (0, 0, 255)
    labels = np.zeros((10, 20), dtype=np.int32)
    labels[:, 10:] = 1
    sig = node_signals(pixel_maps(img), labels)
    assert sig["geometric"].shape == (2, len(GEOMETRIC_SIGNALS))
    assert sig["texture"].shape == (2, len(TEXTURE_SIGNALS))
    assert sig["color"].shape == (2, len(COLOR_SIGNALS))
    geo = dict(zip(GEOMETRIC_SIGNALS, sig["geometric"].T, strict=True))
    np.testing.assert_allclose(geo["area"], [0.5, 0.5])
    np.testing.assert_allclose(geo["centroid_row"], [4.5 / 10, 4.5 / 10])
    np.testing.assert_allclose(geo["centroid_col"], [4.5 / 20, 14.5 / 20])
    # a 10x10 square: equal axes, no eccentricity
    np.testing.assert_allclose(geo["eccentricity"], [0, 0], atol=1e-6)
    col = dict(zip(COLOR_SIGNALS, sig["color"].T, strict=True))
    np.testing.assert_allclose(col["R"], [1, 0])
    np.testing.assert_allclose(col["B"], [0, 1])
    np.testing.assert_allclose(col["L_std"], [0, 0], atol=1e-4)  # sqrt of rounding error
    tex = dict(zip(TEXTURE_SIGNALS, sig["texture"].T, strict=True))
    np.testing.assert_allclose(tex["gray_std"], [0, 0], atol=1e-4)
    lbp = sig["texture"][:, 3:]
    np.testing.assert_allclose(lbp.sum(axis=1), [1, 1])


def test_node_signals_match_skimage_regionprops(photo):
    """Check area, centroid, eccentricity and mean colour against skimage.measure.regionprops."""
    from skimage.measure import regionprops

    labels = superpixel_ensemble(photo, (12,))[12]
    sig = node_signals(pixel_maps(photo), labels)
    h, w = labels.shape
    geo = dict(zip(GEOMETRIC_SIGNALS, sig["geometric"].T, strict=True))
    for p in regionprops(labels + 1, intensity_image=photo):
        i = p.label - 1
        assert geo["area"][i] == pytest.approx(p.area / (h * w))
        assert geo["centroid_row"][i] == pytest.approx(p.centroid[0] / h)
        assert geo["centroid_col"][i] == pytest.approx(p.centroid[1] / w)
        assert geo["eccentricity"][i] == pytest.approx(p.eccentricity, abs=1e-6)
        np.testing.assert_allclose(sig["color"][i, :3], p.intensity_mean / 255)


def test_coarsened_region_sums_give_the_signals_of_the_merged_map(photo):
    """Check SHG signals from children's sums equal those computed from the coarse pixels."""
    h = superpixel_hierarchy(photo, (5, 10, 20))
    maps = pixel_maps(photo)
    coarse = region_sums(maps, h.labels[20]).coarsen(h.parents[20]).coarsen(h.parents[10])
    direct = node_signals(maps, h.labels[5])
    via_sums = node_signals(maps, h.labels[5], sums=coarse)
    for kind in direct:
        np.testing.assert_allclose(via_sums[kind], direct[kind], rtol=1e-9, atol=1e-12)
